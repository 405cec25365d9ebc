"""A generic manifest: one row per question, JSONL (``.jsonl``/``.json``; a ``.json`` file may also hold one
JSON list of the records) or CSV (``.csv``).

Fields: ``audio`` (a path, relative to the manifest's folder or absolute), ``question``, ``answer``,
optional ``choices`` (a JSON list; in a CSV cell the JSON text of a list, e.g. ``["low", "high"]``),
optional ``aliases`` (other spellings exact match accepts; a list, written like ``choices``) and
optional ``id`` (a text or whole number; default: the row number, from 0). Any other field goes into the item's metadata, so a
``task`` or ``difficulty`` column is grouped by in the summary.
"""

from __future__ import annotations

import csv
import json
import os

from .items import DatasetError, EvalDataset, RowCollector, sha256_of

REQUIRED = ("audio", "question", "answer")
LIST_FIELDS = ("choices", "aliases")  # in a CSV cell: the JSON text of a list


def _records(path: str):
    """``(where, record or None, problem)`` for each row of the file."""
    name = os.path.basename(path)
    if path.lower().endswith(".csv"):
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise DatasetError(f"{path}: missing column(s) {missing}; the columns are {columns}")
            for index, record in enumerate(reader):
                if None in record or any(record[c] is None for c in columns):
                    yield f"{name}:{index + 2}", index, None, "malformed row: its cells do not match the columns"
                    continue
                problem = None
                for key in LIST_FIELDS:
                    if record.get(key, "").strip():
                        try:
                            record[key] = json.loads(record[key])
                        except json.JSONDecodeError:
                            problem = f"malformed row: {key} {record[key]!r} is not a JSON list (write [\"a\", \"b\"])"
                            break
                        if not isinstance(record[key], list):
                            problem = f"malformed row: {key} {record[key]!r} is not a JSON list (write [\"a\", \"b\"])"
                            break
                    else:
                        record.pop(key, None)
                if problem:
                    yield f"{name}:{index + 2}", index, None, problem
                    continue
                for key in [k for k, v in record.items() if k not in REQUIRED and not str(v).strip()]:
                    record.pop(key)  # an empty optional cell (id, task, ...) is no value, not the value ""
                yield f"{name}:{index + 2}", index, record, None
        return
    if not path.lower().endswith((".jsonl", ".json", ".ndjson")):
        raise DatasetError(f"manifest: {path} is neither .jsonl nor .csv; name it by its format")
    if path.lower().endswith(".json"):  # one JSON list of records, or JSON lines under a .json name
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
        try:
            whole = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError:
            whole = None
        except DatasetError as error:
            raise DatasetError(f"manifest: {path}: {error}") from None
        if isinstance(whole, dict):
            raise DatasetError(f"manifest: {path} holds one JSON object, not a list of records (or one record per line)")
        if isinstance(whole, list):
            for index, record in enumerate(whole):
                where = f"{name}[{index}]"
                if isinstance(record, dict):
                    yield where, index, record, None
                else:
                    yield where, index, None, f"malformed row: a JSON {type(record).__name__}, not an object"
            return
    with open(path, encoding="utf-8-sig") as handle:  # -sig: a leading byte-order mark is not part of row 1
        index = 0
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{name}:{line_no}"
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as error:
                yield where, index, None, f"malformed row: not JSON ({error.msg})"
            except DatasetError as error:
                yield where, index, None, f"malformed row: {error}"
            else:
                if not isinstance(record, dict):
                    yield where, index, None, f"malformed row: a JSON {type(record).__name__}, not an object"
                else:
                    yield where, index, record, None
            index += 1


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict, refusing a repeated key (json keeps the last one silently)."""
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise DatasetError(f"the key(s) {repeated} appear twice in one record; which value is meant is ambiguous")
    return dict(pairs)


def load_manifest(path: str, spec: str | None = None, strict: bool = False) -> EvalDataset:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"manifest: no file at {path}")
    rows, folder = RowCollector(spec or f"manifest:{path}", strict), os.path.dirname(path)
    n_rows = 0
    for where, index, record, problem in _records(path):
        n_rows += 1
        if problem:
            rows.skip(where, problem)
            continue
        missing = [k for k in REQUIRED if not isinstance(record.get(k), str)]
        if missing:
            rows.skip(where, f"malformed row: {missing} missing or not text")
            continue
        choices = record.get("choices")
        if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
            rows.skip(where, f"malformed row: choices is not a list of strings ({choices!r})")
            continue
        audio = os.path.expanduser(record["audio"])
        audio = audio if os.path.isabs(audio) else os.path.normpath(os.path.join(folder, audio))
        metadata = {k: v for k, v in record.items() if k not in (*REQUIRED, "choices", "id")}
        given_id = record.get("id")
        if given_id is not None and (isinstance(given_id, bool) or not isinstance(given_id, (str, int))):
            rows.skip(where, f"malformed row: id is not a text or whole number ({given_id!r})")
            continue
        item_id = str(index) if given_id is None or not str(given_id).strip() else str(given_id)  # null / "" -> row number
        rows.add(where, item_id, audio, record["question"], record["answer"], choices, metadata)
    return rows.finish({"kind": "manifest", "path": path, "sha256": sha256_of(path), "n_rows": n_rows})
