"""AudioLens (Yang et al.): how much a layer's residual stream at a position "knows" an auditory attribute.

- ``label_log_probs``: the logit lens restricted to a closed label set (each label's first token),
  every layer including the output, at each row's last (or penultimate) real position.
- ``information_scores``: per layer, the share of rows whose argmax label is the true one (eq. 2).
- ``critical_layer``: the information-weighted mean layer, above chance (eq. 3-4).
- ``audio_masking_hooks``: block attention from the query positions to every audio key (sec. VI-D).
- ``enrichment_hook``: add ``lam * h[src][last]`` to ``h[src+k][last]`` (eq. 5, sec. VI-E).
- ``attribute_information``: the above over a batch: scores at the last and penultimate position, split by
  correctness, critical layers and restricted accuracy.
- ``critical_layer_correlation``: Pearson r (and p) between critical layer and accuracy across groups
  (tasks x prompt formats).
- ``enrichment_sweep``: the paper's protocol: the source layer chosen on a probing split, lambda swept on a
  disjoint test split, against a random source layer per item over several seeds.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from scipy.stats import pearsonr

from ..audio.inputs import AudioTextInput
from ..cache import AudioActivationCache, check_cache_model, check_final_position_is_last
from ..evaluation.scoring import first_token_ids
from ..indices import checked_count, checked_layers, index_tensor, is_index, refuse_marked_padding
from ..kv_cache import prediction_positions
from ..runs import current_run
from .clip_identity import row_audio_fingerprints

_DECODER_SCORES = re.compile(r"^blocks\.(\d+)\.attn\.hook_attn_scores$")


def label_token_ids(model, labels: list[str], leading_space: bool = False) -> Int[torch.Tensor, " label"]:
    """The first token id of each label (with a leading space if ``leading_space``): distinct and known ids,
    checked as the evaluation's restricted scoring checks its choices (``first_token_ids``)."""
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
        raise TypeError(f"labels must be a list of label strings, got {labels!r}")
    if len(labels) == 0:
        raise ValueError("labels is empty")
    prefix = " " if leading_space else ""
    return torch.tensor(first_token_ids(model._require_tokenizer(), [prefix + label for label in labels]))


def _row_positions(cache: AudioActivationCache, positions) -> Int[torch.Tensor, " batch"]:
    last = cache.inputs.last_positions.cpu().long()
    if isinstance(positions, str):
        if positions == "last":
            return last
        if positions != "penultimate":
            raise ValueError(f"positions must be 'last', 'penultimate' or one index per row, got {positions!r}")
        index = last - 1
        mask = cache.inputs.attention_mask
        first = torch.zeros_like(last) if mask is None else mask.cpu().long().argmax(-1)  # each row's first real one
        single = torch.nonzero(index < first).flatten().tolist()
        if single:
            raise ValueError(f"rows {single} have one real token, so no penultimate position: drop them, or use "
                             "positions='last'")
    else:
        index = index_tensor(positions, "positions").cpu()
    if index.shape != last.shape:
        raise ValueError(f"positions must give one index per row ({len(last)}), got shape {tuple(index.shape)}")
    mask = cache.inputs.attention_mask
    n_pos = cache.inputs.shape[1]
    if mask is not None and bool(((index >= 0) & (index < n_pos)).all()):
        padded = torch.nonzero(~mask.cpu().bool()[torch.arange(len(index)), index]).flatten().tolist()
        if padded:
            raise ValueError(f"positions {index[padded].tolist()} of rows {padded} are padding: give real token positions")
    return index


@torch.no_grad()
def label_log_probs(
    model, cache: AudioActivationCache, labels: list[str], positions="last", leading_space: bool = False
) -> Float[torch.Tensor, "layer batch label"]:
    """Log-softmax over the labels' first tokens of every layer's lens (``accumulated_resid(apply_ln=True)``:
    the embedding, each block's output, and the output layer equal to the model's logits) at each row's
    ``positions`` ("last" real position, "penultimate", or one index per row; padding-aware).
    Needs ``blocks.{l}.hook_resid_pre``/``resid_post`` and ``ln_final.hook_scale`` in a full-position cache."""
    return _label_log_probs_at(model, cache, labels, [positions], leading_space)[0]


