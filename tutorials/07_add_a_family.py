# %% [markdown]
# # Add a model family in one file: an Ultravox-shaped model
#
# hooked_audio ships seven families, but a family is only a *loading layer*: a config mapping (HF config
# -> `HookedAudioConfig`), a whitelist of the HF attributes it handles, and rename rules for the weights.
# The forward pass is built from parts the library already has, plus any part you bring. This script adds,
# outside the package, a family the library does not ship: an Ultravox-shaped model
#
#     Whisper encoder -> stack 8 frames -> RMSNorm -> Linear -> SwiGLU -> Linear -> Llama decoder
#
# with the audio embeddings spliced in at a placeholder token. It runs on a CPU in a few seconds:
#
#     python tutorials/07_add_a_family.py
#
# Ultravox itself lives on the hub as remote code, so the *reference* here is built in this file from
# transformers' `WhisperEncoder` and `LlamaForCausalLM` and a few lines of projector, the way HF audio
# models are written. See CONTRIBUTING.md for adding a family to the package itself.

# %%
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedConfig, PreTrainedModel, WhisperConfig
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from hooked_audio import HookedAudioConfig, HookedAudioTransformer
from hooked_audio.analysis import logit_lens
from hooked_audio.components.norms import RMSNorm
from hooked_audio.components.pooling import FrameStacking
from hooked_audio.components.projector import ProjectorConfig
from hooked_audio.families import register_family
from hooked_audio.families.base import (
    LLAMA_TEXT, WHISPER_AUDIO, ModelFamily, decoder_rules, llama_decoder_fields_from_hf, tied_embeddings,
    whisper_encoder_config_from_hf, whisper_encoder_rules,
)
from hooked_audio.hook_points import HookPoint

torch.set_grad_enabled(False)
start = time.perf_counter()

# %% [markdown]
# ## 1. The reference model (what HF would run)
# A composite config holding a `WhisperConfig` and a `LlamaConfig`, and a model whose forward takes
# `input_ids, attention_mask, input_features, feature_attention_mask`. Each feature row is one clip padded
# to the encoder's fixed window. HF's `WhisperEncoder` encodes the whole window (it does **not** mask the
# padded frames) and applies its final LayerNorm to every frame; the frames are then stacked 8 at a time,
# projected, and each clip keeps its first `frames // 8` tokens (frames = valid mel frames after the
# stride-2 conv), which replace that clip's placeholder tokens in order. (Ultravox itself rounds a clip's
# last partial group up; a `FramePooling` subclass with its own `output_lengths` would say that.)


# %%
class UltravoxTutorialConfig(PreTrainedConfig):
    model_type = "ultravox_tutorial"
    sub_configs_defaults = {"audio_config": WhisperConfig, "text_config": LlamaConfig}

    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    audio_token_id: int = 3
    stack_factor: int = 8
    projector_hidden_size: int = 128  # linear_1's width; SwiGLU halves it


