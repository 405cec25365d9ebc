"""Audio Flamingo 3 matches HF's eager ``AudioFlamingo3ForConditionalGeneration`` on tiny random models.

Also home of the tiny Flamingo builders that ``test_family_music_flamingo.py`` reuses: a clip is a list
of windows (mel frames per window), and a clip's windows fill one run of ``<sound>`` placeholders.
"""

from __future__ import annotations

import pytest
import torch
from family_harness import (
    assert_every_hook_fires, assert_generate_matches_hf, assert_loads_offline, assert_logits_match,
    assert_matches_hf, assert_meta_parameter_count_matches, assert_parity_and_audio_matters,
    assert_token_times_continue_across_windows, build_tiny_hf_model, first_windows, left_padded, n_audio_tokens,
    noise_clips, padded_features, random_words, real_config, tiny_feature_extractor, word_level_tokenizer,
)
from transformers import (
    AudioFlamingo3Config,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Processor,
    MusicFlamingoConfig,
    MusicFlamingoForConditionalGeneration,
    MusicFlamingoProcessor,
)

from hooked_audio import HookedAudioTransformer
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>", "<|sound_bos|>", "<|sound_eos|>"]
WORDS = "what is played in the music ? answer yes no hello world one two three four five user assistant".split(" ")
VOCAB = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
SOUND, SOUND_BOS, SOUND_EOS, EOS = VOCAB["<sound>"], VOCAB["<|sound_bos|>"], VOCAB["<|sound_eos|>"], VOCAB["<|im_end|>"]
N_MELS, N_CTX = 16, 50  # a 1 s window: 100 mel frames -> 50 encoder frames -> 25 audio tokens
HF_CLASSES = {
    "audioflamingo3": (AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor),
    "musicflamingo": (MusicFlamingoConfig, MusicFlamingoForConditionalGeneration, MusicFlamingoProcessor),
}


def make_hf_model(family: str = "audioflamingo3", seed: int = 0, n_kv_heads: int = 2):
    config_class, model_class, _ = HF_CLASSES[family]
    config = config_class(
        audio_config=dict(
            model_type="audioflamingo3_encoder", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, num_mel_bins=N_MELS, max_source_positions=N_CTX,
        ),
        text_config=dict(
            model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=n_kv_heads, intermediate_size=128, vocab_size=64, max_position_embeddings=512,
            rope_parameters=dict(rope_type="default", rope_theta=1e6), pad_token_id=0, eos_token_id=EOS,
        ),
        audio_token_id=SOUND,
        **(dict(audio_bos_token_id=SOUND_BOS, audio_eos_token_id=SOUND_EOS) if family == "musicflamingo" else {}),
    )
    return build_tiny_hf_model(model_class, config, seed, louder={"model.multi_modal_projector.linear_2.weight": 20})


def make_inputs(clips_per_row: list[list[list[int]]], text_lengths=None, seed: int = 0, wrap: bool = False) -> dict:
    """Left-padded rows of [text, clip, text, clip, ...]; a clip is a list of windows' mel frame counts.
    ``wrap`` puts each clip's run between ``<|sound_bos|>`` and ``<|sound_eos|>`` (Music Flamingo)."""
    gen = torch.Generator().manual_seed(seed)
    words = lambda n: random_words(gen, n, len(SPECIAL), len(VOCAB))  # noqa: E731
    rows, windows = [], []
    for r, clips in enumerate(clips_per_row):
        row = words((text_lengths or [4] * len(clips_per_row))[r])
        for clip in clips:
            run = [SOUND] * sum(n_audio_tokens(mel) for mel in clip)
            row += ([SOUND_BOS] + run + [SOUND_EOS] if wrap else run) + words(2)
            windows += clip
        rows.append(row)
    input_ids, attention_mask = left_padded(rows)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if windows:
        features, mask = padded_features(windows, N_MELS, 2 * N_CTX, gen)
        inputs.update(input_features=features, input_features_mask=mask)
    return inputs


def make_processor(family: str = "audioflamingo3"):
    tokenizer = word_level_tokenizer(VOCAB, "<|endoftext|>", "<|im_end|>", SPECIAL[1:])
    return HF_CLASSES[family][2](feature_extractor=tiny_feature_extractor(N_MELS, chunk_length=1), tokenizer=tokenizer)


CASES = {
    "one_clip": [[[100]]],
    "batch_padded_different_lengths": [[[100]], [[37]]],
    "two_clips_in_one_prompt": [[[100], [52]]],
    "multi_window_clip_batched_with_a_short_clip": [[[100, 100, 37]], [[60]]],
    "two_multi_window_clips_and_a_short_one": [[[100, 23], [64]], [[100, 100]]],
}


