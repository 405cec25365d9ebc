"""Qwen2.5-Omni thinker (HF ``Qwen2_5OmniThinkerForConditionalGeneration``): its contract spec and what is
special about it (MRoPE positions by real tokens, the encoder's chunk and window layout, a full Omni
checkpoint, the feature extractor's padding).

The tiny encoder works on chunks of ``2 * N_WINDOW`` mel frames (HF ``n_window``): clips longer than a
chunk exercise the chunked stem, the windowed attention and the pooling across chunk boundaries. Clips
are padded to a common number of frames (as the processor's ``padding="max_length"`` does) and the
``feature_attention_mask`` says which frames are real.
"""

from __future__ import annotations

import pytest
import torch
from family_harness import (
    TOL, FamilySpec, TokenTimes, assert_loads_offline, assert_matches_hf, build_pair, build_tiny_hf_model,
    count_parameters, left_padded, n_audio_tokens, noise_clips, padded_features, real_config,
)
from transformers import (
    Qwen2_5OmniConfig,
    Qwen2_5OmniForConditionalGeneration,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
    WhisperFeatureExtractor,
)

from hooked_audio import HookedAudioTransformer
from hooked_audio.components.positions import decoder_position_ids

PAD, EOS, AUDIO, AUDIO_BOS, AUDIO_EOS, VISION_BOS, IMAGE, VIDEO = 0, 1, 3, 4, 5, 6, 60, 61
N_MELS, VOCAB = 16, 64
TEXT_IDS = (7, 59)  # ordinary text tokens are drawn from this range


def make_hf_model(seed: int = 0, n_window: int = 10, n_kv_heads: int = 2, tie: bool = False):
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(
            d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=N_MELS,
            max_source_positions=50, n_window=n_window, output_dim=64,
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[0]),
        text_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=n_kv_heads,
            intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=512, pad_token_id=PAD, eos_token_id=EOS,
            rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 3, 3]),
        ),
        audio_token_index=AUDIO, audio_start_token_id=AUDIO_BOS, audio_end_token_id=AUDIO_EOS,
        vision_start_token_id=VISION_BOS, image_token_index=IMAGE, video_token_index=VIDEO,
        tie_word_embeddings=tie,
    )
    return build_tiny_hf_model(
        Qwen2_5OmniThinkerForConditionalGeneration, config, seed, louder={"model.audio_tower.proj.weight": 20}
    )


def make_inputs(clips_per_row, text_lengths=None, seed=0, n_frames=None, count=n_audio_tokens) -> dict:
    """Left-padded rows of [text, <bos> audio.. <eos>, text, ...]; clip sizes in mel frames, ``count`` gives
    a clip's number of audio tokens."""
    gen = torch.Generator().manual_seed(seed)
    rows, frames = [], []
    for r, clips in enumerate(clips_per_row):
        n_text = (text_lengths or [4] * len(clips_per_row))[r]
        row = torch.randint(*TEXT_IDS, (n_text,), generator=gen).tolist()
        for mel in clips:
            row += [AUDIO_BOS] + [AUDIO] * count(mel) + [AUDIO_EOS]
            row += torch.randint(*TEXT_IDS, (2,), generator=gen).tolist()
            frames.append(mel)
        rows.append(row)
    input_ids, attention_mask = left_padded(rows, PAD)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if frames:  # padded to the longest clip and a bit more: padding must not matter
        features, mask = padded_features(frames, N_MELS, n_frames or max(frames) + 7, gen)
        inputs.update(input_features=features, feature_attention_mask=mask)
    return inputs


def not_reimplemented(hf) -> int:
    """The vision tower and the encoder's bos/eos embedding (never used by HF's forward)."""
    return count_parameters(hf.model.visual) + hf.model.audio_tower.audio_bos_eos_token.weight.numel()


SPEC = FamilySpec(
    name="qwen2_5_omni",
    hf_class=Qwen2_5OmniThinkerForConditionalGeneration,
    make_hf_model=make_hf_model,
    # an odd window makes pooled pairs straddle chunk boundaries
    variants={"window10_gqa": dict(seed=10, n_window=10, n_kv_heads=2),
              "window5_mha": dict(seed=5, n_window=5, n_kv_heads=4)},
    make_inputs=make_inputs,  # a clip is its number of mel frames; chunks of 2 * n_window frames
    cases={
        "one_clip_of_several_chunks": [[130]],
        "batch_padded_different_lengths": [[57], [130]],
        "two_clips_in_one_prompt": [[130, 20]],
        "batch_mixed_clip_counts": [[40, 100], [9]],  # and whole chunks
        "clip_shorter_than_a_chunk": [[19]],
    },
    long_audio_case="one_clip_of_several_chunks",
    eos_token_id=EOS,
    pad_token_id=PAD,
    seconds_per_token=0.04,
    # one time axis across chunks: 1.3 s of 10 ms mel frames
    token_times=TokenTimes([[130]], n_tokens=n_audio_tokens(130), tokens_per_window=n_audio_tokens(130),
                           window_seconds=0.0),
    real_configs={"qwen2.5-omni-7b": 8_255_256_576, "qwen2.5-omni-3b": 4_034_776_064},
    unhandled=("text_config", "use_sliding_window", True),
    audio_factor=30,
    expected_hooks=frozenset({
        "audio_encoder.hook_conv_out", "audio_encoder.hook_pos_embed", "audio_encoder.hook_pooled",
        "audio_encoder.ln_post.hook_normalized",
    }),
    not_reimplemented=not_reimplemented,
)


