"""What a model family is: how to read its HF config, which of its attributes are handled, how to rename
its weights. A family is a pure loading layer: nothing here runs in the forward pass.

A family file states only what differs from the family it resembles; the shared pieces (Qwen2/Llama-style
decoder, Whisper-style encoder) are mapped by the helpers below.

The whitelist: every HF config attribute that a family does not list as handled must keep its class
default. A non-default value of anything else (``use_sliding_window=True``, a new RoPE type, ...) is refused
with an error naming it, so that a configuration this library does not reproduce exactly never loads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from transformers import PretrainedConfig

from ..components.pooling import FramePooling
from ..config import AudioEncoderConfig, HookedAudioConfig

RenameRules = list[tuple[str, str]]
# Per (sub-)config, the attributes the family handles: "" is the top-level config, "text_config" etc. its
# parts; None marks a part that is not re-implemented and not read (e.g. an Omni model's vision tower).
HandledAttributes = Mapping[str, frozenset[str] | None]

# Attributes that never change an eval-mode forward pass: dropout, init, caching and training-only settings,
# token ids used by processors and generation (each family maps the ones it needs), HF bookkeeping.
INERT = frozenset(PretrainedConfig().to_dict()) | {
    "initializer_range", "dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "layerdrop",
    "use_cache", "output_router_logits", "router_aux_loss_coef", "bos_token_id", "eos_token_id", "pad_token_id",
    "tokenizer_class", "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params",
    "finetuning_task", "tie_encoder_decoder", "torchscript", "pruned_heads", "cross_attention_hidden_size",
    "add_cross_attention", "is_decoder", "base_config_key", "_attn_implementation_autoset", "torch_dtype",
}


@dataclass(frozen=True)
class ModelFamily:
    name: str
    hf_model_types: tuple[str, ...]  # HF ``config.model_type`` values this family loads
    hf_class_name: str
    config_from_hf: Callable[[PretrainedConfig], HookedAudioConfig]
    rename_rules: RenameRules  # regex -> replacement over HF state-dict keys, first match wins
    handled: HandledAttributes
    ignored_hf_keys: tuple[str, ...] = ()  # HF weights of parts not re-implemented (matched whole)
    config_root: Callable[[PretrainedConfig], PretrainedConfig] = field(default=lambda hf_config: hf_config)
    # The HF class itself, for a family whose class is not in ``transformers`` (``from_pretrained`` then reads
    # the config with ``hf_class.config_class``); None: ``getattr(transformers, hf_class_name)``.
    hf_class: type | None = None

    def model_class(self) -> type:
        import transformers

        return self.hf_class or getattr(transformers, self.hf_class_name)

    def to_config(self, hf_config: PretrainedConfig) -> HookedAudioConfig:
        """Our config from HF's, after refusing any attribute the family does not reproduce."""
        check_handled(self.config_root(hf_config), self.handled, self.name)
        return self.config_from_hf(hf_config)

    def state_dict_from_hf(self, hf_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename every HF weight to this library's name; an unmapped key is an error, never dropped."""
        renamed, unmapped = {}, []
        for key, value in hf_state_dict.items():
            if any(re.fullmatch(pattern, key) for pattern in self.ignored_hf_keys):
                continue
            for pattern, replacement in self.rename_rules:
                if re.fullmatch(pattern, key):
                    renamed[re.sub(pattern, replacement, key)] = value
                    break
            else:
                unmapped.append(key)
        if unmapped:
            raise KeyError(f"{self.name}: no mapping for HF weights {unmapped[:5]} ({len(unmapped)} in all)")
        return renamed


def check_handled(hf_config: PretrainedConfig, handled: HandledAttributes, family: str) -> None:
    """Refuse attributes of ``hf_config`` and its parts that differ from their class default and that the
    family does not handle."""
    for where, part in [("", hf_config), *_parts(hf_config)]:
        if where not in handled:
            raise NotImplementedError(f"{family}: the HF config part {where!r} is not handled by this library")
        if handled[where] is None:
            continue
        values, defaults = part.to_dict(), type(part)().to_dict()
        for key, value in values.items():
            if isinstance(getattr(part, key, None), PretrainedConfig) or key in INERT or key in handled[where]:
                continue
            if key.endswith(("_token_id", "_token_index")):  # used by processors; the forward reads only the
                continue  # audio placeholder id, which every family maps explicitly
            if key in defaults and value == defaults[key]:
                continue
            name = f"{where}.{key}" if where else key
            raise NotImplementedError(
                f"{family}: HF config attribute {name}={value!r} (default {defaults.get(key, '<unset>')!r}) is not "
                "reproduced by this library, so the model would not match HF's; leave it at its default, or add "
                "support for it in the family (see CONTRIBUTING.md)"
            )


def _parts(hf_config: PretrainedConfig) -> list[tuple[str, PretrainedConfig]]:
    """The sub-configs of a composite config (``audio_config``, ``text_config``, ...)."""
    return [(key, value) for key, value in vars(hf_config).items() if isinstance(value, PretrainedConfig)]


def tied_embeddings(hf_config: PretrainedConfig) -> bool:
    """Whether HF ties ``lm_head`` to the input embeddings: it reads the flag of the model's own (top-level)
    config, never the text config's (``PreTrainedModel.tie_weights``)."""
    return bool(getattr(hf_config, "tie_word_embeddings", False))


# --- the Qwen2 / Llama decoder -------------------------------------------------------------------------
QWEN2_TEXT = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_parameters", "rope_theta",
    "head_dim", "use_sliding_window", "sliding_window", "max_window_layers", "layer_types",
    "tie_word_embeddings",  # read by HF from the top-level config only: ignored here as HF ignores it
})
LLAMA_TEXT = (QWEN2_TEXT - {"use_sliding_window", "sliding_window", "max_window_layers"}) | {"attention_bias", "mlp_bias"}