def _label_log_probs_at(model, cache, labels, positions_list, leading_space) -> list[torch.Tensor]:
    """``label_log_probs`` at several position rules, from one accumulated residual stack."""
    cache.require("label_log_probs")
    check_cache_model(cache, model, "label_log_probs")
    ids = label_token_ids(model, labels, leading_space)
    if len(ids) < 2:
        raise ValueError(f"labels {labels!r} is one label: a log-softmax over one entry is 0 at every layer; pass the "
                         "task's answer set (two labels or more)")
    stack = cache.accumulated_resid(apply_ln=True)  # [layer, batch, pos, d_model]
    rows = torch.arange(stack.shape[1], device=stack.device)
    out = []
    for positions in positions_list:
        where = _row_positions(cache, positions).to(stack.device)
        if int(where.min()) < 0 or int(where.max()) >= stack.shape[2]:
            raise ValueError(f"positions {where.tolist()} are outside the cache's {stack.shape[2]} positions")
        resid = stack[:, rows, where]  # [layer, batch, d_model]
        logits = model.unembed(resid.to(model.device, model.W_U.dtype)).float()[..., ids.to(model.device)]
        out.append(logits.log_softmax(-1).cpu())
    return out


def _label_indices(answers, n_rows: int, n_labels: int) -> Int[torch.Tensor, " batch"]:
    """``answers`` as a long tensor of label indices, one per row, each in ``0..n_labels-1`` (else ValueError)."""
    answers = index_tensor(answers, "answers (label indices)").cpu()
    if answers.shape != (n_rows,):
        raise ValueError(f"answers must give one label index per row ({n_rows}), got shape {tuple(answers.shape)}")
    if bool(((answers < 0) | (answers >= n_labels)).any()):
        raise ValueError(f"answers are label indices 0..{n_labels - 1}, got {sorted(set(answers.tolist()))}")
    return answers


def information_scores(
    label_log_probs: Float[torch.Tensor, "layer batch label"], answers: Int[torch.Tensor, " batch"]
) -> Float[torch.Tensor, " layer"]:
    """Share of rows whose highest-probability label (at that layer) is the true one (answers: label indices)."""
    if label_log_probs.ndim != 3:
        raise ValueError(f"need log-probs [layer, batch, label], got shape {tuple(label_log_probs.shape)}")
    answers = _label_indices(answers, label_log_probs.shape[1], label_log_probs.shape[2])
    if bool(torch.isnan(label_log_probs).any()):
        raise ValueError("label_log_probs has NaN entries: argmax would take a NaN as the highest label")
    return (label_log_probs.argmax(-1) == answers[None]).float().mean(-1)


def critical_layer(scores: Float[torch.Tensor, " layer"], n_labels: int, alpha: float = 0.2) -> float:
    """``sum(s_l * l) / sum(s_l)`` with ``s_l = max(0, I_l - (1 + alpha) / n_labels)`` (layers numbered from 0,
    as the rows of ``label_log_probs``: 0 = embedding). NaN when no layer is above (1+alpha)*chance."""
    if not is_index(n_labels) or n_labels < 2:
        raise ValueError(f"n_labels must be an integer >= 2, got {n_labels!r}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0 (the margin above chance), got {alpha}")
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one information score per layer [layer], got shape {tuple(scores.shape)}")
    if not bool(((scores >= 0) & (scores <= 1)).all()):  # NaN fails too
        raise ValueError(f"scores must be shares of rows in [0, 1] (information_scores' output), got {scores.tolist()}")
    s = (scores - (1 + alpha) / n_labels).clamp(min=0)
    if float(s.sum()) == 0:
        return math.nan
    return float((s * torch.arange(len(s), dtype=torch.float64)).sum() / s.sum())


