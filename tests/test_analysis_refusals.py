"""Silent wrong answers found by probing the analysis entry points: each now gives the right value or a clear error,
and each refusal stands next to its control (the same call done right, with the value it should give)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_inputs
from test_text_dominance import _conflict

from hooked_audio.analysis import (
    attribute_prompt_inputs, attribution_patching, causal_tracing, critical_layer, information_scores,
    interval_overlap, label_log_probs, listening_head_scores, matched_noise, patch_positions, random_window_baseline,
    silence_like, text_dominance,
)
from hooked_audio.analysis.text_dominance import _locate

METRIC = lambda logits: logits[:, -1, 7]  # noqa: E731


@pytest.fixture(scope="module")
def run(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], seed=1))
    with torch.no_grad():
        _, cache = model.run_with_cache(inputs)
    return inputs, cache


def test_nan_attention_is_refused_by_every_ranking_method():
    attention = torch.rand(12, 2, 3, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.05
    correct = torch.arange(12) % 3 != 0
    for method in ("pointbiserial", "auc", "diff"):
        assert torch.isfinite(listening_head_scores(None, None, correct, method, attention=attention)).all()  # control
        broken = attention.clone()
        broken[3, 0, 0] = float("nan")
        with pytest.raises(ValueError, match=r"NaN or inf entries \(rows \[3\]\)"):
            listening_head_scores(None, None, correct, method, attention=broken)


@torch.no_grad()
def test_the_lens_refuses_one_label_nan_log_probs_and_scores_that_are_not_shares(model, run):
    _, cache = run
    with pytest.raises(ValueError, match="is one label"):
        label_log_probs(model, cache, ["yes"])
    log_probs = label_log_probs(model, cache, ["yes", "no"])
    scores = information_scores(log_probs, torch.tensor([0, 1]))
    torch.testing.assert_close(scores, (log_probs.argmax(-1) == torch.tensor([0, 1])).float().mean(-1))  # control
    broken = log_probs.clone()
    broken[..., 0] = float("nan")  # argmax would take the NaN as the highest label
    with pytest.raises(ValueError, match="NaN"):
        information_scores(broken, torch.tensor([0, 0]))
    assert critical_layer(torch.tensor([0.5, 0.7, 0.9]), 2) == pytest.approx((0.1 * 1 + 0.3 * 2) / 0.4)
    with pytest.raises(ValueError, match=r"shares of rows in \[0, 1\]"):
        critical_layer(torch.tensor([50.0, 70.0, 90.0]), 2)  # percentages would give a plausible 1.19


def test_a_prompt_format_with_words_the_tokenizer_lacks_is_refused(model):
    clip = np.zeros(16000, np.float32) + 0.01
    with pytest.raises(ValueError, match=r"does not know \['Options:', 'yes,', 'no.'\]"):
        attribute_prompt_inputs(model, [clip], "P3", "the answer is", question="what is said ?", options=["yes", "no"],
                                sampling_rate=16000)
    attribute_prompt_inputs(model, [clip], "P3", "the answer is", question="what is said ?", options=["yes", "no"],
                            options_template="{question} {options}", join=" ", sampling_rate=16000)  # control


def test_matched_noise_of_integer_pcm_has_the_level_the_model_hears():
    wave = 0.3 * np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    pcm = (wave * 32767).astype(np.int16)  # build_inputs reads it as pcm / 32768
    rms = lambda x: float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))  # noqa: E731
    assert rms(matched_noise([pcm])[0]) == pytest.approx(rms(pcm / 32768.0), rel=1e-5)
    assert rms(matched_noise([wave])[0]) == pytest.approx(rms(wave), rel=1e-5)  # control: float as is


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_matched_noise_of_a_clip_at_another_rate_is_as_loud_where_the_model_hears_it(rate):
    """Was: matched at the clip's own rate, so the 16 kHz resampling in build_inputs cut the noise's share above
    8 kHz (a tone has none): 1.6 dB quieter at 22.05 kHz, 5 dB at 48 kHz. Control: the level at the clip's rate
    is the old construction's (white noise matched at the clip's rate), heard quieter."""
    from hooked_audio import load_waveform

    t = np.arange(int(0.5 * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    (noise,) = matched_noise([tone], sampling_rate=rate)
    rms = lambda x: float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))  # noqa: E731
    assert noise.shape == tone.shape
    heard_tone, heard_noise = load_waveform(tone, sampling_rate=rate), load_waveform(noise, sampling_rate=rate)
    assert len(heard_noise) == len(heard_tone)
    assert rms(heard_noise) == pytest.approx(rms(heard_tone), rel=2e-3)
    white = np.random.default_rng(0).standard_normal(tone.size)
    white = (white * rms(tone) / rms(white)).astype(np.float32)
    assert rms(load_waveform(white, sampling_rate=rate)) < 0.9 * rms(heard_tone)


@torch.no_grad()
def test_causal_tracing_refuses_metrics_of_other_shapes_and_arguments_it_would_ignore(model, run):
    inputs, _ = run
    trace = causal_tracing(model, inputs, METRIC, layers=[0])
    assert trace.clean == pytest.approx(float(model(inputs)[:, -1, 7].mean()), abs=1e-6)  # control: per row, averaged
    with pytest.raises(ValueError, match=r"scalar or one value per row \(2\), got shape \(2, 64\)"):
        causal_tracing(model, inputs, lambda logits: logits[:, -1], layers=[0])  # forgot the token: the vocab's mean
    with pytest.raises(ValueError, match="groups= is used by by='position_group' only"):
        causal_tracing(model, inputs, METRIC, groups={"last": inputs.text_mask}, layers=[0])
    with pytest.raises(ValueError, match="used by corrupt='noise' only"):
        causal_tracing(model, inputs, METRIC, corrupt="silence", noise_scale=10.0, layers=[0])


@torch.no_grad()
def test_text_dominance_refuses_a_text_free_run_of_other_clips(model):
    conflict = model.to_inputs(_conflict(True))
    same = text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, text_free=model.to_inputs(_conflict(False)), n_boot=50)
    assert same["logit_diff_ci"][0] <= same["logit_diff_mean"] <= same["logit_diff_ci"][1]  # control, with its CI
    with pytest.raises(ValueError, match="text_free carries other audio"):
        text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, text_free=model.to_inputs(_conflict(False, seed=1)))


class _Subwords:
    """A byte-level-like tokenizer over six pieces: "yesterday the answer is yes" is yes|terday|Ġthe|Ġanswer|Ġis|Ġyes."""

    pieces = ["yes", "terday", " the", " answer", " is", " yes"]

    def encode(self, text, add_special_tokens=False):
        return [self.pieces.index(text)] if text in self.pieces else [99]

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_a_hint_is_found_as_whole_words_not_inside_another_word():
    assert _locate(_Subwords(), [0, 1, 2, 3, 4, 5], "yes", 0) == (5, 1)  # not the "yes" of "yesterday"
    with pytest.raises(ValueError, match="does not contain"):
        _locate(_Subwords(), [0, 1, 2, 3, 4], "yes", 0)


def test_an_instant_is_hit_by_a_window_that_contains_it():
    assert interval_overlap((0.5, 1.5), (1.0, 1.0)) == 1.0 and interval_overlap((0.0, 0.5), (1.0, 1.0)) == 0.0
    assert interval_overlap((0.0, 1.0), (1.0, 2.0)) == 0.0  # control: touching intervals do not overlap
    assert random_window_baseline(1.0, 0.2, (0.5, 0.5), n=4000) == pytest.approx(0.25, abs=0.03)  # starts 0.3-0.5 of 0-0.8
    with pytest.raises(ValueError, match="outside the clip"):
        random_window_baseline(1.0, 0.2, (5.0, 6.0))


def test_patch_positions_on_padding_are_refused(run):
    inputs, cache = run
    pad = int((~inputs.attention_mask[1].bool()).sum())
    assert pad > 2
    with pytest.raises(ValueError, match=r"select padding in rows \[1\]"):
        patch_positions(cache, [0, 1, 2])
    assert patch_positions(cache, [-1]).sum() == 2  # control: the last column, real in every row


def test_attribution_patching_leaves_the_callers_gradients(model, run):
    inputs, _ = run
    param = next(model.parameters())
    param.grad = torch.ones_like(param)
    try:
        scores = attribution_patching(model, inputs, silence_like(inputs), lambda logits: logits[:, -1, 7].sum(),
                                      names_filter=["blocks.0.hook_resid_post"])
        assert scores["blocks.0.hook_resid_post"].abs().max() > 0  # control: it attributed something
        assert torch.equal(param.grad, torch.ones_like(param))
    finally:
        param.grad = None