def decoder_rules(prefix: str, lm_head: str = "lm_head") -> RenameRules:
    """Qwen2/Llama decoder weights under ``prefix`` (e.g. ``model.language_model``) plus the output head at
    ``lm_head`` (e.g. ``language_model.lm_head`` for a nested ``LlamaForCausalLM``)."""
    p = re.escape(prefix)
    return [
        (rf"{p}\.embed_tokens\.weight", "embed.weight"),
        (rf"{p}\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
        (rf"{p}\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
        (rf"{p}\.layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.ln1.w"),
        (rf"{p}\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.ln2.w"),
        (rf"{p}\.norm\.weight", "ln_final.w"),
        (rf"{re.escape(lm_head)}\.weight", "unembed.weight"),
    ]


def check_full_attention_rope(text_config) -> None:
    """Plain RoPE and full attention in every layer: what the decoder here computes."""
    rope = getattr(text_config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"RoPE type {rope.get('rope_type')!r} is not supported yet")
    if getattr(text_config, "use_sliding_window", False):
        raise NotImplementedError("sliding-window decoder layers (use_sliding_window=True) are not supported")
    layer_types = set(getattr(text_config, "layer_types", None) or ["full_attention"])
    if layer_types != {"full_attention"}:
        raise NotImplementedError(f"decoder layer types {sorted(layer_types)} are not supported (only full_attention)")


def decoder_fields_from_hf(text_config, tie_word_embeddings: bool = False) -> dict:
    """``HookedAudioConfig`` decoder fields from a Qwen2-style HF text config (q/k/v biases, no o bias)."""
    check_full_attention_rope(text_config)
    d_head = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    rope = getattr(text_config, "rope_parameters", None) or {}
    eos = text_config.eos_token_id
    return dict(
        n_layers=text_config.num_hidden_layers,
        d_model=text_config.hidden_size,
        n_heads=text_config.num_attention_heads,
        d_head=d_head,
        d_mlp=text_config.intermediate_size,
        d_vocab=text_config.vocab_size,
        n_key_value_heads=text_config.num_key_value_heads,
        n_ctx=text_config.max_position_embeddings,
        act_fn=text_config.hidden_act,
        eps=text_config.rms_norm_eps,
        rotary_base=float(rope.get("rope_theta", getattr(text_config, "rope_theta", 10000.0))),
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=text_config.pad_token_id,
        eos_token_ids=tuple(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])),
    )


def llama_decoder_fields_from_hf(text_config, tie_word_embeddings: bool = False) -> dict:
    """``decoder_fields_from_hf`` for a Llama-style text config, whose biases are off unless
    ``attention_bias`` (q, k, v and o together) or ``mlp_bias`` say otherwise."""
    attention_bias = bool(getattr(text_config, "attention_bias", False))
    return dict(
        decoder_fields_from_hf(text_config, tie_word_embeddings),
        qkv_bias=(attention_bias,) * 3,
        o_bias=attention_bias,
        mlp_bias=bool(getattr(text_config, "mlp_bias", False)),
    )


