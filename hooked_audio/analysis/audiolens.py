"""AudioLens (Yang et al.): how much a layer's residual stream at a position "knows" an auditory attribute.

- ``label_log_probs``: the logit lens restricted to a closed label set (each label's first token),
  every layer including the output, at each row's last (or penultimate) real position.
- ``information_scores``: per layer, the share of rows whose argmax label is the true one (eq. 2).
- ``critical_layer``: the information-weighted mean layer, above chance (eq. 3-4).
- ``audio_masking_hooks``: block attention from the query positions to every audio key (sec. VI-D).
- ``enrichment_hook``: add ``lam * h[src][last]`` to ``h[src+k][last]`` (eq. 5, sec. VI-E).
"""

from __future__ import annotations

import math
import re

import torch
from jaxtyping import Float, Int

from ..audio.inputs import AudioTextInput
from ..cache import AudioActivationCache

_DECODER_SCORES = re.compile(r"^blocks\.(\d+)\.attn\.hook_attn_scores$")


def label_token_ids(model, labels: list[str], leading_space: bool = False) -> Int[torch.Tensor, " label"]:
    """The first token id of each label (with a leading space if ``leading_space``); distinct ids required."""
    if not labels:
        raise ValueError("labels is empty")
    tokenizer = model._require_tokenizer()
    ids = []
    for label in labels:
        tokens = tokenizer.encode((" " if leading_space else "") + label, add_special_tokens=False)
        if not tokens:
            raise ValueError(f"label {label!r} tokenizes to nothing")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"labels {labels} share a first token ({ids}); their log-probs would be indistinguishable")
    return torch.tensor(ids)


def _row_positions(cache: AudioActivationCache, positions) -> Int[torch.Tensor, " batch"]:
    last = cache.inputs.last_positions.cpu().long()
    if isinstance(positions, str):
        if positions == "last":
            return last
        if positions == "penultimate":
            return last - 1
        raise ValueError(f"positions must be 'last', 'penultimate' or one index per row, got {positions!r}")
    index = torch.as_tensor(positions).cpu().long()
    if index.shape != last.shape:
        raise ValueError(f"positions must give one index per row ({len(last)}), got shape {tuple(index.shape)}")
    return index


@torch.no_grad()
def label_log_probs(
    model, cache: AudioActivationCache, labels: list[str], positions="last", leading_space: bool = False
) -> Float[torch.Tensor, "layer batch label"]:
    """Log-softmax over the labels' first tokens of every layer's lens (``accumulated_resid(apply_ln=True)``:
    the embedding, each block's output, and the output layer equal to the model's logits) at each row's
    ``positions`` ("last" real position, "penultimate", or one index per row; padding-aware).
    Needs ``blocks.{l}.hook_resid_pre``/``resid_post`` and ``ln_final.hook_scale`` in a full-position cache."""
    cache.require("label_log_probs")
    ids = label_token_ids(model, labels, leading_space)
    stack = cache.accumulated_resid(apply_ln=True)  # [layer, batch, pos, d_model]
    where = _row_positions(cache, positions).to(stack.device)
    rows = torch.arange(stack.shape[1], device=stack.device)
    if int(where.min()) < 0 or int(where.max()) >= stack.shape[2]:
        raise ValueError(f"positions {where.tolist()} are outside the cache's {stack.shape[2]} positions")
    resid = stack[:, rows, where]  # [layer, batch, d_model]
    logits = model.unembed(resid.to(model.device)).float()[..., ids.to(model.device)]
    return logits.log_softmax(-1).cpu()


def information_scores(
    label_log_probs: Float[torch.Tensor, "layer batch label"], answers: Int[torch.Tensor, " batch"]
) -> Float[torch.Tensor, " layer"]:
    """Share of rows whose highest-probability label (at that layer) is the true one (answers: label indices)."""
    answers = torch.as_tensor(answers).long()
    if label_log_probs.ndim != 3 or answers.shape != label_log_probs.shape[1:2]:
        raise ValueError(f"need log-probs [layer, batch, label] and one answer per row, got {tuple(label_log_probs.shape)} and {tuple(answers.shape)}")
    return (label_log_probs.argmax(-1) == answers[None]).float().mean(-1)


