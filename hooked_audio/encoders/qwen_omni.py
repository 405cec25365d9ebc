"""The Qwen-Omni audio towers (Qwen2.5-Omni and Qwen3-Omni thinkers): Whisper's encoder on fixed chunks
instead of one 30 s window.

    features [clip, mel, frame]  (any number of frames; padded frames past each clip's length are ignored)
    -> embed_frames: the stem on each chunk of ``chunk_mel_frames`` mel frames        hook_conv_out
    -> add_positions: + sinusoids that restart at 0 in every chunk                    hook_pos_embed
    -> run_blocks: a frame attends only inside its window of ``attention_window_frames`` frames
    -> pool_and_norm: (Qwen2.5: average pairs, hook_pooled) -> ln_post -> hook_out    [clip, token, d]

Differences from Whisper's encoder (``whisper.WhisperEncoder``):
- Qwen2.5-Omni: the stem runs per 2 s chunk (HF ``n_window`` frames after the stem), its first conv's output
  zeroed past the clip's end; attention windows = chunks; fixed sinusoids instead of learned positions. Its
  output projection (HF ``audio_tower.proj``) is this library's ``projector``, so ``hook_audio_embeds`` is
  what HF splices in.
- Qwen3-Omni (``Qwen3OmniEncoder``): a 2-D conv stem (``components/conv2d_stem.py``) per 1 s chunk (13
  frames), attention windows of several chunks (HF ``n_window_infer``), no pooling.

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
import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import nn

from ..components.conv2d_stem import Conv2dStem
from ..components.masks import window_padding_mask
from ..config import AudioEncoderConfig
from .whisper import Rotary, WhisperEncoder, check_mel_bins, check_mel_lengths


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Float[torch.Tensor, "length channels"]:
    """Whisper's fixed position table: sines then cosines of geometrically spaced frequencies (float32)."""
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2, dtype=torch.float32, device="cpu"))
    angles = torch.arange(length, device="cpu")[:, None] * inv_timescales[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class Qwen2_5OmniEncoder(WhisperEncoder):
    learned_positions = False

    def __init__(self, cfg: AudioEncoderConfig):
        if cfg.chunk_mel_frames is None or cfg.attention_window_frames is None:
            raise ValueError("the Qwen-Omni encoder needs chunk_mel_frames and attention_window_frames in its config")
        super().__init__(cfg)
        self.chunk_frames = int(self.stem.output_lengths(cfg.chunk_mel_frames))  # encoder frames per chunk
        # A plain CPU tensor, not a buffer: it is not a weight, and meta-device construction must not touch it.
        self.positions = sinusoids(self.chunk_frames, cfg.d_model)

    # --- lengths ---------------------------------------------------------------------------------
    def frame_lengths(self, mel_lengths: Int[torch.Tensor, "clip"]) -> Int[torch.Tensor, "clip"]:
        """``chunk_frames`` per whole chunk plus the stem's output on the remainder (HF's formula)."""
        chunk = self.cfg.chunk_mel_frames
        return (mel_lengths // chunk) * self.chunk_frames + self.stem.output_lengths(mel_lengths % chunk)

    def real_block_frames(self, mel_lengths: Int[torch.Tensor, "clip"], n_mel_frames: int) -> Bool[torch.Tensor, "row frame"]:
        """The blocks run on each clip's attention windows as rows (a clip's windows consecutive): which of their
        frames lie before the clip's end."""
        n_frames = math.ceil(n_mel_frames / self.cfg.chunk_mel_frames) * self.chunk_frames
        window = self.cfg.attention_window_frames
        frames = torch.arange(math.ceil(n_frames / window) * window)
        return (frames[None, :] < self.frame_lengths(mel_lengths.cpu())[:, None]).reshape(-1, window)

    # --- forward steps ---------------------------------------------------------------------------
    def forward(
        self,
        features: Float[torch.Tensor, "clip mel mel_frame"],
        mel_lengths: Int[torch.Tensor, "clip"] | None = None,
    ) -> Float[torch.Tensor, "clip token d_out"]:
        if mel_lengths is None:
            mel_lengths = torch.full((features.shape[0],), features.shape[2], device=features.device)
        return super().forward(features, mel_lengths.to(features.device))

    def check_features(self, features: torch.Tensor, mel_lengths: torch.Tensor | None) -> None:
        """Any number of mel frames (the chunks cover them)."""
        check_mel_bins(features, self.cfg.n_mels)
        check_mel_lengths(features, mel_lengths)

    def embed_frames(
        self, features: Float[torch.Tensor, "clip mel mel_frame"], mel_lengths: Int[torch.Tensor, "clip"]
    ) -> Float[torch.Tensor, "clip frame d"]:
        """The stem on each chunk (padding past the clip's end zeroed), chunks laid end to end again."""
        clips, _, n_mel_frames = features.shape
        chunk = self.cfg.chunk_mel_frames
        n_chunks = math.ceil(n_mel_frames / chunk)
        valid = torch.arange(n_chunks * chunk, device=features.device)[None, :] < mel_lengths[:, None]
        features = F.pad(features, (0, n_chunks * chunk - n_mel_frames)) * valid[:, None, :]
        chunks = features.unflatten(2, (n_chunks, chunk)).transpose(1, 2).flatten(0, 1)  # [clip*chunk, mel, c]
        x = self.chunk_stem(chunks, valid.reshape(clips * n_chunks, chunk), mel_lengths)
        return self.hook_conv_out(x.reshape(clips, n_chunks * self.chunk_frames, -1))

    def chunk_stem(
        self,
        chunks: Float[torch.Tensor, "n mel chunk_frame"],
        valid: Bool[torch.Tensor, "n chunk_frame"],
        mel_lengths: Int[torch.Tensor, "clip"],
    ) -> Float[torch.Tensor, "n chunk_frames d"]:
        """Qwen2.5-Omni zeroes the first conv's output past the clip's end, so padding never leaks in."""
        x = F.gelu(self.stem.conv1(chunks)) * valid[:, None, :].to(chunks.dtype)
        return F.gelu(self.stem.conv2(x)).transpose(1, 2)

    def add_positions(self, x: Float[torch.Tensor, "clip frame d"]) -> tuple[Float[torch.Tensor, "clip frame d"], Rotary]:
        """Fixed sinusoids, restarting in every chunk."""
        n_chunks = x.shape[1] // self.chunk_frames
        positions = self.positions.to(device=x.device, dtype=x.dtype).repeat(n_chunks, 1)
        return x + self.hook_pos_embed(positions.expand(x.shape[0], -1, -1)), None

    def run_blocks(
        self, x: Float[torch.Tensor, "clip frame d"], mel_lengths: Int[torch.Tensor, "clip"], rotary: Rotary
    ) -> Float[torch.Tensor, "clip frame d"]:
        """Each attention window as one batch row, then the clip time axis restored."""
        clips, n_frames, d = x.shape
        window = self.cfg.attention_window_frames
        n_windows = math.ceil(n_frames / window)
        x = F.pad(x, (0, 0, 0, n_windows * window - n_frames)).reshape(clips * n_windows, window, d)
        mask = window_padding_mask(self.frame_lengths(mel_lengths), n_windows, window, x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x.reshape(clips, n_windows * window, d)[:, :n_frames]


class Qwen3OmniEncoder(Qwen2_5OmniEncoder):
    """A 2-D conv stem on 1 s chunks, run on chunks as wide as the batch's longest (HF's padding, no masking)."""

    def make_stem(self, cfg: AudioEncoderConfig) -> nn.Module:
        return Conv2dStem(cfg.n_mels, cfg.stem_channels, cfg.d_model)

    def chunk_stem(
        self,
        chunks: Float[torch.Tensor, "n mel chunk_frame"],
        valid: Bool[torch.Tensor, "n chunk_frame"],
        mel_lengths: Int[torch.Tensor, "clip"],
    ) -> Float[torch.Tensor, "n chunk_frames d"]:
        width = int(min(self.cfg.chunk_mel_frames, int(mel_lengths.max())))
        if bool((mel_lengths < width).any()):
            warnings.warn(
                "Qwen3-Omni: a clip shorter than one chunk is batched with a longer one, so (as in HF) the stem runs "
                "it on the longer one's width and its padding changes the clip's last audio tokens: its activations "
                "differ slightly from the same clip run alone. Batch clips of equal length where that matters")
        x = self.stem(chunks[..., :width])
        return F.pad(x, (0, 0, 0, self.chunk_frames - x.shape[1]))