# --- the Whisper-style encoder -------------------------------------------------------------------------
WHISPER_AUDIO = frozenset({
    "num_mel_bins", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "d_model",
    "activation_function", "max_source_positions", "scale_embedding",
})
# The same encoder with Llama-style attribute names (Audio Flamingo 3, Voxtral).
WHISPER_AUDIO_RENAMED = frozenset({
    "num_mel_bins", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_size",
    "activation_function", "max_source_positions", "scale_embedding",
})


def whisper_block_rules(prefix: str) -> RenameRules:
    """Whisper-named encoder blocks (``layers.{l}.self_attn``, ``fc1``/``fc2``, two LayerNorms) under ``prefix``."""
    p = re.escape(prefix)
    return [
        (rf"{p}\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", r"audio_encoder.blocks.\1.attn.\2.\3"),
        (rf"{p}\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"audio_encoder.blocks.\1.attn.o.\2"),
        (rf"{p}\.layers\.(\d+)\.self_attn_layer_norm\.weight", r"audio_encoder.blocks.\1.ln1.w"),
        (rf"{p}\.layers\.(\d+)\.self_attn_layer_norm\.bias", r"audio_encoder.blocks.\1.ln1.b"),
        (rf"{p}\.layers\.(\d+)\.final_layer_norm\.weight", r"audio_encoder.blocks.\1.ln2.w"),
        (rf"{p}\.layers\.(\d+)\.final_layer_norm\.bias", r"audio_encoder.blocks.\1.ln2.b"),
        (rf"{p}\.layers\.(\d+)\.fc1\.(weight|bias)", r"audio_encoder.blocks.\1.mlp.fc_in.\2"),
        (rf"{p}\.layers\.(\d+)\.fc2\.(weight|bias)", r"audio_encoder.blocks.\1.mlp.fc_out.\2"),
    ]


def whisper_encoder_rules(prefix: str) -> RenameRules:
    """Whisper-style encoder weights under ``prefix`` (e.g. ``model.audio_tower``)."""
    p = re.escape(prefix)
    return [
        (rf"{p}\.conv([12])\.(weight|bias)", r"audio_encoder.stem.conv\1.\2"),
        (rf"{p}\.embed_positions\.weight", "audio_encoder.W_pos"),
        *whisper_block_rules(prefix),
        (rf"{p}\.layer_norm\.weight", "audio_encoder.ln_post.w"),
        (rf"{p}\.layer_norm\.bias", "audio_encoder.ln_post.b"),
    ]


def whisper_encoder_config_from_hf(audio_config, **overrides) -> AudioEncoderConfig:
    """``AudioEncoderConfig`` from a Whisper-style HF encoder config (either attribute naming)."""
    if getattr(audio_config, "scale_embedding", False):
        raise NotImplementedError("scale_embedding=True encoders are not supported yet")
    read = lambda *names: next(getattr(audio_config, n) for n in names if hasattr(audio_config, n))  # noqa: E731
    fields = dict(
        n_layers=read("encoder_layers", "num_hidden_layers"),
        d_model=read("d_model", "hidden_size"),
        n_heads=read("encoder_attention_heads", "num_attention_heads"),
        d_mlp=read("encoder_ffn_dim", "intermediate_size"),
        n_mels=audio_config.num_mel_bins,
        window_frames=audio_config.max_source_positions,
        act_fn=audio_config.activation_function,
    )
    fields.update(overrides)
    return AudioEncoderConfig(**fields)


def check_frame_stacking(d_audio: int, stacked_width: int, pooling: FramePooling) -> None:
    """HF reshapes encoder frames to rows of ``audio_config.intermediate_size``: refuse configs where that is
    not a whole number of frames per token."""
    if stacked_width != pooling.output_width(d_audio):
        raise NotImplementedError(
            f"audio_config.intermediate_size={stacked_width} must be {pooling.frames_per_token} x "
            f"hidden_size={d_audio}: HF stacks {pooling.frames_per_token} frames to that width"
        )


def check_whole_tokens_per_window(window_frames: int, pooling: FramePooling) -> None:
    """HF stacks frames by flattening the whole batch: a window that is not a whole number of tokens would mix
    two windows' frames into one token."""
    if window_frames % pooling.frames_per_token:
        raise NotImplementedError(
            f"an encoder window of {window_frames} frames is not a multiple of {pooling.frames_per_token} "
            "(HF would stack frames across windows)"
        )


def check_gelu_projector(hf_config) -> None:
    if hf_config.projector_hidden_act != "gelu":
        raise NotImplementedError(f"projector activation {hf_config.projector_hidden_act!r} is not supported")