def critical_layer(scores: Float[torch.Tensor, " layer"], n_labels: int, alpha: float = 0.2) -> float:
    """``sum(s_l * l) / sum(s_l)`` with ``s_l = max(0, I_l - (1 + alpha) / n_labels)`` (layers numbered from 0,
    as the rows of ``label_log_probs``: 0 = embedding). NaN when no layer is above (1+alpha)*chance."""
    if n_labels < 2:
        raise ValueError(f"n_labels must be >= 2, got {n_labels}")
    scores = torch.as_tensor(scores, dtype=torch.float64)
    s = (scores - (1 + alpha) / n_labels).clamp(min=0)
    if float(s.sum()) == 0:
        return math.nan
    return float((s * torch.arange(len(s), dtype=torch.float64)).sum() / s.sum())


def audio_masking_hooks(
    inputs: AudioTextInput, layers: list[int] | None = None, query: str = "last"
) -> list[tuple]:
    """``fwd_hooks`` adding the dtype's minimum to ``hook_attn_scores`` from the query positions ("last": each
    row's last real position; "all": every position) to every audio key, at ``layers`` (all decoder layers
    when None). Other attention is unchanged. Hooking the scores switches those layers from SDPA to the
    explicit path, so this works whatever path the model would otherwise take. During ``generate`` (scores
    over fewer queries than the prompt) the newest position is the query."""
    if query not in ("last", "all"):
        raise ValueError(f"query must be 'last' or 'all', got {query!r}")
    audio = inputs.audio_mask.cpu()
    last = inputs.last_positions.cpu().long()
    n_prompt = audio.shape[1]

    def block(scores: torch.Tensor, hook) -> torch.Tensor:
        batch, _, n_q, n_k = scores.shape
        keys = torch.zeros(batch, n_k, dtype=torch.bool)
        keys[:, : min(n_k, n_prompt)] = audio[:, : min(n_k, n_prompt)]
        queries = torch.zeros(batch, n_q, dtype=torch.bool)
        if query == "all":
            queries[:] = True
        elif n_q == n_prompt:
            queries[torch.arange(batch), last] = True
        else:
            queries[:, -1] = True
        blocked = (queries[:, :, None] & keys[:, None, :])[:, None].to(scores.device)
        return scores.masked_fill(blocked, torch.finfo(scores.dtype).min)

    if layers is None:
        return [(lambda name: bool(_DECODER_SCORES.match(name)), block)]
    return [(f"blocks.{int(l)}.attn.hook_attn_scores", block) for l in layers]


def enrichment_hook(
    source_layer: int, k: int = 5, lam: float = 1.0, *, n_layers: int, inputs: AudioTextInput | None = None
) -> list[tuple]:
    """``fwd_hooks``: ``h[target][last] += lam * h[source][last]`` on ``hook_resid_post``, target =
    ``min(source_layer + k, n_layers - 1)`` (clipped to the model's depth; on a model shallower than
    ``source + k`` the last layer is the target; when target == source the hook scales by ``1 + lam``).
    ``last``: each row's last real position from ``inputs`` (else the final position, i.e. left padding)."""
    if not 0 <= source_layer < n_layers:
        raise ValueError(f"source_layer {source_layer} is outside 0..{n_layers - 1}")
    target = min(source_layer + k, n_layers - 1)
    last = None if inputs is None else inputs.last_positions.cpu().long()
    saved = {}

    def where(resid):
        rows = torch.arange(resid.shape[0], device=resid.device)
        if last is None or resid.shape[1] != inputs.shape[1]:
            return rows, torch.full_like(rows, resid.shape[1] - 1)
        return rows, last.to(resid.device)

    def save(resid, hook):
        saved["h"] = resid[where(resid)].clone()
        if target == source_layer:
            return add(resid, hook)
        return resid

    def add(resid, hook):
        resid = resid.clone()
        resid[where(resid)] += lam * saved.pop("h").to(resid.dtype)
        return resid

    hooks = [(f"blocks.{source_layer}.hook_resid_post", save)]
    if target != source_layer:
        hooks.append((f"blocks.{target}.hook_resid_post", add))
    return hooks
