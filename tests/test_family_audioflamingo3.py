"""Audio Flamingo 3 (HF ``AudioFlamingo3ForConditionalGeneration``): its contract spec and what is special
about it (the config as Qwen2-Audio plus differences, the real processor's windows, bad inputs).

Also home of the tiny Flamingo builders that ``test_family_music_flamingo.py`` reuses: a clip is a list
of windows (mel frames per window), and a clip's windows fill one run of ``<sound>`` placeholders.
"""

from __future__ import annotations

import pytest
import torch
from family_harness import (
    assert_several_clips_per_text_match_hf, FamilySpec, TokenTimes, assert_logits_match, build_pair, build_tiny_hf_model, first_windows, left_padded,
    n_audio_tokens, noise_clips, padded_features, random_words, tiny_feature_extractor, word_level_tokenizer,
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
from hooked_audio.components.pooling import AvgPooling
from hooked_audio.components.projector import MLPProjectorConfig

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


# Windows of 100 mel frames (1 s); a clip is a list of windows.
CASES = {
    "one_clip": [[[100]]],
    "batch_padded_different_lengths": [[[100]], [[37]]],
    "two_clips_in_one_prompt": [[[100], [52]]],
    "multi_window_clip_batched_with_a_short_clip": [[[100, 100, 37]], [[60]]],
    "batch_mixed_clip_counts": [[[100, 23], [64]], [[100, 100]]],  # two multi-window clips and a short one
}
TOKEN_TIMES = TokenTimes([[[100, 100, 37]]], n_tokens=25 + 25 + 9, tokens_per_window=25, window_seconds=1.0)
HOOKS = frozenset({"audio_encoder.hook_pooled", "audio_encoder.ln_post.hook_normalized", "hook_audio_embeds"})

SPEC = FamilySpec(
    name="audioflamingo3",
    hf_class=AudioFlamingo3ForConditionalGeneration,
    make_hf_model=make_hf_model,
    variants={"gqa": dict(seed=3)},
    make_inputs=make_inputs,
    cases=CASES,
    long_audio_case="multi_window_clip_batched_with_a_short_clip",
    eos_token_id=EOS,
    pad_token_id=0,
    seconds_per_token=0.04,
    token_times=TOKEN_TIMES,
    real_configs={"nvidia/audio-flamingo-3-hf": 8_267_215_360},
    unhandled=("text_config", "use_sliding_window", True),
    expected_hooks=HOOKS,
    make_processor=make_processor,
)


@pytest.fixture(scope="module")
def pair():
    return build_pair(SPEC)


def test_config_reads_as_qwen2_audio_plus_differences(pair):
    _, model = pair
    cfg = model.cfg
    assert (cfg.family, cfg.projector, cfg.audio_token_id, cfg.rotary_base) == (
        "audioflamingo3", MLPProjectorConfig(d_hidden=64, act_fn="gelu", bias=True), SOUND, 1e6
    )
    assert (cfg.n_heads, cfg.n_key_value_heads, cfg.audio.pooling, cfg.audio.encoder) == (4, 2, AvgPooling(2), "whisper")
    assert cfg.audio_inputs.frame_mask == "input_features_mask" and cfg.audio_time_rotary is None


def test_several_clips_per_prompt_match_hf(pair):
    """HF's processor takes one clip per text; build_inputs assembles several from its per-clip output."""
    assert_several_clips_per_text_match_hf(pair[0], make_processor())


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


def test_touching_clips_are_told_apart_from_a_long_clip(pair):
    """A run continues one clip only after a full window: a short window followed by more placeholders is two
    clips with nothing between them, refused; a full window then a short one is one long clip (the control)."""
    _, model = pair
    with pytest.raises(ValueError, match="right after window 0's 15 tokens with no token between"):
        model.to_inputs(make_inputs([[[60, 100]]]))  # a 0.6 s clip, then a 1 s clip in the same run
    assert [len(span) for span in model.to_inputs(make_inputs([[[100, 60]]])).audio_spans[0]] == [25 + 15]


def test_bad_inputs_fail_clearly(pair):
    _, model = pair
    inputs = make_inputs([[[100, 100]]])
    with pytest.raises(ValueError, match="50 audio placeholders .* give 25 audio tokens"):
        model(**first_windows(inputs, 1))
    without_mask = {k: v for k, v in inputs.items() if k != "input_features_mask"}
    with pytest.raises(ValueError, match="input_features_mask"):
        model(**without_mask)