def audio_masking_hooks(
    inputs: AudioTextInput, layers: list[int] | None = None, query: str = "last",
    keys: Bool[torch.Tensor, "batch pos"] | None = None, n_layers: int | None = None,
) -> list[tuple]:
    """``fwd_hooks`` adding the dtype's minimum to ``hook_attn_scores`` from the query positions ("last": each
    row's last real position; "all": every position) to every audio key, at ``layers`` (all decoder layers
    when None). Other attention is unchanged. Hooking the scores switches those layers from SDPA to the
    explicit path, so this works whatever path the model would otherwise take. During ``generate`` (scores
    over fewer queries than the prompt) the newest position is the query. ``keys``: knock out attention to
    these positions instead of the audio (e.g. a text hint's tokens). ``layers`` are distinct layer indices
    (checked against ``n_layers`` when given). The hooks refuse to run on inputs other than ``inputs``."""
    if query not in ("last", "all"):
        raise ValueError(f"query must be 'last' or 'all', got {query!r}")
    audio = inputs.audio_mask.cpu() if keys is None else torch.as_tensor(keys).cpu().bool()
    if audio.shape != inputs.shape:
        raise ValueError(f"keys is {tuple(audio.shape)} but the inputs are {tuple(inputs.shape)} [batch, pos]")
    refuse_marked_padding(audio, inputs.attention_mask, "the keys mask")
    _refuse_queries_left_without_keys(audio, inputs, query)
    hook = functools.partial(_block_audio_keys, built_for=inputs, keys=audio, query=query,
                             last=inputs.last_positions.cpu().long())
    if layers is None:
        return [(lambda name: bool(_DECODER_SCORES.match(name)), hook)]
    return [(f"blocks.{l}.attn.hook_attn_scores", hook) for l in checked_layers(layers, n_layers)]


def _refuse_queries_left_without_keys(blocked: Bool[torch.Tensor, "batch pos"], inputs: AudioTextInput,
                                      query: str) -> None:
    """Refuse blocking every key a query may attend to: its softmax would then spread over the masked columns
    (future tokens, padding) alike instead of attending nowhere."""
    real = inputs.real_mask.cpu()
    open_keys = (real & ~blocked).cumsum(-1)  # at column q: the keys query q may still attend to
    if query == "last":
        stranded = open_keys[torch.arange(inputs.shape[0]), inputs.last_positions.cpu().long()] == 0
    else:
        stranded = (real & (open_keys == 0)).any(-1)
    rows = stranded.nonzero().flatten().tolist()
    if rows:
        raise ValueError(f"the masking blocks every key that a query of rows {rows} may attend to (query={query!r}): "
                         "its attention would spread over future tokens and padding instead. Block fewer keys (the "
                         "audio, a hint), or leave the row out")


def _block_audio_keys(scores: torch.Tensor, hook, *, built_for: AudioTextInput, keys: torch.Tensor, query: str,
                      last: torch.Tensor) -> torch.Tensor:
    """``audio_masking_hooks``' hook: the blocked (query, key) pairs of each row set to the dtype's minimum
    (``built_for`` is held for the model's check, before each forward, that the hook runs on the inputs it was built for)."""
    batch, _, n_q, n_k = scores.shape
    n_prompt = keys.shape[1]
    if batch != keys.shape[0] or n_k < n_prompt:
        raise ValueError(
            f"{hook.name} has {batch} rows x {n_k} positions but the masking hooks were built for "
            f"{keys.shape[0]} x {n_prompt}: build audio_masking_hooks from the inputs you run"
        )
    blocked_keys = torch.zeros(batch, n_k, dtype=torch.bool)
    blocked_keys[:, :n_prompt] = keys
    queries = torch.ones(batch, n_q, dtype=torch.bool) if query == "all" else prediction_positions(n_q, last)
    blocked = (queries[:, :, None] & blocked_keys[:, None, :])[:, None].to(scores.device)
    return scores.masked_fill(blocked, torch.finfo(scores.dtype).min)


