"""``HookedAudioTransformer``: an audio-language model re-implemented with a hook point everywhere.

    features -> audio_encoder -> projector -> hook_audio_embeds          [n_audio_tok, d_model]
    input_ids -> embed, audio tokens spliced in -> hook_embed            [batch, pos, d_model]
    -> blocks x n_layers (TransformerLens names) -> ln_final -> unembed -> logits

The decoder half follows TransformerLens's hook names and ``cfg`` fields, so ``ActivationCache``,
``transformer_lens.patching`` and ``utils.get_act_name`` work as they do on GPT-2.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint as TLHookPoint
from transformer_lens.utilities import Slice

from .audio.inputs import AudioTextInput, as_input_tensor, as_tensor_dict
from .cache import AudioActivationCache, check_patch_alignment, position_dims
from .components.block import TransformerBlock
from .components.masks import causal_padding_mask
from .components.moe import MoEMLP
from .components.norms import make_norm
from .components.positions import decoder_position_ids
from .components.rotary import RotaryEmbedding
from .components.time_rotary import TimeRotaryEmbedding
from .config import HookedAudioConfig
from .encoders import build_encoder
from .hook_points import HookPoint, hook_pairs, to_cache, unknown_hook_name_error
from .indices import is_index, rows_padded_at
from .weight_views import TransformerLensWeights
from .kv_cache import KVCache, at_position_offset
from .runs import refuse_inside_a_run, running

HookName = str | Callable[[str], bool]
ModelInput = AudioTextInput | Mapping | torch.Tensor | str | list | None

# Keys a processor may return that carry nothing the forward needs.
_IGNORED_INPUT_KEYS = {"num_audio_tokens", "token_type_ids"}


class HookedAudioTransformer(TransformerLensWeights, HookedRootModule):
    def __init__(self, cfg: HookedAudioConfig, processor: Any = None, tokenizer: Any = None):
        super().__init__()
        self.cfg = cfg
        self.processor = processor
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        self.generation_config = None  # the checkpoint's HF GenerationConfig (loading sets it): sampling defaults

        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        if cfg.audio is not None:
            self.audio_encoder = build_encoder(cfg.audio)
            if cfg.audio_time_rotary is not None:  # Music Flamingo
                self.audio_time_rotary = TimeRotaryEmbedding(cfg.audio_time_rotary)
            self.projector = cfg.projector.build(cfg.audio.d_out, cfg.d_model)
            self.hook_audio_embeds = HookPoint()  # [n_audio_tok, d_model]
        self.hook_embed = HookPoint()  # [batch, pos, d_model], audio already spliced in
        self.rotary = RotaryEmbedding(cfg.rotary_dim, cfg.rotary_base)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d_model=cfg.d_model,
                n_heads=cfg.n_heads,
                d_head=cfg.d_head,
                d_mlp=cfg.d_mlp,
                n_key_value_heads=cfg.n_key_value_heads,
                normalization_type=cfg.normalization_type,
                eps=cfg.eps,
                act_fn=cfg.act_fn,
                gated_mlp=cfg.gated_mlp,
                qkv_bias=cfg.qkv_bias,
                o_bias=cfg.o_bias,
                mlp_bias=cfg.mlp_bias,
                causal=True,
                rotary=True,
                qk_norm_eps=cfg.eps if cfg.use_qk_norm else None,
                mlp=MoEMLP.from_config(cfg) if cfg.num_experts else None,
            )
            for _ in range(cfg.n_layers)
        )
        self.ln_final = make_norm(cfg.normalization_type, cfg.d_model, cfg.eps)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        if cfg.tie_word_embeddings:
            self.unembed.weight = self.embed.weight
        self.setup()

    # --- loading (implemented in loading.py, exposed here as in TransformerLens) -------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> "HookedAudioTransformer":
        """Load a supported checkpoint: a hub id, a local HF directory or a bundled name (see loading.py)."""
        from .loading import from_pretrained

        return from_pretrained(name_or_path, **kwargs)

    @classmethod
    def from_hf_model(cls, hf_model: nn.Module, processor: Any = None, **kwargs) -> "HookedAudioTransformer":
        """Re-implement an in-memory HF model; the HF model is never modified."""
        from .loading import from_hf_model

        return from_hf_model(hf_model, processor=processor, **kwargs)

    # --- devices, dtypes and TransformerLens switches --------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.half()``, ``.cuda()`` ...: keep ``cfg.device`` and ``cfg.dtype`` true afterwards."""
        out = super()._apply(fn, recurse)
        if self.embed.weight.device.type != "meta":
            self.cfg.device, self.cfg.dtype = str(self.embed.weight.device), self.embed.weight.dtype
        return out

    def process_weights_(
        self, fold_ln: bool = True, center_writing_weights: bool = False, center_unembed: bool = False,
        fold_value_biases: bool = False,
    ) -> "HookedAudioTransformer":
        """TransformerLens's weight processing, in place (see ``weight_processing``; the defaults keep the logits)."""
        from .weight_processing import process_weights

        process_weights(self, fold_ln, center_writing_weights, center_unembed, fold_value_biases)
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, refusing an untied unembedding (e.g. the state dict of a processed model)
        while this model ties it to the embedding: both keys would load into the one shared matrix, the last
        (the unembedding) over the embedding."""
        tied = self.unembed.weight is self.embed.weight
        embed, unembed = state_dict.get("embed.weight"), state_dict.get("unembed.weight")
        if (tied and embed is not None and unembed is not None and embed.data_ptr() != unembed.data_ptr()
                and not torch.equal(embed, unembed)):
            raise ValueError(
                "this state dict holds an unembedding of its own (e.g. of a model after process_weights_, which "
                "unties it), but this model ties its unembedding to the embedding: loading would overwrite the "
                "embedding with the unembedding. Process this model the same way first (process_weights_(...)), "
                "then load")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def train(self, mode: bool = True) -> "HookedAudioTransformer":
        """``nn.Module.train``; warns where the HF checkpoint trains with dropout (``hf_dropout``), which this
        re-implementation, as TransformerLens, never applies: in train mode it computes HF's eval-mode outputs."""
        if mode and getattr(self, "hf_dropout", None):
            settings = ", ".join(f"{name}={value:g}" for name, value in self.hf_dropout.items())
            warnings.warn(f"this checkpoint's HF config trains with dropout ({settings}); this model applies none, so "
                          "in train mode its outputs are HF's eval-mode outputs (add dropout with hooks if you need it)",
                          stacklevel=2)
        return super().train(mode)

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """TransformerLens switch: with it on, a full ``run_with_cache()`` also caches ``hook_result`` (each head's
        output ``[batch, pos, head, d_model]``: large, so off by default, as in TransformerLens). Hooks and a
        ``names_filter`` that name ``hook_result`` compute it either way."""
        self.cfg.use_attn_result = bool(use_attn_result)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """TransformerLens switch: ``blocks.{l}.hook_q_input`` ``[batch, pos, head, d_model]`` and ``hook_k_input`` /
        ``hook_v_input`` ``[batch, pos, kv_head, d_model]`` (also as ``blocks.{l}.attn.hook_*_input``, TL 4's names),
        each normalised per copy, so a hook editing one head's copy changes only that head's q (k, v). Model-wide:
        encoder blocks too. The points exist only while on; exclusive with ``set_use_attn_in``."""
        self._set_input_hooks(split_qkv_input=bool(use_split_qkv_input))

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """TransformerLens switch: ``blocks.{l}.hook_mlp_in`` ``[batch, pos, d_model]``, the MLP's input before ln2
        (editing it changes the MLP's input, not the residual skip). Model-wide; the point exists only while on."""
        self._set_input_hooks(mlp_in=bool(use_hook_mlp_in))

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """TransformerLens switch: ``blocks.{l}.hook_attn_in`` (also ``blocks.{l}.attn.hook_attn_in``)
        ``[batch, pos, head, d_model]``, resid_pre per head, each head's q computed from its own copy; under GQA kv
        head ``g`` reads the copy of query head ``g * n_heads // n_key_value_heads``. Model-wide; the point exists
        only while on; exclusive with ``set_use_split_qkv_input``."""
        self._set_input_hooks(attn_in=bool(use_attn_in))

    def _set_input_hooks(self, **switch: bool) -> None:
        """Apply TransformerLens's input switches to every block (decoder and audio encoder) and relist hook points."""
        flags = {
            "attn_in": self.cfg.use_attn_in,
            "split_qkv_input": self.cfg.use_split_qkv_input,
            "mlp_in": self.cfg.use_hook_mlp_in,
            **switch,
        }
        with model_lock(self):
            blocks = [m for m in self.modules() if isinstance(m, TransformerBlock)]
            blocks[0].set_input_hooks(**flags)  # refuses attn_in with split_qkv_input before anything changes
            for block in blocks[1:]:
                block.set_input_hooks(**flags)
            self.cfg.use_attn_in, self.cfg.use_split_qkv_input, self.cfg.use_hook_mlp_in = (
                flags["attn_in"], flags["split_qkv_input"], flags["mlp_in"]
            )
            self.setup()

    # --- inputs --------------------------------------------------------------------------------------
    def to_inputs(self, input: ModelInput = None, **kwargs) -> AudioTextInput:
        """Normalise any accepted input (HF-style kwargs, a processor's output, an ``AudioTextInput``,
        a token tensor or a text prompt) into one ``AudioTextInput``."""
        hook_args = sorted(k for k in ("fwd_hooks", "bwd_hooks") if k in kwargs)
        if hook_args:
            raise TypeError(f"{hook_args[0]}= is not an input: run with hooks through run_with_hooks(..., fwd_hooks=...), "
                            "generate(..., fwd_hooks=...), or `with model.hooks(fwd_hooks=...):` around any other call "
                            "(run_with_cache included)")
        tl_only = sorted(TL_FORWARD_OPTIONS & set(kwargs))
        if tl_only:
            raise TypeError(f"{tl_only[0]}= is TransformerLens's: {TL_FORWARD_OPTIONS_INSTEAD}")
        tokenize = {k: kwargs.pop(k) for k in ("prepend_bos", "padding_side") if k in kwargs}
        if tokenize and not isinstance(input, (str, list)):
            raise TypeError(f"{sorted(tokenize)[0]}= applies to text input only (a string or a list of them)")
        if isinstance(input, AudioTextInput):
            if any(v is not None for v in kwargs.values()):
                raise TypeError("pass either an AudioTextInput or keyword inputs, not both")
            if input.audio_token_id not in (-1, self.cfg.audio_token_id):
                raise ValueError(
                    f"these inputs were built for a model whose audio token is {input.audio_token_id}, this model's "
                    f"is {self.cfg.audio_token_id} ({self.cfg.model_name}): build them with this model's processor "
                    "(build_inputs(model, ...) or model.to_inputs of its processor's output)")
            return input
        if isinstance(input, Mapping):
            kwargs = {**as_tensor_dict(input), **{k: v for k, v in kwargs.items() if v is not None}}
        elif isinstance(input, torch.Tensor):
            kwargs["input_ids"] = input
        elif isinstance(input, (str, list)):
            if isinstance(input, list) and input and not all(isinstance(t, str) for t in input):
                raise TypeError("a list input is a batch of text prompts (strings); pass token ids as a tensor "
                                "[batch, pos] (e.g. torch.tensor([ids])), or inputs with audio as a dict / AudioTextInput")
            tokens = self._tokenize(input, **tokenize)
            kwargs["input_ids"] = tokens["input_ids"]
            if kwargs.get("attention_mask") is None:  # the padding of a batch of prompts is known: mask it
                kwargs["attention_mask"] = tokens["attention_mask"]
        elif input is not None:
            raise TypeError(f"unsupported input of type {type(input).__name__}")
        kwargs = {k: v if (tensor := as_input_tensor(k, v)) is None else tensor
                  for k, v in kwargs.items() if v is not None and k not in _IGNORED_INPUT_KEYS}

        input_ids = kwargs.pop("input_ids", None)
        if input_ids is None:
            raise ValueError("input_ids are required (or pass the processor's output / an AudioTextInput)")
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be [batch, pos] with at least one position, got {tuple(input_ids.shape)}")
        if input_ids.is_floating_point():
            raise TypeError(f"input_ids must be integer token ids, got {input_ids.dtype}")
        if bool((input_ids < 0).any()) or bool((input_ids >= self.cfg.d_vocab).any()):
            bad = input_ids[(input_ids < 0) | (input_ids >= self.cfg.d_vocab)][0]
            raise ValueError(f"token id {int(bad)} is outside the vocabulary (0..{self.cfg.d_vocab - 1})")
        attention_mask = kwargs.pop("attention_mask", None)
        if attention_mask is None:
            self._refuse_unmasked_padding(input_ids)
        else:
            if attention_mask.ndim == 1:
                attention_mask = attention_mask[None]
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}")
            if not bool(attention_mask.bool().any(dim=1).all()):
                raise ValueError("a row of attention_mask is all padding: every row needs at least one real token")
        position_ids = kwargs.pop("position_ids", None)
        if position_ids is not None and position_ids.ndim == 1:  # one row, as 1-D input_ids
            position_ids = position_ids[None]
        if position_ids is not None and tuple(position_ids.shape) != tuple(input_ids.shape):
            what = ("multimodal RoPE's [3, batch, pos] (the omni models' time / height / width positions) is not taken: "
                    "leave position_ids out and the family's rule computes them, as HF does"
                    if position_ids.ndim == 3 else "give one position per token, [batch, pos]")
            raise ValueError(f"position_ids {tuple(position_ids.shape)} do not match input_ids {tuple(input_ids.shape)}; {what}")
        spec = self.cfg.audio_inputs
        audio_keys = {spec.features, spec.frame_mask} - {None}
        unknown = set(kwargs) - audio_keys
        if unknown:
            raise TypeError(
                f"unexpected inputs {sorted(unknown)} for the {self.cfg.family} family; "
                f"it takes input_ids, attention_mask, position_ids and {sorted(audio_keys)}"
            )
        inputs = AudioTextInput(
            input_ids=input_ids,
            attention_mask=attention_mask,
            audio=kwargs,
            audio_token_id=self.cfg.audio_token_id,
            seconds_per_token=self.cfg.seconds_per_audio_token if self.cfg.audio else 0.0,
            position_ids=position_ids,
        )
        return replace(inputs, window_rows=self.window_rows(inputs))

    def _refuse_unmasked_padding(self, input_ids: Int[torch.Tensor, "batch pos"]) -> None:
        """Token rows without an attention mask where some rows start (or end) with the pad token and others do
        not look padded: run unmasked, the padding would be attended and scored as text."""
        pad = self.cfg.pad_token_id
        if pad is None and self.tokenizer is not None:
            pad = self.tokenizer.pad_token_id
        if pad is None or input_ids.shape[0] < 2:
            return
        for edge in (0, -1):
            starts = input_ids[:, edge] == pad
            if bool(starts.any()) and not bool(starts.all()):
                rows = torch.nonzero(starts).flatten().tolist()
                raise ValueError(
                    f"rows {rows} {'start' if edge == 0 else 'end'} with the pad token ({pad}) and others do not: they look "
                    "padded, and without attention_mask the padding would be read as text. Pass attention_mask= (e.g. "
                    "model.to_inputs(list_of_prompts) builds it), or an all-ones mask if those tokens are real"
                )

    def window_rows(self, inputs: AudioTextInput) -> Int[torch.Tensor, "window"] | None:
        """The batch row each audio feature row (window) belongs to, from the tokens each window yields and
        the runs of placeholders; None without audio, or when the counts disagree (the forward says why)."""
        tokens = self._tokens_per_window(inputs)
        token_rows = torch.nonzero(inputs.audio_mask.cpu())[:, 0]
        if tokens is None or int(tokens.sum()) != len(token_rows) or len(token_rows) == 0:
            return None
        window_frames = inputs.audio[self.cfg.audio_inputs.features].shape[-1]
        full_window = int(self.audio_encoder.output_lengths(torch.tensor([window_frames]))[0])
        self._refuse_merged_clips(inputs, tokens, full_window)
        return token_rows[self._window_tokens(tokens, len(token_rows))]

    def window_clips(self, inputs: AudioTextInput) -> Int[torch.Tensor, "window"] | None:
        """The clip (numbered as in ``inputs.audio_spans``) each audio feature row (window) belongs to: a clip
        longer than one window has several, in time order. None where :meth:`window_rows` is None."""
        if self.window_rows(inputs) is None:
            return None
        tokens = self._tokens_per_window(inputs)
        token_clips = torch.cat([torch.full((len(span),), span.clip) for row in inputs.audio_spans for span in row])
        return token_clips[self._window_tokens(tokens, len(token_clips))]

    def encoder_real_frames(self, inputs: AudioTextInput) -> Bool[torch.Tensor, "row frame"]:
        """For each row of the audio encoder's blocks (their ``audio_encoder.blocks.{l}.*`` activations: windows,
        or a clip's attention windows), which frames are the clip's rather than padding: what a mean over
        "real" encoder frames (mean ablation) must average."""
        lengths = self._mel_lengths(inputs)
        if lengths is None:
            raise ValueError("these inputs hold no audio features, so the encoder has no frames")
        mel_lengths, n_mel_frames = lengths
        return self.audio_encoder.real_block_frames(mel_lengths, n_mel_frames)

    def _mel_lengths(self, inputs: AudioTextInput) -> tuple[Int[torch.Tensor, "window"], int] | None:
        """Valid mel frames of each feature row (window) and the rows' padded width; None without audio."""
        features = inputs.audio.get(self.cfg.audio_inputs.features)
        if features is None or self.cfg.audio is None:
            return None
        features = features if features.ndim == 3 else features[None]
        frame_mask = inputs.audio.get(self.cfg.audio_inputs.frame_mask) if self.cfg.audio_inputs.frame_mask else None
        if frame_mask is None:
            return torch.full((features.shape[0],), features.shape[2]), features.shape[2]
        return frame_mask.detach().cpu().long().sum(-1).reshape(-1), features.shape[2]

    def _tokens_per_window(self, inputs: AudioTextInput) -> Int[torch.Tensor, "window"] | None:
        lengths = self._mel_lengths(inputs)
        return None if lengths is None else self.audio_encoder.output_lengths(lengths[0]).cpu()

    @staticmethod
    def _window_tokens(tokens: Int[torch.Tensor, "window"], n_tokens: int) -> Int[torch.Tensor, "window"]:
        """The placeholder (in splice order) that decides each window's owner: its first token; a window that
        yields no token (a clip's last few mel frames) belongs to the clip before it, so to that window's last."""
        ends = torch.cumsum(tokens, 0)
        return torch.where(tokens > 0, ends - tokens, (ends - 1).clamp(min=0)).clamp(max=n_tokens - 1)

    def _refuse_merged_clips(self, inputs: AudioTextInput, tokens: Int[torch.Tensor, "window"], full_window: int) -> None:
        """Two clips whose placeholders touch make one run, which spans, times and clip numbers would read as one
        clip (HF's splice is the same, so nothing else would show it). A window boundary inside a run is allowed
        only where a family continues a long clip: after a full window, in a ``windowed_clips`` family."""
        placeholders = torch.nonzero(inputs.audio_mask.cpu())  # (row, pos) in HF's splice order
        same_run = (placeholders[1:, 0] == placeholders[:-1, 0]) & (placeholders[1:, 1] == placeholders[:-1, 1] + 1)
        ends = torch.cumsum(tokens, 0)
        for window in range(len(tokens) - 1):
            boundary = int(ends[window])
            if tokens[window + 1] == 0 or boundary == 0 or not bool(same_run[boundary - 1]):
                continue
            if self.cfg.audio_inputs.windowed_clips and int(tokens[window]) == full_window:
                continue  # a long clip's next window
            row, pos = placeholders[boundary].tolist()
            raise ValueError(
                f"the placeholders of audio window {window + 1} start at position {pos} of row {row}, right after "
                f"window {window}'s {int(tokens[window])} tokens with no token between"
                f"{'' if self.cfg.audio_inputs.windowed_clips else ' (one clip per window in this family)'}: the run "
                "would be read as one clip (spans, times and clip numbers wrong). Put a token between clips, e.g. the "
                "family's audio start/end tokens, as its chat template writes them (build_inputs(messages=...) does)"
            )

    # --- forward -------------------------------------------------------------------------------------
    def forward(
        self,
        input: ModelInput = None,
        *,
        return_type: Literal["logits", "loss", "both"] | None = "logits",
        loss_per_token: bool = False,
        **kwargs,
    ):
        """Logits ``[batch, pos, d_vocab]`` (HF keyword names: ``input_ids``, ``attention_mask``, the
        family's audio feature kwargs, ``position_ids``). ``return_type="loss"`` is the next-token loss
        on real text targets (audio placeholders and padding excluded); ``loss_per_token=True`` gives it per
        target ``[batch, pos - 1]`` (NaN at the excluded ones, see ``loss_fn``), as TransformerLens."""
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        if not isinstance(loss_per_token, bool):
            raise TypeError(f"loss_per_token must be True or False, got {loss_per_token!r}")
        if loss_per_token and return_type not in ("loss", "both"):
            raise ValueError(f"loss_per_token=True shapes the loss, but return_type={return_type!r} returns none: "
                             "pass return_type='loss' or 'both'")
        inputs = self.to_inputs(input, **kwargs)
        with model_lock(self), running(self):
            check_patch_alignment(self.attached_hook_fns(), inputs)
            logits = self.forward_inputs(inputs)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = self.loss_fn(logits, inputs, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    def forward_inputs(
        self,
        inputs: AudioTextInput,
        audio_embeds: Float[torch.Tensor, "n_audio_tok d_model"] | None = None,
        audio_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        last_position_only: bool = False,
    ) -> Float[torch.Tensor, "batch pos d_vocab"]:
        """The decoder run. Generation passes ``audio_embeds`` precomputed and an ``audio_mask`` that
        marks the prompt's placeholders only (a generated token may happen to be the audio token).

        ``kv_cache`` (a ``KVCache``): ``inputs`` are the positions after the cached ones (the prompt into an
        empty cache, then one token per step); their keys, values and attention mask are appended to the
        cache, attention reads every cached position, and rotary positions continue from the cache's mask
        (real tokens before, as HF's ``generate``) unless ``inputs.position_ids`` says otherwise. Hooks see
        the new positions only; ``hooked_audio.kv_cache.position_offset()`` is the absolute position of the
        first. ``last_position_only``: unembed the last position only (logits ``[batch, 1, d_vocab]``, as
        HF's ``logits_to_keep=1``; ``ln_final`` and its hooks still see every position)."""
        with at_position_offset(0 if kv_cache is None else kv_cache.n_pos):
            input_ids = inputs.input_ids.to(self.device)
            resid = self.embed(input_ids)
            audio_mask = (input_ids == self.cfg.audio_token_id) if audio_mask is None else audio_mask.to(self.device)
            if audio_embeds is None and inputs.has_audio:
                audio_embeds = self.embed_audio(inputs)
            if audio_embeds is not None:
                self._check_audio_token_count(inputs, int(audio_mask.sum()), audio_embeds.shape[0])
                resid = resid.masked_scatter(audio_mask[..., None], audio_embeds.to(resid.dtype))
            elif audio_mask.any():
                raise ValueError(
                    f"input_ids contain {int(audio_mask.sum())} audio placeholders (id {self.cfg.audio_token_id}) "
                    f"but no audio features were given: pass `{self.cfg.audio_inputs.features}` "
                    "(e.g. the processor's output) or remove the placeholders for a text-only run"
                )
            resid = self.hook_embed(resid)

            attention_mask = None if inputs.attention_mask is None else inputs.attention_mask.to(self.device)
            position_ids = inputs.position_ids
            if kv_cache is None:
                mask = causal_padding_mask(attention_mask, resid.dtype)
                if position_ids is None:
                    position_ids = decoder_position_ids(self.cfg.audio_inputs.position_ids, input_ids, attention_mask)
                past_kvs = [None] * len(self.blocks)
            else:
                n_new = input_ids.shape[1]
                kv_cache.append_attention_mask(torch.ones_like(input_ids) if attention_mask is None else attention_mask)
                mask = kv_cache.attention_bias(n_new, resid.dtype)
                if position_ids is None:
                    position_ids = kv_cache.position_ids(n_new)
                past_kvs = kv_cache.entries
            rotary = self.rotary.cos_sin(position_ids.to(self.device), resid.dtype)
            for block, past_kv in zip(self.blocks, past_kvs):
                resid = block(resid, mask, rotary, past_kv)
            resid = self.ln_final(resid)
            return self.unembed(resid[:, -1:] if last_position_only else resid)

    def embed_audio(self, inputs: AudioTextInput) -> Float[torch.Tensor, "n_audio_tok d_model"]:
        """Audio features -> encoder -> projector, keeping each clip's valid tokens, in clip order."""
        if self.cfg.audio is None:
            raise ValueError("this model has no audio encoder")
        spec = self.cfg.audio_inputs
        features = inputs.audio.get(spec.features)
        if features is None:
            raise ValueError(f"audio inputs lack `{spec.features}`")
        if features.ndim == 2:
            features = features[None]
        features = features.to(self.device)
        mel_lengths = None
        if spec.frame_mask is not None:
            frame_mask = inputs.audio.get(spec.frame_mask)
            if frame_mask is None:
                raise ValueError(
                    f"`{spec.frame_mask}` is required with `{spec.features}`: "
                    "it says how many mel frames of each padded clip are real (the processor returns it)"
                )
            mel_lengths = frame_mask.to(self.device).long().sum(-1).reshape(-1)
            self._refuse_tokenless_clips(mel_lengths.cpu(), features.shape[2])
        hidden = self.audio_encoder(features, mel_lengths)
        if mel_lengths is None:  # every mel frame of every window is real
            mel_lengths = torch.full((hidden.shape[0],), features.shape[2], device=self.device)
        lengths = self.audio_encoder.output_lengths(mel_lengths)
        if self.cfg.audio_time_rotary is not None:  # needs the placeholder runs to know each window's clip
            hidden = self.audio_time_rotary(hidden, lengths, inputs.audio_mask)
        projected = self.projector(hidden)
        valid = torch.arange(projected.shape[1], device=self.device)[None, :] < lengths[:, None]
        return self.hook_audio_embeds(projected[valid])

    def _refuse_tokenless_clips(self, mel_lengths: Int[torch.Tensor, "window"], n_mel_frames: int) -> None:
        """A clip too short for one audio token has no placeholder, so the text would be answered alone and its
        window credited to another clip (another row's, in window_rows). Only a long clip's last window may yield
        none (after a full window, in a ``windowed_clips`` family); there the tensors cannot tell it from a short
        clip after a clip of exactly whole windows, so that case is warned about."""
        tokens = self.audio_encoder.output_lengths(mel_lengths)
        full_window = int(self.audio_encoder.output_lengths(torch.tensor([n_mel_frames]))[0])
        for window in torch.nonzero(tokens == 0).flatten().tolist():
            if self.cfg.audio_inputs.windowed_clips and window > 0 and int(tokens[window - 1]) == full_window:
                warnings.warn(
                    f"audio window {window} ({int(mel_lengths[window])} real mel frames) yields no audio token after a "
                    "full window: it is read as the last frames of the clip before (window_rows, window_clips and "
                    "encoder caches credit it there). If it is a separate clip too short for one token, that is wrong "
                    "and the model never hears it: use a longer clip (build_inputs says the minimum)")
                continue
            raise ValueError(
                f"audio window {window} has {int(mel_lengths[window])} real mel frames, too few for one audio token: "
                "the clip is too short, so it has no placeholder and the model would answer from the text alone "
                "(the window would be credited to another clip). Use a longer clip, or pad it with silence "
                "(build_inputs refuses such clips and says the minimum length)")

    def _check_audio_token_count(self, inputs: AudioTextInput, n_placeholders: int, n_audio_embeds: int) -> None:
        if n_placeholders == n_audio_embeds:
            return
        runs = [len(span) for row in inputs.audio_spans for span in row]
        raise ValueError(
            f"input_ids hold {n_placeholders} audio placeholders (runs of {runs}) but the audio features "
            f"give {n_audio_embeds} audio tokens. Each clip needs exactly as many placeholders as it yields "
            f"tokens ({1 / self.cfg.seconds_per_audio_token:g} per second): build inputs with the model's "
            "processor or `model.build_inputs(...)`, which expand the placeholders."
        )

    def loss_fn(
        self,
        logits: Float[torch.Tensor, "batch pos d_vocab"],
        tokens: AudioTextInput | Int[torch.Tensor, "batch pos"],
        attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
        per_token: bool = False,
    ) -> Float[torch.Tensor, ""] | Float[torch.Tensor, "batch pos_minus_1"]:
        """TransformerLens's ``loss_fn``: next-token cross-entropy on text targets. ``per_token=True`` gives
        ``[batch, pos - 1]`` with NaN where the target is an audio placeholder or padding, or is predicted from
        padding (so a careless mean cannot hide them); the default is the mean over the other targets. With a
        token tensor, the audio placeholders are found by the model's ``audio_token_id`` and padding by
        ``attention_mask``."""
        if isinstance(tokens, AudioTextInput):
            ids, attention_mask, audio = tokens.input_ids, tokens.attention_mask, tokens.audio_mask
        else:
            ids, audio = tokens, tokens == self.cfg.audio_token_id
        real = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if logits.shape[:2] != ids.shape:
            raise ValueError(f"logits {tuple(logits.shape[:2])} and tokens {tuple(ids.shape)} disagree on batch/pos")
        # a target counts when it is real text and is predicted from a real position (as TransformerLens's
        # loss: the first token of a left-padded row is not scored from the padding before it)
        keep = real[:, 1:] & real[:, :-1] & ~audio[:, 1:]
        targets, keep = ids[:, 1:].to(logits.device), keep.to(logits.device)
        losses = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, reduction="none")
        if per_token:
            return losses.masked_fill(~keep, float("nan"))
        if not bool(keep.any()):
            raise ValueError("no text targets to score (every next token is audio or padding)")
        return losses[keep].mean()

    # --- hooks (O(hooks added) to add and remove) ------------------------------------------------------
    def _resolve(self, name: HookName) -> list[TLHookPoint]:
        if callable(name):
            matched = [hp for hook_name, hp in self.hook_dict.items() if name(hook_name)]
            if not matched:  # a typo in a filter would otherwise run with no hook: an ablation reading "no effect"
                raise ValueError(
                    f"the hook name filter {getattr(name, '__name__', name)!r} matches none of the model's "
                    f"{len(self.hook_dict)} hook points: check it against model.hook_dict.keys() (full names such as "
                    "'blocks.0.attn.hook_z')")
            return matched
        if name not in self.hook_dict:
            raise unknown_hook_name_error(name, list(self.hook_dict))
        return [self.hook_dict[name]]

    def add_hook(self, name: HookName, hook, dir="fwd", is_permanent=False, level=None, prepend=False) -> None:
        """A lasting hook (TransformerLens's ``add_hook``). It is global to the model: it fires in every later
        forward, from any thread; added while another thread's forward runs, it waits for that forward to end."""
        with model_lock(self):
            for hook_point in self._resolve(name):
                hook_point.add_hook(hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def reset_hooks(self, clear_contexts: bool = True, direction="both", including_permanent: bool = False, level=None):
        with model_lock(self):
            super().reset_hooks(clear_contexts, direction, including_permanent, level)

    def attached_hook_names(self) -> list[str]:
        """The hook points with a hook attached now (lasting ones from ``add_hook``, and those of open ``hooks()``
        contexts): what a file written by this model (results, an activation store) must record."""
        return sorted(name for name, point in self.hook_dict.items() if point.fwd_hooks or point.bwd_hooks)

    def attached_hook_fns(self) -> list:
        """Every hook function attached now, lasting (``add_hook``, ``reset_hooks_end=False``) or temporary: what
        each forward checks against its inputs (``cache.check_patch_alignment``)."""
        return [handle.user_hook for point in self.hook_dict.values() for handle in (*point.fwd_hooks, *point.bwd_hooks)
                if handle.user_hook is not None]

    @property
    def active_hook_fns(self) -> list:
        """The hook functions of the ``hooks()`` contexts now open (``run_with_hooks``, ``generate``'s included):
        each forward checks them against its inputs (``cache.check_patch_alignment``)."""
        return self.__dict__.setdefault("_active_hook_fns", [])

    @contextmanager
    def hooks(self, fwd_hooks=(), bwd_hooks=(), reset_hooks_end: bool = True, clear_contexts: bool = False):
        """Temporary hooks, removed on exit (also after an exception) touching only the points they used.

        The model runs one forward at a time: ``hooks()``, ``run_with_hooks``, ``run_with_cache`` and the
        forward hold a per-model lock, so a thread never sees another thread's temporary hooks or cache."""
        added: list[tuple[TLHookPoint, str, Any]] = []
        fwd_hooks, bwd_hooks = hook_pairs(fwd_hooks, "fwd_hooks"), hook_pairs(bwd_hooks, "bwd_hooks")
        refuse_inside_a_run(self)  # hooks added from inside a forward would fire in the rest of it
        with model_lock(self):
            self.context_level += 1
            active, n_active = self.active_hook_fns, len(self.active_hook_fns)
            try:
                for direction, hooks in (("fwd", fwd_hooks), ("bwd", bwd_hooks)):
                    for name, hook in hooks:
                        for hook_point in self._resolve(name):
                            handle = hook_point.add_hook(hook, dir=direction, level=self.context_level)
                            added.append((hook_point, direction, handle))
                active.extend(hook for _, hook in [*fwd_hooks, *bwd_hooks])
                yield self
            finally:
                del active[n_active:]
                if reset_hooks_end:
                    for hook_point, direction, handle in added:
                        handle.hook.remove()
                        handles = hook_point.fwd_hooks if direction == "fwd" else hook_point.bwd_hooks
                        if handle in handles:
                            handles.remove(handle)
                        if clear_contexts:
                            hook_point.clear_context()
                    self.is_caching = False
                self.context_level -= 1

    def run_with_hooks(
        self,
        input: ModelInput = None,
        *,
        fwd_hooks=(),
        bwd_hooks=(),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        **kwargs,
    ) -> Float[torch.Tensor, "batch pos d_vocab"] | Any:
        """One forward with temporary hooks (TransformerLens's signature). A hook that carries activations
        cached from a run whose audio sits at other positions is refused, as every forward refuses its active
        hooks' (see ``cache.check_patch_alignment``)."""
        inputs = self.to_inputs(input, **kwargs)
        fwd_hooks, bwd_hooks = hook_pairs(fwd_hooks, "fwd_hooks"), hook_pairs(bwd_hooks, "bwd_hooks")  # once: generators
        if bwd_hooks and return_type is None:
            raise ValueError("backward hooks need an output to differentiate: pass return_type='loss' or 'logits'")
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self.forward(inputs, return_type=return_type, loss_per_token=loss_per_token)

    def run_with_cache(
        self,
        input: ModelInput = None,
        *,
        names_filter=None,
        device=None,
        cache_dtype: torch.dtype | None = None,
        remove_batch_dim: bool = False,
        positions: Literal["all", "audio", "text", "last"] | slice | list[int] | int | torch.Tensor | np.ndarray = "all",
        pos_slice=None,
        incl_bwd: bool = False,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        return_cache_object: bool = True,
        **kwargs,
    ) -> tuple[Float[torch.Tensor, "batch pos d_vocab"] | Any, AudioActivationCache | dict[str, torch.Tensor]]:
        """Run once, caching activations (all by default; ``names_filter`` narrows by name), as
        TransformerLens's ``run_with_cache``. As there, the default set leaves out ``hook_result`` unless
        ``set_use_attn_result(True)``; name it in ``names_filter`` to cache it alone.

        ``device`` offloads the cache (e.g. ``"cpu"`` from a GPU run); ``cache_dtype`` (e.g.
        ``torch.bfloat16``) stores floating activations in that dtype as they are saved (others untouched);
        the forward itself runs in the model's dtype. ``positions`` keeps only some decoder positions of every
        activation with a position axis (patterns: query and key axes), and the audio tokens at them; TL's
        ``pos_slice`` (TL's ``Slice`` meaning: an int, a ``(start, stop[, step])`` tuple, a list or a slice) does
        the same for activations with one position axis, and refuses patterns and scores (TL keeps their key axis);
        encoder activations are kept whole. The cache then describes
        its own positions (``cache.audio_positions`` etc.; ``cache.positions`` maps back to the run).
        ``incl_bwd`` also caches gradients (``name + "_grad"``) of the output, which must then be a scalar
        (``return_type="loss"``), as in TransformerLens. ``return_cache_object=False`` returns the plain dict of
        activations (TransformerLens's option) instead of the cache object.
        """
        refuse_inside_a_run(self)  # before its cache points are set: they are the running forward's too
        inputs = self.to_inputs(input, **kwargs)
        if pos_slice is not None:
            if not (isinstance(positions, str) and positions == "all"):
                raise ValueError("pass either positions= or TransformerLens's pos_slice=, not both")
            positions = _tl_pos_slice_positions(pos_slice, inputs.shape[1])
        kept = self._positions_to_index(inputs, positions)  # checked before any work is done
        if cache_dtype is not None and not (isinstance(cache_dtype, torch.dtype) and cache_dtype.is_floating_point):
            raise TypeError(f"cache_dtype must be a floating torch dtype (e.g. torch.bfloat16), got {cache_dtype!r}")
        if remove_batch_dim and inputs.shape[0] != 1:
            raise ValueError(f"remove_batch_dim needs a batch of 1, got {inputs.shape[0]}")
        if incl_bwd and return_type not in ("loss", "logits"):
            raise ValueError("incl_bwd=True needs return_type='loss' (a scalar to differentiate)")
        cache_dict: dict[str, torch.Tensor] = {}
        named = _named_points(names_filter)  # explicit names: a typo is an error, one that does not fire is said
        for name in named or ():
            self._resolve(name)
        if named is not None:
            names_filter = named
        if names_filter is None and not self.cfg.use_attn_result:  # TransformerLens's default set
            names_filter = lambda name: not name.endswith("attn.hook_result")  # noqa: E731
        cached = [(name, hp) for name, hp in self.hook_dict.items() if _names_filter_fn(names_filter)(name)]
        two_axes = [name for name, _ in cached if len(position_dims(name)) == 2 and not name.startswith("audio_encoder.")]
        if pos_slice is not None and two_axes:
            raise ValueError(
                f"pos_slice= with attention patterns or scores ({two_axes[0]}, ...): TransformerLens slices their query "
                "axis only, this cache would slice the key axis too. Cache them without pos_slice (and index "
                "cache['pattern', l][:, :, q] yourself), pass positions= (both axes, documented), or leave them out "
                "(names_filter)")
        if callable(names_filter) and not cached:
            raise ValueError(
                f"names_filter matches none of the model's {len(self.hook_dict)} hook points, so nothing would be "
                "cached: check it against model.hook_dict.keys() (full names such as 'blocks.0.hook_resid_post'; "
                "transformer_lens.utils.get_act_name('resid_post', 0) makes one from TransformerLens's short name)"
            )
        bwd_hooks = [(name, _grad_saver(cache_dict, name, device, cache_dtype)) for name, _ in cached
                     if not self._ln1_output_unused(name)] if incl_bwd else []
        # A part built with TransformerLens's own HookPoint (no direct cache route) is cached by a module hook.
        fwd_hooks = [
            (name, _saver(cache_dict, name, device, cache_dtype)) for name, hp in cached if not isinstance(hp, HookPoint)
        ]
        cached = [(name, hp) for name, hp in cached if isinstance(hp, HookPoint)]
        with model_lock(self):
            try:
                for _, hook_point in cached:
                    hook_point.cache_into, hook_point.cache_device = cache_dict, device
                    hook_point.cache_dtype = cache_dtype
                if incl_bwd:
                    refuse_inference_mode("run_with_cache(incl_bwd=True)")
                grad_mode = torch.enable_grad() if incl_bwd else contextlib.nullcontext()  # under no_grad too
                with grad_mode, self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end=reset_hooks_end,
                                           clear_contexts=clear_contexts):
                    out = self.forward(inputs, return_type=return_type, loss_per_token=loss_per_token)
                    if incl_bwd:
                        if out.numel() != 1:
                            raise ValueError(
                                f"incl_bwd=True differentiates the output, which has {out.numel()} values: "
                                "pass return_type='loss'"
                            )
                        if out.grad_fn is None:
                            raise ValueError("incl_bwd=True needs a graph, but no parameter of the model requires grad "
                                             "(frozen weights): call model.requires_grad_(True) for the run")
                        out.backward()
            finally:
                for _, hook_point in cached:
                    hook_point.cache_into = hook_point.cache_device = hook_point.cache_dtype = None
        if named is not None:
            missing = [name for name in named if name not in cache_dict]
            if missing:
                why = ("" if inputs.has_audio else ": this batch holds no audio, so the audio encoder and "
                       "hook_audio_embeds do not run")
                warnings.warn(f"run_with_cache: {missing} did not fire in this forward, so the cache lacks them{why}")
            no_grad = [name for name in named if incl_bwd and self._ln1_output_unused(name)]
            if no_grad:
                warnings.warn(f"run_with_cache: {no_grad} have no gradient while per-head inputs are on (the attention "
                              "normalises each per-head copy itself), so the cache lacks their _grad entries")
        cache = AudioActivationCache(cache_dict, self, inputs)
        if kept is not None:
            cache = cache.restrict_positions(kept)
        if remove_batch_dim:
            cache = cache.remove_batch_dim()
        return out, (cache if return_cache_object else cache.cache_dict)

    def _ln1_output_unused(self, name: str) -> bool:
        """True for ``ln1``'s points while per-head inputs are on: they are computed for caches only, off the graph."""
        return (self.cfg.use_attn_in or self.cfg.use_split_qkv_input) and ".ln1.hook_" in name

    @staticmethod
    def _positions_to_index(inputs: AudioTextInput, positions) -> torch.Tensor | None:
        """Decoder positions to keep, checked against the input (None: all)."""
        n_pos = inputs.shape[1]
        if isinstance(positions, str) and positions == "all":
            return None
        if isinstance(positions, slice):
            index = torch.arange(n_pos)[positions]
        elif isinstance(positions, int) and not isinstance(positions, bool):
            index = torch.tensor([positions])
        elif isinstance(positions, (list, tuple, torch.Tensor, np.ndarray)):
            index = torch.as_tensor(np.asarray(positions) if isinstance(positions, np.ndarray) else positions)
            index = index.long() if index.numel() == 0 else index
            if index.ndim > 1:
                raise ValueError(f"positions must be one list of indices for every row, got shape {tuple(index.shape)} "
                                 "(a cache keeps the same columns of every row: cache them all and index per row)")
            index = index.reshape(-1)
            if index.is_floating_point() or index.dtype == torch.bool:
                raise TypeError(f"positions must be integer indices, got {index.dtype}")
        elif positions == "last":
            index = inputs.last_positions.unique().cpu()
            if len(index) != 1:
                raise ValueError("positions='last' needs every row to end at the same position (use left padding)")
        elif positions in ("audio", "text"):
            mask = inputs.audio_mask if positions == "audio" else inputs.text_mask
            if not (mask == mask[:1]).all():
                raise ValueError(
                    f"positions={positions!r} needs every batch row to have its {positions} at the same positions; "
                    "run rows separately or pass explicit positions"
                )
            index = torch.nonzero(mask[0]).flatten().cpu()
        else:
            raise ValueError(f"positions must be 'all', 'audio', 'text', 'last', a slice or indices, got {positions!r}")
        if len(index) == 0:
            raise ValueError(f"positions={positions!r} selects no position of the {n_pos}")
        if bool(((index < -n_pos) | (index >= n_pos)).any()):
            raise IndexError(f"positions {index.tolist()} are outside the input's {n_pos} positions (0..{n_pos - 1})")
        index = index.long() % n_pos
        if len(index) > 1 and not bool((index[1:] > index[:-1]).all()):  # before the forward, in the user's terms
            raise ValueError(f"positions {positions!r} must be increasing and distinct (columns {index.tolist()}): a "
                             "cache keeps its positions in order, once each")
        if not isinstance(positions, str):
            rows = rows_padded_at(index, inputs.attention_mask)
            if rows:  # the cache (and the lens read from it) would hold those rows' padding as if it were tokens
                raise ValueError(f"positions {positions!r} are padding in rows {rows} (e.g. -1 on right padding): "
                                 "cache those rows separately, pad on the left, or cache every position and index "
                                 "each row's own (inputs.last_positions)")
        return index

    # --- tokens and strings --------------------------------------------------------------------------
    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass processor= or tokenizer= when loading it")
        return self.tokenizer

    def to_tokens(
        self,
        text: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> Int[torch.Tensor, "batch pos"]:
        """Tokenize text (no audio), as TransformerLens's ``to_tokens``; a list becomes a padded batch (left by
        default, as generation needs). ``prepend_bos`` defaults to ``cfg.default_prepend_bos`` (False: the
        supported checkpoints' tokenizers add no BOS, and their chat templates start with their own tokens)."""
        return self._tokenize(text, prepend_bos, padding_side)["input_ids"]

    def _tokenize(self, text: str | list[str], prepend_bos: bool | None = None,
                  padding_side: Literal["left", "right"] | None = None) -> dict[str, torch.Tensor]:
        """``to_tokens``' ids with their attention mask (0 on the padding of a batch of prompts)."""
        tokenizer = self._require_tokenizer()
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or any(not isinstance(t, str) for t in texts):
            raise ValueError("to_tokens takes a string or a non-empty list of strings")
        padding_side = padding_side or "left"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        prepend_bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        if prepend_bos:
            if tokenizer.bos_token is None:
                raise ValueError("this model's tokenizer has no BOS token: pass prepend_bos=False")
            texts = [tokenizer.bos_token + t for t in texts]
        previous, tokenizer.padding_side = tokenizer.padding_side, padding_side
        try:
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                                return_attention_mask=True)
            return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        finally:
            tokenizer.padding_side = previous

    def to_single_token(self, text) -> int:
        """The id of ``text``, one token's string (as TransformerLens's); anything else is refused."""
        if not isinstance(text, str):
            raise TypeError(f"to_single_token takes one token's string, got {text!r}; for several: "
                            "[model.to_single_token(word) for word in words]")
        ids = self.to_tokens(text)[0]
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens, not one")
        read_as = self._require_tokenizer().decode([int(ids[0])])
        if read_as.strip() != text.strip():  # e.g. an unknown word mapped to the unknown token
            raise ValueError(f"{text!r} is not in the vocabulary: it would be read as the token {read_as!r}")
        return int(ids[0])

    def get_token_position(self, single_token: str | int, input: ModelInput = None,
                           mode: str = "first", **kwargs) -> int | Int[torch.Tensor, " batch"]:
        """TransformerLens's ``get_token_position``: the position of the first (or ``"last"``) occurrence of
        ``single_token`` (one token's string, or its id) in ``input`` (anything ``to_inputs`` takes, audio
        included). Padding never matches (it may be the same token). One row: an int, as TransformerLens; a
        batch: one absolute column per row (rows padded differently find it in different columns). A row
        without the token is an error."""
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', got {mode!r}")
        if isinstance(single_token, str):
            token = self.to_single_token(single_token)
        elif is_index(single_token) and 0 <= int(single_token) < self.cfg.d_vocab:
            token = int(single_token)
        else:
            raise ValueError(f"single_token must be one token's string or an id in 0..{self.cfg.d_vocab - 1}, "
                             f"got {single_token!r}")
        inputs = self.to_inputs(input, **kwargs)
        ids = inputs.input_ids.cpu()
        found = (ids == token) & inputs.real_mask.cpu()
        missing = (~found.any(-1)).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"token {token} ({self.to_string([token])!r}) is not in row(s) {missing} of the input")
        columns = torch.arange(ids.shape[1])
        positions = (torch.where(found, columns, ids.shape[1]).amin(-1) if mode == "first"
                     else torch.where(found, columns, -1).amax(-1))
        return int(positions[0]) if len(positions) == 1 else positions

    def tokens_to_residual_directions(self, tokens) -> torch.Tensor:
        """Unembedding directions ``W_U[:, tokens]`` moved to the last axis (for ``logit_attrs``)."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        elif isinstance(tokens, (list, tuple)) and tokens and all(isinstance(t, str) for t in tokens):
            tokens = [self.to_single_token(t) for t in tokens]  # several words: one direction each
        tokens = torch.as_tensor(tokens, device=self.W_U.device)
        return self.W_U[:, tokens].movedim(0, -1)

    def to_string(self, tokens) -> str | list[str]:
        tokenizer = self._require_tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            return [tokenizer.decode(row) for row in tokens]
        return tokenizer.decode(tokens)

    def to_str_tokens(self, input: ModelInput = None, row: int | None | Literal["only"] = "only",
                      prepend_bos: bool | None = None, padding_side: Literal["left", "right"] | None = None,
                      **kwargs) -> list[str] | list[list[str]]:
        """One string per position, as TransformerLens (``str_tokens[pos]`` lines up with activations); an
        audio position shows the seconds of its clip it covers, e.g. ``<audio 0.40–0.44 s>``. A list of prompts
        gives one list per prompt, each tokenized alone (no padding), as TransformerLens. A batch of several rows
        needs ``row=`` (that row, padding included, so positions line up with the batch's activations) or
        ``row=None`` (a list per row). ``display_tokens`` shows each audio span compactly instead."""
        if isinstance(input, list) and input and all(isinstance(t, str) for t in input):
            return [self.to_str_tokens(t, prepend_bos=prepend_bos, padding_side=padding_side, **kwargs) for t in input]
        if isinstance(input, str):
            input = self._tokenize(input, prepend_bos=prepend_bos, padding_side=padding_side)
        elif prepend_bos is not None or padding_side is not None:
            raise TypeError("prepend_bos= and padding_side= apply to text input only (these inputs are tokenized)")
        inputs = self.to_inputs(input, **kwargs)
        if row is None:
            return [self.to_str_tokens(inputs, r) for r in range(inputs.shape[0])]
        if row == "only":
            if inputs.shape[0] != 1:
                raise ValueError(f"these inputs have {inputs.shape[0]} rows: pass row= (one row's strings, padding "
                                 "included) or row=None (a list per row)")
            row = 0
        tokenizer = self._require_tokenizer()
        if not -inputs.shape[0] <= row < inputs.shape[0]:
            raise IndexError(f"row {row} is outside the batch of {inputs.shape[0]}")
        strings = tokenizer.convert_ids_to_tokens(inputs.input_ids[row].tolist())
        times = inputs.token_times()[row]
        for pos in torch.nonzero(inputs.audio_mask[row]).flatten().tolist():
            strings[pos] = f"<audio {times[pos, 0]:.2f}–{times[pos, 1]:.2f} s>"
        return strings

    def display_tokens(self, input: ModelInput = None, row: int | None | Literal["only"] = "only",
                       **kwargs) -> list[str] | list[list[str]]:
        """``to_str_tokens`` for reading, with each audio span as one item, e.g. ``<audio 0.00–4.96 s ×125>``
        (so its indices are *not* positions). ``row`` as in ``to_str_tokens``: a batch of several rows needs
        ``row=`` (one row) or ``row=None`` (a list per row)."""
        inputs = self.to_inputs(input, **kwargs)
        if row is None:
            return [self.display_tokens(inputs, r) for r in range(inputs.shape[0])]
        strings = self.to_str_tokens(inputs, row)
        row = 0 if row == "only" else row
        out, spans, pos = [], {span.start: span for span in inputs.audio_spans[row]}, 0
        while pos < len(strings):
            if pos in spans:
                span = spans[pos]
                out.append(f"<audio 0.00–{len(span) * inputs.seconds_per_token:.2f} s ×{len(span)}>")
                pos = span.end
            else:
                out.append(strings[pos])
                pos += 1
        return out

    # --- building inputs from real audio -------------------------------------------------------------
    def build_inputs(self, *args, **kwargs) -> AudioTextInput:
        """Text or chat messages plus audio (paths or arrays, any rate, mono or stereo) -> inputs.
        See ``hooked_audio.prompting.build_inputs``."""
        from .audio.prompting import build_inputs

        return build_inputs(self, *args, **kwargs)

    # --- generation ------------------------------------------------------------------------------------
    def generate(
        self, input: ModelInput = None, **kwargs
    ) -> Int[torch.Tensor, "batch pos"] | tuple[Int[torch.Tensor, "batch pos"], Float[torch.Tensor, "batch new vocab"]]:
        """Greedy or sampled continuation with any active hooks applied (KV-cached by default); with
        ``return_logits=True`` also each step's logits. See ``generation.generate``."""
        from .generation import generate

        return generate(self, input, **kwargs)


# TransformerLens forward options this model does not implement, and what to do instead
TL_FORWARD_OPTIONS = frozenset({"stop_at_layer", "start_at_layer", "shortformer_pos_embed", "past_kv_cache"})
TL_FORWARD_OPTIONS_INSTEAD = ("the forward runs every layer from the embedding; read a layer's residual stream from "
                              "run_with_cache (names_filter= narrows it), and use generate for KV-cached decoding")


def _named_points(names_filter) -> list[str] | None:
    """The hook names a ``names_filter`` lists (a name, or any collection of names: list, set, frozenset,
    ``dict.keys()``, a generator), or None where it is None or a predicate."""
    if isinstance(names_filter, str):
        return [names_filter]
    if names_filter is None or callable(names_filter):
        return None
    if isinstance(names_filter, Iterable):
        return list(names_filter)
    raise TypeError(f"names_filter must be None, a hook name, a collection of hook names or a predicate "
                    f"name -> bool, got {type(names_filter).__name__}")


def _names_filter_fn(names_filter) -> Callable[[str], bool]:
    """TransformerLens's ``names_filter`` forms (None, a name, names, a predicate) as a predicate."""
    if names_filter is None:
        return lambda name: True
    named = _named_points(names_filter)
    if named is None:
        return names_filter
    wanted = set(named)
    return lambda name: name in wanted


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def refuse_inference_mode(user: str) -> None:
    """Refuse a gradient computation under ``torch.inference_mode()``, which no ``torch.enable_grad()`` inside can
    lift (its tensors never record a graph)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{user} needs gradients, but this runs under torch.inference_mode(), which no "
                           "torch.enable_grad() inside can lift: call it outside inference_mode (torch.no_grad() is fine)")


def model_lock(model: nn.Module) -> threading.RLock:
    """The model's re-entrant lock (kept outside the module, so that copying or pickling it still works)."""
    with _LOCKS_GUARD:
        if model not in _LOCKS:
            _LOCKS[model] = threading.RLock()
        return _LOCKS[model]


def _saver(cache_dict: dict, name: str, device, dtype: torch.dtype | None = None) -> Callable:
    def save(x, hook):
        cache_dict[name] = to_cache(x, device, dtype, name)

    return save


def _grad_saver(cache_dict: dict, name: str, device, dtype: torch.dtype | None = None) -> Callable:
    def save(grad, hook):
        cache_dict[f"{name}_grad"] = to_cache(grad, device, dtype, f"{name}_grad")

    return save


def _tl_pos_slice_positions(pos_slice, n_pos: int) -> list[int]:
    """The positions TransformerLens's ``Slice(pos_slice)`` keeps of ``n_pos`` (a tuple is ``slice(*tuple)``)."""
    if isinstance(pos_slice, Slice):
        pos_slice = pos_slice.slice
    try:
        kept = Slice(pos_slice).apply(torch.arange(n_pos))
    except (ValueError, TypeError) as error:
        raise ValueError(f"pos_slice={pos_slice!r} is not a TransformerLens slice (an int, a tuple, a list or a "
                         f"slice): {error}") from None
    return kept.reshape(-1).tolist()
