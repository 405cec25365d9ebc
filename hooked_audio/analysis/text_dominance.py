"""Text dominance ("Who wins the conflict?", Cho et al. 2026): when the audio supports one answer and the text
asserts another, how often the text wins, and how much the text moved the model.

- ``text_dominance``: the rate at which the text's answer wins, the flip rate (among items the model gets
  right without the text, the share that switch to the text's answer once it is added), and per item the
  logit difference ``logit(text answer) - logit(audio answer)`` and the hint effect (its change caused by
  adding the text); confidence intervals (Wilson's for the rates, bootstrap for the means), overall and per group.
- ``without_text``: the same inputs with a piece of text (the hint) removed from each row, for the
  text-free run; ``text_positions``: where that text sits, as a mask.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from scipy.stats import binomtest, bootstrap

from ..audio.inputs import AudioTextInput
from .audiolens import label_token_ids
from .clip_identity import rows_sharing_clips
from ..indices import checked_count, index_tensor, is_index, is_subsequence
from .row_labels import row_labels


def _token_ids(model, answers, n_rows: int, what: str) -> Int[torch.Tensor, " batch"]:
    if isinstance(answers, (torch.Tensor, np.ndarray)):
        ids = index_tensor(answers, f"{what} (token ids)").cpu()
    else:
        answers = list(answers)
        if not all(is_index(a) or isinstance(a, str) for a in answers):
            raise TypeError(f"{what} must be answer strings or integer token ids, got {answers!r}")
        ids = torch.tensor([int(a) if is_index(a) else int(label_token_ids(model, [a])[0]) for a in answers],
                           dtype=torch.long)
    if ids.shape != (n_rows,):
        raise ValueError(f"{what} must give one answer per row ({n_rows}), got {tuple(ids.shape)}")
    if bool(((ids < 0) | (ids >= model.cfg.d_vocab)).any()):
        raise ValueError(f"{what} holds token ids outside the vocabulary (0..{model.cfg.d_vocab - 1})")
    special = set(getattr(getattr(model, "tokenizer", None), "all_special_ids", None) or ()) | {model.cfg.audio_token_id}
    named = [int(i) for i in ids if int(i) in special]
    if named:  # label indices 0, 1, ... (as information_scores takes) read as token ids land on special tokens
        raise ValueError(f"{what} holds special token ids {sorted(set(named))} (e.g. {model.to_string([named[0]])!r}), "
                         "no answer: integers here are token ids, not label indices; pass the answer strings (or "
                         "map label indices to them)")
    return ids


def _find(haystack: list[int], needle: list[int]) -> list[int]:
    """Every start of ``needle`` in ``haystack``."""
    return [start for start in range(len(haystack) - len(needle) + 1) if haystack[start : start + len(needle)] == needle]


def _locate(tokenizer, real: list[int], text: str, row: int) -> tuple[int, int]:
    """``(start, length)`` of ``text`` in a row's real tokens, as the tokenizer encodes it on its own (with or
    without a leading space), as whole words (not "yes" inside "yesterday"); exactly one occurrence over all
    of those spellings."""
    spellings = (text, " " + text, text.strip(), " " + text.strip())
    needles = {tuple(tokenizer.encode(v, add_special_tokens=False)) for v in spellings}
    found = sorted({(start, len(needle)) for needle in needles if needle for start in _find(real, list(needle))
                    if _whole_words(tokenizer, real, start, len(needle))})
    if not found:
        raise ValueError(f"row {row} does not contain the text {text!r} (as whole words, as the tokenizer encodes it); "
                         "pass the text-free inputs yourself")
    if len(found) > 1:
        raise ValueError(f"row {row} contains the text {text!r} {len(found)} times; which one to cut is "
                         "ambiguous: pass a longer text (e.g. the whole hint sentence) or the text-free inputs")
    return found[0]


def _whole_words(tokenizer, real: list[int], start: int, length: int) -> bool:
    """Whether the tokens ``real[start:start + length]`` neither continue the word before them nor run on into
    the word after them, judged on the decoded text."""
    before, match = tokenizer.decode(real[:start]), tokenizer.decode(real[: start + length])
    after = tokenizer.decode(real[: start + length + 1])[len(match):] if start + length < len(real) else ""
    joins_before = bool(before) and before[-1].isalnum() and match[len(before):][:1].isalnum()
    return not joins_before and not after[:1].isalnum()


def _checked_texts(model, inputs, texts: list[str]) -> AudioTextInput:
    inputs = model.to_inputs(inputs)
    if len(texts) != inputs.shape[0]:
        raise ValueError(f"texts must give one string per row ({inputs.shape[0]}), got {len(texts)}")
    return inputs


def without_text(model, inputs, texts: list[str]) -> AudioTextInput:
    """``inputs`` with ``texts[i]`` (e.g. the hint) cut out of row i's tokens and the rows re-padded on the same
    side; audio and every other token unchanged. The text must appear in the row as the tokenizer encodes it
    on its own (with or without a leading space); otherwise build the text-free prompts yourself."""
    inputs = _checked_texts(model, inputs, texts)
    tokenizer = model._require_tokenizer()
    rows = []
    for row, (text, real) in enumerate(zip(texts, inputs.real_token_rows())):
        start, length = _locate(tokenizer, real, text, row)
        kept = real[:start] + real[start + length :]
        if kept.count(inputs.audio_token_id) != real.count(inputs.audio_token_id):
            raise ValueError(f"the text {text!r} of row {row} covers audio placeholders; cut text only")
        rows.append(kept)
    return inputs.with_token_rows(rows, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


def text_positions(model, inputs, texts: list[str]) -> Bool[torch.Tensor, "batch pos"]:
    """The positions of ``texts[i]`` (e.g. the hint) in row i, found as ``without_text`` finds them: a mask for
    hooks that act on the text (attention knockout with ``audio_masking_hooks(keys=...)``, patching)."""
    inputs = _checked_texts(model, inputs, texts)
    tokenizer = model._require_tokenizer()
    real_mask = torch.ones(inputs.shape, dtype=torch.bool) if inputs.attention_mask is None else inputs.attention_mask.cpu().bool()
    mask = torch.zeros(inputs.shape, dtype=torch.bool)
    for row, (text, real) in enumerate(zip(texts, inputs.real_token_rows())):
        start, length = _locate(tokenizer, real, text, row)
        where = torch.nonzero(real_mask[row]).flatten()
        mask[row, where[start : start + length]] = True
    return mask


@torch.no_grad()
def _last_logits(model, inputs: AudioTextInput, batch_size: int, fwd_hooks=()) -> Float[torch.Tensor, "batch vocab"]:
    batch_size = checked_count(batch_size, "batch_size")
    out = []
    for start in range(0, inputs.shape[0], batch_size):
        chunk = inputs.select_rows(list(range(start, min(start + batch_size, inputs.shape[0]))))
        hooks = fwd_hooks(chunk) if callable(fwd_hooks) else fwd_hooks
        logits = model.run_with_hooks(chunk, fwd_hooks=hooks)
        out.append(logits[torch.arange(chunk.shape[0]), chunk.last_positions.long()].float().cpu())
    return torch.cat(out)


def _wins(logits, winner, other, candidates) -> Bool[torch.Tensor, " batch"]:
    """Whether ``winner`` is the model's choice: among ``candidates`` (ids), the full vocabulary ("vocab"), or
    against ``other`` alone (None)."""
    rows = torch.arange(len(winner))
    if candidates is None:
        return logits[rows, winner] > logits[rows, other]
    if isinstance(candidates, str):
        return logits.argmax(-1) == winner
    return candidates[logits[:, candidates].argmax(-1)] == winner


def _mean_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, tuple[float, float]]:
    """The mean and its percentile-bootstrap 95 % interval (NaN for fewer than two values: one row says nothing
    of the spread)."""
    if len(values) == 0:
        return float("nan"), (float("nan"), float("nan"))
    mean = float(values.mean())
    if len(values) < 2:
        return mean, (float("nan"), float("nan"))
    if np.ptp(values) == 0:
        return mean, (mean, mean)
    ci = bootstrap((values,), np.mean, n_resamples=n_boot, method="percentile", random_state=seed).confidence_interval
    return mean, (float(ci.low), float(ci.high))


def _rate_ci(hits: np.ndarray) -> tuple[float, tuple[float, float]]:
    """A share and its 95 % Wilson interval: a bootstrap of a proportion narrows to nothing at 0 or 1 (0 of 12 text
    wins gave [0, 0]) and under-covers for few rows."""
    if len(hits) == 0:
        return float("nan"), (float("nan"), float("nan"))
    ci = binomtest(int(hits.sum()), len(hits)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(hits.mean()), (float(ci.low), float(ci.high))


def _summary(text_wins, logit_diff, hint_effect, right_without, n_boot, seed) -> dict:
    rate, rate_ci = _rate_ci(text_wins.numpy())
    out = {"n": len(text_wins), "rate": rate, "rate_ci": rate_ci}
    out["logit_diff_mean"], out["logit_diff_ci"] = _mean_ci(logit_diff.numpy(), n_boot, seed)
    if hint_effect is not None:
        flips = text_wins[right_without].numpy()
        out["flip_rate"], out["flip_rate_ci"] = _rate_ci(flips)
        out["n_right_without_text"] = int(right_without.sum())
        out["hint_effect_mean"], out["hint_effect_ci"] = _mean_ci(hint_effect.numpy(), n_boot, seed)
    return out


def _warn_unless_text_cut_out(inputs: AudioTextInput, text_free: AudioTextInput) -> None:
    """Warn where a text-free row is not its conflict row with the conflicting text cut out (its tokens are not a
    subsequence of the row's): e.g. another question over the same clips, or rows sharing a clip in another order."""
    def real(x, row) -> list[int]:
        return x.input_ids[row].cpu()[x.real_mask[row].cpu()].tolist()

    rows = [row for row in range(inputs.shape[0]) if not is_subsequence(real(text_free, row), real(inputs, row))]
    if rows:
        warnings.warn(f"text_free rows {rows[:8]} are not their rows with the conflicting text cut out (their tokens are "
                      "not a subsequence of the row's): the hint effect and flip rate then compare other prompts. Build "
                      "them with hints= (without_text), or pair each row with its own prompt", stacklevel=3)


def text_dominance(
    model, inputs, audio_answers, text_answers, text_free=None, hints: list[str] | None = None,
    candidates=None, groups: list[str] | None = None, n_boot: int = 2000, seed: int = 0, batch_size: int = 32,
    fwd_hooks=(),
) -> dict:
    """Text dominance of conflict prompts ``inputs`` (audio supports ``audio_answers``, the text asserts
    ``text_answers``: strings, whose first token is scored, or token ids; one per row).

    The text-free run (the same rows without the conflicting text) is ``text_free``, or built from ``hints``
    (the text to cut from each row, see ``without_text``); without either, only the rate is computed.
    Who "wins": among ``candidates`` (answer strings or ids: the task's closed set), over the whole
    vocabulary (``"vocab"``), or, by default, the text answer against the audio answer alone.

    Returns a dict: ``rate`` (share of rows the text answer wins), ``flip_rate`` (among rows whose audio
    answer wins in the text-free run, the share the text answer wins with the text), per row
    ``logit_diff`` = logit(text) - logit(audio) and ``hint_effect`` = its change caused by the text, their
    means, with 95 % intervals (``*_ci``: Wilson's for the rates, percentile-bootstrap over rows for the means;
    NaN for the means of one row), and ``by_group`` (the same per ``groups`` label, e.g. the task). The intervals
    take rows as independent: rows that share a clip (the same clip under several hints) are warned of, as their
    intervals are then too narrow; score one conflict per clip, or resample clips yourself.

    ``fwd_hooks``: an intervention on the conflict run only (the text-free run stays the unhooked reference, so
    the flip rate and hint effect measure the intervention too): a list of hooks, or a function of each batch
    of rows (an ``AudioTextInput``) returning them, for hooks built per row such as
    ``audio_silence_steering_hooks``."""
    inputs = model.to_inputs(inputs)
    n = inputs.shape[0]
    shared = rows_sharing_clips(model, inputs)
    if shared:
        warnings.warn(f"rows {shared[:3]}{' ...' if len(shared) > 3 else ''} hold the same clips: the intervals count "
                      "them as independent rows, so they are too narrow (the same clip under several hints is one "
                      "observation of the model's hearing); score one conflict per clip, or resample clips yourself")
    audio_ids = _token_ids(model, audio_answers, n, "audio_answers")
    text_ids = _token_ids(model, text_answers, n, "text_answers")
    if bool((audio_ids == text_ids).any()):
        rows = torch.nonzero(audio_ids == text_ids).flatten().tolist()
        raise ValueError(f"rows {rows} have the same audio and text answer (or answers sharing their first token, "
                         "which is what is scored): not a conflict")
    if candidates is not None and not isinstance(candidates, str):
        candidates = _token_ids(model, candidates, len(candidates), "candidates")
        if len(set(candidates.tolist())) != len(candidates):
            raise ValueError("candidates share first tokens; the winner among them would be ambiguous")
        missing = [r for r in range(n) if audio_ids[r] not in candidates or text_ids[r] not in candidates]
        if missing:
            raise ValueError(f"rows {missing} have an answer outside the candidates")
    elif isinstance(candidates, str) and candidates != "vocab":
        raise ValueError(f"candidates must be answer strings / ids, 'vocab' or None, got {candidates!r}")
    if text_free is not None and hints is not None:
        raise ValueError("pass either text_free= or hints=, not both")
    if hints is not None:
        text_free = without_text(model, inputs, hints)
    if groups is not None:
        groups = row_labels(groups, n, "groups")

    rows = torch.arange(n)
    logits = _last_logits(model, inputs, batch_size, fwd_hooks)
    text_wins = _wins(logits, text_ids, audio_ids, candidates)
    logit_diff = logits[rows, text_ids] - logits[rows, audio_ids]
    hint_effect = right_without = None
    if text_free is not None:
        text_free = model.to_inputs(text_free)
        if text_free.shape[0] != n:
            raise ValueError(f"text_free has {text_free.shape[0]} rows, inputs {n}: pair each row")
        if not text_free.same_audio_as(inputs):
            raise ValueError("text_free carries other audio than inputs: each text-free row must hold its row's clips "
                             "(the same clips, in the same order), or the hint effect compares different audio")
        _warn_unless_text_cut_out(inputs, text_free)
        free = _last_logits(model, text_free, batch_size)
        right_without = _wins(free, audio_ids, text_ids, candidates)
        hint_effect = logit_diff - (free[rows, text_ids] - free[rows, audio_ids])
    result = _summary(text_wins, logit_diff, hint_effect, right_without, n_boot, seed)
    result.update(text_wins=text_wins, logit_diff=logit_diff, hint_effect=hint_effect,
                  right_without_text=right_without, by_group={})
    for group in sorted(set(groups or [])):
        keep = torch.tensor([g == group for g in groups])
        result["by_group"][group] = _summary(
            text_wins[keep], logit_diff[keep], None if hint_effect is None else hint_effect[keep],
            None if right_without is None else right_without[keep], n_boot, seed)
    return result
