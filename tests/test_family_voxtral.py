"""Voxtral matches HF's eager ``VoxtralForConditionalGeneration`` on tiny random models.

Voxtral has no frame mask: every feature row is one whole window (here 200 mel frames = 2 s, giving
100 encoder frames and 25 tokens of 4 stacked frames), and a clip longer than a window is several rows
whose tokens fill one run of ``[AUDIO]`` placeholders after ``[BEGIN_AUDIO]`` (mistral_common's layout).
"""

from __future__ import annotations

import math

import pytest
import torch
from family_harness import (
    assert_every_hook_fires, assert_generate_matches_hf, assert_loads_offline, assert_logits_match,
    assert_matches_hf, assert_meta_parameter_count_matches, assert_parity_and_audio_matters,
    assert_token_times_continue_across_windows, build_tiny_hf_model, first_windows, left_padded, noise_clips,
    padded_features, random_words, real_config, tiny_feature_extractor, word_level_tokenizer,
)
from transformers import VoxtralConfig, VoxtralForConditionalGeneration, VoxtralProcessor

from hooked_audio import HookedAudioTransformer
from hooked_audio.families import family_for_model_type
# The real tokenizer's ids: [AUDIO] = 24 (VoxtralProcessor hard-codes it), [BEGIN_AUDIO] = 25.
FILLER = [f"[CTRL{i}]" for i in range(3, 24)]
WORDS = "what is said in the audio ? answer yes no hello world one two three four five".split(" ")
VOCAB = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", *FILLER, "[AUDIO]", "[BEGIN_AUDIO]", *WORDS])}
AUDIO, BEGIN_AUDIO, EOS = VOCAB["[AUDIO]"], VOCAB["[BEGIN_AUDIO]"], VOCAB["</s>"]
FIRST_WORD = VOCAB[WORDS[0]]
N_MELS, N_CTX = 16, 100  # a 2 s window: 200 mel frames -> 100 encoder frames -> 25 tokens
TOKENS_PER_WINDOW = N_CTX // 4


def make_hf_model(seed: int = 0, n_kv_heads: int = 2) -> VoxtralForConditionalGeneration:
    config = VoxtralConfig(
        audio_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,  # = 4 x 64
            num_mel_bins=N_MELS, max_source_positions=N_CTX,
        ),
        text_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=n_kv_heads,
            head_dim=32, intermediate_size=128, vocab_size=64, max_position_embeddings=512,
            rope_parameters=dict(rope_type="default", rope_theta=1e8), pad_token_id=0, eos_token_id=EOS,
        ),
        audio_token_id=AUDIO,
    )
    return build_tiny_hf_model(
        VoxtralForConditionalGeneration, config, seed, louder={"model.multi_modal_projector.linear_2.weight": 20}
    )


def make_inputs(clips_per_row: list[list[int]], text_lengths=None, seed: int = 0) -> dict:
    """Left-padded rows of [text, clip, text, clip, ...]; a clip is its number of real mel frames, padded
    with silence to whole windows (each window one feature row, all of its tokens used)."""
    gen = torch.Generator().manual_seed(seed)
    words = lambda n: random_words(gen, n, FIRST_WORD, len(VOCAB))  # noqa: E731
    rows, windows = [], []
    for r, clips in enumerate(clips_per_row):
        row = words((text_lengths or [4] * len(clips_per_row))[r])
        for mel in clips:
            n_windows = math.ceil(mel / (2 * N_CTX))
            row += [BEGIN_AUDIO] + [AUDIO] * (TOKENS_PER_WINDOW * n_windows) + words(2)
            windows += [min(2 * N_CTX, mel - w * 2 * N_CTX) for w in range(n_windows)]
        rows.append(row)
    input_ids, attention_mask = left_padded(rows)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if windows:
        inputs["input_features"], _ = padded_features(windows, N_MELS, 2 * N_CTX, gen)  # Voxtral takes no frame mask
    return inputs


def make_processor() -> VoxtralProcessor:
    tokenizer = word_level_tokenizer(VOCAB, "<unk>", "</s>")
    return VoxtralProcessor(feature_extractor=tiny_feature_extractor(N_MELS, chunk_length=2), tokenizer=tokenizer)


CASES = {
    "one_clip": [[200]],
    "batch_padded_different_lengths": [[200], [37]],
    "two_clips_in_one_prompt": [[200, 52]],
    "multi_window_clip_batched_with_a_short_clip": [[470], [60]],
    "two_multi_window_clips_and_a_short_one": [[230, 64], [400]],
}


@pytest.fixture(scope="module")
def pair():
    hf = make_hf_model(seed=3)
    return hf, HookedAudioTransformer.from_hf_model(hf)


def test_config_reads_as_qwen2_audio_plus_differences(pair):
    _, model = pair
    cfg = model.cfg
    assert (cfg.family, cfg.projector, cfg.audio_token_id, cfg.rotary_base) == ("voxtral", "mlp_gelu", AUDIO, 1e8)
    assert (cfg.d_head, cfg.n_heads * cfg.d_head, cfg.qkv_bias, cfg.o_bias) == (32, 128, (False,) * 3, False)
    audio = cfg.audio
    assert (audio.pooling, audio.ln_post_before_pooling, audio.mask_padded_frames, audio.d_out) == ("stack4", True, False, 256)
    assert model.family.audio_mask_kwarg is None and cfg.extra["projector_bias"] is False
    assert not cfg.tie_word_embeddings


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_hf(pair, case):
    hf, model = pair
    clips = CASES[case]
    inputs = make_inputs(clips, text_lengths=[3, 7][: len(clips)], seed=1)
    assert_parity_and_audio_matters(hf, model, inputs, factor=100)


