"""The Qwen-Omni audio towers (Qwen2.5-Omni and Qwen3-Omni thinkers): a Whisper-like encoder that works on
fixed chunks instead of one 30 s window.

    features [clip, mel, frame]  (any number of frames; padded frames past each clip's length are ignored)
    -> split into chunks of ``chunk_mel_frames`` mel frames, conv stem on each chunk   hook_conv_out
    -> + sinusoidal positions that restart at 0 in every chunk                          hook_pos_embed
    -> pre-LN blocks; a frame attends only inside its window of ``attention_window_frames`` frames
    -> (Qwen2.5: average pairs of frames, hook_pooled) -> ln_post -> hook_out            [clip, token, d]

Differences from Qwen2-Audio's encoder (``audio_encoder.HookedAudioEncoder``):
- Qwen2.5-Omni: Whisper conv stem run per 2 s chunk (HF ``n_window`` = 100 frames after the stem), with
  the stem's first conv output zeroed past the clip's end; attention windows = chunks; fixed sinusoids
  instead of learned positions. Its output projection (HF ``audio_tower.proj``) is this library's
  ``projector``, so ``hook_audio_embeds`` is what HF splices in.
- Qwen3-Omni: a 2-D conv stem (``components/conv2d_stem.py``) per 1 s chunk (13 frames), attention windows
  of several chunks (HF ``n_window_infer``), k bias, no pooling; ln_post -> 2-layer GELU projector.

Layout: the stem, position, pooling and output hooks are ``[clip, frame, ...]``. The blocks run with every
attention window as one batch row, exactly the computation HF does, so every ``blocks.{l}.*`` hook is
``[clip * windows, frame_in_window, ...]`` and the pattern ``[clip * windows, head, frame, frame]`` (a clip's
windows are consecutive rows, padded at the end: ``act.reshape(n_clips, -1, *act.shape[2:])`` restores the
clip time axis). Frames past a clip's end are padding; their keys are masked.

HF quirk reproduced (Qwen3-Omni only): HF pads all chunks of a batch to the longest chunk, and its stem does
not zero the padding between convolutions, so a clip shorter than one chunk is encoded slightly differently
when the batch has no clip as long as a chunk. The stem here runs on the same padded width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import nn

from ..audio_encoder import check_mel_bins
from ..components.audio_stem import WhisperConvStem
from ..components.block import TransformerBlock
from ..components.conv2d_stem import Conv2dStem
from ..components.norms import make_norm
from ..components.pooling import pool_frames, pooled_lengths
from ..config import AudioEncoderConfig
from ..hook_points import HookPoint


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Float[torch.Tensor, "length channels"]:
    """Whisper's fixed position table: sines then cosines of geometrically spaced frequencies (float32)."""
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2, dtype=torch.float32, device="cpu"))
    angles = torch.arange(length, device="cpu")[:, None] * inv_timescales[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def window_padding_mask(
    frame_lengths: Int[torch.Tensor, "clip"], n_windows: int, window: int, dtype: torch.dtype
) -> Float[torch.Tensor, "clip_window 1 frame frame"] | None:
    """Additive mask for windows laid out as a batch: keys past the clip's end are hidden (a padded frame
    still sees itself, so that no row is fully masked). None when no window holds padding."""
    frames = torch.arange(n_windows * window, device=frame_lengths.device)
    real = (frames[None, :] < frame_lengths[:, None]).reshape(-1, window)  # [clip * window_count, frame]
    if bool(real.all()):
        return None
    allowed = real[:, None, :] | torch.eye(window, dtype=torch.bool, device=real.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=real.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


class QwenOmniAudioEncoder(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        if cfg.chunk_mel_frames is None or cfg.attention_window_frames is None:
            raise ValueError("the Qwen-Omni encoder needs chunk_mel_frames and attention_window_frames in its config")
        self.cfg = cfg
        if cfg.stem == "whisper_conv":
            self.stem = WhisperConvStem(cfg.n_mels, cfg.d_model)
        elif cfg.stem == "conv2d_x3":
            self.stem = Conv2dStem(cfg.n_mels, cfg.stem_channels, cfg.d_model)
        else:
            raise ValueError(f"unsupported stem {cfg.stem!r} for the Qwen-Omni encoder")
        if self.stem.output_lengths(cfg.chunk_mel_frames) != cfg.n_ctx:
            raise ValueError(f"a chunk of {cfg.chunk_mel_frames} mel frames does not give n_ctx={cfg.n_ctx} frames")
        self.blocks = nn.ModuleList(TransformerBlock.for_encoder(cfg) for _ in range(cfg.n_layers))
        self.ln_post = make_norm(cfg.normalization_type, cfg.d_model, cfg.eps) if cfg.ln_post else None
        # A plain CPU tensor, not a buffer: it is not a weight, and meta-device construction must not touch it.
        self.positions = sinusoids(cfg.n_ctx, cfg.d_model)
        self.hook_in = HookPoint()  # [clip, mel, frame]
        self.hook_conv_out = HookPoint()  # [clip, frame, d]
        self.hook_pos_embed = HookPoint()  # [clip, frame, d]
        self.hook_pooled = HookPoint() if cfg.pooling else None  # [clip, token, d]
        self.hook_out = HookPoint()  # [clip, token, d]

    # --- lengths ---------------------------------------------------------------------------------
    def frame_lengths(self, mel_lengths: Int[torch.Tensor, "clip"]) -> Int[torch.Tensor, "clip"]:
        """Encoder frames of each clip: ``n_ctx`` per whole chunk plus the stem's output on the remainder."""
        chunk = self.cfg.chunk_mel_frames
        return (mel_lengths // chunk) * self.cfg.n_ctx + self.stem.output_lengths(mel_lengths % chunk)

    def output_lengths(self, mel_lengths: Int[torch.Tensor, "clip"]) -> Int[torch.Tensor, "clip"]:
        """Audio tokens each clip yields (HF's ``_get_feat_extract_output_lengths``)."""
        return pooled_lengths(self.frame_lengths(mel_lengths), self.cfg.pooling)

    # --- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        features: Float[torch.Tensor, "clip mel frame"],
        mel_lengths: Int[torch.Tensor, "clip"] | None = None,
    ) -> Float[torch.Tensor, "clip token d_audio"]:
        self._check(features, mel_lengths)
        clips, _, n_mel_frames = features.shape
        if mel_lengths is None:
            mel_lengths = torch.full((clips,), n_mel_frames, device=features.device)
        mel_lengths = mel_lengths.to(features.device)
        features = self.hook_in(features.to(self.blocks[0].ln1.w.dtype))

        chunk = self.cfg.chunk_mel_frames
        n_chunks = math.ceil(n_mel_frames / chunk)
        valid = torch.arange(n_chunks * chunk, device=features.device)[None, :] < mel_lengths[:, None]
        features = F.pad(features, (0, n_chunks * chunk - n_mel_frames)) * valid[:, None, :]
        chunks = features.unflatten(2, (n_chunks, chunk)).transpose(1, 2).flatten(0, 1)  # [clip*chunk, mel, c]
        x = self._stem(chunks, valid.reshape(clips * n_chunks, chunk), mel_lengths)
        x = self.hook_conv_out(x.reshape(clips, n_chunks * self.cfg.n_ctx, -1))

        positions = self.positions.to(device=x.device, dtype=x.dtype).repeat(n_chunks, 1)
        x = x + self.hook_pos_embed(positions.expand(clips, -1, -1))
        x = self._blocks_by_window(x, self.frame_lengths(mel_lengths))
        if self.cfg.pooling is not None:
            x = self.hook_pooled(pool_frames(x, self.cfg.pooling))
        if self.ln_post is not None:
            x = self.ln_post(x)
        return self.hook_out(x)

    def _blocks_by_window(
        self, x: Float[torch.Tensor, "clip frame d"], frame_lengths: Int[torch.Tensor, "clip"]
    ) -> Float[torch.Tensor, "clip frame d"]:
        """Run the blocks with each attention window as one batch row, then restore the clip time axis."""
        clips, n_frames, d = x.shape
        window = self.cfg.attention_window_frames
        n_windows = math.ceil(n_frames / window)
        x = F.pad(x, (0, 0, 0, n_windows * window - n_frames)).reshape(clips * n_windows, window, d)
        mask = window_padding_mask(frame_lengths, n_windows, window, x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x.reshape(clips, n_windows * window, d)[:, :n_frames]

    def _stem(
        self,
        chunks: Float[torch.Tensor, "n mel chunk_frame"],
        valid: Bool[torch.Tensor, "n chunk_frame"],
        mel_lengths: Int[torch.Tensor, "clip"],
    ) -> Float[torch.Tensor, "n n_ctx d"]:
        if isinstance(self.stem, WhisperConvStem):
            # Qwen2.5-Omni zeroes the first conv's output past the clip's end, so padding never leaks in.
            x = F.gelu(self.stem.conv1(chunks)) * valid[:, None, :].to(chunks.dtype)
            return F.gelu(self.stem.conv2(x)).transpose(1, 2)
        # Qwen3-Omni: HF's chunks are as wide as the batch's longest chunk, zero-padded, with no masking.
        width = int(min(self.cfg.chunk_mel_frames, int(mel_lengths.max())))
        x = self.stem(chunks[..., :width])
        return F.pad(x, (0, 0, 0, self.cfg.n_ctx - x.shape[1]))

    def _check(self, features: torch.Tensor, mel_lengths: torch.Tensor | None) -> None:
        check_mel_bins(features, self.cfg.n_mels)
        if mel_lengths is not None:
            if mel_lengths.shape != (features.shape[0],):
                raise ValueError(f"{features.shape[0]} clips but {tuple(mel_lengths.shape)} clip lengths")
            if bool((mel_lengths > features.shape[2]).any()) or bool((mel_lengths < 1).any()):
                raise ValueError(
                    f"clip lengths {mel_lengths.tolist()} must lie in 1..{features.shape[2]} mel frames "
                    "(the feature mask marks more frames than the features have, or a clip is empty)"
                )
