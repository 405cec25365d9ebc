"""Causal tracing of audio-text fusion (Chen et al. 2026, after Meng et al.'s ROME): corrupt the audio, then
restore the clean hidden states of text positions one layer (and position group) at a time, and measure how
much of the clean answer comes back.

Recovery rate ``RR = (P_patched - P_corrupt) / (P_clean - P_corrupt)``: 1 when restoring that layer's text
states brings the clean metric back entirely, 0 when it brings nothing back. A layer where RR is high is one
where the audio's information already sits in the text positions.

- ``position_groups``: the default position groups (early prompt, attribute tokens, late, last).
- ``causal_tracing``: clean, corrupted and patched metrics by layer or by (layer, group), as a ``CausalTrace``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Bool, Float

from ..audio.inputs import AudioTextInput
from ..cache import check_same_text
from .back_patching import back_patching_hooks
from ..indices import checked_layers
from .listening import silence_like


def position_groups(inputs: AudioTextInput, attribute: Bool[torch.Tensor, "batch pos"] | None = None,
                    ) -> dict[str, Bool[torch.Tensor, "batch pos"]]:
    """Text positions split as in Chen et al.: ``early`` (before the first audio token), ``attribute`` (the
    tokens that name the attribute asked about, when ``attribute`` marks them), ``late`` (after the audio,
    other than those and the last), ``last`` (each row's last real position). Groups that are empty in every
    row are left out."""
    text = inputs.text_mask.cpu()
    audio = inputs.audio_mask.cpu()
    positions = torch.arange(text.shape[1]).expand(text.shape)
    first_audio = torch.where(audio, positions, text.shape[1]).min(-1).values[:, None]
    last = torch.zeros_like(text)
    last[torch.arange(text.shape[0]), inputs.last_positions.cpu().long()] = True
    attribute = torch.zeros_like(text) if attribute is None else torch.as_tensor(attribute).cpu().bool() & text
    groups = {
        "early": text & (positions < first_audio) & ~last & ~attribute,
        "attribute": attribute & ~last,
        "late": text & (positions > first_audio) & ~last & ~attribute,
        "last": last,
    }
    return {name: mask for name, mask in groups.items() if bool(mask.any())}


@dataclass
class CausalTrace:
    """Metrics of the clean, the corrupted and each patched run (``patched``: ``[layer]``, or
    ``[layer, group]`` with ``groups`` naming the columns)."""

    clean: float
    corrupt: float
    patched: Float[torch.Tensor, "layer *group"]
    layers: list[int]
    groups: list[str] | None = None

    @property
    def effect(self) -> Float[torch.Tensor, "layer *group"]:
        """``P_patched - P_corrupt``: what restoring each cell brings back, in the metric's units."""
        return self.patched - self.corrupt

    @property
    def recovery(self) -> Float[torch.Tensor, "layer *group"]:
        """RR per cell; refused where the corruption does not move the metric (RR would be 0 / 0)."""
        gap = self.clean - self.corrupt
        if abs(gap) <= 1e-6 * max(1.0, abs(self.clean)):
            raise ValueError(
                f"the corruption does not change the metric (clean {self.clean:.6g}, corrupted {self.corrupt:.6g}): "
                "the recovery rate is undefined; corrupt more strongly (noise_scale) or choose another metric"
            )
        return self.effect / gap

    def first_layer_above(self, threshold: float = 0.5, group: str | None = None) -> int | None:
        """The first layer whose RR exceeds ``threshold`` (in ``group``'s column when by group), or None."""
        rr = self.recovery
        if self.groups is None and group is not None:
            raise ValueError(f"this trace is by layer (no groups); group={group!r} has nothing to select")
        if self.groups is not None:
            if group not in self.groups:
                raise ValueError(f"group must be one of {self.groups}, got {group!r}")
            rr = rr[:, self.groups.index(group)]
        above = torch.nonzero(rr > threshold).flatten()
        return self.layers[int(above[0])] if len(above) else None


def _noise_hook(model, inputs: AudioTextInput, noise_scale: float, seed: int) -> list[tuple]:
    """Noise on each clip's audio embeddings, scaled by that clip's std and drawn from one seeded stream from its
    first token on, so a clip is corrupted alike whatever it is batched with and wherever its row is."""
    clean = model.embed_audio(inputs).float()  # the audio side only: the decoder is not needed for the scale
    lengths = [len(span) for row in inputs.audio_spans for span in row]  # hook_audio_embeds: clips in splice order
    stream = torch.randn((max(lengths), clean.shape[1]), generator=torch.Generator().manual_seed(seed))
    noise = torch.cat([stream[:n] * noise_scale * clip.std() for n, clip in zip(lengths, clean.split(lengths))])

    def add_noise(embeds: torch.Tensor, hook) -> torch.Tensor:
        return embeds + noise.to(embeds.device, embeds.dtype)

    return [("hook_audio_embeds", add_noise)]


def _mean(value, n_rows: int) -> float:
    """The metric as one number: a scalar as is, one value per row averaged; any other shape is refused (a metric
    that forgot to pick its token, ``logits[:, -1]``, would otherwise average the whole vocabulary)."""
    value = torch.as_tensor(value).float()
    if not (value.ndim == 0 or value.shape == (n_rows,)):
        raise ValueError(f"metric must return a scalar or one value per row ({n_rows}), got shape {tuple(value.shape)}: "
                         "pick the token(s) it measures, e.g. logits[rows, last, answer]")
    return float(value.mean())


@torch.no_grad()
def causal_tracing(
    model, clean_inputs, metric: Callable[[torch.Tensor], torch.Tensor | float], corrupt="silence",
    noise_scale: float | None = None, by: str = "layer", groups: dict[str, torch.Tensor] | None = None,
    layers: list[int] | None = None, seed: int | None = None,
) -> CausalTrace:
    """Clean, corrupted and patched values of ``metric(logits)`` (a scalar, or one value per row: averaged).

    ``corrupt``: ``"silence"`` (every clip replaced by silence of the same length, ``silence_like``), ``"noise"``
    (Gaussian noise of std ``noise_scale`` (default 3) x the std of each clip's clean ``hook_audio_embeds``, added to
    them; seeded by ``seed`` (default 0), one draw per token position from a clip's start, the same for every clip,
    so an item's corruption does not depend on its batch; both are refused with another corruption),
    or corrupted inputs of your own: the clean rows' tokens and padding with other audio. ``by="layer"``: restore every text position's
    ``blocks.{l}.hook_resid_post``; ``by="position_group"``: restore one group at a time (``groups``: name ->
    bool mask [batch, pos]; default ``position_groups``). Groups are restored as given: a group of audio
    positions restores the audio span itself (a different question from the text's share of the fusion)."""
    clean_inputs = model.to_inputs(clean_inputs)
    if not clean_inputs.has_audio:
        raise ValueError("causal tracing corrupts the audio; the inputs have none")
    no_audio = [r for r in range(clean_inputs.shape[0]) if not bool(clean_inputs.audio_mask[r].any())]
    if no_audio:
        raise ValueError(f"rows {no_audio} have no audio: the corruption cannot touch them and they would dilute "
                         "the recovery rate; trace rows with audio only")
    if by not in ("layer", "position_group"):
        raise ValueError(f"by must be 'layer' or 'position_group', got {by!r}")
    if groups is not None and by != "position_group":
        raise ValueError("groups= is used by by='position_group' only (by='layer' restores every text position)")
    if not (isinstance(corrupt, str) and corrupt == "noise") and (noise_scale is not None or seed is not None):
        raise ValueError("noise_scale= and seed= are used by corrupt='noise' only")
    corrupt_hooks: list[tuple] = []
    if isinstance(corrupt, str):
        if corrupt == "silence":
            corrupt_inputs = silence_like(clean_inputs)
        elif corrupt == "noise":
            noise_scale = 3.0 if noise_scale is None else noise_scale
            if not 0 <= noise_scale < math.inf:
                raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale}")
            corrupt_inputs = clean_inputs
            corrupt_hooks = _noise_hook(model, clean_inputs, noise_scale, 0 if seed is None else seed)
        else:
            raise ValueError(f"corrupt must be 'silence', 'noise' or corrupted inputs, got {corrupt!r}")
    else:
        corrupt_inputs = model.to_inputs(corrupt)
        check_same_text(clean_inputs, corrupt_inputs, "causal_tracing")
        if corrupt_inputs is clean_inputs or (
            torch.equal(corrupt_inputs.input_ids.cpu(), clean_inputs.input_ids.cpu())
            and corrupt_inputs.same_audio_as(clean_inputs)
        ):
            raise ValueError("the corrupted inputs are the clean inputs: the recovery rate would be 0 / 0")
    n_layers, n_rows = model.cfg.n_layers, clean_inputs.shape[0]
    layers = checked_layers(layers, n_layers)
    if by == "layer":
        masks = {"text": clean_inputs.text_mask.cpu()}
    else:
        masks = position_groups(clean_inputs) if groups is None else {k: torch.as_tensor(v).bool() for k, v in groups.items()}
        empty = [k for k, v in masks.items() if not bool(v.any())]
        if not masks or empty:
            raise ValueError(f"position groups must be non-empty; empty: {empty or 'all'}")

    clean_logits, clean_cache = model.run_with_cache(
        clean_inputs, names_filter=[f"blocks.{l}.hook_resid_post" for l in layers])
    corrupt_logits = model.run_with_hooks(corrupt_inputs, fwd_hooks=corrupt_hooks)
    patched = torch.zeros(len(layers), len(masks))
    for i, layer in enumerate(layers):
        for j, mask in enumerate(masks.values()):
            restore = back_patching_hooks(clean_cache, layer, layer, positions=mask)
            patched[i, j] = _mean(metric(model.run_with_hooks(corrupt_inputs, fwd_hooks=corrupt_hooks + restore)), n_rows)
    return CausalTrace(
        clean=_mean(metric(clean_logits), n_rows), corrupt=_mean(metric(corrupt_logits), n_rows),
        patched=patched[:, 0] if by == "layer" else patched, layers=layers,
        groups=None if by == "layer" else list(masks),
    )
