"""Which rows of an input hold the same audio: a fingerprint of each row's audio features, so that helpers can
tell the same clip asked twice (under two hints, in two splits) from two clips."""

from __future__ import annotations

import hashlib

from ..audio.inputs import AudioTextInput


def row_audio_fingerprints(model, inputs: AudioTextInput) -> list[str | None]:
    """Per row, a hash of the audio features of its clips (its feature rows, in order); None for a row without
    audio or where the model cannot tell which feature rows are whose. ``model=None``: from the inputs alone
    (the feature rows' owners ``to_inputs`` recorded, and every audio tensor of one row per window)."""
    if model is None:
        owners = inputs.window_rows
        tensors = [] if owners is None else [v for v in inputs.audio.values() if v.ndim and v.shape[0] == len(owners)]
    else:
        owners = model.window_rows(inputs)
        features = inputs.audio.get(model.cfg.audio_inputs.features) if model.cfg.audio_inputs else None
        tensors = [] if features is None else [features]
    out: list[str | None] = [None] * inputs.shape[0]
    if owners is None or not tensors:
        return out
    for row in range(inputs.shape[0]):
        own = [t[owners.to(t.device) == row] for t in tensors]
        if len(own[0]):
            digest = hashlib.sha1()
            for part in own:
                digest.update(part.detach().cpu().contiguous().numpy().tobytes())
            out[row] = digest.hexdigest()
    return out


def rows_sharing_clips(model, inputs: AudioTextInput) -> list[list[int]]:
    """Groups (of two or more) of rows whose audio is identical."""
    groups: dict[str, list[int]] = {}
    for row, fingerprint in enumerate(row_audio_fingerprints(model, inputs)):
        if fingerprint is not None:
            groups.setdefault(fingerprint, []).append(row)
    return [rows for rows in groups.values() if len(rows) > 1]
