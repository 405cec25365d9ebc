"""GLM-ASR (HF ``GlmAsrForConditionalGeneration``): its contract spec and what is special about it (tied and
untied ``lm_head``, partial rotary in the encoder, padded frames attended to, the stacking-width check).

A clip is a list of windows (real mel frames per window, each window one feature row of 200 mel frames =
2 s here); its windows' tokens fill one run of ``<|pad|>`` placeholders. A window keeps
``((mel - 1) // 2 + 1) // 4`` tokens (4 encoder frames stacked per token), though its encoder attends over
the whole padded window.
"""

from __future__ import annotations

import copy

import pytest
import torch
from family_harness import (
    assert_several_clips_per_text_match_hf, TOL, FamilySpec, TokenTimes, assert_logits_match, assert_matches_hf, build_pair, build_tiny_hf_model,
    first_windows, left_padded, max_diff, noise_clips, padded_features, random_words, real_config,
    tiny_feature_extractor, word_level_tokenizer,
)
from transformers import GlmAsrConfig, GlmAsrForConditionalGeneration, GlmAsrProcessor

from hooked_audio import HookedAudioTransformer
from hooked_audio.components.pooling import FrameStacking
from hooked_audio.components.projector import MLPProjectorConfig
from hooked_audio.families import family_for_model_type

SPECIAL = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|pad|>", "<|begin_of_audio|>", "<|end_of_audio|>"]
WORDS = "please transcribe this audio into text ? yes no hello world one two three four five".split(" ")
VOCAB = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
PAD_AUDIO, BOA, EOA, EOS = VOCAB["<|pad|>"], VOCAB["<|begin_of_audio|>"], VOCAB["<|end_of_audio|>"], VOCAB["<|user|>"]
N_MELS, N_CTX = 16, 100  # a 2 s window: 200 mel frames -> 100 encoder frames -> 25 tokens


def make_hf_model(seed: int = 0, tie: bool = True) -> GlmAsrForConditionalGeneration:
    config = GlmAsrConfig(
        audio_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=256, num_mel_bins=N_MELS, max_position_embeddings=N_CTX,  # 256 = 4 x 64
        ),
        text_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=64, max_position_embeddings=512, pad_token_id=0, eos_token_id=EOS,
        ),
        audio_token_id=PAD_AUDIO,
        tie_word_embeddings=tie,
    )
    return build_tiny_hf_model(
        GlmAsrForConditionalGeneration, config, seed, louder={"model.multi_modal_projector.linear_2.weight": 20}
    )


