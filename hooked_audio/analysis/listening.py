"""Audio-specialist ("listening") heads (Glazer et al. 2026): which heads' audio attention separates correctly
from wrongly answered items, the listening signal of an input, and the silence counterfactual.

- ``audio_attention_per_row``: attention mass from each row's last real position to its audio, per head.
- ``listening_head_scores``: per (layer, head), how well that mass separates correct from wrong rows.
- ``listening_signal``: mean audio attention of chosen heads, per row.
- ``silence_like``: the same inputs (same token layout) with every clip replaced by digital silence.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from jaxtyping import Bool, Float
from scipy.stats import mannwhitneyu, pointbiserialr

from ..audio.inputs import AudioTextInput

# Whisper-style log-mel of an all-zero waveform: log10(1e-10) = -10, clamped, then (x + 4) / 4.
WHISPER_SILENCE = -1.5


@torch.no_grad()
def audio_attention_per_row(model, inputs) -> Float[torch.Tensor, "batch layer head"]:
    """Attention mass from each row's last real position to its audio tokens, every decoder layer and head."""
    inputs = model.to_inputs(inputs)
    audio = inputs.audio_mask
    missing = [r for r in range(audio.shape[0]) if not audio[r].any()]
    if missing:
        raise ValueError(f"rows {missing} have no audio tokens; audio attention is undefined there")
    _, cache = model.run_with_cache(
        inputs, names_filter=lambda n: n.startswith("blocks.") and n.endswith("attn.hook_pattern"))
    rows, last = torch.arange(audio.shape[0]), inputs.last_positions.cpu()
    out = []
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer].float().cpu()[rows, :, last]  # [batch, head, k]
        out.append((pattern * audio[:, None, :].cpu()).sum(-1))
    return torch.stack(out, dim=1)


def _separation(values: np.ndarray, correct: np.ndarray, method: str) -> float:
    if np.ptp(values) == 0:
        return 0.0
    if method == "pointbiserial":
        return float(pointbiserialr(correct, values).statistic)
    if method == "auc":
        u = mannwhitneyu(values[correct], values[~correct]).statistic
        return float(u / (correct.sum() * (~correct).sum()))
    return float(values[correct].mean() - values[~correct].mean())


def listening_head_scores(
    model, inputs, correct: Bool[torch.Tensor, " batch"], method: str = "pointbiserial",
    attention: Float[torch.Tensor, "batch layer head"] | None = None,
) -> Float[torch.Tensor, "layer head"]:
    """Per decoder head, how well its audio attention from the last position separates correct (True) from
    wrong rows: point-biserial r (default), AUC (Mann-Whitney U / n1 n0; 0.5 = chance) or the difference of
    means. ``attention`` reuses ``audio_attention_per_row`` output instead of running the model."""
    if method not in ("pointbiserial", "auc", "diff"):
        raise ValueError(f"method must be 'pointbiserial', 'auc' or 'diff', got {method!r}")
    correct = torch.as_tensor(correct).bool().cpu().numpy()
    if correct.all() or not correct.any():
        raise ValueError("correct must hold both correct and wrong rows to rank heads by separation")
    attention = audio_attention_per_row(model, inputs) if attention is None else attention
    if attention.shape[0] != len(correct):
        raise ValueError(f"correct has {len(correct)} rows but the attention has {attention.shape[0]}")
    values = attention.float().numpy()
    n_layers, n_heads = values.shape[1:]
    scores = [[_separation(values[:, l, h], correct, method) for h in range(n_heads)] for l in range(n_layers)]
    return torch.tensor(scores, dtype=torch.float32)


def listening_signal(
    attention: Float[torch.Tensor, "batch layer head"], heads: list[tuple[int, int]]
) -> Float[torch.Tensor, " batch"]:
    """Mean audio attention of the selected heads, per row."""
    if not heads:
        raise ValueError("heads is empty")
    layers, idx = zip(*heads)
    return attention[:, list(layers), list(idx)].mean(-1)


