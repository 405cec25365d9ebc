"""Music Flamingo's rotary *time* embedding, applied to the audio encoder's output before the projector.

Each audio token ``t`` of a window carries a timestamp in seconds within its clip (its window's index in
the clip times the window length, plus ``t`` times 40 ms). The first ``2 * rotary_dim`` features are
rotated in interleaved pairs ``(x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)`` by angles
``-2π · timestamp · f``, where ``f`` runs over two axes:

- window axis: ``window_index / n_positions`` times the RoPE inverse frequencies;
- time axis:   ``2π · t / n_positions`` times the same frequencies.

What HF does, reproduced exactly (parity depends on it): angles and their cos/sin in float32, the
rotation itself in float64, the result cast back to the input dtype. A clip's windows are found from
the runs of audio placeholders in ``input_ids`` (one run per clip): a window belongs to the run in which
its first token falls, and its index counts from the first window assigned to that run.

Hook points: ``hook_timestamps`` (``[window, token]`` seconds, editable to move audio in time) and
``hook_out`` (``[window, token, d_audio]``, the rotated features the projector reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import nn

from ..hook_points import HookPoint


@dataclass(frozen=True)
class TimeRotaryConfig:
    """HF's values: ``rotary_dim = int(d_audio * partial_rotary_factor)`` features per axis (window axis and
    time axis, so ``2 * rotary_dim`` features rotate), ``theta`` the RoPE base, ``n_positions`` its
    ``max_position_embeddings`` (HF sets it to ``theta``), ``seconds_per_token`` = 4 mel frames."""

    rotary_dim: int
    theta: float = 1200.0
    n_positions: int = 1200
    seconds_per_token: float = 0.04


class TimeRotaryEmbedding(nn.Module):
    def __init__(self, cfg: TimeRotaryConfig):
        super().__init__()
        self.cfg = cfg
        # Plain float32 CPU tensors, not buffers: ``model.to(bfloat16)`` must not round them (HF keeps
        # them in float32) and meta-device construction must not touch them.
        arange = torch.arange(0, cfg.rotary_dim, 2, dtype=torch.float, device="cpu")
        self.inv_freq = 1.0 / (cfg.theta ** (arange / cfg.rotary_dim))
        positions = torch.arange(cfg.n_positions, dtype=torch.float, device="cpu") / float(cfg.n_positions) * (2 * math.pi)
        self.time_angles = (positions[:, None] * self.inv_freq).repeat_interleave(2, dim=-1)  # [n_positions, rotary_dim]
        self.hook_timestamps = HookPoint()  # [window, token]
        self.hook_out = HookPoint()  # [window, token, d_audio]

    def forward(
        self,
        hidden: Float[torch.Tensor, "window token d_audio"],
        token_lengths: Int[torch.Tensor, "window"],
        audio_mask: Bool[torch.Tensor, "batch pos"],
    ) -> Float[torch.Tensor, "window token d_audio"]:
        n_tokens = hidden.shape[1]
        if n_tokens > self.cfg.n_positions:
            raise ValueError(
                f"a window of {n_tokens} audio tokens exceeds the time embedding's {self.cfg.n_positions} positions"
            )
        if 2 * self.cfg.rotary_dim > hidden.shape[-1]:
            raise ValueError(f"rotary_dim {self.cfg.rotary_dim} x 2 exceeds the audio width {hidden.shape[-1]}")
        windows = self.window_indices(token_lengths.to(hidden.device), audio_mask.to(hidden.device))
        step = self.cfg.seconds_per_token
        offsets = torch.arange(n_tokens, device=hidden.device, dtype=torch.float32) * step
        timestamps = self.hook_timestamps(windows[:, None] * n_tokens * step + offsets)
        cos, sin = self.cos_sin(timestamps, n_tokens)
        return self.hook_out(rotate_pairs(hidden, cos, sin))

    @staticmethod
    def window_indices(
        token_lengths: Int[torch.Tensor, "window"], audio_mask: Bool[torch.Tensor, "batch pos"]
    ) -> Int[torch.Tensor, "window"]:
        """Index of each window within its clip; clips are the placeholder runs, in row-major order."""
        edges = torch.diff(nn.functional.pad(audio_mask.int(), (1, 1)), dim=1)
        run_lengths = torch.nonzero(edges == -1)[:, 1] - torch.nonzero(edges == 1)[:, 1]
        if int(run_lengths.sum()) != int(token_lengths.sum()):
            raise ValueError(
                f"input_ids hold {int(run_lengths.sum())} audio placeholders (runs of {run_lengths.tolist()}) but the "
                f"audio windows give {int(token_lengths.sum())} tokens ({token_lengths.tolist()} per window): each "
                "clip needs one run of placeholders as long as all its windows' tokens together"
            )
        first_token = torch.cumsum(token_lengths, 0) - token_lengths
        clip_of_window = torch.searchsorted(torch.cumsum(run_lengths, 0), first_token, right=True)
        first_window = torch.searchsorted(clip_of_window, torch.arange(len(run_lengths), device=clip_of_window.device))
        # HF quirk kept: a window with no tokens at a clip's end counts as the next clip's first window.
        # Past the last clip HF fails with an IndexError; such a window has no tokens, so any index will do.
        clip_of_window = clip_of_window.clamp(max=len(run_lengths) - 1)
        return torch.arange(len(token_lengths), device=token_lengths.device) - first_window[clip_of_window]

    def cos_sin(
        self, timestamps: Float[torch.Tensor, "window token"], n_tokens: int
    ) -> tuple[Float[torch.Tensor, "window token rot"], Float[torch.Tensor, "window token rot"]]:
        """cos and sin of the rotation angles, ``rot = 2 * rotary_dim`` (window axis, then time axis)."""
        inv_freq = self.inv_freq.to(timestamps.device)
        window_duration = self.cfg.seconds_per_token * n_tokens
        window_positions = torch.round(timestamps[:, 0].float() / window_duration) / float(self.cfg.n_positions)
        window_freqs = (window_positions[:, None] * inv_freq).repeat_interleave(2, dim=-1)
        time_freqs = self.time_angles[:n_tokens].to(timestamps.device)
        window_freqs, time_freqs = torch.broadcast_tensors(window_freqs[:, None, :], time_freqs[None])
        freqs = torch.cat((window_freqs, time_freqs), dim=-1) * (-timestamps * 2 * math.pi).float()[..., None]
        return freqs.cos(), freqs.sin()


def rotate_pairs(
    x: Float[torch.Tensor, "window token d"], cos: Float[torch.Tensor, "window token rot"], sin: Float[torch.Tensor, "window token rot"]
) -> Float[torch.Tensor, "window token d"]:
    """Rotate the first ``rot`` features in interleaved pairs, in float64, as HF does."""
    rot = cos.shape[-1]
    x64 = x.double()
    head, tail = x64[..., :rot], x64[..., rot:]
    pairs = head.reshape(*head.shape[:-1], -1, 2)
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    rotated = head * cos.double() + swapped * sin.double()
    return torch.cat((rotated, tail), dim=-1).to(x.dtype)
