"""Voxtral (HF ``VoxtralForConditionalGeneration``): its contract spec and what is special about it (no frame
mask, the final norm per frame before stacking 4 frames, the processor's whole windows, bad inputs).

Voxtral has no frame mask: every feature row is one whole window (here 200 mel frames = 2 s, giving
100 encoder frames and 25 tokens of 4 stacked frames), and a clip longer than a window is several rows
whose tokens fill one run of ``[AUDIO]`` placeholders after ``[BEGIN_AUDIO]`` (mistral_common's layout).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from family_harness import (
    FamilySpec, TokenTimes, assert_logits_match, build_pair, build_tiny_hf_model, first_windows, left_padded,
    noise_clips, padded_features, random_words, tiny_feature_extractor, word_level_tokenizer,
)
from transformers import VoxtralConfig, VoxtralForConditionalGeneration, VoxtralProcessor

from hooked_audio import HookedAudioTransformer
from hooked_audio.components.pooling import FrameStacking
from hooked_audio.components.projector import MLPProjectorConfig
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


# Windows of 200 mel frames (2 s); a clip is its number of real mel frames, padded to whole windows.
SPEC = FamilySpec(
    name="voxtral",
    hf_class=VoxtralForConditionalGeneration,
    make_hf_model=make_hf_model,
    variants={"gqa": dict(seed=3)},
    make_inputs=make_inputs,
    cases={
        "one_clip": [[200]],
        "batch_padded_different_lengths": [[200], [37]],
        "two_clips_in_one_prompt": [[200, 52]],
        "multi_window_clip_batched_with_a_short_clip": [[470], [60]],
        "batch_mixed_clip_counts": [[230, 64], [400]],  # two multi-window clips and a short one
    },
    long_audio_case="multi_window_clip_batched_with_a_short_clip",
    eos_token_id=EOS,
    pad_token_id=0,
    seconds_per_token=0.08,
    token_times=TokenTimes([[470]], n_tokens=3 * TOKENS_PER_WINDOW, tokens_per_window=TOKENS_PER_WINDOW,
                           window_seconds=2.0),
    real_configs={"mistralai/Voxtral-Mini-3B-2507": 4_676_271_104, "mistralai/Voxtral-Small-24B-2507": 24_261_800_960},
    unhandled=("text_config", "pretraining_tp", 2),
    expected_hooks=frozenset({
        "audio_encoder.hook_pos_embed", "audio_encoder.hook_pooled", "audio_encoder.ln_post.hook_normalized",
    }),
    make_processor=make_processor,
)


@pytest.fixture(scope="module")
def pair():
    return build_pair(SPEC)


def test_config_reads_as_qwen2_audio_plus_differences(pair):
    _, model = pair
    cfg = model.cfg
    assert (cfg.family, cfg.projector, cfg.audio_token_id, cfg.rotary_base) == (
        "voxtral", MLPProjectorConfig(d_hidden=64, bias=False), AUDIO, 1e8
    )
    assert (cfg.d_head, cfg.n_heads * cfg.d_head, cfg.qkv_bias, cfg.o_bias) == (32, 128, (False,) * 3, False)
    audio = cfg.audio
    assert (audio.encoder, audio.pooling, audio.d_out, audio.window_frames) == ("voxtral", FrameStacking(4), 256, N_CTX)
    assert cfg.audio_inputs.frame_mask is None and not cfg.tie_word_embeddings


def test_each_clip_follows_begin_audio(pair):
    _, model = pair
    inputs = model.to_inputs(**make_inputs([[470, 60]]))
    for span in inputs.audio_spans[0]:
        assert inputs.input_ids[0, span.start - 1] == BEGIN_AUDIO


def test_final_norm_runs_per_frame_before_stacking(pair):
    """ln_post sees [clip, frame, d]; hook_pooled holds 4 normalised frames side by side."""
    _, model = pair
    _, cache = model.run_with_cache(**make_inputs([[200]]), names_filter=lambda n: n.startswith("audio_encoder."))
    normalized = cache["audio_encoder.ln_post.hook_normalized"]
    assert normalized.shape == (1, N_CTX, 64)
    torch.testing.assert_close(cache["audio_encoder.hook_pooled"], normalized.reshape(1, TOKENS_PER_WINDOW, 256))


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
    config = copy.deepcopy(build_pair(SPEC)[0].config)
    config.audio_config.max_source_positions = 50
    with pytest.raises(NotImplementedError, match="multiple of 4"):
        family_for_model_type("voxtral").to_config(config)


@torch.no_grad()
def test_a_bfloat16_load_runs_at_bfloat16_precision(tmp_path):
    """HF keeps Voxtral's encoder position table in float32 when the rest loads in bfloat16; ours once kept it too
    and then every forward failed on mixed dtypes. Measured: ours in bf16 is 6e-3 from float32, HF's bf16 5e-3."""
    hf = make_hf_model()
    hf.save_pretrained(tmp_path)
    model = HookedAudioTransformer.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    hf_bf16 = VoxtralForConditionalGeneration.from_pretrained(str(tmp_path), dtype=torch.bfloat16).eval()
    inputs = SPEC.make_inputs(SPEC.cases["batch_mixed_clip_counts"], text_lengths=[3, 7], seed=1)
    real = inputs["attention_mask"].bool()
    exact = hf(**inputs).logits.float()
    ours, theirs = model(**inputs).float(), hf_bf16(**inputs).logits.float()
    assert (ours - exact)[real].abs().max() <= 2 * (theirs - exact)[real].abs().max() + 1e-3


def test_build_inputs_with_a_tokenizer_that_cannot_split_the_placeholders_says_so():
    """Voxtral's processor takes no audio, so build_inputs expands [AUDIO] in the text; a word-level tokenizer reads
    the run as one unknown word. That was once reported as a clip "too short for one audio token"."""
    import numpy as np

    processor = SPEC.make_processor()
    model = HookedAudioTransformer.from_hf_model(make_hf_model(), processor=processor)
    with pytest.raises(ValueError, match=r"into \[0\] audio tokens per row, not \[25\].*toy.evaluate.encode"):
        model.build_inputs([f"hello {processor.audio_token} yes"], [np.full(8000, 0.01, np.float32)], sampling_rate=16000)