def silence_like(inputs: AudioTextInput, silence_value: float = WHISPER_SILENCE, features_key: str | None = None) -> AudioTextInput:
    """The same inputs (token ids, masks, frame mask, spans) with every clip's features replaced by those of
    digital silence of the same length. ``silence_value`` is the feature value of an all-zero waveform:
    -1.5 for Whisper-style log-mel features (every family here uses them); ``features_key`` defaults to
    the only floating-point audio tensor."""
    if not inputs.has_audio:
        raise ValueError("the inputs have no audio to replace with silence")
    if features_key is None:
        floats = [k for k, v in inputs.audio.items() if v.is_floating_point()]
        if len(floats) != 1:
            raise ValueError(f"pass features_key= (audio tensors: {sorted(inputs.audio)})")
        features_key = floats[0]
    audio = dict(inputs.audio)
    audio[features_key] = torch.full_like(audio[features_key], silence_value)
    return replace(inputs, audio=audio)


@torch.no_grad()
def silence_direction(model, inputs, heads: list[tuple[int, int]]) -> Float[torch.Tensor, "batch d_model"]:
    """s(x) = mean over the heads' distinct layers l of h^l_last(x) - h^l_last(silence_like(x)), per row
    (``blocks.{l}.hook_resid_post`` at each row's last real position)."""
    inputs = model.to_inputs(inputs)
    layers = sorted({int(l) for l, _ in heads})
    if not layers:
        raise ValueError("heads is empty")
    names = [f"blocks.{l}.hook_resid_post" for l in layers]
    rows, last = torch.arange(inputs.shape[0]), inputs.last_positions.cpu()
    diffs = []
    _, real = model.run_with_cache(inputs, names_filter=names)
    _, quiet = model.run_with_cache(silence_like(inputs), names_filter=names)
    for name in names:
        diffs.append(real[name].cpu()[rows, last] - quiet[name].cpu()[rows, last])
    return torch.stack(diffs).mean(0)


def audio_silence_steering_hooks(
    model, inputs, heads: list[tuple[int, int]], beta: float, adaptive: bool = False,
    control: str | None = None, seed: int = 0,
) -> list[tuple]:
    """``fwd_hooks`` adding ``beta * s(x)`` (``silence_direction``) to the last decoder layer's output
    (``blocks.{L-1}.hook_resid_post``) at each row's last real position, and at every new position during
    ``generate``. ``adaptive=True`` scales beta per row by ``1 - listening signal`` of ``heads`` (a row whose
    heads already attend to the audio is steered less). ``control="random"``: a random direction of the
    same norm per row instead of s(x) (seeded)."""
    if control not in (None, "random"):
        raise ValueError(f"control must be None or 'random', got {control!r}")
    inputs = model.to_inputs(inputs)
    direction = silence_direction(model, inputs, heads)
    if control == "random":
        noise = torch.randn(direction.shape, generator=torch.Generator().manual_seed(seed))
        direction = noise / noise.norm(dim=-1, keepdim=True) * direction.norm(dim=-1, keepdim=True)
    scale = torch.full((inputs.shape[0],), float(beta))
    if adaptive:
        scale = scale * (1 - listening_signal(audio_attention_per_row(model, inputs), heads))
    delta = scale[:, None] * direction  # [batch, d_model]
    last, n_prompt = inputs.last_positions.cpu().long(), inputs.shape[1]

    def steer(resid: torch.Tensor, hook) -> torch.Tensor:
        if resid.shape[0] != delta.shape[0]:
            raise ValueError(f"the steering hooks were built for {delta.shape[0]} rows, the batch has {resid.shape[0]}")
        resid = resid.clone()
        rows = torch.arange(resid.shape[0], device=resid.device)
        where = last.to(resid.device) if resid.shape[1] == n_prompt else torch.full_like(rows, resid.shape[1] - 1)
        resid[rows, where] += delta.to(resid.device, resid.dtype)
        return resid

    return [(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", steer)]