def test_text_only_matches_hf(pair):
    hf, model = pair
    assert_matches_hf(model, hf, make_inputs([[], []], text_lengths=[9, 5]))


def test_greedy_generation_matches_hf(pair):
    hf, model = pair
    assert_generate_matches_hf(hf, model, make_inputs([[470], [60]], seed=4), eos_token_id=EOS, pad_token_id=0)


def test_every_hook_point_fires(pair):
    _, model = pair
    fired = assert_every_hook_fires(model, make_inputs([[470], [60]]))
    assert {"audio_encoder.hook_pos_embed", "audio_encoder.hook_pooled", "audio_encoder.ln_post.hook_normalized"} <= fired


def test_final_norm_runs_per_frame_before_stacking(pair):
    """ln_post sees [clip, frame, d]; hook_pooled holds 4 normalised frames side by side."""
    _, model = pair
    _, cache = model.run_with_cache(**make_inputs([[200]]), names_filter=lambda n: n.startswith("audio_encoder."))
    normalized = cache["audio_encoder.ln_post.hook_normalized"]
    assert normalized.shape == (1, N_CTX, 64)
    torch.testing.assert_close(cache["audio_encoder.hook_pooled"], normalized.reshape(1, TOKENS_PER_WINDOW, 256))


def test_audio_token_times_follow_the_windows(pair):
    """12.5 tokens per second (0.08 s each); a clip's later windows continue its time axis."""
    _, model = pair
    inputs, span = assert_token_times_continue_across_windows(
        model, make_inputs([[470]]), n_tokens=3 * TOKENS_PER_WINDOW, tokens_per_window=TOKENS_PER_WINDOW,
        window_seconds=2.0, seconds_per_token=0.08,
    )
    assert inputs.input_ids[0, span.start - 1] == BEGIN_AUDIO
    assert inputs.time_to_position(0, 2.5) == span.start + TOKENS_PER_WINDOW + 6


def test_processor_chunks_long_audio_into_windows_and_matches_hf():
    """Waveforms through the real VoxtralProcessor's feature path: 3.1 s of audio is padded to 4 s and cut
    into two 2 s windows. (Its chat template needs mistral_common's tokenizer, which expands each clip to
    ``[BEGIN_AUDIO]`` + ceil(padded samples / 160 / 8) x ``[AUDIO]``; that rule is applied here.)"""
    hf = make_hf_model(seed=7)
    processor = make_processor()
    model = HookedAudioTransformer.from_hf_model(hf, processor=processor)
    clips = noise_clips(0, [50000, 7000])
    window = 2 * 16000
    features = processor._retrieve_input_features(
        clips, 2 * N_CTX, sampling_rate=16000, padding=True, truncation=False, pad_to_multiple_of=window,
        return_tensors="pt",
    )
    assert features.shape == (2 + 1, N_MELS, 2 * N_CTX)
    n_tokens = [math.ceil(math.ceil(len(c) / window) * window / 160 / 8) for c in clips]
    assert n_tokens == [2 * TOKENS_PER_WINDOW, TOKENS_PER_WINDOW]
    hello, what = VOCAB["hello"], VOCAB["what"]
    rows = [[hello, BEGIN_AUDIO] + [AUDIO] * n_tokens[0] + [what], [BEGIN_AUDIO] + [AUDIO] * n_tokens[1] + [what]]
    input_ids, attention_mask = left_padded(rows)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "input_features": features}
    with torch.no_grad():
        assert_logits_match(model(batch), hf(**batch).logits, attention_mask)


def test_from_pretrained_loads_a_saved_directory_offline(tmp_path, monkeypatch):
    hf = make_hf_model(seed=5)
    assert_loads_offline(tmp_path, monkeypatch, hf, make_inputs([[300], [30]]), "voxtral")


def test_bad_inputs_fail_clearly(pair):
    _, model = pair
    inputs = make_inputs([[400]])
    with pytest.raises(ValueError, match="50 audio placeholders .* give 25 audio tokens"):
        model(**first_windows(inputs, 1))
    with pytest.raises(ValueError, match="200 frames"):
        model(**dict(inputs, input_features=inputs["input_features"][..., :150]))
    with pytest.raises(TypeError, match="input_features_mask"):
        model(**inputs, input_features_mask=torch.ones(2, 2 * N_CTX))


def test_window_not_a_multiple_of_four_frames_is_refused():
    config = make_hf_model().config
    config.audio_config.max_source_positions = 50
    with pytest.raises(NotImplementedError, match="multiple of 4"):
        family_for_model_type("voxtral").to_config(config)


@pytest.mark.parametrize(
    "name, decoder, n_params",
    [
        ("mistralai/Voxtral-Mini-3B-2507", (30, 3072, 32, 8, 128, 8192), (4.6e9, 4.8e9)),
        ("mistralai/Voxtral-Small-24B-2507", (40, 5120, 32, 8, 128, 32768), (24.0e9, 24.6e9)),
    ],
)
def test_real_configuration_maps_and_matches_hf_parameter_count(name, decoder, n_params):
    hf_config, _, cfg = real_config(name)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_mlp) == decoder
    assert (cfg.d_vocab, cfg.rotary_base, cfg.audio_token_id, cfg.eps) == (131072, 1e8, 24, 1e-5)
    audio = cfg.audio
    assert (audio.n_layers, audio.d_model, audio.n_heads, audio.d_mlp, audio.n_mels, audio.n_ctx, audio.d_out) == (
        32, 1280, 20, 5120, 128, 1500, 5120
    )
    assert cfg.seconds_per_audio_token == pytest.approx(0.08)
    n_ours, _ = assert_meta_parameter_count_matches(cfg, VoxtralForConditionalGeneration, hf_config)
    assert n_params[0] < n_ours < n_params[1]
