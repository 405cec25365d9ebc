"""Audio Flamingo 3 matches HF's eager ``AudioFlamingo3ForConditionalGeneration`` on tiny random models.

Also home of the tiny Flamingo builders that ``test_family_music_flamingo.py`` reuses: a clip is a list
of windows (mel frames per window), and a clip's windows fill one run of ``<sound>`` placeholders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize_norms_and_biases
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AudioFlamingo3Config,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Processor,
    MusicFlamingoConfig,
    MusicFlamingoForConditionalGeneration,
    MusicFlamingoProcessor,
    PreTrainedTokenizerFast,
    WhisperFeatureExtractor,
)

import hooked_audio.model_configs as model_configs
from hooked_audio import HookedAudioTransformer
from hooked_audio.families import family_for_model_type

TOL = 1e-4
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
    torch.manual_seed(seed)
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
    config._attn_implementation = "eager"
    model = model_class(config).eval()
    randomize_norms_and_biases(model, seed)
    with torch.no_grad():  # make the audio path loud enough that a broken splice cannot hide
        model.model.multi_modal_projector.linear_2.weight.mul_(20)
    return model


def n_audio_tokens(mel_frames: int) -> int:
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def make_inputs(clips_per_row: list[list[list[int]]], text_lengths=None, seed: int = 0, wrap: bool = False) -> dict:
    """Left-padded rows of [text, clip, text, clip, ...]; a clip is a list of windows' mel frame counts.
    ``wrap`` puts each clip's run between ``<|sound_bos|>`` and ``<|sound_eos|>`` (Music Flamingo)."""
    gen = torch.Generator().manual_seed(seed)
    words = lambda n: [int(t) for t in torch.randint(len(SPECIAL), len(VOCAB), (n,), generator=gen)]  # noqa: E731
    rows, windows = [], []
    for r, clips in enumerate(clips_per_row):
        row = words((text_lengths or [4] * len(clips_per_row))[r])
        for clip in clips:
            run = [SOUND] * sum(n_audio_tokens(mel) for mel in clip)
            row += ([SOUND_BOS] + run + [SOUND_EOS] if wrap else run) + words(2)
            windows += clip
        rows.append(row)
    width = max(map(len, rows))
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, width - len(row):] = torch.tensor(row)
        attention_mask[r, width - len(row):] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if windows:
        features = torch.randn(len(windows), N_MELS, 2 * N_CTX, generator=gen)
        mask = torch.zeros(len(windows), 2 * N_CTX, dtype=torch.long)
        for i, mel in enumerate(windows):
            mask[i, :mel] = 1
            features[i, :, mel:] = -0.8  # what the feature extractor's padding looks like
        inputs.update(input_features=features, input_features_mask=mask)
    return inputs


def make_processor(family: str = "audioflamingo3"):
    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    feature_extractor = WhisperFeatureExtractor(
        feature_size=N_MELS, sampling_rate=16000, hop_length=160, chunk_length=1, n_fft=400
    )
    return HF_CLASSES[family][2](feature_extractor=feature_extractor, tokenizer=tokenizer)


def max_diff(ours, theirs, attention_mask) -> float:
    return (ours - theirs)[attention_mask.bool()].abs().max().item()


CASES = {
    "one_clip": [[[100]]],
    "batch_padded_different_lengths": [[[100]], [[37]]],
    "two_clips_in_one_prompt": [[[100], [52]]],
    "multi_window_clip_batched_with_a_short_clip": [[[100, 100, 37]], [[60]]],
    "two_multi_window_clips_and_a_short_one": [[[100, 23], [64]], [[100, 100]]],
}


def check_parity_cases(hf, model, wrap: bool) -> dict[str, float]:
    """Max abs logit difference per case; also asserts the audio really moves the logits."""
    diffs = {}
    for case, clips in CASES.items():
        inputs = make_inputs(clips, text_lengths=[3, 7][: len(clips)], seed=1, wrap=wrap)
        with torch.no_grad():
            theirs = hf(**inputs).logits
            ours = model(**inputs)
            moved = max_diff(model(**dict(inputs, input_features=torch.randn_like(inputs["input_features"]))), ours,
                             inputs["attention_mask"])
        diffs[case] = max_diff(ours, theirs, inputs["attention_mask"])
        assert diffs[case] <= TOL, (case, diffs[case])
        assert moved > 100 * TOL, (case, moved)
    return diffs


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
    inputs = make_inputs([[], []], text_lengths=[9, 5])
    with torch.no_grad():
        assert max_diff(model(**inputs), hf(**inputs).logits, inputs["attention_mask"]) <= TOL