@pytest.fixture(scope="session", params=list(SPEC.variants))
def pair(request):
    return build_pair(SPEC, request.param)


def test_positions_are_hf_mrope_positions_for_audio_and_text(pair):
    """Audio-only MRoPE: three equal streams counting real tokens (left padding starts at 0, padding = 1)."""
    hf, model = pair
    inputs = make_inputs([[57, 20], [130]], text_lengths=[2, 6])
    lengths = inputs["feature_attention_mask"].sum(-1)
    hf_positions, deltas = hf.model.get_rope_index(
        inputs["input_ids"], attention_mask=inputs["attention_mask"], audio_seqlens=lengths
    )
    assert torch.equal(hf_positions[0], hf_positions[1]) and torch.equal(hf_positions[0], hf_positions[2])
    assert model.cfg.audio_inputs.position_ids == "real_tokens"
    ours = decoder_position_ids("real_tokens", inputs["input_ids"], inputs["attention_mask"])
    assert torch.equal(ours, hf_positions[0])
    assert (deltas == 0).all()
    real = inputs["attention_mask"].bool()
    assert not real.all()  # one row is left-padded, and each row's first real token is position 0
    assert all(ours[row, real[row]][0] == 0 and (ours[row, ~real[row]] == 1).all() for row in range(2))


def test_padding_does_not_change_a_rows_logits(pair):
    _, model = pair
    batch = make_inputs([[57], [130]], text_lengths=[3, 7], seed=2)
    alone = {k: v[:1] for k, v in batch.items()}
    alone["input_features"] = batch["input_features"][:1]
    alone["feature_attention_mask"] = batch["feature_attention_mask"][:1]
    keep = alone["attention_mask"][0].bool()
    alone = dict(alone, input_ids=alone["input_ids"][:, keep], attention_mask=alone["attention_mask"][:, keep])
    with torch.no_grad():
        batched, single = model(**batch)[0, batch["attention_mask"][0].bool()], model(**alone)[0]
    assert (batched - single).abs().max() <= TOL