def enrichment_hook(
    source_layer: int | Int[torch.Tensor, " batch"], k: int = 5, lam: float = 1.0, *, n_layers: int,
    inputs: AudioTextInput | None = None,
) -> list[tuple]:
    """``fwd_hooks``: ``h[target][last] += lam * h[source][last]`` on ``hook_resid_post``, target =
    ``min(source + k, n_layers - 1)`` (clipped to the model's depth; on a model shallower than ``source + k``
    the last layer is the target; when target == source the hook scales by ``1 + lam``). ``source_layer`` is one
    layer, or one per row (the random-layer baseline). ``last``: each row's last real position from ``inputs``
    (else the final position: the model refuses it on a batch whose rows end in padding)."""
    per_row = not is_index(source_layer)
    sources = index_tensor(source_layer, "source_layer").reshape(-1)
    if per_row and (inputs is None or sources.ndim != 1 or len(sources) != inputs.shape[0]):
        raise ValueError("a source layer per row needs inputs= with one row per source layer")
    if int(sources.min()) < 0 or int(sources.max()) >= n_layers:
        raise ValueError(f"source_layer {source_layer} is outside 0..{n_layers - 1}")
    if not is_index(k) or k < 0:
        raise ValueError(f"k (target = source + k) must be an integer >= 0, got {k!r}")
    if not math.isfinite(lam):
        raise ValueError(f"lam must be a finite number, got {lam}")
    targets = (sources + int(k)).clamp(max=n_layers - 1)
    last = None if inputs is None else inputs.last_positions.cpu().long()
    hook = functools.partial(_enrich, built_for=inputs, last=last, sources=sources, targets=targets, per_row=per_row,
                             lam=lam, saved={},
                             check_inputs=check_final_position_is_last if inputs is None else None)
    layers = sorted({int(l) for l in sources} | {int(l) for l in targets})
    return [(f"blocks.{layer}.hook_resid_post", hook) for layer in layers]


def _enrich(resid, hook, *, built_for: AudioTextInput | None, last, sources, targets, per_row: bool, lam: float,
            saved: dict, check_inputs):
    """``enrichment_hook``'s hook: saves h[source][last] at the source layers and adds it at the targets
    (``check_inputs``: built without inputs, the run is checked against right padding)."""
    layer, n = int(hook.name.split(".")[1]), resid.shape[0]
    if (per_row and n != len(sources)) or (built_for is not None and n != built_for.shape[0]):
        raise ValueError(f"the enrichment hooks were built for {len(sources) if per_row else built_for.shape[0]} "
                         f"rows, the batch has {n}: build them from the inputs you run")
    src, tgt = (sources, targets) if per_row else (sources.expand(n), targets.expand(n))
    where = prediction_positions(resid.shape[1], last, None if built_for is None else built_for.shape[1],
                                 f"the enrichment hooks ({hook.name})").expand(n, -1).to(resid.device)
    run = current_run()  # the source is kept for this run only (another thread's, or a later, run never sees it)
    saved = saved if run is None else run.state.setdefault(id(saved), {})
    if (src == layer).any():
        saved[layer] = resid.clone()
    if (tgt == layer).any():
        resid = resid.clone()
        for source in sorted({int(s) for s in src[tgt == layer]}):
            chosen = where & ((src == source) & (tgt == layer)).to(resid.device)[:, None]
            resid[chosen] += lam * saved[source][chosen].to(resid.dtype)
    return resid


def _lens_names(name: str) -> bool:
    return "resid" in name or name == "ln_final.hook_scale"


def _restricted_correct(model, inputs, labels, answers, fwd_hooks=(), leading_space=False) -> Bool[torch.Tensor, " batch"]:
    ids = label_token_ids(model, labels, leading_space).to(model.device)
    with torch.no_grad():
        logits = model.run_with_hooks(inputs, fwd_hooks=list(fwd_hooks))
    last = logits[torch.arange(inputs.shape[0]), inputs.last_positions.long()][:, ids]
    return last.argmax(-1).cpu() == _label_indices(answers, inputs.shape[0], len(labels))