class ReferenceProjector(nn.Module):
    """Ultravox's projector: RMSNorm -> Linear -> SwiGLU (halves the width) -> Linear, no biases."""

    def __init__(self, config: UltravoxTutorialConfig):
        super().__init__()
        d_in = config.audio_config.d_model * config.stack_factor
        self.ln_pre = LlamaRMSNorm(d_in, eps=config.text_config.rms_norm_eps)
        self.linear_1 = nn.Linear(d_in, config.projector_hidden_size, bias=False)
        self.linear_2 = nn.Linear(config.projector_hidden_size // 2, config.text_config.hidden_size, bias=False)

    def forward(self, x):
        x, gate = self.linear_1(self.ln_pre(x)).chunk(2, dim=-1)
        return self.linear_2(F.silu(gate) * x)


class UltravoxTutorialForConditionalGeneration(PreTrainedModel):
    config_class = UltravoxTutorialConfig

    def __init__(self, config: UltravoxTutorialConfig):
        super().__init__(config)
        self.audio_tower = HFWhisperEncoder(config.audio_config)
        self.multi_modal_projector = ReferenceProjector(config)
        self.language_model = LlamaForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def forward(self, input_ids, attention_mask=None, input_features=None, feature_attention_mask=None):
        embeds = self.get_input_embeddings()(input_ids)
        if input_features is not None:
            frames = self.audio_tower(input_features).last_hidden_state  # [clip, frame, d], layer-normed
            n, k = self.config.stack_factor, frames.shape[1] // self.config.stack_factor
            tokens = self.multi_modal_projector(frames[:, : k * n].reshape(frames.shape[0], k, -1))
            valid_frames = (feature_attention_mask.sum(-1) - 1) // 2 + 1  # after the stride-2 conv
            keep = torch.arange(k)[None, :] < (valid_frames // n)[:, None]
            placeholders = (input_ids == self.config.audio_token_id)[..., None]
            embeds = embeds.masked_scatter(placeholders, tokens[keep].to(embeds.dtype))
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask)


# %% [markdown]
# ## 2. The part the library does not have: the SwiGLU projector
# A projector is any module from `[..., d_in]` to `[..., d_model]`, built by a frozen `ProjectorConfig`
# subclass's `build(d_in, d_model)`. Written with the library's `RMSNorm` (which has `hook_scale` and
# `hook_normalized`) and a `hook_gate` point, the new part is hooked like every other: the model finds
# its hook points by itself. Use `hooked_audio.hook_points.HookPoint` (free when unhooked, cached without a
# module hook); TransformerLens's own works too, a little slower. The projector runs on `[window, token, ...]`
# (one row per feature row, like the encoder); the cache treats every audio-side hook that way, so
# `projector.*` activations go with their batch row when a cache is sliced.


# %%
class SwiGLUProjector(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_model: int, eps: float):
        super().__init__()
        self.ln_pre = RMSNorm(d_in, eps)
        self.linear_1 = nn.Linear(d_in, d_hidden, bias=False)
        self.linear_2 = nn.Linear(d_hidden // 2, d_model, bias=False)
        self.hook_gate = HookPoint()  # [window, token, d_hidden / 2]: SwiGLU's output

    def forward(self, x):
        x, gate = self.linear_1(self.ln_pre(x)).chunk(2, dim=-1)
        return self.linear_2(self.hook_gate(F.silu(gate) * x))


@dataclass(frozen=True)
class SwiGLUProjectorConfig(ProjectorConfig):
    d_hidden: int
    eps: float = 1e-6

    def build(self, d_in: int, d_model: int) -> nn.Module:
        return SwiGLUProjector(d_in, self.d_hidden, d_model, self.eps)


# %% [markdown]
# ## 3. The family: config mapping, whitelist, rename rules
# Which encoder reproduces HF's? The library's `"whisper"` encoder masks padded frames and pools *before*
# its final norm (Qwen2-Audio); HF's `WhisperEncoder` masks nothing and norms every frame *before* the
# stacking. That is exactly the `"voxtral"` encoder, so no encoder subclass is needed: the family names it
# and passes `FrameStacking(8)`. The decoder is the library's Llama decoder (`llama_decoder_fields_from_hf`).
#
# The whitelist (`handled`) lists, per sub-config, the HF attributes this mapping reads; any other
# attribute set to a non-default value is refused with an error naming it. `WhisperConfig` also describes
# Whisper's *decoder*; those attributes are never read, and left at their defaults they pass the check.


# %%
def config_from_hf(hf_config: UltravoxTutorialConfig) -> HookedAudioConfig:
    stacking = FrameStacking(hf_config.stack_factor)
    audio = whisper_encoder_config_from_hf(hf_config.audio_config, encoder="voxtral", pooling=stacking)
    if audio.window_frames % stacking.frames_per_token:  # the reference would drop the window's last frames
        raise NotImplementedError(f"max_source_positions must be a multiple of stack_factor={hf_config.stack_factor}")
    return HookedAudioConfig(
        **llama_decoder_fields_from_hf(hf_config.text_config, tied_embeddings(hf_config)),
        audio=audio,
        projector=SwiGLUProjectorConfig(hf_config.projector_hidden_size, hf_config.text_config.rms_norm_eps),
        audio_token_id=hf_config.audio_token_id,  # the default AudioInputSpec: input_features + feature_attention_mask
        family="ultravox_tutorial",
    )


ULTRAVOX = ModelFamily(
    name="ultravox_tutorial",
    hf_model_types=("ultravox_tutorial",),
    hf_class_name="UltravoxTutorialForConditionalGeneration",
    hf_class=UltravoxTutorialForConditionalGeneration,  # not in transformers: from_pretrained loads it from here
    config_from_hf=config_from_hf,
    handled={
        "": frozenset({"audio_token_id", "stack_factor", "projector_hidden_size"}),
        "audio_config": WHISPER_AUDIO,
        "text_config": LLAMA_TEXT,
    },
    rename_rules=[
        *whisper_encoder_rules("audio_tower"),
        (r"multi_modal_projector\.ln_pre\.weight", "projector.ln_pre.w"),
        (r"multi_modal_projector\.(linear_[12])\.weight", r"projector.\1.weight"),
        *decoder_rules("language_model.model", lm_head="language_model.lm_head"),
    ],
)
register_family(ULTRAVOX)

# %% [markdown]
# ## 4. Load it and check it against the reference
# A tiny random reference (norm weights randomised so that a mis-mapped norm could not hide; a larger
# decoder init so that the audio visibly moves the logits), then `from_hf_model`, which finds the
# family by `config.model_type`, checks the whitelist and renames every weight (an unmapped weight is an
# error). Parity is the library's standard: float32, max abs logit difference <= 1e-4 at real positions.

# %%
N_MELS, WINDOW = 16, 64  # a 1.28 s window: 128 mel frames -> 64 encoder frames -> 8 audio tokens
AUDIO, PAD, VOCAB = 3, 0, 96


def make_reference(seed: int = 0, **overrides) -> UltravoxTutorialForConditionalGeneration:
    torch.manual_seed(seed)
    config = UltravoxTutorialConfig(
        audio_config=WhisperConfig(
            d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, num_mel_bins=N_MELS,
            max_source_positions=WINDOW,
        ),
        text_config=LlamaConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=VOCAB, max_position_embeddings=256, pad_token_id=PAD, initializer_range=0.1,
        ),
        audio_token_id=AUDIO,
        **overrides,
    )
    config._attn_implementation = "eager"
    config.audio_config._attn_implementation = config.text_config._attn_implementation = "eager"
    model = UltravoxTutorialForConditionalGeneration(config).eval()
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "norm" in name and name.endswith("weight"):
            param.copy_(1 + 0.3 * torch.randn(param.shape, generator=gen))
        elif name.endswith("bias"):
            param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    return model


def make_inputs(clips_per_row: list[list[int]], seed: int = 0) -> dict:
    """Left-padded rows of [text, clip, text, ...]; a clip is its number of real mel frames (<= 128)."""
    gen = torch.Generator().manual_seed(seed)
    words = lambda n: torch.randint(4, VOCAB, (n,), generator=gen).tolist()  # noqa: E731
    rows, lengths = [], []
    for r, clips in enumerate(clips_per_row):
        row = words(3 + 2 * r)
        for mel in clips:
            row += [AUDIO] * (((mel - 1) // 2 + 1) // 8) + words(2)
            lengths.append(mel)
        rows.append(row)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), PAD)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, width - len(row):], attention_mask[r, width - len(row):] = torch.tensor(row), 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if lengths:
        features = torch.randn(len(lengths), N_MELS, 2 * WINDOW, generator=gen)
        frame_mask = torch.zeros(len(lengths), 2 * WINDOW, dtype=torch.long)
        for i, mel in enumerate(lengths):
            features[i, :, mel:], frame_mask[i, :mel] = -0.8, 1  # log-mel padding, as the feature extractor pads
        inputs |= {"input_features": features, "feature_attention_mask": frame_mask}
    return inputs