def test_encoder_attends_inside_windows_laid_out_as_rows(pair):
    _, model = pair
    inputs = make_inputs([[128], [40]], seed=3)
    with torch.no_grad():
        _, cache = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    # the encoder attends inside windows laid out as batch rows ([clip * window, head, frame, frame]) and
    # never to a frame past its clip's end: clip 0 has 64 frames, so its last window holds 4 real ones
    pattern = cache["audio_encoder.blocks.0.attn.hook_pattern"]
    window = model.cfg.audio.attention_window_frames
    n_windows = -(-inputs["input_features"].shape[-1] // model.cfg.audio.chunk_mel_frames) * model.audio_encoder.chunk_frames // window
    assert pattern.shape == (2 * n_windows, 4, window, window)
    last = 64 // window
    n_real = 64 - last * window
    assert 0 < n_real < window
    assert pattern[last, :, :n_real, n_real:].abs().max() == 0
    assert pattern[last, :, :n_real, :n_real].sum(-1).allclose(torch.ones(4, n_real))


def test_encoder_hooks_keep_the_time_axis(pair):
    _, model = pair
    inputs = make_inputs([[130, 20], [57]])
    _, cache = model.run_with_cache(**inputs)
    n_frames = inputs["input_features"].shape[-1]
    chunk = model.cfg.audio.chunk_mel_frames
    frames = -(-n_frames // chunk) * model.audio_encoder.chunk_frames
    assert cache["audio_encoder.hook_conv_out"].shape == (3, frames, 64)
    window = model.cfg.audio.attention_window_frames
    assert cache["audio_encoder.blocks.1.attn.hook_pattern"].shape == (3 * frames // window, 4, window, window)
    assert cache["audio_encoder.blocks.1.hook_resid_post"].reshape(3, -1, 64).shape == (3, frames, 64)
    assert cache["audio_encoder.hook_pooled"].shape == (3, frames // 2, 64)
    assert cache["hook_audio_embeds"].shape == (sum(n_audio_tokens(m) for m in (130, 20, 57)), 64)


def test_audio_token_times_end_with_the_clip(pair):
    """Across chunks, the last of a 1.3 s clip's tokens ends within one token of 1.3 s."""
    _, model = pair
    inputs = model.to_inputs(**make_inputs([[130]]))
    span = inputs.audio_spans[0][0]
    times = inputs.token_times()[0, span.start : span.end]
    assert abs(times[-1, 1].item() - 1.3) <= 0.04


def test_bad_inputs_are_clear_errors(pair):
    _, model = pair
    inputs = make_inputs([[57]])
    with pytest.raises(TypeError, match="pixel_values"):
        model(**inputs, pixel_values=torch.zeros(4, 16))
    too_few = dict(inputs, input_ids=inputs["input_ids"].masked_fill(
        (inputs["input_ids"] == AUDIO).cumsum(-1) == 1, TEXT_IDS[0]))
    with pytest.raises(ValueError, match="audio placeholders"):
        model(**too_few)
    bad_mask = dict(inputs, feature_attention_mask=torch.ones(1, inputs["input_features"].shape[-1] + 3))
    with pytest.raises(ValueError, match="mel frames"):
        model(**bad_mask)
    with pytest.raises(ValueError, match="feature_attention_mask"):
        model(**{k: v for k, v in inputs.items() if k != "feature_attention_mask"})


def test_feature_extractor_inputs_match_hf():
    """From waveforms the way Qwen2_5OmniProcessor prepares audio (it cannot be built here: its video
    processor needs torchvision): Whisper features padded to max_length, mask renamed, placeholders
    expanded by the processor's own token-count formula."""
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

    hf = make_hf_model(seed=7)
    model = HookedAudioTransformer.from_hf_model(hf)
    extractor = WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=16000, hop_length=160, chunk_length=2)
    clips = noise_clips(0, [16000, 5000])
    audio = extractor(clips, sampling_rate=16000, padding="max_length", return_attention_mask=True, return_tensors="pt")
    counts = _get_feat_extract_output_lengths(audio["attention_mask"].sum(-1)).tolist()
    assert counts == [25, 8]
    batch = make_inputs([[100], [31]], text_lengths=[3, 5])
    batch.update(input_features=audio["input_features"], feature_attention_mask=audio["attention_mask"])
    assert int((batch["input_ids"] == AUDIO).sum()) == sum(counts)
    assert_matches_hf(model, hf, batch)


def add_speech_weights(directory, names: list[str]) -> None:
    """Write stand-ins for a full checkpoint's speech-output weights (talker, vocoder) next to the thinker's."""
    from safetensors.torch import load_file, save_file

    (path,) = directory.glob("*.safetensors")
    weights = load_file(path)
    weights.update({name: torch.randn(4, 4) for name in names})
    save_file(weights, path, metadata={"format": "pt"})


def test_a_full_omni_checkpoint_loads_offline_with_tied_embeddings(tmp_path, monkeypatch):
    """model_type "qwen2_5_omni", weights under "thinker." (talker left out to stay tiny) plus speech weights."""
    hf = make_hf_model(seed=5, tie=True)
    full = Qwen2_5OmniForConditionalGeneration(
        Qwen2_5OmniConfig(thinker_config=hf.config.to_dict(), enable_audio_output=False)
    )
    full.thinker.load_state_dict(hf.state_dict())
    full.save_pretrained(tmp_path)
    add_speech_weights(tmp_path, ["talker.model.norm.weight", "token2wav.code2wav_dit_model.proj.weight"])
    inputs = make_inputs([[57], [130]])
    model = assert_loads_offline(tmp_path, monkeypatch, hf, inputs, "qwen2_5_omni", save_hf=False, processor=None)
    assert model.cfg.tie_word_embeddings and model.unembed.weight is model.embed.weight


@pytest.mark.parametrize(
    "name, dims",
    [("qwen2.5-omni-7b", (28, 3584, 28, 4, 18944, 152064)), ("qwen2.5-omni-3b", (36, 2048, 16, 2, 11008, 151936))],
)
def test_real_configuration_reads_the_checkpoints_sizes(name, dims):
    _, family, cfg = real_config(name)
    assert family.name == "qwen2_5_omni"
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_mlp, cfg.d_vocab) == dims
    assert (cfg.rotary_base, cfg.eps, cfg.audio_token_id) == (1e6, 1e-6, 151646)
    audio = cfg.audio
    assert (audio.n_layers, audio.d_model, audio.n_heads, audio.d_mlp, audio.n_mels) == (32, 1280, 20, 5120, 128)
    assert (audio.chunk_mel_frames, audio.attention_window_frames, audio.window_frames) == (200, 100, None)