def check_parity_cases(hf, model, wrap: bool) -> None:
    """Every case's logits match HF, and the audio moves them by more than 100 x TOL."""
    for case, clips in CASES.items():
        inputs = make_inputs(clips, text_lengths=[3, 7][: len(clips)], seed=1, wrap=wrap)
        try:
            assert_parity_and_audio_matters(hf, model, inputs, factor=100)
        except AssertionError as error:
            raise AssertionError(f"case {case}: {error}") from error


@pytest.fixture(scope="module")
def pair():
    hf = make_hf_model(seed=3)
    return hf, HookedAudioTransformer.from_hf_model(hf)


def test_config_reads_as_qwen2_audio_plus_differences(pair):
    _, model = pair
    cfg = model.cfg
    assert (cfg.family, cfg.projector, cfg.audio_token_id, cfg.rotary_base) == ("audioflamingo3", "mlp_gelu", SOUND, 1e6)
    assert (cfg.n_heads, cfg.n_key_value_heads, cfg.audio.pooling) == (4, 2, "avg2")
    assert cfg.extra["projector_hidden"] == 64 and cfg.audio_time_rotary is None


def test_logits_match_hf(pair):
    check_parity_cases(*pair, wrap=False)


def test_text_only_matches_hf(pair):
    hf, model = pair
    assert_matches_hf(model, hf, make_inputs([[], []], text_lengths=[9, 5]))


def test_greedy_generation_matches_hf(pair):
    hf, model = pair
    assert_generate_matches_hf(hf, model, make_inputs([[[100, 40]], [[60]]], seed=4), eos_token_id=EOS, pad_token_id=0)


def test_every_hook_point_fires(pair):
    _, model = pair
    fired = assert_every_hook_fires(model, make_inputs([[[100, 30]], [[60]]]))
    assert {"audio_encoder.hook_pooled", "audio_encoder.ln_post.hook_normalized", "hook_audio_embeds"} <= fired


def test_audio_token_times_follow_the_windows(pair):
    """25 tokens per second; a clip's later windows continue its time axis (window w starts at w seconds)."""
    _, model = pair
    inputs, span = assert_token_times_continue_across_windows(
        model, make_inputs([[[100, 100, 37]]]), n_tokens=25 + 25 + 9, tokens_per_window=25, window_seconds=1.0,
        seconds_per_token=0.04,
    )
    assert inputs.time_to_position(0, 1.5) == span.start + 25 + 12


def test_processor_splits_long_audio_into_windows_and_matches_hf():
    """From waveforms through the real AF3 processor: 2.3 s of audio becomes 3 one-second windows."""
    hf = make_hf_model(seed=7)
    processor = make_processor()
    model = HookedAudioTransformer.from_hf_model(hf, processor=processor)
    clips = noise_clips(0, [36800, 5000])
    batch = processor(text=["hello <sound> what is played ?", "<sound> yes"], audio=clips, return_tensors="pt")
    assert batch["input_features"].shape[0] == 3 + 1
    assert batch["input_features_mask"].sum(-1).tolist() == [100, 100, 30, 32]
    assert int((batch["input_ids"] == SOUND).sum()) == (25 + 25 + n_audio_tokens(30)) + n_audio_tokens(32)
    with torch.no_grad():
        assert_logits_match(model(batch), hf(**batch).logits, batch["attention_mask"])


def test_from_pretrained_loads_a_saved_directory_offline(tmp_path, monkeypatch):
    hf = make_hf_model(seed=5)
    inputs = make_inputs([[[100, 50]], [[30]]])
    assert_loads_offline(tmp_path, monkeypatch, hf, inputs, "audioflamingo3", saved_processor=make_processor())


def test_bad_inputs_fail_clearly(pair):
    _, model = pair
    inputs = make_inputs([[[100, 100]]])
    with pytest.raises(ValueError, match="50 audio placeholders .* give 25 audio tokens"):
        model(**first_windows(inputs, 1))
    without_mask = {k: v for k, v in inputs.items() if k != "input_features_mask"}
    with pytest.raises(ValueError, match="input_features_mask"):
        model(**without_mask)


def test_real_configuration_maps_and_matches_hf_parameter_count():
    hf_config, _, cfg = real_config("nvidia/audio-flamingo-3-hf")
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_mlp, cfg.d_vocab) == (
        28, 3584, 28, 4, 18944, 151672
    )
    assert (cfg.rotary_base, cfg.audio_token_id, cfg.projector) == (1e6, 151669, "mlp_gelu")
    audio = cfg.audio
    assert (audio.n_layers, audio.d_model, audio.n_heads, audio.d_mlp, audio.n_mels, audio.n_ctx) == (
        32, 1280, 20, 5120, 128, 1500
    )
    n_params, _ = assert_meta_parameter_count_matches(cfg, AudioFlamingo3ForConditionalGeneration, hf_config)
    assert 8.0e9 < n_params < 8.5e9
