"""``HookedAudioTransformer``: an audio-language model re-implemented with a hook point everywhere.

    features -> audio_encoder -> projector -> hook_audio_embeds          [n_audio_tok, d_model]
    input_ids -> embed, audio tokens spliced in -> hook_embed            [batch, pos, d_model]
    -> blocks x n_layers (TransformerLens names) -> ln_final -> unembed -> logits

The decoder half follows TransformerLens's hook names and ``cfg`` fields, so ``ActivationCache``,
``transformer_lens.patching`` and ``utils.get_act_name`` work as they do on GPT-2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import nn
from transformer_lens import HookedRootModule

from .audio.inputs import AudioTextInput, as_tensor_dict
from .cache import AudioActivationCache
from .components.block import TransformerBlock
from .components.masks import causal_padding_mask
from .components.moe import MoEMLP
from .components.norms import make_norm
from .components.positions import decoder_position_ids
from .components.rotary import RotaryEmbedding
from .components.time_rotary import TimeRotaryEmbedding
from .config import HookedAudioConfig
from .encoders import build_encoder
from .hook_points import HookPoint, unknown_hook_name_error
from .kv_cache import KVCache, at_position_offset

HookName = str | Callable[[str], bool]
ModelInput = AudioTextInput | Mapping | torch.Tensor | str | list | None

# Keys a processor may return that carry nothing the forward needs.
_IGNORED_INPUT_KEYS = {"num_audio_tokens", "token_type_ids"}


class HookedAudioTransformer(HookedRootModule):
    def __init__(self, cfg: HookedAudioConfig, processor: Any = None, tokenizer: Any = None):
        super().__init__()
        self.cfg = cfg
        self.processor = processor
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)

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

    # --- TransformerLens-style weight views ---------------------------------------------------------
    @property
    def W_E(self) -> Float[torch.Tensor, "d_vocab d_model"]:
        return self.embed.weight

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        return self.unembed.weight.T

    @property
    def b_U(self) -> Float[torch.Tensor, "d_vocab"]:
        return torch.zeros(self.cfg.d_vocab, dtype=self.W_U.dtype, device=self.W_U.device)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    # --- inputs --------------------------------------------------------------------------------------
    def to_inputs(self, input: ModelInput = None, **kwargs) -> AudioTextInput:
        """Normalise any accepted input (HF-style kwargs, a processor's output, an ``AudioTextInput``,
        a token tensor or a text prompt) into one ``AudioTextInput``."""
        if isinstance(input, AudioTextInput):
            if any(v is not None for v in kwargs.values()):
                raise TypeError("pass either an AudioTextInput or keyword inputs, not both")
            return input
        if isinstance(input, Mapping):
            kwargs = {**as_tensor_dict(input), **{k: v for k, v in kwargs.items() if v is not None}}
        elif isinstance(input, torch.Tensor):
            kwargs["input_ids"] = input
        elif isinstance(input, (str, list)):
            kwargs["input_ids"] = self.to_tokens(input)
        elif input is not None:
            raise TypeError(f"unsupported input of type {type(input).__name__}")
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k not in _IGNORED_INPUT_KEYS}

        input_ids = kwargs.pop("input_ids", None)
        if input_ids is None:
            raise ValueError("input_ids are required (or pass the processor's output / an AudioTextInput)")
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        attention_mask = kwargs.pop("attention_mask", None)
        position_ids = kwargs.pop("position_ids", None)
        spec = self.cfg.audio_inputs
        audio_keys = {spec.features, spec.frame_mask} - {None}
        unknown = set(kwargs) - audio_keys
        if unknown:
            raise TypeError(
                f"unexpected inputs {sorted(unknown)} for the {self.cfg.family} family; "
                f"it takes input_ids, attention_mask, position_ids and {sorted(audio_keys)}"
            )
        return AudioTextInput(
            input_ids=input_ids,
            attention_mask=attention_mask,
            audio=kwargs,
            audio_token_id=self.cfg.audio_token_id,
            seconds_per_token=self.cfg.seconds_per_audio_token if self.cfg.audio else 0.0,
            position_ids=position_ids,
        )

    # --- forward -------------------------------------------------------------------------------------
    def forward(
        self,
        input: ModelInput = None,
        *,
        return_type: Literal["logits", "loss", "both"] | None = "logits",
        **kwargs,
    ):
        """Logits ``[batch, pos, d_vocab]`` (HF keyword names: ``input_ids``, ``attention_mask``, the
        family's audio feature kwargs, ``position_ids``). ``return_type="loss"`` is the next-token loss
        on real text targets (audio placeholders and padding excluded)."""
        inputs = self.to_inputs(input, **kwargs)
        logits = self.forward_inputs(inputs)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = self.text_loss(logits, inputs)
        return loss if return_type == "loss" else (logits, loss)

    def forward_inputs(
        self,
        inputs: AudioTextInput,
        audio_embeds: Float[torch.Tensor, "n_audio_tok d_model"] | None = None,
        audio_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> Float[torch.Tensor, "batch pos d_vocab"]:
        """The decoder run. Generation passes ``audio_embeds`` precomputed and an ``audio_mask`` that
        marks the prompt's placeholders only (a generated token may happen to be the audio token).

        ``kv_cache`` (a ``KVCache``): ``inputs`` are the positions after the cached ones (the prompt into an
        empty cache, then one token per step); their keys, values and attention mask are appended to the
        cache, attention reads every cached position, and rotary positions continue from the cache's mask
        (real tokens before, as HF's ``generate``) unless ``inputs.position_ids`` says otherwise. Hooks see
        the new positions only; ``hooked_audio.kv_cache.position_offset()`` is the absolute position of the
        first."""
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
            return self.unembed(self.ln_final(resid))

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
        hidden = self.audio_encoder(features, mel_lengths)
        if mel_lengths is None:  # every mel frame of every window is real
            mel_lengths = torch.full((hidden.shape[0],), features.shape[2], device=self.device)
        lengths = self.audio_encoder.output_lengths(mel_lengths)
        if self.cfg.audio_time_rotary is not None:  # needs the placeholder runs to know each window's clip
            hidden = self.audio_time_rotary(hidden, lengths, inputs.audio_mask)
        projected = self.projector(hidden)
        valid = torch.arange(projected.shape[1], device=self.device)[None, :] < lengths[:, None]
        return self.hook_audio_embeds(projected[valid])

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

    @staticmethod
    def text_loss(logits: torch.Tensor, inputs: AudioTextInput) -> torch.Tensor:
        """Mean next-token cross-entropy over real text targets."""
        targets = inputs.input_ids[:, 1:].to(logits.device)
        keep = inputs.text_mask[:, 1:].to(logits.device)
        return F.cross_entropy(logits[:, :-1][keep], targets[keep])

    # --- hooks (O(hooks added) to add and remove) ------------------------------------------------------
    def _resolve(self, name: HookName) -> list[HookPoint]:
        if callable(name):
            return [hp for hook_name, hp in self.hook_dict.items() if name(hook_name)]
        if name not in self.hook_dict:
            raise unknown_hook_name_error(name, list(self.hook_dict))
        return [self.hook_dict[name]]

    def add_hook(self, name: HookName, hook, dir="fwd", is_permanent=False, level=None, prepend=False) -> None:
        for hook_point in self._resolve(name):
            hook_point.add_hook(hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    @contextmanager
    def hooks(self, fwd_hooks=(), bwd_hooks=(), reset_hooks_end: bool = True, clear_contexts: bool = False):
        """Temporary hooks, removed on exit (also after an exception) touching only the points they used."""
        added: list[tuple[HookPoint, str, Any]] = []
        self.context_level += 1
        try:
            for direction, hooks in (("fwd", fwd_hooks), ("bwd", bwd_hooks)):
                for name, hook in hooks:
                    for hook_point in self._resolve(name):
                        handle = hook_point.add_hook(hook, dir=direction, level=self.context_level)
                        added.append((hook_point, direction, handle))
            yield self
        finally:
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

    def run_with_cache(
        self,
        input: ModelInput = None,
        *,
        names_filter=None,
        device=None,
        remove_batch_dim: bool = False,
        positions: Literal["all", "audio", "text", "last"] | slice | list[int] = "all",
        return_type: str | None = "logits",
        **kwargs,
    ) -> tuple[Any, AudioActivationCache]:
        """Run once, caching activations (all by default; ``names_filter`` narrows by name).

        ``device`` offloads the cache (e.g. ``"cpu"`` from a GPU run). ``positions`` keeps only some
        decoder positions of ``[batch, pos, ...]`` activations (``"audio"``/``"text"`` need every row to
        share them); attention patterns and encoder activations are kept whole.
        """
        inputs = self.to_inputs(input, **kwargs)
        pos_slice = self._positions_to_slice(inputs, positions)
        if remove_batch_dim and inputs.shape[0] != 1:
            raise ValueError(f"remove_batch_dim needs a batch of 1, got {inputs.shape[0]}")
        cache_dict: dict[str, torch.Tensor] = {}
        if isinstance(names_filter, (str, list, tuple, set)):  # explicit names: a typo is an error, not a gap
            for name in [names_filter] if isinstance(names_filter, str) else names_filter:
                self._resolve(name)
        cached_points = [hp for name, hp in self.hook_dict.items() if _names_filter_fn(names_filter)(name)]
        try:
            for hook_point in cached_points:
                hook_point.cache_into, hook_point.cache_device = cache_dict, device
            out = self.forward(inputs, return_type=return_type)
        finally:
            for hook_point in cached_points:
                hook_point.cache_into = hook_point.cache_device = None
        if remove_batch_dim:
            cache_dict = {name: act[0] for name, act in cache_dict.items()}
        if pos_slice is not None:
            n_pos = inputs.shape[1]
            pos_dim = 0 if remove_batch_dim else 1
            for name, act in cache_dict.items():
                if _is_decoder_position_activation(name) and act.shape[pos_dim] == n_pos:
                    cache_dict[name] = act.index_select(pos_dim, pos_slice.to(act.device))
        return out, AudioActivationCache(cache_dict, self, inputs, has_batch_dim=not remove_batch_dim)

    @staticmethod
    def _positions_to_slice(inputs: AudioTextInput, positions) -> torch.Tensor | None:
        if isinstance(positions, str) and positions == "all":
            return None
        if isinstance(positions, slice):
            return torch.arange(inputs.shape[1])[positions]
        if isinstance(positions, (list, tuple, torch.Tensor)):
            return torch.as_tensor(positions)
        if positions == "last":
            last = inputs.last_positions.unique()
        elif positions in ("audio", "text"):
            mask = inputs.audio_mask if positions == "audio" else inputs.text_mask
            if not (mask == mask[:1]).all():
                raise ValueError(
                    f"positions={positions!r} needs every batch row to have its {positions} at the same positions; "
                    "run rows separately or pass explicit positions"
                )
            last = torch.nonzero(mask[0]).flatten()
        else:
            raise ValueError(f"positions must be 'all', 'audio', 'text', 'last', a slice or indices, got {positions!r}")
        if positions == "last" and len(last) != 1:
            raise ValueError("positions='last' needs every row to end at the same position (use left padding)")
        return last.cpu()

    # --- tokens and strings --------------------------------------------------------------------------
    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass processor= or tokenizer= when loading it")
        return self.tokenizer

    def to_tokens(self, text: str | list[str]) -> Int[torch.Tensor, "batch pos"]:
        """Tokenize text (no audio); a list is left-padded into a batch."""
        tokenizer = self._require_tokenizer()
        texts = [text] if isinstance(text, str) else text
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)["input_ids"]

    def to_single_token(self, text: str) -> int:
        ids = self.to_tokens(text)[0]
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens, not one")
        return int(ids[0])

    def tokens_to_residual_directions(self, tokens) -> torch.Tensor:
        """Unembedding directions ``W_U[:, tokens]`` moved to the last axis (for ``logit_attrs``)."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        tokens = torch.as_tensor(tokens, device=self.W_U.device)
        return self.W_U[:, tokens].movedim(0, -1)

    def to_string(self, tokens) -> str | list[str]:
        tokenizer = self._require_tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            return [tokenizer.decode(row) for row in tokens]
        return tokenizer.decode(tokens)

    def to_str_tokens(self, input: ModelInput = None, row: int = 0, collapse_audio: bool = True, **kwargs) -> list[str]:
        """One string per position of ``row``; an audio span shows as ``<audio 0.00–4.96 s ×125>``."""
        tokenizer = self._require_tokenizer()
        inputs = self.to_inputs(input, **kwargs)
        ids = inputs.input_ids[row].tolist()
        strings = tokenizer.convert_ids_to_tokens(ids)
        if not collapse_audio:
            return strings
        out, spans = [], {s.start: s for s in inputs.audio_spans[row]}
        pos = 0
        while pos < len(ids):
            if pos in spans:
                span = spans[pos]
                seconds = len(span) * inputs.seconds_per_token
                out.append(f"<audio 0.00–{seconds:.2f} s ×{len(span)}>")
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
    def generate(self, input: ModelInput = None, **kwargs) -> Int[torch.Tensor, "batch pos"]:
        """Greedy or sampled continuation with any active hooks applied; see ``generation.generate``."""
        from .generation import generate

        return generate(self, input, **kwargs)


def _names_filter_fn(names_filter) -> Callable[[str], bool]:
    """TransformerLens's ``names_filter`` forms (None, a name, a list of names, a predicate) as a predicate."""
    if names_filter is None:
        return lambda name: True
    if isinstance(names_filter, str):
        return lambda name: name == names_filter
    if isinstance(names_filter, (list, tuple, set)):
        wanted = set(names_filter)
        return lambda name: name in wanted
    return names_filter


def _is_decoder_position_activation(name: str) -> bool:
    """Decoder activations laid out ``[batch, pos, ...]`` (patterns and scores are ``[batch, head, q, k]``)."""
    decoder = name == "hook_embed" or name.startswith(("blocks.", "ln_final."))
    return decoder and not name.endswith(("hook_pattern", "hook_attn_scores"))