@dataclass
class AttributeInformation:
    """AudioLens on one group of items (e.g. one task in one prompt format). Layers are the rows of
    ``label_log_probs`` (0 = embedding, last = output); ``correct`` is the output layer's restricted argmax, and
    ``scores(rows="correct"|"wrong")`` splits by it (NaN where a split is empty)."""

    labels: list[str]
    log_probs: Float[torch.Tensor, "layer batch label"]
    log_probs_penultimate: Float[torch.Tensor, "layer batch label"]
    answers: Int[torch.Tensor, " batch"]
    correct: Bool[torch.Tensor, " batch"] = field(init=False)

    def __post_init__(self):
        self.correct = self.log_probs[-1].argmax(-1) == self.answers

    def scores(self, position: str = "last", rows: str = "all") -> Float[torch.Tensor, " layer"]:
        """Information scores at the ``"last"`` or ``"penultimate"`` position over ``"all"``, ``"correct"`` or
        ``"wrong"`` rows."""
        if position not in ("last", "penultimate") or rows not in ("all", "correct", "wrong"):
            raise ValueError(f"position must be 'last' or 'penultimate' and rows 'all', 'correct' or 'wrong'; got "
                             f"{position!r}, {rows!r}")
        lp = {"last": self.log_probs, "penultimate": self.log_probs_penultimate}[position]
        keep = {"all": torch.ones_like(self.correct), "correct": self.correct, "wrong": ~self.correct}[rows]
        if not keep.any():
            return torch.full((lp.shape[0],), math.nan)
        return information_scores(lp[:, keep], self.answers[keep])

    def critical_layer(self, position: str = "last", rows: str = "all", alpha: float = 0.2) -> float:
        scores = self.scores(position, rows)
        return math.nan if torch.isnan(scores).any() else critical_layer(scores, len(self.labels), alpha)

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())


def attribute_information(
    model, inputs, labels: list[str], answers: Int[torch.Tensor, " batch"], batch_size: int = 16,
    leading_space: bool = False,
) -> AttributeInformation:
    """``label_log_probs`` at the last and penultimate real position of every row, run in batches of
    ``batch_size`` (only the residual stream is cached)."""
    inputs = model.to_inputs(inputs)
    answers = _label_indices(answers, inputs.shape[0], len(labels))
    batch_size = checked_count(batch_size, "batch_size")
    last, penultimate = [], []
    for start in range(0, inputs.shape[0], batch_size):
        chunk = inputs.select_rows(list(range(start, min(start + batch_size, inputs.shape[0]))))
        with torch.no_grad():
            _, cache = model.run_with_cache(chunk, names_filter=_lens_names)
            at_last, at_penultimate = _label_log_probs_at(model, cache, labels, ["last", "penultimate"], leading_space)
        last.append(at_last)
        penultimate.append(at_penultimate)
    return AttributeInformation(list(labels), torch.cat(last, 1), torch.cat(penultimate, 1), answers)


def critical_layer_correlation(
    groups: dict[str, AttributeInformation], position: str = "last", alpha: float = 0.2
) -> dict:
    """Pearson correlation between each group's critical layer and its accuracy (AudioLens: across tasks and
    prompt formats). Groups whose critical layer is undefined (no layer above (1+alpha) x chance) are left out
    and listed under ``"undefined"``; at least three defined groups are needed. ``p`` is Pearson's, which takes
    the groups as independent: groups built from the same clips (one task under several prompt formats) are not,
    and then ``p`` is too small (with 7 tasks x 4 formats of the same clips and no relation at all, p < 0.05 a third
    of the time); read it as an upper bound on the evidence, or correlate one group per task."""
    points = {name: (info.critical_layer(position, alpha=alpha), info.accuracy) for name, info in groups.items()}
    defined = {name: p for name, p in points.items() if not math.isnan(p[0])}
    if len(defined) < 3:
        raise ValueError(f"a correlation needs at least 3 groups with a defined critical layer, got {sorted(defined)}")
    layers, accuracies = (np.array(v) for v in zip(*defined.values()))
    if np.ptp(layers) == 0 or np.ptp(accuracies) == 0:
        raise ValueError("critical layers or accuracies are all equal across groups; the correlation is undefined")
    result = pearsonr(layers, accuracies)
    return {"r": float(result.statistic), "p": float(result.pvalue), "n": len(defined), "points": points,
            "undefined": sorted(set(points) - set(defined))}


