"""Inputs from real audio, the compact token view, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import AUDIO_TOKEN_ID, make_inputs, n_audio_tokens, sine

QUESTION = "<|audio_bos|><|AUDIO|><|audio_eos|> what is said ?"


def test_build_inputs_resamples_downmixes_and_matches_the_processor(model):
    mono_16k = sine(440, 0.6)
    stereo_44k = np.stack([sine(440, 0.6, 44100), sine(440, 0.6, 44100)])  # (channels, samples)
    with pytest.warns(UserWarning, match="[Dd]ownmix"):
        ours = model.build_inputs(QUESTION, stereo_44k, sampling_rate=44100)
    reference = model.build_inputs(QUESTION, mono_16k, sampling_rate=16000)
    assert torch.equal(ours.input_ids, reference.input_ids)
    n_tokens = int((ours.input_ids == AUDIO_TOKEN_ID).sum())
    assert n_tokens == 15  # 0.6 s at 25 tokens/s
    # resampling 44.1 -> 16 kHz preserves the log-mel features of a pure tone closely
    interior = slice(2, 58)  # away from the clip's edges, where the resampler's filter rings
    torch.testing.assert_close(
        ours.audio["input_features"][..., interior], reference.audio["input_features"][..., interior], atol=0.05, rtol=0
    )


def test_chat_messages_and_batches_are_left_padded(model):
    messages = [
        [{"role": "user", "content": [{"type": "audio", "audio": sine(300, 0.9)}, {"type": "text", "text": "what is said ?"}]}],
        [{"role": "user", "content": [{"type": "audio", "audio": sine(600, 0.3)}, {"type": "text", "text": "yes"}]}],
    ]
    inputs = model.build_inputs(messages=messages, sampling_rate=16000)
    assert inputs.attention_mask[:, -1].all() and not inputs.attention_mask[1, 0]
    assert [len(row[0]) for row in inputs.audio_spans] == [n_audio_tokens(90), n_audio_tokens(30)] == [22, 7]
    assert "<audio 0.00–0.88 s ×22>" in model.display_tokens(inputs, row=0)
    with pytest.raises(ValueError, match="these inputs have 2 rows: pass row="):  # was: row 0 shown, row 1 silently not
        model.display_tokens(inputs)
    assert model.display_tokens(inputs, row=None) == [model.display_tokens(inputs, row=r) for r in range(2)]
    assert "<audio 0.00–0.28 s ×7>" in model.display_tokens(inputs, row=1)
    strings = model.to_str_tokens(inputs, row=0)
    assert strings[-1] == "assistant" and strings[0] == "<|im_start|>"


def test_to_str_tokens_is_one_string_per_position_with_clip_times(model):
    inputs = model.to_inputs(**make_inputs([[100, 40], [60]], text_lengths=[3, 5]))
    for row in range(2):
        strings = model.to_str_tokens(inputs, row=row)
        assert len(strings) == inputs.shape[1]  # str_tokens[pos] names activation position pos
        spans = inputs.audio_spans[row]
        for span in spans:
            assert strings[span.start] == "<audio 0.00–0.04 s>"
            assert strings[span.start + 5] == "<audio 0.20–0.24 s>"  # 25 tokens a second
            assert strings[span.end - 1] == f"<audio {0.04 * (len(span) - 1):.2f}–{0.04 * len(span):.2f} s>"
        text = [p for p in range(inputs.shape[1]) if not inputs.audio_mask[row, p]]
        ids = inputs.input_ids[row, text].tolist()
        assert [strings[p] for p in text] == model.tokenizer.convert_ids_to_tokens(ids)
    assert model.to_str_tokens(inputs, row=None)[1] == model.to_str_tokens(inputs, row=1)


def test_display_tokens_collapses_each_audio_span(model):
    inputs = make_inputs([[100, 40]], text_lengths=[3])
    strings = model.display_tokens(**inputs)
    assert strings.count("<audio 0.00–1.00 s ×25>") == 1 and strings.count("<audio 0.00–0.40 s ×10>") == 1
    assert len(strings) == inputs["input_ids"].shape[1] - 25 - 10 + 2


def test_time_to_position(model):
    inputs = model.to_inputs(**make_inputs([[100]], text_lengths=[3]))
    span = inputs.audio_spans[0][0]
    assert inputs.time_to_position(0, 0.5) == span.start + 12
    with pytest.raises(ValueError, match="outside clip"):
        inputs.time_to_position(0, 1.2)


def test_clip_longer_than_the_window_is_refused_or_truncated(model):
    long_clip = sine(440, 1.5)
    with pytest.raises(ValueError, match="truncate"):
        model.build_inputs(QUESTION, long_clip, sampling_rate=16000)
    with pytest.warns(UserWarning):
        inputs = model.build_inputs(QUESTION, long_clip, sampling_rate=16000, on_too_long="truncate")
    assert int(inputs.audio_mask.sum()) == 25


@pytest.mark.parametrize(
    "clip, match",
    [
        (np.array([0.1, np.nan] * 1000, dtype=np.float32), "NaN"),
        (np.zeros(0, dtype=np.float32), "empty"),
    ],
)
def test_bad_waveforms_are_clear_errors(model, clip, match):
    with pytest.raises(ValueError, match=match):
        model.build_inputs(QUESTION, clip, sampling_rate=16000)


def test_silent_clip_is_accepted(model):
    inputs = model.build_inputs(QUESTION, np.zeros(8000, dtype=np.float32), sampling_rate=16000)
    assert int(inputs.audio_mask.sum()) == n_audio_tokens(50)
    assert not torch.equal(model(inputs), model(model.build_inputs(QUESTION, sine(440, 0.5), sampling_rate=16000)))


def test_array_without_sampling_rate_is_an_error(model):
    with pytest.raises(ValueError, match="sampling_rate="):
        model.build_inputs(QUESTION, sine(440, 0.5))


def test_placeholder_count_must_match_the_clips(model):
    with pytest.raises(ValueError, match="2 clip"):
        model.build_inputs(QUESTION, [sine(440, 0.5), sine(220, 0.5)], sampling_rate=16000)


def test_placeholders_that_do_not_match_the_features(model):
    inputs = make_inputs([[100]])
    inputs["input_ids"] = inputs["input_ids"][:, 1:]  # drop a token, keep the audio run intact...
    inputs["attention_mask"] = inputs["attention_mask"][:, 1:]
    inputs["feature_attention_mask"] = inputs["feature_attention_mask"].clone()
    inputs["feature_attention_mask"][:, 90:] = 0  # ...but the features now say the clip is shorter
    with pytest.raises(ValueError, match=r"25 audio placeholders .* give 22 audio tokens"):
        model(**inputs)


def test_unexpanded_placeholder_is_refused_with_the_fix(model):
    inputs = make_inputs([[100]])
    keep = torch.ones_like(inputs["input_ids"][0], dtype=torch.bool)
    audio = torch.nonzero(inputs["input_ids"][0] == AUDIO_TOKEN_ID).flatten()
    keep[audio[1:]] = False
    inputs["input_ids"], inputs["attention_mask"] = inputs["input_ids"][:, keep], inputs["attention_mask"][:, keep]
    with pytest.raises(ValueError, match="expand the placeholders"):
        model(**inputs)


def test_missing_audio_features_is_an_error_not_a_text_only_run(model):
    inputs = make_inputs([[100]])
    with pytest.raises(ValueError, match="no audio features"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    with pytest.raises(ValueError, match="feature_attention_mask"):
        model(input_ids=inputs["input_ids"], input_features=inputs["input_features"])


def test_features_without_placeholders_is_an_error(model):
    text_only = make_inputs([[]])
    audio = make_inputs([[100]])
    with pytest.raises(ValueError, match="0 audio placeholders"):
        model(**text_only, input_features=audio["input_features"], feature_attention_mask=audio["feature_attention_mask"])


def test_wrong_feature_shape_says_what_is_expected(model):
    inputs = make_inputs([[100]])
    inputs["input_features"] = inputs["input_features"][:, :, :80]
    inputs["feature_attention_mask"] = inputs["feature_attention_mask"][:, :80]
    with pytest.raises(ValueError, match=r"\[windows, 16 mel bins, 100 frames\]"):
        model(**inputs)


def test_unknown_keyword_is_an_error(model):
    with pytest.raises(TypeError, match="input_featurez"):
        model(**make_inputs([[100]]), input_featurez=torch.zeros(1))


def test_float64_features_are_cast_to_the_model_dtype(model):
    inputs = make_inputs([[100]])
    reference = model(**inputs)
    inputs["input_features"] = inputs["input_features"].double()
    torch.testing.assert_close(model(**inputs), reference)


def test_empty_or_out_of_vocabulary_token_input_is_refused(model):
    with pytest.raises(ValueError, match="at least one position"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, model.cfg.d_vocab]]))
    with pytest.raises(ValueError, match="all padding"):
        model(torch.tensor([[5, 6], [7, 8]]), attention_mask=torch.tensor([[1, 1], [0, 0]]))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        model.to_single_token("zzz")
    assert model.to_single_token("yes") == model.tokenizer.convert_tokens_to_ids("yes")