def max_logit_diff(model, reference, inputs) -> float:
    real = inputs["attention_mask"].bool()
    return (model(**inputs) - reference(**inputs).logits)[real].abs().max().item()


reference = make_reference()
model = HookedAudioTransformer.from_hf_model(reference)
CASES = {
    "two rows, clips of 1.28 s and 0.45 s": [[128], [45]],
    "two clips in one row, one in the other": [[100, 37], [128]],
    "text only": [[], []],
}
for case, clips in CASES.items():
    diff = max_logit_diff(model, reference, make_inputs(clips))
    print(f"{case:<40} max |logit diff| = {diff:.2e}")
    assert diff <= 1e-4, case
inputs = make_inputs(CASES["two rows, clips of 1.28 s and 0.45 s"])
other_audio = dict(inputs, input_features=torch.randn_like(inputs["input_features"]))
moved = (model(**other_audio) - model(**inputs))[inputs["attention_mask"].bool()].abs().max().item()
print(f"(and other audio moves the logits by {moved:.2f}: the parity test covers the audio path)")
assert moved > 100 * 1e-4

# %% [markdown]
# The whitelist at work: real Ultravox configs carry options such as `projector_ln_mid` (where the
# projector's second norm goes). This family does not read it, so a config that sets it is refused, naming
# the attribute, instead of loading a model that would silently differ from the checkpoint's.