@dataclass
class EnrichmentSweep:
    """Restricted accuracy on the test split per lambda: with the chosen source layer, and with a random source
    layer per item (mean and std over seeds)."""

    source_layer: int
    target_layer: int
    lams: list[float]
    chosen: list[float]
    random_mean: list[float]
    random_std: list[float]


def enrichment_sweep(
    model, probe_inputs, probe_answers, test_inputs, test_answers, labels: list[str], lams=(0.0, 0.5, 1.0),
    k: int = 5, n_seeds: int = 5, seed: int = 0, leading_space: bool = False,
) -> EnrichmentSweep:
    """Enrichment (AudioLens eq. 5): the source layer is the block whose output carries the most information about
    the label among the *probing* split's wrongly answered rows (blocks 0..L-2; the last block would enrich itself);
    ``lam * h[source][last]`` is added to ``h[min(source + k, L - 1)][last]`` on the disjoint *test* split. The
    baseline draws a source layer per test item from the same range, over ``n_seeds`` seeds. ``leading_space``:
    score each label by its first token with a leading space (as ``label_log_probs``)."""
    n_layers = model.cfg.n_layers
    if n_layers < 2:
        raise ValueError("enrichment needs at least 2 decoder layers")
    n_seeds = checked_count(n_seeds, "n_seeds (random-layer baseline draws)")
    probe_inputs, test_inputs = model.to_inputs(probe_inputs), model.to_inputs(test_inputs)
    probed = set(row_audio_fingerprints(model, probe_inputs)) - {None}
    overlap = [row for row, f in enumerate(row_audio_fingerprints(model, test_inputs)) if f in probed]
    if overlap:
        raise ValueError(f"test rows {overlap[:5]}{' ...' if len(overlap) > 5 else ''} hold clips of the probing split: "
                         "the source layer chosen on them would be tested on them; use disjoint clips")
    probe = attribute_information(model, probe_inputs, labels, probe_answers, leading_space=leading_space)
    wrong = probe.scores("last", "wrong")
    if torch.isnan(wrong).any():
        raise ValueError("the probing split has no wrongly answered rows to choose the source layer on")
    source = int(wrong[1:n_layers].argmax())  # rows 1..L-1 of the lens = outputs of blocks 0..L-2
    chosen, random_mean, random_std = [], [], []
    accuracy = lambda hooks: float(  # noqa: E731
        _restricted_correct(model, test_inputs, labels, test_answers, hooks, leading_space).float().mean())
    for lam in lams:
        hooks = enrichment_hook(source, k, lam, n_layers=n_layers, inputs=test_inputs)
        chosen.append(accuracy(hooks))
        draws = []
        for s in range(n_seeds):
            layers = torch.randint(0, n_layers - 1, (test_inputs.shape[0],), generator=torch.Generator().manual_seed(seed + s))
            hooks = enrichment_hook(layers, k, lam, n_layers=n_layers, inputs=test_inputs)
            draws.append(accuracy(hooks))
        random_mean.append(float(np.mean(draws)))
        random_std.append(float(np.std(draws, ddof=1)) if n_seeds > 1 else 0.0)
    return EnrichmentSweep(source, min(source + k, n_layers - 1), list(lams), chosen, random_mean, random_std)