def n_audio_tokens(mel_frames: int) -> int:
    return ((mel_frames - 1) // 2 + 1) // 4


def make_inputs(clips_per_row: list[list[list[int]]], text_lengths=None, seed: int = 0) -> dict:
    """Left-padded rows of [text, clip, text, clip, ...]; a clip is a list of windows' mel frame counts."""
    gen = torch.Generator().manual_seed(seed)
    words = lambda n: random_words(gen, n, len(SPECIAL), len(VOCAB))  # noqa: E731
    rows, windows = [], []
    for r, clips in enumerate(clips_per_row):
        row = words((text_lengths or [4] * len(clips_per_row))[r])
        for clip in clips:
            row += [BOA] + [PAD_AUDIO] * sum(n_audio_tokens(mel) for mel in clip) + [EOA] + words(2)
            windows += clip
        rows.append(row)
    input_ids, attention_mask = left_padded(rows)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if windows:
        features, mask = padded_features(windows, N_MELS, 2 * N_CTX, gen)
        inputs.update(input_features=features, input_features_mask=mask)
    return inputs


def make_processor() -> GlmAsrProcessor:
    tokenizer = word_level_tokenizer(VOCAB, "<|endoftext|>", "<|user|>", SPECIAL[1:])
    return GlmAsrProcessor(feature_extractor=tiny_feature_extractor(N_MELS, chunk_length=2), tokenizer=tokenizer)


# Windows of 200 mel frames (2 s); a clip is a list of windows.
SPEC = FamilySpec(
    name="glm_asr",
    hf_class=GlmAsrForConditionalGeneration,
    make_hf_model=make_hf_model,
    variants={"tied": dict(seed=3)},
    make_inputs=make_inputs,
    cases={
        "one_clip": [[[200]]],
        "batch_padded_different_lengths": [[[200]], [[37]]],
        "two_clips_in_one_prompt": [[[200], [52]]],
        "multi_window_clip_batched_with_a_short_clip": [[[200, 200, 70]], [[60]]],
        "batch_mixed_clip_counts": [[[200, 23], [64]], [[200, 200]]],  # two multi-window clips and a short one
    },
    long_audio_case="multi_window_clip_batched_with_a_short_clip",
    eos_token_id=EOS,
    pad_token_id=0,
    seconds_per_token=0.08,
    token_times=TokenTimes([[[200, 200, 70]]], n_tokens=25 + 25 + 8, tokens_per_window=25, window_seconds=2.0),
    real_configs={"zai-org/GLM-ASR-Nano-2512": 2_136_470_528},
    unhandled=("text_config", "pretraining_tp", 2),
    expected_hooks=frozenset({
        "audio_encoder.blocks.1.attn.hook_rot_q", "audio_encoder.hook_pooled", "audio_encoder.ln_post.hook_normalized",
    }),
    absent_hooks=frozenset({"audio_encoder.hook_pos_embed"}),  # rotary positions: nothing is added
    make_processor=make_processor,
)


@pytest.fixture(scope="module")
def pair():
    return build_pair(SPEC)


def test_config_reads_as_qwen2_audio_plus_differences(pair):
    _, model = pair
    cfg = model.cfg
    assert (cfg.family, cfg.projector, cfg.audio_token_id, cfg.rotary_base) == (
        "glm_asr", MLPProjectorConfig(d_hidden=128), PAD_AUDIO, 1e4
    )
    assert (cfg.qkv_bias, cfg.tie_word_embeddings) == ((False,) * 3, True)
    assert model.unembed.weight is model.embed.weight
    audio = cfg.audio
    assert (audio.encoder, audio.pooling, audio.window_frames) == ("glm_asr", FrameStacking(4), N_CTX)
    assert (audio.n_key_value_heads, audio.d_head, audio.rotary_dim, audio.d_out) == (2, 16, 8, 256)


def test_untied_lm_head_matches_hf():
    hf = make_hf_model(seed=8, tie=False)
    model = HookedAudioTransformer.from_hf_model(hf)
    assert not model.cfg.tie_word_embeddings and model.unembed.weight is not model.embed.weight
    assert_matches_hf(model, hf, make_inputs([[[200, 90]], [[40]]], seed=2))


def test_folding_norms_unties_the_lm_head_and_keeps_the_logits(pair):
    hf, model = pair
    folded = HookedAudioTransformer.from_hf_model(hf, fold_ln=True)
    assert folded.unembed.weight is not folded.embed.weight
    inputs = make_inputs([[[200]], [[90]]], seed=6)
    with torch.no_grad():
        assert_logits_match(folded(**inputs), model(**inputs), inputs["attention_mask"])
    assert model.unembed.weight is model.embed.weight  # the unfolded model is untouched


def test_padded_frames_are_attended_to_as_in_hf(pair):
    """No padding mask: changing a window's padding changes its kept tokens (in HF and here alike)."""
    hf, model = pair
    inputs = make_inputs([[[120]]], seed=5)
    louder = inputs["input_features"].clone()
    louder[..., 120:] = 2.0
    changed = dict(inputs, input_features=louder)
    with torch.no_grad():
        ours, theirs = model(**changed), hf(**changed).logits
        assert max_diff(ours, model(**inputs), inputs["attention_mask"]) > 100 * TOL
    assert_logits_match(ours, theirs, inputs["attention_mask"])


def test_encoder_rotates_only_the_first_half_of_each_head(pair):
    _, model = pair
    _, cache = model.run_with_cache(**make_inputs([[[200]]]), names_filter=lambda n: n.startswith("audio_encoder.blocks.0.attn"))
    q, rot_q = cache["audio_encoder.blocks.0.attn.hook_q"], cache["audio_encoder.blocks.0.attn.hook_rot_q"]
    assert q.shape == (1, N_CTX, 4, 16) and cache["audio_encoder.blocks.0.attn.hook_k"].shape == (1, N_CTX, 2, 16)
    torch.testing.assert_close(rot_q[..., 8:], q[..., 8:])
    torch.testing.assert_close(rot_q[:, 0], q[:, 0])  # position 0 is not rotated
    assert (rot_q[:, 1:, :, :8] - q[:, 1:, :, :8]).abs().max() > 1e-3


def test_several_clips_per_prompt_match_hf(pair):
    """HF's processor takes one clip per text; build_inputs assembles several from its per-clip output."""
    assert_several_clips_per_text_match_hf(pair[0], make_processor())


def test_processor_splits_long_audio_into_windows_and_matches_hf():
    """From waveforms through the real GLM-ASR processor: 4.6 s of audio becomes 3 two-second windows."""
    hf = make_hf_model(seed=7)
    processor = make_processor()
    model = HookedAudioTransformer.from_hf_model(hf, processor=processor)
    clips = noise_clips(0, [73600, 5000])
    prompts = ["hello <|begin_of_audio|><|pad|><|end_of_audio|> please transcribe ?", "<|begin_of_audio|><|pad|><|end_of_audio|> yes"]
    batch = processor(text=prompts, audio=clips, return_tensors="pt")
    assert batch["input_features"].shape[0] == 3 + 1
    assert batch["input_features_mask"].sum(-1).tolist() == [200, 200, 60, 32]
    assert int((batch["input_ids"] == PAD_AUDIO).sum()) == (25 + 25 + n_audio_tokens(60)) + n_audio_tokens(32)
    with torch.no_grad():
        assert_logits_match(model(batch), hf(**batch).logits, batch["attention_mask"])


def test_bad_inputs_fail_clearly(pair):
    _, model = pair
    inputs = make_inputs([[[200, 200]]])
    with pytest.raises(ValueError, match="50 audio placeholders .* give 25 audio tokens"):
        model(**first_windows(inputs, 1))
    without_mask = {k: v for k, v in inputs.items() if k != "input_features_mask"}
    with pytest.raises(ValueError, match="input_features_mask"):
        model(**without_mask)
    ragged = dict(inputs, input_features=inputs["input_features"][..., :190], input_features_mask=inputs["input_features_mask"][:, :190])
    with pytest.raises(ValueError, match="not a multiple of 4"):
        model(**ragged)


def test_real_configuration_reads_the_checkpoints_sizes():
    hf_config, _, cfg = real_config("zai-org/GLM-ASR-Nano-2512")
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab) == (
        28, 2048, 16, 4, 128, 6144, 59264
    )
    assert (cfg.rotary_base, cfg.audio_token_id, cfg.tie_word_embeddings, cfg.eos_token_ids) == (
        1e4, 59260, True, (59246, 59253, 59255)
    )
    audio = cfg.audio
    assert (audio.n_layers, audio.d_model, audio.n_heads, audio.n_key_value_heads, audio.d_mlp, audio.n_mels) == (
        32, 1280, 20, 20, 5120, 128
    )
    assert (audio.window_frames, audio.rotary_dim, audio.rotary_base, audio.d_out) == (1500, 32, 1e4, 5120)


def test_stacking_width_other_than_four_frames_is_refused():
    config = copy.deepcopy(build_pair(SPEC)[0].config)
    config.audio_config.intermediate_size = 128  # HF would stack 2 frames into the projector's input
    with pytest.raises(NotImplementedError, match="must be 4 x hidden_size=64"):
        family_for_model_type("glmasr").to_config(config)
