"""MMAU test-mini (Sakshi et al. 2024): one JSON list of records, clips in ``test-mini-audios/``.

Record fields: ``id``, ``audio_id`` (``./test-mini-audios/<uuid>.wav``, relative to the JSON file's
folder), ``question``, ``choices``, ``answer`` (one of the choices), ``dataset``, ``task``
(sound / music / speech), ``split``, ``category`` (a string, or a one-element list in some records),
``sub-category``, ``difficulty``. The source records the JSON file's sha256 and record count, so a
result says which version of the file was read.

Some published records write the answer with its letter (``"(B) C major"`` for the choices
``["Bb minor", "C major", ...]``), in another case than its choice, or repeat a wrong choice
(``["two", "three", "three", "one"]``); the gold is still unambiguous, so these are kept, as MMAU's own
scoring keeps them: the answer becomes its choice's text (the answer as written is an alias), and a
repeated choice is listed once (``metadata["repeated_choices"]`` counts the copies dropped).
"""

from __future__ import annotations

import json
import os
import re

from .items import DatasetError, EvalDataset, RowCollector, sha256_of

REQUIRED = ("id", "audio_id", "question", "choices", "answer")
_LETTERED = re.compile(r"^\(([A-Za-z])\)\s*(.+)$", re.DOTALL)
METADATA = ("dataset", "task", "split", "category", "sub-category", "difficulty")


def gold_choice(choices: list[str], answer: str) -> str | None:
    """The choice an answer names: itself, the choice its letter and text both point at (``"(B) C major"``),
    or the one choice equal to it up to case, spacing and punctuation. None when it names none (or several)."""
    from ..evaluation.scoring import normalise  # here: evaluation imports this package

    if answer in choices:
        return answer
    lettered = _LETTERED.match(answer)
    if lettered:
        index = ord(lettered.group(1).upper()) - ord("A")
        if index < len(choices) and normalise(choices[index]) == normalise(lettered.group(2)):
            return choices[index]
        return None
    same = [c for c in choices if normalise(c) == normalise(answer)]
    return same[0] if len(same) == 1 else None


def load_mmau(path: str, spec: str | None = None, strict: bool = False) -> EvalDataset:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"mmau: no JSON file at {path} (pass the test-mini JSON, e.g. mmau-test-mini.json)")
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"mmau: {path} is not valid JSON ({error})") from None
    if not isinstance(records, list):
        raise DatasetError(f"mmau: {path} holds a {type(records).__name__}, not the list of records MMAU ships")
    rows, folder = RowCollector(spec or f"mmau:{path}", strict), os.path.dirname(path)
    for index, record in enumerate(records):
        where = f"{os.path.basename(path)}[{index}]"
        if not isinstance(record, dict):
            rows.skip(where, f"malformed row: a {type(record).__name__}, not a record")
            continue
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            rows.skip(where, f"malformed row: no {missing}")
            continue
        if isinstance(record["id"], bool) or not isinstance(record["id"], (str, int)) or not str(record["id"]).strip():
            rows.skip(where, f"malformed row: id is not a text or whole number ({record['id']!r})")
            continue
        choices, answer = record["choices"], record["answer"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            rows.skip(where, f"malformed row: choices is not a list of strings ({choices!r})")
            continue
        if not isinstance(answer, str):
            rows.skip(where, f"malformed row: answer is not a string ({answer!r})")
            continue
        metadata = {}
        for key in METADATA:
            value = record.get(key)
            if isinstance(value, list):  # some records wrap category in a one-element list
                if len(value) != 1:
                    rows.skip(where, f"malformed row: {key} is a list of {len(value)} values {value!r}")
                    break
                value = value[0]
            metadata[key] = value
        else:
            stripped = [c.strip() for c in choices]
            unique = list(dict.fromkeys(stripped))  # a repeated wrong choice: listed once, in order
            if len(unique) < len(stripped):
                metadata["repeated_choices"] = len(stripped) - len(unique)
            gold = gold_choice(unique, answer.strip())
            if gold is not None and gold != answer.strip():
                metadata["aliases"] = [answer.strip()]
            audio = str(record["audio_id"])
            audio = audio if os.path.isabs(audio) else os.path.normpath(os.path.join(folder, audio))
            rows.add(where, str(record["id"]), audio, record["question"], gold or answer, unique, metadata)
    return rows.finish({"kind": "mmau", "path": path, "sha256": sha256_of(path), "n_records": len(records)})