def test_greedy_generation_matches_hf(pair):
    hf, model = pair
    inputs = make_inputs([[[100, 40]], [[60]]], seed=4)
    with torch.no_grad():
        theirs = hf.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=EOS, pad_token_id=0)
    assert torch.equal(model.generate(**inputs, max_new_tokens=8, eos_token_id=EOS, pad_token_id=0), theirs)


def test_every_hook_point_fires(pair):
    _, model = pair
    fired = set()
    model.run_with_hooks(**make_inputs([[[100, 30]], [[60]]]), fwd_hooks=[(lambda name: True, lambda x, hook: fired.add(hook.name))])
    assert set(model.hook_dict) - fired == set()
    assert {"audio_encoder.hook_pooled", "audio_encoder.ln_post.hook_normalized", "hook_audio_embeds"} <= fired


def test_audio_token_times_follow_the_windows(pair):
    """25 tokens per second; a clip's later windows continue its time axis (window w starts at w seconds)."""
    _, model = pair
    assert model.cfg.seconds_per_audio_token == pytest.approx(0.04)
    inputs = model.to_inputs(**make_inputs([[[100, 100, 37]]]))
    (span,) = inputs.audio_spans[0]
    assert len(span) == 25 + 25 + 9
    times = inputs.token_times()[0, span.start : span.end, 0]
    window, token = torch.arange(len(span)) // 25, torch.arange(len(span)) % 25
    torch.testing.assert_close(times, window * 1.0 + token * 0.04)
    assert inputs.time_to_position(0, 1.5) == span.start + 25 + 12


def test_processor_splits_long_audio_into_windows_and_matches_hf():
    """From waveforms through the real AF3 processor: 2.3 s of audio becomes 3 one-second windows."""
    hf = make_hf_model(seed=7)
    processor = make_processor()
    model = HookedAudioTransformer.from_hf_model(hf, processor=processor)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(36800).astype(np.float32) * 0.1, rng.standard_normal(5000).astype(np.float32) * 0.1]
    batch = processor(text=["hello <sound> what is played ?", "<sound> yes"], audio=clips, return_tensors="pt")
    assert batch["input_features"].shape[0] == 3 + 1
    assert batch["input_features_mask"].sum(-1).tolist() == [100, 100, 30, 32]
    assert int((batch["input_ids"] == SOUND).sum()) == (25 + 25 + n_audio_tokens(30)) + n_audio_tokens(32)
    with torch.no_grad():
        assert max_diff(model(batch), hf(**batch).logits, batch["attention_mask"]) <= TOL


def test_from_pretrained_loads_a_saved_directory_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = make_hf_model(seed=5)
    hf.save_pretrained(tmp_path)
    make_processor().save_pretrained(tmp_path)
    model = HookedAudioTransformer.from_pretrained(str(tmp_path))
    assert model.cfg.family == "audioflamingo3" and model.processor is not None
    inputs = make_inputs([[[100, 50]], [[30]]])
    with torch.no_grad():
        assert max_diff(model(**inputs), hf(**inputs).logits, inputs["attention_mask"]) <= TOL


def test_bad_inputs_fail_clearly(pair):
    _, model = pair
    inputs = make_inputs([[[100, 100]]])
    one_window_too_few = dict(inputs, input_features=inputs["input_features"][:1],
                              input_features_mask=inputs["input_features_mask"][:1])
    with pytest.raises(ValueError, match="50 audio placeholders .* give 25 audio tokens"):
        model(**one_window_too_few)
    without_mask = {k: v for k, v in inputs.items() if k != "input_features_mask"}
    with pytest.raises(ValueError, match="input_features_mask"):
        model(**without_mask)


def test_real_configuration_maps_and_matches_hf_parameter_count():
    hf_config = model_configs.hf_config("nvidia/audio-flamingo-3-hf")
    cfg = family_for_model_type(hf_config.model_type).config_from_hf(hf_config)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_mlp, cfg.d_vocab) == (
        28, 3584, 28, 4, 18944, 151672
    )
    assert (cfg.rotary_base, cfg.audio_token_id, cfg.projector) == (1e6, 151669, "mlp_gelu")
    audio = cfg.audio
    assert (audio.n_layers, audio.d_model, audio.n_heads, audio.d_mlp, audio.n_mels, audio.n_ctx) == (
        32, 1280, 20, 5120, 128, 1500
    )
    with torch.device("meta"):
        ours = HookedAudioTransformer(cfg)
        theirs = AudioFlamingo3ForConditionalGeneration(hf_config)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(theirs)
    assert 8.0e9 < count(ours) < 8.5e9
