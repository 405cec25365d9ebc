"""Qwen2-Audio, the reference family: its contract spec (builders in ``conftest.py``, shared with the rest of
the suite) and what is special about it: the real processor end to end, and the real checkpoint's sizes and
hook count. Parity, generation, hooks, loading and the whitelist are checked by ``test_family_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import AUDIO_TOKEN_ID, VOCAB, make_hf_model, make_inputs, make_processor
from family_harness import FamilySpec, TokenTimes, assert_logits_match, noise_clips, real_config
from transformers import Qwen2AudioForConditionalGeneration

from hooked_audio import HookedAudioTransformer

SPEC = FamilySpec(
    name="qwen2_audio",
    hf_class=Qwen2AudioForConditionalGeneration,
    make_hf_model=make_hf_model,
    variants={"mha": dict(n_kv_heads=4, seed=4), "gqa": dict(n_kv_heads=2, seed=2)},
    make_inputs=make_inputs,  # a clip is its number of real mel frames (one window of 100)
    cases={
        "one_clip": [[100]],
        "batch_padded_different_lengths": [[100], [37]],
        "two_clips_in_one_prompt": [[100, 52]],
        "batch_mixed_clip_counts": [[64, 100], [24]],
    },
    long_audio_case=None,  # one 30 s window per clip: HF's processor truncates longer audio
    eos_token_id=VOCAB["<|im_end|>"],
    pad_token_id=0,
    seconds_per_token=0.04,
    token_times=TokenTimes([[100]], n_tokens=25, tokens_per_window=25, window_seconds=1.0),
    real_configs={"qwen2-audio-7b": 8_397_094_912, "qwen2-audio-7b-instruct": 8_397_094_912},
    unhandled=("text_config", "use_sliding_window", True),
    expected_hooks=frozenset({
        "audio_encoder.hook_pos_embed", "audio_encoder.hook_pooled", "audio_encoder.ln_post.hook_normalized",
    }),
    make_processor=make_processor,
)


def test_processor_inputs_match_hf():
    """End to end from waveforms: the HF processor's output gives the same logits in both models."""
    hf = make_hf_model(seed=7)
    processor = make_processor()
    model = HookedAudioTransformer.from_hf_model(hf, processor=processor)
    clips = noise_clips(0, [16000, 5000])
    prompts = ["hello <|audio_bos|><|AUDIO|><|audio_eos|> what is said ?", "<|audio_bos|><|AUDIO|><|audio_eos|> yes"]
    processor.tokenizer.padding_side = "left"
    batch = processor(text=prompts, audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)
    assert int((batch["input_ids"] == AUDIO_TOKEN_ID).sum()) == 25 + 8
    with torch.no_grad():
        assert_logits_match(model(batch), hf(**batch).logits, batch["attention_mask"])


@pytest.mark.parametrize("name", list(SPEC.real_configs))
def test_real_configuration_sizes_and_hook_count(name):
    _, _, cfg = real_config(name)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_mlp, cfg.d_vocab) == (
        32, 4096, 32, 32, 11008, 156032
    )
    assert (cfg.rotary_base, cfg.eps, cfg.audio_token_id) == (10000.0, 1e-5, 151646)
    audio = cfg.audio
    assert (audio.n_layers, audio.d_model, audio.n_heads, audio.d_mlp, audio.n_mels, audio.window_frames) == (
        32, 1280, 20, 5120, 128, 1500
    )
    with torch.device("meta"):
        ours = HookedAudioTransformer(cfg)
    # per decoder block 21 points (5 residual, 4 norm, 9 attention, 3 MLP), per encoder block 18 (no rotary,
    # plain MLP), plus embed, audio_embeds, ln_final x2 and the encoder's in/conv_out/pos_embed/pooled/out/ln_post x2
    assert len(ours.hook_dict) == 21 * 32 + 18 * 32 + 4 + 7 == 1259
