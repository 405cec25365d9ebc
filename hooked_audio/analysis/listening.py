"""Audio-specialist ("listening") heads (Glazer et al. 2026): which heads' audio attention separates correctly
from wrongly answered items, the listening signal of an input, and the silence counterfactual.

- ``audio_attention_per_row``: attention mass from each row's query positions (the last real one, or every
  generated token) to its audio, per head.
- ``listening_head_scores``: per (layer, head), how well that mass separates correct from wrong rows,
  optionally only within strata.
- ``listening_signal``: mean audio attention of chosen heads, per row.
- ``listening_signal_auc``: how well a signal predicts correctness on held-out rows, optionally only within
  strata (task, prompt layout).
On a mix of tasks or prompt layouts, both steps can credit a head that merely attends more where answers are
easier; within strata only differences between right and wrong answers to the same kind of item count.
- ``silence_direction`` / ``audio_silence_steering_hooks``: the residual difference between the input and a
  counterfactual (silence by default; see ``counterfactuals``), added back at the last layer.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from scipy.stats import mannwhitneyu

from ..audio.inputs import AudioTextInput
from ..cache import same_layout
from ..indices import checked_count, is_index, is_subsequence, refuse_marked_padding, rows_on_padding
from ..kv_cache import prediction_positions
from .ablation import checked_head_pairs
from .counterfactuals import silence_like
from .row_labels import row_labels


def generated_queries(
    inputs: AudioTextInput, tokens: Int[torch.Tensor, "batch total"], eos_token_ids: list[int] | int
) -> tuple[AudioTextInput, Bool[torch.Tensor, "batch total"]]:
    """The prompt extended by what ``generate`` returned (``tokens``: prompt plus continuation), and the mask of
    the positions whose next-token prediction produced a generated token: the prompt's last position and each
    generated token up to the one before the row's first stop token. Tokens after a row's stop token are padding.
    ``eos_token_ids``: the stop token ids (one id or a list)."""
    eos_token_ids = [eos_token_ids] if is_index(eos_token_ids) else eos_token_ids
    try:
        eos_token_ids = list(eos_token_ids)
    except TypeError:
        raise TypeError(f"eos_token_ids must be a token id or a list of them, got {eos_token_ids!r}") from None
    if not all(is_index(t) for t in eos_token_ids):
        raise TypeError(f"eos_token_ids must be integer token ids, got {eos_token_ids!r}")
    n_prompt = inputs.shape[1]
    if tokens.shape[0] != inputs.shape[0] or tokens.shape[1] <= n_prompt or not torch.equal(
            tokens[:, :n_prompt].cpu(), inputs.input_ids.cpu()):
        raise ValueError("tokens must be generate's output for these inputs (the prompt followed by at least one new token)")
    if inputs.attention_mask is not None and not bool(inputs.attention_mask[:, -1].all()):
        raise ValueError("generated queries need left-padded inputs (as generate does)")
    new = tokens[:, n_prompt:].cpu()
    if bool((new == inputs.audio_token_id).any()):  # it would read as a new clip's token in spans and times
        rows = torch.nonzero((new == inputs.audio_token_id).any(-1)).flatten().tolist()
        raise ValueError(f"rows {rows} generated the audio placeholder id {inputs.audio_token_id}: the extended inputs "
                         "would read it as audio; generate with that id suppressed, or cut those rows")
    stopped = torch.isin(new, torch.as_tensor([int(t) for t in eos_token_ids], dtype=new.dtype))
    # a new token is real up to and including the first stop token
    real_new = (stopped.long().cumsum(-1) - stopped.long()) == 0
    prompt_mask = torch.ones(inputs.shape, dtype=torch.long) if inputs.attention_mask is None else inputs.attention_mask.cpu().long()
    mask = torch.cat([prompt_mask, real_new.long()], dim=1)
    query = torch.zeros(mask.shape, dtype=torch.bool)
    query[:, n_prompt - 1 : -1] = real_new  # position p predicts token p+1
    extended = replace(inputs, input_ids=tokens.to(inputs.device), attention_mask=mask.to(inputs.device))
    return extended, query


@torch.no_grad()
def audio_attention_per_row(
    model, inputs, query="last", keys: Bool[torch.Tensor, "batch pos"] | None = None,
) -> Float[torch.Tensor, "batch layer head"]:
    """Attention mass to each row's audio tokens, every decoder layer and head, from each row's last real position
    (``query="last"``) or averaged over the positions of a ``Bool[batch, pos]`` query mask (e.g. every generated
    token: ``inputs, query = generated_queries(inputs, model.generate(inputs), model.cfg.eos_token_ids)``).
    ``keys``: the mass to these positions instead of the audio (e.g. a text hint's tokens). Query positions on
    padding (attention mask 0) are refused."""
    inputs = model.to_inputs(inputs)
    audio = inputs.audio_mask.cpu() if keys is None else torch.as_tensor(keys).cpu().bool()
    if audio.shape != inputs.shape:
        raise ValueError(f"keys is {tuple(audio.shape)} but the inputs are {tuple(inputs.shape)} [batch, pos]")
    refuse_marked_padding(audio, inputs.attention_mask, "the keys mask")
    missing = [r for r in range(audio.shape[0]) if not audio[r].any()]
    if missing:
        raise ValueError(f"rows {missing} have no {'audio tokens' if keys is None else 'key positions'}; "
                         "the attention to them is undefined there")
    if isinstance(query, str):
        if query != "last":
            raise ValueError(f"query must be 'last' or a Bool[batch, pos] mask, got {query!r}")
        query = torch.zeros(audio.shape, dtype=torch.bool)
        query[torch.arange(audio.shape[0]), inputs.last_positions.cpu()] = True
    query = torch.as_tensor(query).cpu().bool()
    if query.shape != audio.shape:
        raise ValueError(f"query mask is {tuple(query.shape)} but the inputs are {tuple(audio.shape)} [batch, pos]")
    empty = [r for r in range(query.shape[0]) if not query[r].any()]
    if empty:
        raise ValueError(f"every row needs at least one query position (rows without: {empty})")
    both = (query & audio).any(-1).nonzero().flatten().tolist()
    if both:
        raise ValueError(f"query positions are also key positions in rows {both}: the attention to the keys from "
                         "inside them is not what listening means; query from text positions (e.g. the last)")
    _refuse_padding_queries(query, inputs)
    _, cache = model.run_with_cache(
        inputs, names_filter=lambda n: n.startswith("blocks.") and n.endswith("attn.hook_pattern"))
    weights = query.float() / query.sum(-1, keepdim=True)  # [batch, q]: mean over each row's queries
    out = []
    for layer in range(model.cfg.n_layers):
        to_audio = (cache["pattern", layer].float().cpu() * audio[:, None, None, :]).sum(-1)  # [batch, head, q]
        out.append(torch.einsum("bhq,bq->bh", to_audio, weights))
    return torch.stack(out, dim=1)


def _refuse_padding_queries(query: Bool[torch.Tensor, "batch pos"], inputs: AudioTextInput) -> None:
    """A query on a padding position (attention mask 0) would average attention the model never uses."""
    on_padding = rows_on_padding(query, inputs.attention_mask)
    if on_padding:
        raise ValueError(
            f"the query mask includes padding positions (attention mask 0) in rows {on_padding}: "
            "queries must be real positions; restrict it, e.g. query & inputs.attention_mask.bool()")


def _correct_flags(correct) -> np.ndarray:
    """``correct`` as a 1-D numpy bool array: bools, or numbers that are all 0 or 1 (a probability is refused)."""
    flags = torch.as_tensor(correct).cpu()
    if flags.ndim != 1:
        raise ValueError(f"correct must be 1-D, one bool per row, got shape {tuple(flags.shape)}")
    if flags.dtype != torch.bool and not bool(((flags == 0) | (flags == 1)).all()):
        raise ValueError("correct must be bools (or 0/1), one per row; threshold scores or probabilities first")
    return flags.bool().numpy()


def _attention_table(attention) -> Float[torch.Tensor, "batch layer head"]:
    attention = torch.as_tensor(attention)
    if attention.ndim != 3:
        raise ValueError(f"attention must be [batch, layer, head] (audio_attention_per_row's output), got shape {tuple(attention.shape)}")
    if not bool(torch.isfinite(attention).all()):
        bad = sorted({int(r) for r in (~torch.isfinite(attention)).nonzero()[:, 0]})
        raise ValueError(f"attention has NaN or inf entries (rows {bad[:8]}{'...' if len(bad) > 8 else ''}): a rank "
                         "score would count them as losses or wins, r and the mean would be NaN; drop those rows")
    return attention


def _strata_groups(strata, n_rows: int) -> list[np.ndarray]:
    """Row indices of each stratum (see ``row_labels``), in order of first appearance; one group of every row
    without strata."""
    if strata is None:
        return [np.arange(n_rows)]
    index: dict = {}
    codes = np.array([index.setdefault(label, len(index)) for label in row_labels(strata, n_rows, "strata")])
    return [np.flatnonzero(codes == code) for code in range(len(index))]


def _pair_auc(signal: np.ndarray, correct: np.ndarray, groups: list[np.ndarray]) -> tuple[float, int]:
    """AUC over the (correct, wrong) pairs inside each group of row indices, and the number of such pairs."""
    wins, pairs = 0.0, 0
    for rows in groups:
        right, wrong = signal[rows][correct[rows]], signal[rows][~correct[rows]]
        wins += float((right[:, None] > wrong[None]).sum() + 0.5 * (right[:, None] == wrong[None]).sum())
        pairs += len(right) * len(wrong)
    return wins / max(pairs, 1), pairs


def _mixed_groups(strata, correct: np.ndarray) -> list[np.ndarray]:
    """The strata's row groups that hold both a correct and a wrong row (only those can be compared)."""
    groups = [rows for rows in _strata_groups(strata, len(correct)) if 0 < correct[rows].sum() < len(rows)]
    if not groups:
        raise ValueError("correct must hold both correct and wrong rows" if strata is None else
                         "no stratum holds both a correct and a wrong row: nothing to compare within strata")
    return groups


def _separation(values: np.ndarray, correct: np.ndarray, method: str, groups: list[np.ndarray]) -> float:
    """How well ``values`` separate correct from wrong rows inside each group (the groups hold both). One group
    of every row gives the plain statistics; with several, only within-group differences count: AUC and
    difference of means over the same-group (correct, wrong) pairs, r as the correlation of the values and
    ``correct`` each centred on its group's mean (the point-biserial r with the group as a fixed effect)."""
    if np.ptp(np.concatenate([values[rows] for rows in groups])) == 0:  # no separation: chance
        return 0.5 if method == "auc" else 0.0
    if method == "auc":
        return _pair_auc(values, correct, groups)[0]
    if method == "diff":
        weighted = [(correct[rows].sum() * (~correct[rows]).sum(), values[rows][correct[rows]].mean()
                     - values[rows][~correct[rows]].mean()) for rows in groups]
        return float(sum(w * d for w, d in weighted) / sum(w for w, _ in weighted))
    centred = [(values[rows] - values[rows].mean(), correct[rows] - correct[rows].mean()) for rows in groups]
    v, c = (np.concatenate(parts) for parts in zip(*centred))
    return 0.0 if not v.any() else float(v @ c / np.sqrt((v @ v) * (c @ c)))


def listening_head_scores(
    model, inputs, correct: Bool[torch.Tensor, " batch"], method: str = "pointbiserial",
    attention: Float[torch.Tensor, "batch layer head"] | None = None, min_attention: float = 0.01, strata=None,
) -> Float[torch.Tensor, "layer head"]:
    """Per decoder head, how well its audio attention from the last position separates correct (True) from
    wrong rows: point-biserial r (default), AUC (Mann-Whitney U / n1 n0; 0.5 = chance) or the difference of
    means. ``attention`` reuses ``audio_attention_per_row`` output instead of running the model (``inputs``, if
    given, must be its rows' inputs).

    ``strata`` (one hashable label per row, e.g. the task): rank by separation within strata only. On a mix of
    tasks, a head that merely attends more on an easier task scores well pooled without telling right from
    wrong on any one task; within strata it does not (see ``_separation``; strata whose rows are all right or
    all wrong drop out). The same caveat as ``listening_signal_auc``'s, at the ranking step.

    A head whose mean audio attention over the rows is below ``min_attention`` scores ``-inf`` (never ranked):
    r and AUC are scale-free, so a head that barely glances at the audio can separate the rows by how it
    glances, and would rank first without being a head that listens. ``min_attention=0`` gives the raw ranking."""
    if method not in ("pointbiserial", "auc", "diff"):
        raise ValueError(f"method must be 'pointbiserial', 'auc' or 'diff', got {method!r}")
    if not 0 <= min_attention < 1:
        raise ValueError(f"min_attention is a share of attention in [0, 1), got {min_attention!r}")
    correct = _correct_flags(correct)
    groups = _mixed_groups(strata, correct)
    attention = audio_attention_per_row(model, inputs) if attention is None else _attention_table(attention)
    n_rows = None if inputs is None else model.to_inputs(inputs).shape[0]
    if n_rows is not None and attention.shape[0] != n_rows:
        raise ValueError(f"the attention table has {attention.shape[0]} rows but inputs has {n_rows}: it was computed "
                         "for other inputs (audio_attention_per_row(model, inputs)), or pass inputs=None")
    if attention.shape[0] != len(correct):
        raise ValueError(f"correct has {len(correct)} rows but the attention has {attention.shape[0]}")
    values = attention.double().cpu().numpy()  # float64: rounding would tie distinct values
    n_layers, n_heads = values.shape[1:]
    scores = torch.tensor([[_separation(values[:, l, h], correct, method, groups) for h in range(n_heads)]
                           for l in range(n_layers)], dtype=torch.float32)
    scores[torch.from_numpy(values.mean(0)) < min_attention] = -float("inf")
    return scores


def listening_signal(
    attention: Float[torch.Tensor, "batch layer head"], heads: list[tuple[int, int]]
) -> Float[torch.Tensor, " batch"]:
    """Mean audio attention of the selected (distinct) heads, per row."""
    heads, attention = checked_head_pairs(heads), _attention_table(attention)
    _, n_layers, n_heads = attention.shape
    outside = [pair for pair in heads if pair[0] >= n_layers or pair[1] >= n_heads]
    if outside:
        raise ValueError(f"heads {outside} are out of range: the attention holds {n_layers} layers x {n_heads} heads")
    layers, idx = zip(*heads)
    return attention[:, list(layers), list(idx)].mean(-1)


@dataclass(frozen=True)
class SignalAUC:
    """``auc``: P(signal of a correct row > that of a wrong row), ties count half, over the compared pairs;
    ``p_value``: one-sided, against no separation; ``pairs``: (correct, wrong) pairs compared."""

    auc: float
    p_value: float
    pairs: int


def listening_signal_auc(
    signal: Float[torch.Tensor, " batch"], correct: Bool[torch.Tensor, " batch"], strata=None,
    n_permutations: int = 2000, seed: int = 0,
) -> SignalAUC:
    """AUC of ``signal`` for correct vs wrong rows. With ``strata`` (one hashable label per row, e.g. (task, hint
    position)), only rows of the same stratum are compared: pooled over a mix, a signal that is merely higher on
    an easier task or prompt layout would score well without telling right from wrong on any one of them. The
    p-value permutes ``correct`` within strata (``n_permutations`` draws; the rank test's without strata), so it
    takes rows as independent: several prompts of the same clip make it too small; score one row per clip.
    ``signal`` is 1-D and finite (a NaN would count as a loss in one path and poison the other)."""
    n_permutations = checked_count(n_permutations, "n_permutations")
    signal = torch.as_tensor(signal).double().cpu()  # float64: rounding would tie distinct values
    if signal.ndim != 1:
        raise ValueError(f"signal must be 1-D, one value per row (listening_signal's output), got shape {tuple(signal.shape)}")
    if not bool(torch.isfinite(signal).all()):
        raise ValueError(f"signal has NaN or inf in rows {torch.nonzero(~torch.isfinite(signal)).flatten().tolist()}: "
                         "drop those rows (and their correct flags) first")
    signal, correct = signal.numpy(), _correct_flags(correct)
    if len(signal) != len(correct):
        raise ValueError(f"signal has {len(signal)} rows but correct has {len(correct)}")
    groups = _mixed_groups(strata, correct)
    if strata is None:
        test = mannwhitneyu(signal[correct], signal[~correct], alternative="greater")
        n_pairs = int(correct.sum() * (~correct).sum())
        return SignalAUC(float(test.statistic / n_pairs), float(test.pvalue), n_pairs)
    auc, n_pairs = _pair_auc(signal, correct, groups)
    rng = np.random.default_rng(seed)
    shuffled = correct.copy()
    at_least = 0
    for _ in range(n_permutations):
        for rows in groups:
            shuffled[rows] = rng.permutation(correct[rows])
        at_least += _pair_auc(signal, shuffled, groups)[0] >= auc
    return SignalAUC(auc, (1 + at_least) / (1 + n_permutations), n_pairs)


def silence_direction(model, inputs, heads: list[tuple[int, int]], reference=None) -> Float[torch.Tensor, "batch d_model"]:
    """s(x) = mean over the heads' distinct layers l of h^l_last(x) - h^l_last(reference), per row
    (``blocks.{l}.hook_resid_post`` at each row's last real position). ``reference`` defaults to
    ``silence_like(x)``; any counterfactual with the same rows works (``matched_noise`` inputs, ``without_audio``)."""
    return _silence_direction_and_relative_norm(model, inputs, heads, reference)[0]


def _silence_direction_and_relative_norm(
    model, inputs, heads: list[tuple[int, int]], reference=None,
) -> tuple[Float[torch.Tensor, "batch d_model"], Float[torch.Tensor, " batch"]]:
    """``silence_direction`` and, per row, its norm over the mean norm of h^l_last(x) at the same layers."""
    inputs = model.to_inputs(inputs)
    reference = silence_like(inputs) if reference is None else model.to_inputs(reference)
    if reference.shape[0] != inputs.shape[0]:
        raise ValueError(f"reference has {reference.shape[0]} rows but the inputs have {inputs.shape[0]}")
    _refuse_unpaired_reference(inputs, reference)
    layers = sorted({layer for layer, _ in checked_head_pairs(heads, model)})
    names = [f"blocks.{l}.hook_resid_post" for l in layers]
    rows = torch.arange(inputs.shape[0])
    last, reference_last = inputs.last_positions.cpu(), reference.last_positions.cpu()
    with torch.no_grad():
        _, real = model.run_with_cache(inputs, names_filter=names)
        _, quiet = model.run_with_cache(reference, names_filter=names)
    real_last = torch.stack([real[name].cpu()[rows, last] for name in names])  # [layer, batch, d_model]
    quiet_last = torch.stack([quiet[name].cpu()[rows, reference_last] for name in names])
    direction = (real_last - quiet_last).mean(0)
    return direction, direction.norm(dim=-1) / real_last.norm(dim=-1).mean(0)


def _refuse_unpaired_reference(inputs: AudioTextInput, reference: AudioTextInput) -> None:
    """Row i of a counterfactual is row i's prompt with its audio replaced or removed: the same text tokens and,
    where it has audio, clips of the same lengths. Anything else (the same prompts in another order, another
    batch) would subtract another row's residual."""
    def text(x, row) -> list[int]:
        return x.input_ids[row].cpu()[x.text_mask[row].cpu()].tolist()

    def clip_lengths(x, row) -> list[int]:
        return [span.end - span.start for span in x.audio_spans[row]]

    def paired(row) -> bool:
        if reference.has_audio:  # silence, noise: the same text, clips of the same lengths
            return text(inputs, row) == text(reference, row) and clip_lengths(inputs, row) == clip_lengths(reference, row)
        # without_audio: the text, less at most the two marker tokens around each clip
        own, theirs = text(inputs, row), text(reference, row)
        return is_subsequence(theirs, own) and len(own) - len(theirs) <= 2 * len(inputs.audio_spans[row])

    rows = [row for row in range(inputs.shape[0]) if not paired(row)]
    if rows:
        raise ValueError(f"reference row(s) {rows} are not the inputs' rows with their audio replaced or removed "
                         "(other text tokens, or clips of other lengths): build it from these inputs "
                         "(silence_like(inputs), without_audio(model, inputs), or build_inputs of the same prompts "
                         "with matched_noise of their clips)")


def audio_silence_steering_hooks(
    model, inputs, heads: list[tuple[int, int]], beta: float, adaptive: bool = False,
    control: str | None = None, seed: int = 0, reference=None, min_relative_norm: float = 0.01,
) -> list[tuple]:
    """``fwd_hooks`` adding ``beta * s(x)`` (``silence_direction``) to the last decoder layer's output
    (``blocks.{L-1}.hook_resid_post``) at each row's last real position, and at every new position during
    ``generate``. ``adaptive=True`` scales beta per row by ``1 - listening signal`` of ``heads`` (a row whose
    heads already attend to the audio is steered less). ``control="random"``: a random direction of the
    same norm per row instead of s(x) (seeded). ``reference``: the counterfactual of ``silence_direction``.

    Where s(x) is under ``min_relative_norm`` of the residual norm at the heads' layers, the audio does not
    reach the last position there (e.g. heads of a layer that does not attend to the audio) and the steering
    would add nothing: refused if that holds on every row, a warning naming the rows otherwise (a row whose
    clip is already silent is one). ``min_relative_norm=0`` steers regardless."""
    if control not in (None, "random"):
        raise ValueError(f"control must be None or 'random', got {control!r}")
    if not math.isfinite(float(beta)):
        raise ValueError(f"beta must be a finite number, got {beta}")
    inputs = model.to_inputs(inputs)
    heads = checked_head_pairs(heads, model)
    direction, relative = _silence_direction_and_relative_norm(model, inputs, heads, reference)
    faint = (relative < min_relative_norm).nonzero().flatten().tolist()
    if faint:
        layers = sorted({layer for layer, _ in heads})
        what = (f"s(x) is under {min_relative_norm:g} of the residual norm at layers {layers} (largest "
                f"{relative.max():.1e})")
        if len(faint) == len(relative):
            raise ValueError(
                f"{what} on every row: the audio does not reach the last position there, so steering with these "
                "heads would add ~0. Choose heads that attend to the audio (listening_head_scores scores heads under "
                "min_attention -inf, top_heads skips them), or pass min_relative_norm=0 to steer anyway")
        warnings.warn(f"{what} on rows {faint}: those rows are steered by ~0 (is their clip silent?)", stacklevel=2)
    if control == "random":
        noise = torch.randn(direction.shape, generator=torch.Generator().manual_seed(seed))
        direction = noise / noise.norm(dim=-1, keepdim=True) * direction.norm(dim=-1, keepdim=True)
    scale = torch.full((inputs.shape[0],), float(beta))
    if adaptive:
        scale = scale * (1 - listening_signal(audio_attention_per_row(model, inputs), heads))
    delta = scale[:, None] * direction  # [batch, d_model]
    steer = functools.partial(_steer_last_positions, built_for=inputs, delta=delta,
                              last=inputs.last_positions.cpu().long(),
                              check_inputs=functools.partial(_refuse_other_rows, inputs))
    return [(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", steer)]


def _refuse_other_rows(built_for: AudioTextInput, inputs: AudioTextInput) -> None:
    """The steering holds s(x) of each row it was built for: refuse a run whose rows hold other tokens or other
    audio in the same layout (another batch of the same prompts and clip lengths, or these rows reordered)."""
    if inputs is built_for or not same_layout(built_for, inputs):
        return  # another layout: the layout check says so
    if not (torch.equal(built_for.input_ids.cpu(), inputs.input_ids.cpu()) and built_for.same_audio_as(inputs)):
        raise ValueError("the audio-silence steering hooks hold s(x) of each row they were built for, but this run's "
                         "rows hold other tokens or other audio (another batch of the same layout, or the same rows in "
                         "another order): they would be steered with those rows' directions. Build the hooks from the "
                         "inputs you run")


def _steer_last_positions(resid: torch.Tensor, hook, *, built_for: AudioTextInput, delta: torch.Tensor,
                          last: torch.Tensor, check_inputs) -> torch.Tensor:
    """Adds ``delta[row]`` at each row's last real position and at every generated one (``built_for`` and
    ``check_inputs`` are held for the model's check, before each forward, that the hook runs on the inputs it was
    built for: another padding side would put the last position elsewhere, other rows would get these rows' s(x))."""
    if resid.shape[0] != delta.shape[0]:
        raise ValueError(f"the steering hooks were built for {delta.shape[0]} rows, the batch has {resid.shape[0]}")
    where = prediction_positions(resid.shape[1], last, built_for.shape[1], "the steering hooks").to(resid.device)
    return resid + where[..., None] * delta.to(resid.device, resid.dtype)[:, None, :]
