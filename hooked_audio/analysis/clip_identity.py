"""Which rows of an input hold the same audio: a fingerprint of each row's audio features, so that helpers can
tell the same clip asked twice (under two hints, in two splits) from two clips."""

from __future__ import annotations

import hashlib

from ..audio.inputs import AudioTextInput


def row_audio_fingerprints(model, inputs: AudioTextInput) -> list[str | None]:
    """Per row, a hash of the audio features of its clips (its feature rows, in order); None for a row without
    audio or where the model cannot tell which feature rows are whose."""
    owners = model.window_rows(inputs)
    features = inputs.audio.get(model.cfg.audio_inputs.features) if model.cfg.audio_inputs else None
    out: list[str | None] = [None] * inputs.shape[0]
    if owners is None or features is None:
        return out
    for row in range(inputs.shape[0]):
        own = features[owners.to(features.device) == row]
        if len(own):
            out[row] = hashlib.sha1(own.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    return out


def rows_sharing_clips(model, inputs: AudioTextInput) -> list[list[int]]:
    """Groups (of two or more) of rows whose audio is identical."""
    groups: dict[str, list[int]] = {}
    for row, fingerprint in enumerate(row_audio_fingerprints(model, inputs)):
        if fingerprint is not None:
            groups.setdefault(fingerprint, []).append(row)
    return [rows for rows in groups.values() if len(rows) > 1]