# %%
try:
    HookedAudioTransformer.from_hf_model(make_reference(projector_ln_mid=True))
except NotImplementedError as error:
    print("refused:", str(error)[:110], "...")
else:
    raise AssertionError("an unhandled attribute was not refused")

# %% [markdown]
# ## 5. Hook names: the encoder, the new projector, the decoder
# Every hook point fires on a forward pass with audio (the test suite checks this for this family too).

# %%
print(len(model.hook_dict), "hook points, e.g.:")
for name in ["audio_encoder.hook_in", "audio_encoder.blocks.1.attn.hook_pattern", "audio_encoder.ln_post.hook_normalized",
             "audio_encoder.hook_pooled", "projector.ln_pre.hook_normalized", "projector.hook_gate", "hook_audio_embeds",
             "hook_embed", "blocks.0.attn.hook_z", "blocks.1.hook_resid_post"]:
    assert name in model.hook_dict, name
logits, cache = model.run_with_cache(**inputs)
for name in ["audio_encoder.hook_pooled", "projector.hook_gate", "hook_audio_embeds", "blocks.0.attn.hook_pattern"]:
    print(f"  {name:<40} {tuple(cache[name].shape)}")

# %% [markdown]
# ## 6. A logit lens on the new family
# Decode each layer's residual stream at row 0's last position; the last layer's lens is the model's output.

# %%
lens = logit_lens(model, cache, positions=[-1])
final = int(logits[0, -1].argmax())
for label, rank, p in zip(lens.labels, lens.target_rank(final)[:, 0, 0], lens.target_prob(final)[:, 0, 0]):
    print(f"{label:>10}  rank of the final answer {int(rank):>3}   p = {p:.3f}")
torch.testing.assert_close(lens.log_probs[-1, 0, 0], logits[0, -1].log_softmax(-1), atol=1e-4, rtol=0)
print(f"done in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# ## What is left to do for a real checkpoint
# `from_hf_model` is all this needs, and since the family names its class (`hf_class`),
# `HookedAudioTransformer.from_pretrained(directory)` also loads a directory written by the reference's
# `save_pretrained`, offline.
# To ship a family in the package (a family file, a `model_configs/` entry per real checkpoint, a spec in the
# contract suite), see CONTRIBUTING.md.
