"""What every loader returns: a list of :class:`EvalItem` plus an account of the rows it skipped.

A loader never drops a row silently. A problem with the dataset as a whole (no metadata file, a missing
column, a JSON file that is not a list, duplicate ids) raises :class:`DatasetError` with the fix; a
problem with one row (an empty or non-text question, an empty or repeated choice (also one that differs
from another only in case, spacing or punctuation), an answer outside its choices, ``aliases`` that are not a
list of texts, a missing or unreadable audio file, an empty clip) skips that row, logs it and records it
in :attr:`EvalDataset.skipped`, so the summary can say how many rows were left out and why. ``strict=True`` turns every skip into an error.
Clips at a rate other than 16 kHz are kept (``hooked_audio.audio.load_waveform`` resamples them) and
counted in :meth:`EvalDataset.skip_summary` under ``resampled``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import soundfile

logger = logging.getLogger("hooked_audio.datasets")

TARGET_RATE = 16000


class DatasetError(ValueError):
    """The dataset cannot be read as a whole (its message says what to fix)."""


@dataclass(frozen=True)
class EvalItem:
    """One benchmark question about one clip.

    ``answer`` is the reference text; ``choices`` the closed answer set when there is one (the answer is
    among them); ``metadata`` carries what the summary groups by (``task``, ``sub-category``,
    ``difficulty``, ...) plus ``duration_s`` and ``sample_rate`` of the clip, and ``aliases``: other
    spellings of the answer that exact match accepts (e.g. SAKURA's ``"(a) dog"`` for ``"dog"``)."""

    id: str
    audio: str
    question: str
    answer: str
    choices: tuple[str, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return float(self.metadata.get("duration_s", 0.0))


@dataclass(frozen=True)
class Skip:
    row: str  # where the row is: "metadata.csv:7", "test-mini.json[12]"
    reason: str


@dataclass
class EvalDataset:
    """The items of one dataset spec, the rows skipped (with reasons), and where they came from
    (``source``: kind, path, and for single-file datasets the file's sha256, so a result says which
    version was read)."""

    spec: str
    items: list[EvalItem]
    skipped: list[Skip]
    source: dict[str, Any]
    strict: bool = False  # loaded with strict=True: a row found bad later (its clip refused at build time) is an error too

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def skip_summary(self) -> dict[str, Any]:
        """Counts: items kept, rows skipped per reason (the reason's kind, before the colon), resampled."""
        kinds = Counter(s.reason.split(":")[0] for s in self.skipped)
        resampled = sum(1 for it in self.items if it.metadata.get("sample_rate") not in (None, TARGET_RATE))
        return {"items": len(self.items), "skipped": len(self.skipped), "skipped_by_reason": dict(kinds),
                "resampled": resampled}


class RowCollector:
    """Builds the item list for one loader: ``add`` checks a row's audio, ``skip`` records a bad row."""

    def __init__(self, spec: str, strict: bool = False):
        self.spec, self.strict = spec, strict
        self.items: list[EvalItem] = []
        self.skipped: list[Skip] = []
        self._ids: dict[str, str] = {}

    def skip(self, row: str, reason: str) -> None:
        if self.strict:
            raise DatasetError(f"{row}: {reason} (strict=True refuses every bad row; fix it or drop strict)")
        logger.warning("skipping %s: %s", row, reason)
        self.skipped.append(Skip(row, reason))

    def add(self, row: str, item_id: str, audio: str, question: str, answer: str,
            choices: list[str] | tuple[str, ...] | None = None, metadata: dict | None = None) -> None:
        """Add a row after checking it; a bad row is skipped (or, if strict, raises)."""
        if item_id in self._ids:
            raise DatasetError(
                f"{row}: id {item_id!r} is also the id of {self._ids[item_id]}; ids must be unique (results are "
                "resumed by id)"
            )
        for name, value in (("question", question), ("answer", answer)):
            if not isinstance(value, str):
                return self.skip(row, f"malformed row: {name} is not text ({value!r})")
        if not str(question).strip():
            return self.skip(row, "malformed row: empty question")
        if not str(answer).strip():
            return self.skip(row, "malformed row: empty answer")
        if choices is not None:
            choices = tuple(str(c).strip() for c in choices)
            if len(choices) < 2:
                return self.skip(row, f"malformed row: {len(choices)} choice(s); a closed set needs at least 2")
            if not all(choices):
                return self.skip(row, f"malformed row: an empty choice in {list(choices)}")
            if len(set(choices)) != len(choices):
                return self.skip(row, f"malformed row: repeated choices {list(choices)}")
            from ..evaluation.scoring import normalise  # here: evaluation imports this module

            folded = [normalise(c) for c in choices]
            if len(set(folded)) != len(folded):  # "Dog" and "dog.": one answer, which exact match cannot tell apart
                return self.skip(row, f"malformed row: repeated choices {list(choices)} (they differ only in case, "
                                      "spacing or punctuation)")
            if answer.strip() not in choices:
                return self.skip(row, f"malformed row: answer {answer.strip()!r} is not among the choices {list(choices)}")
        aliases = (metadata or {}).get("aliases", [])
        if not isinstance(aliases, (list, tuple)) or not all(isinstance(a, str) and a.strip() for a in aliases):
            return self.skip(row, f"malformed row: aliases must be a list of non-empty texts, got {aliases!r} "
                                  '(write ["doggy", "puppy"]; a bare text would make each of its letters an alias)')
        if not os.path.exists(audio):
            return self.skip(row, f"missing audio: no file at {audio}")
        try:
            info = soundfile.info(audio)
        except Exception as error:  # soundfile's error names the format problem
            return self.skip(row, f"unreadable audio: {audio} ({str(error).strip().splitlines()[0]})")
        if info.frames == 0:
            return self.skip(row, f"empty audio: {audio} has 0 samples")
        meta = dict(metadata or {})
        meta.update(duration_s=round(info.frames / info.samplerate, 4), sample_rate=int(info.samplerate))
        self._ids[item_id] = row
        self.items.append(EvalItem(str(item_id), audio, str(question).strip(), answer.strip(), choices, meta))

    def finish(self, source: dict[str, Any]) -> EvalDataset:
        dataset = EvalDataset(self.spec, self.items, self.skipped, source, self.strict)
        summary = dataset.skip_summary()
        if summary["skipped"]:
            logger.warning("%s: kept %d items, skipped %d rows %s", self.spec, summary["items"], summary["skipped"],
                           summary["skipped_by_reason"])
        if summary["resampled"]:
            logger.info("%s: %d clips are not at %d Hz and will be resampled", self.spec, summary["resampled"], TARGET_RATE)
        if not self.items:
            reasons = "; ".join(f"{s.row}: {s.reason}" for s in self.skipped[:5])
            raise DatasetError(f"{self.spec}: no usable items" + (f" (every row was skipped: {reasons} ...)" if reasons else ""))
        return dataset


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
