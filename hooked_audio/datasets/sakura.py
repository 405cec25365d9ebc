"""SAKURA (Yang et al. 2025): four attribute tracks, each a folder with ``metadata.csv`` and its clips.

Layout read::

    DIR/data/Animal/metadata.csv      (or DIR/Animal/metadata.csv; DIR may also be one track's folder)
    DIR/data/Animal/audio/<file>.wav  (SAKURA's own layout; clips next to metadata.csv are read too)

Columns: ``file`` (some copies: ``file_name``), ``attribute_label``, ``single_instruction``,
``single_answer``, ``multi_instruction``, ``multi_answer``. Answers are written ``"(a) dog"`` (some with
a leading space). The item's ``answer`` is the option's text (``"dog"``); ``choices`` are the option texts
parsed from the instruction (``(a) ... (b) ...``) when it lists them; ``metadata["aliases"]`` keeps the
answer as written and its letter, which exact match also accepts. ``hop`` picks the single-hop
(``single_*``, default) or multi-hop (``multi_*``) question. Item ids are ``Track/hop/file``.
"""

from __future__ import annotations

import csv
import os
import re

from .items import DatasetError, EvalDataset, RowCollector, sha256_of

TRACKS = ("Animal", "Emotion", "Gender", "Language")
HOPS = ("single", "multi")
REQUIRED = ("attribute_label", "single_instruction", "single_answer", "multi_instruction", "multi_answer")
_OPTION = re.compile(r"\(([a-z])\)\s*(.*?)(?=\s*\([a-z]\)|$)", re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(r"^\s*\(([a-z])\)\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)


def _loose(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def track_dirs(root: str, track: str | None = None) -> dict[str, str]:
    """``{track: folder}`` for the tracks found under ``root`` (or the one asked for)."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"sakura: no folder at {root}")
    if os.path.isfile(os.path.join(root, "metadata.csv")):  # one track's folder itself
        name = os.path.basename(root)
        if track is not None and track != name:
            raise DatasetError(f"sakura: {root} is the {name!r} track's folder, not {track!r}")
        return {name: root}
    base = os.path.join(root, "data") if os.path.isdir(os.path.join(root, "data")) else root
    wanted = [track] if track is not None else list(TRACKS)
    found = {t: os.path.join(base, t) for t in wanted if os.path.isfile(os.path.join(base, t, "metadata.csv"))}
    if track is not None and not found:
        raise DatasetError(f"sakura: no {os.path.join(base, track, 'metadata.csv')} (tracks: {', '.join(TRACKS)})")
    if not found:
        raise DatasetError(
            f"sakura: no track under {base}: expected {{{','.join(TRACKS)}}}/metadata.csv (the layout of SAKURA's data/ folder)"
        )
    return found


# Words that end in a full stop inside a sentence ("Mr. Smith", "U.S. English"): no sentence ends after them.
ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "u.s", "u.k",
                 "approx", "ca", "cf"}


def _end_of_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence: a ``.``, ``?`` or ``!`` followed by a space, except after an
    abbreviation."""
    for match in re.finditer(r"[.?!](?=\s)", text):
        word = re.search(r"[\w.]*$", text[: match.start()]).group(0).lower()
        if not (text[match.start()] == "." and word in ABBREVIATIONS):
            return text[: match.start()].strip()
    return text


def parse_options(instruction: str) -> list[tuple[str, str]]:
    """``[(letter, text), ...]`` of the ``(a) text (b) text`` options listed in an instruction: the first run of
    at least two options lettered ``(a), (b), (c), ...`` in order. A parenthesised letter elsewhere (``speaker(s)``,
    a ``(b)`` quoted in the question) is text, not an option."""
    found = [(letter.lower(), text.strip()) for letter, text in _OPTION.findall(instruction)]
    for start, (letter, _) in enumerate(found):
        if letter != "a":
            continue
        end = start + 1
        while end < len(found) and found[end][0] == chr(ord("a") + end - start):
            end += 1
        if end - start >= 2:
            run = found[start:end]
            # only the last option runs on into the instruction ("... Answer with ..."); an earlier one may
            # hold sentences of its own ("(b) It's so dirty! Please clean it. (c) ...")
            run[-1] = (run[-1][0], _end_of_sentence(run[-1][1]))
            return [(letter, re.sub(r"[,;]?\s+or$", "", text.rstrip(".;,?!").strip()))  # "(a) male or (b) female?"
                    for letter, text in run]
    return []


def _runs_on(option: str, answer: str, instruction: str) -> bool:
    """Whether the answer is the last option written out in full where parsing cut it at its first sentence
    ("(d) It's so dirty! Please clean it." answered in full): the option is the answer's start, and the
    instruction holds the whole answer."""
    option, answer = _loose(option), _loose(answer)
    return len(answer) > len(option) and answer.startswith(option) and answer in _loose(instruction)


def clip_path(folder: str, file: str) -> str:
    """Where a track's clip is: ``<track>/audio/<file>`` (SAKURA's layout), else ``<track>/<file>``. A missing
    clip is reported at the first."""
    beside = os.path.join(folder, file)
    return beside if os.path.exists(beside) else os.path.join(folder, "audio", file)


def load_sakura(root: str, track: str | None = None, hop: str = "single", spec: str | None = None,
                strict: bool = False) -> EvalDataset:
    if hop not in HOPS:
        raise DatasetError(f"sakura: hop must be one of {HOPS}, got {hop!r}")
    spec = spec or f"sakura:{root}"
    rows = RowCollector(spec, strict)
    tracks = track_dirs(root, track)
    for name, folder in tracks.items():
        csv_path = os.path.join(folder, "metadata.csv")
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            file_column = "file" if "file" in columns else "file_name" if "file_name" in columns else None
            missing = [c for c in REQUIRED if c not in columns] + ([] if file_column else ["file (or file_name)"])
            if missing:
                raise DatasetError(f"{csv_path}: missing column(s) {missing}; the columns are {columns}")
            for line, record in enumerate(reader, start=2):
                where = f"{csv_path}:{line}"
                if None in record:  # more cells than columns
                    rows.skip(where, f"malformed row: {len(columns) + len(record[None])} cells for {len(columns)} columns")
                    continue
                if any(record[c] is None for c in columns):
                    rows.skip(where, f"malformed row: fewer cells than the {len(columns)} columns")
                    continue
                file = record[file_column].strip()
                if not file:
                    rows.skip(where, f"malformed row: empty {file_column}")
                    continue
                instruction, raw_answer = record[f"{hop}_instruction"], record[f"{hop}_answer"].strip()
                matched = _ANSWER.match(raw_answer)
                letter, answer = (matched.group(1).lower(), matched.group(2)) if matched else (None, raw_answer)
                options = parse_options(instruction)
                if not options and any(letter.lower() == "a" for letter, _ in _OPTION.findall(instruction)):
                    rows.skip(where, "malformed row: the instruction's options are not lettered (a), (b), ... in order "
                                     f"({instruction!r})")
                    continue
                choices = [text for _, text in options] or None
                option = dict(options).get(letter) if choices is not None and letter is not None else None
                if option is not None and letter == options[-1][0] and _runs_on(option, answer, instruction):
                    option = choices[-1] = answer.rstrip(".;,?!").strip()  # the last option holds sentences too
                if option is not None and option != answer:
                    if _loose(option) != _loose(answer):
                        rows.skip(where, f"malformed row: answer {raw_answer!r} disagrees with option ({letter}) "
                                         f"{option!r} of the instruction")
                        continue
                    answer = option  # the same words written differently ("Dog." for "dog"): the option's spelling
                aliases = [a for a in (raw_answer, f"({letter})" if letter else None, letter) if a and a != answer]
                rows.add(where, f"{name}/{hop}/{file}", clip_path(folder, file), instruction, answer, choices,
                         {"task": name, "sub-category": hop, "attribute_label": record["attribute_label"].strip(),
                          "aliases": aliases, "option_letter": letter})
    return rows.finish({"kind": "sakura", "path": os.path.abspath(root), "tracks": sorted(tracks), "hop": hop,
                        "sha256": {t: sha256_of(os.path.join(f, "metadata.csv")) for t, f in sorted(tracks.items())}})
