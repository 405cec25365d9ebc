"""The Whisper-style audio encoder, written as overridable steps so that its relatives state only their difference.

    features [window, mel, frame]                                      hook_in
    -> embed_frames: conv(k3) -> GELU -> conv(k3, stride 2) -> GELU     hook_conv_out   [window, frame, d]
    -> add_positions: + learned table                                  hook_pos_embed  [window, frame, d]
    -> run_blocks: pre-LN blocks, keys past each clip's end masked      blocks.{l}.*    (per head too)
    -> pool_and_norm: pooling (Qwen2-Audio: average pairs), ln_post     hook_pooled, ln_post.*
                                                                       hook_out        [window, token, d_out]

This is Qwen2-Audio's, Audio Flamingo 3's and Music Flamingo's encoder as it is. A window is one row of the
features: one clip, or one 30 s piece of a long clip for families whose processor splits audio.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import nn

from ..components.audio_stem import WhisperConvStem
from ..components.block import TransformerBlock
from ..components.masks import key_padding_mask
from ..components.norms import make_norm
from ..config import AudioEncoderConfig
from ..hook_points import HookPoint

Rotary = tuple[torch.Tensor, torch.Tensor] | None


class WhisperEncoder(nn.Module):
    """Every encoder takes ``(features, mel_lengths)``, returns ``[window, token, d_out]`` and knows
    ``output_lengths(mel_lengths)``, the valid tokens of each window."""

    learned_positions = True  # a ``W_pos`` table (Qwen-Omni: fixed sinusoids; GLM-ASR: rotary instead)
    pos_embed_hook = True  # ``hook_pos_embed`` on the added positions (none where positions are rotary)

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = self.make_stem(cfg)
        if self.learned_positions:
            self.W_pos = nn.Parameter(torch.zeros(cfg.window_frames, cfg.d_model))
        self.blocks = nn.ModuleList(self.make_block(cfg) for _ in range(cfg.n_layers))
        self.ln_post = make_norm(cfg.normalization_type, cfg.d_model, cfg.eps)
        self.hook_in = HookPoint()  # [window, mel, frame]
        self.hook_conv_out = HookPoint()  # [window, frame, d]
        if self.pos_embed_hook:
            self.hook_pos_embed = HookPoint()  # [window, frame, d]
        if cfg.pooling is not None:
            self.hook_pooled = HookPoint()  # [window, token, d_out]
        self.hook_out = HookPoint()  # [window, token, d_out]

    # --- the parts ---------------------------------------------------------------------------------
    def make_stem(self, cfg: AudioEncoderConfig) -> nn.Module:
        return WhisperConvStem(cfg.n_mels, cfg.d_model)

    def make_block(self, cfg: AudioEncoderConfig) -> TransformerBlock:
        return TransformerBlock.for_encoder(cfg)

    # --- lengths -----------------------------------------------------------------------------------
    def frame_lengths(self, mel_lengths: Int[torch.Tensor, "window"]) -> Int[torch.Tensor, "window"]:
        """Encoder frames of each window, from its number of valid mel frames."""
        return self.stem.output_lengths(mel_lengths)

    def output_lengths(self, mel_lengths: Int[torch.Tensor, "window"]) -> Int[torch.Tensor, "window"]:
        """Audio tokens each window yields (HF's formula for the family)."""
        frames = self.frame_lengths(mel_lengths)
        return frames if self.cfg.pooling is None else self.cfg.pooling.output_lengths(frames)

    def real_block_frames(self, mel_lengths: Int[torch.Tensor, "window"], n_mel_frames: int) -> Bool[torch.Tensor, "row frame"]:
        """Which frames of each row the blocks run on (their ``hook_*`` rows) are the clip's, not padding: the
        frames a query may attend to."""
        n_frames = int(self.stem.output_lengths(torch.tensor([n_mel_frames]))[0])
        return torch.arange(n_frames)[None, :] < self.frame_lengths(mel_lengths.cpu())[:, None]

    # --- the forward, step by step -------------------------------------------------------------------
    def forward(
        self,
        features: Float[torch.Tensor, "window mel mel_frame"],
        mel_lengths: Int[torch.Tensor, "window"] | None = None,
    ) -> Float[torch.Tensor, "window token d_out"]:
        """``mel_lengths``: valid mel frames per window (None: all of them)."""
        self.check_features(features, mel_lengths)
        features = features.to(self.ln_post.w.dtype)
        # a hook editing in place must not reach the caller's features (``to`` returns them when the dtype matches)
        features = self.hook_in(features.clone() if self.hook_in.is_hooked else features)
        x = self.embed_frames(features, mel_lengths)
        x, rotary = self.add_positions(x)
        x = self.run_blocks(x, mel_lengths, rotary)
        return self.hook_out(self.pool_and_norm(x))

    def check_features(self, features: torch.Tensor, mel_lengths: torch.Tensor | None) -> None:
        """Features must fill the encoder's fixed window (the processor pads to it)."""
        check_mel_bins(features, self.cfg.n_mels)
        expected = 2 * self.cfg.window_frames
        if features.shape[2] != expected:
            raise ValueError(
                f"audio features must be [windows, {self.cfg.n_mels} mel bins, {expected} frames] "
                f"(the encoder's fixed {expected / 100:.2f} s window, padded), got {tuple(features.shape)}. "
                "Build inputs with the model's processor or `model.build_inputs(...)`, which pad to the window."
            )
        check_mel_lengths(features, mel_lengths)

    def embed_frames(
        self, features: Float[torch.Tensor, "window mel mel_frame"], mel_lengths: Int[torch.Tensor, "window"] | None
    ) -> Float[torch.Tensor, "window frame d"]:
        return self.hook_conv_out(self.stem(features))

    def add_positions(self, x: Float[torch.Tensor, "window frame d"]) -> tuple[Float[torch.Tensor, "window frame d"], Rotary]:
        """Learned absolute positions; returns the rotary tables the blocks need (none here). The table is cast to
        the activations' dtype: HF keeps some position tables in float32 when the rest loads in bfloat16 (Voxtral's)."""
        positions = self.W_pos[: x.shape[1]].to(x.dtype).expand(x.shape[0], -1, -1)
        # a view of the weights: a hook editing it in place would change the model for every later run
        return x + self.hook_pos_embed(positions.clone() if self.hook_pos_embed.is_hooked else positions), None

    def frame_mask(
        self, mel_lengths: Int[torch.Tensor, "window"] | None, x: Float[torch.Tensor, "window frame d"]
    ) -> Float[torch.Tensor, "window 1 1 frame"] | None:
        """Keys past each window's valid frames are hidden (Qwen2-Audio and Audio Flamingo do this)."""
        if mel_lengths is None:
            return None
        return key_padding_mask(self.frame_lengths(mel_lengths.to(x.device)), x.shape[1], x.dtype)

    def run_blocks(
        self, x: Float[torch.Tensor, "window frame d"], mel_lengths: Int[torch.Tensor, "window"] | None, rotary: Rotary
    ) -> Float[torch.Tensor, "window frame d"]:
        mask = self.frame_mask(mel_lengths, x)
        for block in self.blocks:
            x = block(x, mask, rotary)
        return x

    def pool(self, x: Float[torch.Tensor, "window frame d"]) -> Float[torch.Tensor, "window token d_out"]:
        return x if self.cfg.pooling is None else self.hook_pooled(self.cfg.pooling(x))

    def pool_and_norm(self, x: Float[torch.Tensor, "window frame d"]) -> Float[torch.Tensor, "window token d_out"]:
        """Pool frames into tokens, then the final LayerNorm."""
        return self.ln_post(self.pool(x))


def check_mel_bins(features: torch.Tensor, n_mels: int) -> None:
    """Refuse features that are not ``[window, n_mels, frame]``."""
    if features.ndim != 3 or features.shape[1] != n_mels:
        raise ValueError(f"audio features must be [windows, {n_mels} mel bins, frames], got {tuple(features.shape)}")


def check_mel_lengths(features: torch.Tensor, mel_lengths: torch.Tensor | None) -> None:
    """One length per window, each between 1 and the number of mel frames."""
    if mel_lengths is None:
        return
    if mel_lengths.shape != (features.shape[0],):
        raise ValueError(f"{features.shape[0]} audio windows but {tuple(mel_lengths.shape)} window lengths")
    if bool((mel_lengths > features.shape[2]).any()) or bool((mel_lengths < 1).any()):
        raise ValueError(
            f"window lengths {mel_lengths.tolist()} must lie in 1..{features.shape[2]} mel frames "
            "(the feature mask marks more frames than the features have, or a window is empty)"
        )
