"""Arguments that used to give a plausible wrong answer in the listening-head, temporal, conflict-probe and
ablation helpers are refused with a message saying what to pass; the valid neighbouring call still works."""

import random

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import (
    LinearProbe, audio_attention_per_row, audio_silence_steering_hooks, generated_queries, head_ablation_hooks, interval_overlap, listening_head_scores,
    listening_signal, listening_signal_auc, localise, random_heads, random_window_baseline, temporal_attention,
)


@pytest.fixture(scope="module")
def padded(model):
    """Three rows of different audio lengths, left-padded: row 1 starts with padding."""
    inputs = model.to_inputs(make_inputs([[100], [60], [80]]))
    assert inputs.attention_mask[1, 0] == 0
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    return inputs, cache


def _planted():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=gen)
    return x, (x[:, 0] > 0).long()


# LinearProbe


def test_probe_accuracy_refuses_labels_that_would_broadcast():
    x, y = _planted()
    probe = LinearProbe().fit(x, y)
    assert probe.accuracy(x, y) == float((probe.predict(x) == y).double().mean()) > 0.9
    for bad in (y[:, None], y[:1], y[:-1]):
        with pytest.raises(ValueError, match="one label per row of x"):
            probe.accuracy(x, bad)
    with pytest.raises(TypeError, match="must be integers"):
        probe.accuracy(x, y.float() + 0.5)
    with pytest.raises(ValueError, match=r"features \[n, 4\]"):
        probe.predict(x[0])


def test_probe_fit_refuses_bad_labels_features_and_settings():
    x, y = _planted()
    with pytest.raises(TypeError, match="must be integers"):
        LinearProbe().fit(x, y.float() * 1.7)
    with pytest.raises(ValueError, match="class indices in 0..1"):
        LinearProbe().fit(x, y * 2, n_classes=2)  # was a bare IndexError inside cross-entropy
    with pytest.raises(ValueError, match="class indices"):
        LinearProbe().fit(x, y - 1)
    nan_x = x.clone()
    nan_x[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in rows \[3\]"):
        LinearProbe().fit(nan_x, y)  # was: NaN standardisation, a constant prediction
    for l2 in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="l2"):
            LinearProbe(l2=l2)
    with pytest.raises(ValueError, match="max_iter"):
        LinearProbe(max_iter=0)
    assert LinearProbe(l2=0).fit(x, y, n_classes=3).weight.shape == (4, 3)


# listening heads


def test_listening_signal_auc_refuses_bad_signals_and_permutation_counts():
    signal = torch.tensor([0.9, 0.1, 0.8, 0.3, 0.7, 0.2])
    correct = torch.tensor([True, False, True, False, False, True])
    strata = ["a", "a", "b", "b", "c", "c"]
    result = listening_signal_auc(signal, correct, strata, n_permutations=50)
    assert result.auc == pytest.approx(2 / 3) and result.pairs == 3 and 0 < result.p_value <= 1
    for n in (0, -5):
        with pytest.raises(ValueError, match="n_permutations"):
            listening_signal_auc(signal, correct, strata, n_permutations=n)  # was p_value = -0.25 at -5
    with_nan = signal.clone()
    with_nan[1] = float("nan")
    for groups in (None, strata):
        with pytest.raises(ValueError, match=r"NaN or inf in rows \[1\]"):
            listening_signal_auc(with_nan, correct, groups)
    with pytest.raises(ValueError, match="signal must be 1-D"):
        listening_signal_auc(signal[:, None], correct)


def test_listening_head_scores_and_signal_refuse_malformed_arguments(model):
    attention = torch.rand(6, 2, 4, generator=torch.Generator().manual_seed(0))
    correct = torch.tensor([True, False] * 3)
    scores = listening_head_scores(model, None, correct, attention=attention, min_attention=0)
    torch.testing.assert_close(listening_head_scores(model, None, correct.long(), attention=attention, min_attention=0), scores)
    with pytest.raises(ValueError, match="correct must be 1-D"):
        listening_head_scores(model, None, True, attention=attention)
    with pytest.raises(ValueError, match="bools"):
        listening_head_scores(model, None, torch.tensor([0.8, 0.2] * 3), attention=attention)
    with pytest.raises(ValueError, match=r"attention must be \[batch, layer, head\]"):
        listening_head_scores(model, None, correct, attention=attention[:, 0])
    heads = [(0, 1), (1, 2)]
    torch.testing.assert_close(listening_signal(attention, heads), (attention[:, 0, 1] + attention[:, 1, 2]) / 2)
    with pytest.raises(ValueError, match=r"heads \[\(0, 1\)\] are named more than once"):
        listening_signal(attention, [(0, 1), (0, 1), (1, 2)])


def test_silence_steering_refuses_a_non_finite_beta(model, padded):
    inputs, _ = padded
    assert len(audio_silence_steering_hooks(model, inputs, [(1, 0)], beta=2.0, min_relative_norm=0)) == 1  # control
    for beta in (float("nan"), float("inf")):  # each made every steered logit NaN
        with pytest.raises(ValueError, match="beta must be a finite number"):
            audio_silence_steering_hooks(model, inputs, [(1, 0)], beta=beta)


@torch.no_grad()
def test_audio_attention_per_row_refuses_queries_on_padding(model, padded):
    inputs, _ = padded
    query = torch.zeros(inputs.shape, dtype=torch.bool)
    query[:, -1] = True
    torch.testing.assert_close(audio_attention_per_row(model, inputs, query), audio_attention_per_row(model, inputs))
    query[1, 0] = True  # a padding position of row 1
    with pytest.raises(ValueError, match=r"padding positions \(attention mask 0\) in rows \[1\]"):
        audio_attention_per_row(model, inputs, query)


def test_generated_queries_take_one_stop_id_or_a_list(model, padded):
    inputs, _ = padded
    tokens = torch.cat([inputs.input_ids, torch.tensor([[5, 7], [7, 5], [5, 5]])], dim=1)
    extended, query = generated_queries(inputs, tokens, [7])
    one_id, one_query = generated_queries(inputs, tokens, 7)
    assert torch.equal(one_query, query) and torch.equal(one_id.attention_mask, extended.attention_mask)
    assert query.sum(1).tolist() == [2, 1, 2]
    with pytest.raises(TypeError, match="eos_token_ids"):
        generated_queries(inputs, tokens, 7.0)
    placeholder = torch.cat([inputs.input_ids, torch.tensor([[5, 7], [inputs.audio_token_id, 7], [5, 5]])], dim=1)
    with pytest.raises(ValueError, match=r"rows \[1\] generated the audio placeholder id"):  # would be a new "clip"
        generated_queries(inputs, placeholder, [7])


# temporal


def test_temporal_attention_refuses_repeated_or_float_layers_and_heads(padded):
    _, cache = padded
    one, _ = temporal_attention(cache, layers=[1], heads=[0])
    assert one.shape[0] == 3
    for kwargs, match in (({"layers": [1, 1]}, "more than once"), ({"heads": [0, 0]}, "more than once"),
                          ({"layers": [1.7]}, "integer layer indices"), ({"heads": [0.0]}, "integer head indices"),
                          ({"heads": [-1]}, "negative heads are refused"), ({"heads": []}, "heads is empty")):
        with pytest.raises((ValueError, TypeError), match=match):
            temporal_attention(cache, **kwargs)


def test_temporal_attention_refuses_queries_on_padding(padded):
    inputs, cache = padded
    query = torch.zeros(inputs.shape, dtype=torch.bool)
    query[:, -1] = True
    profile, _ = temporal_attention(cache)
    torch.testing.assert_close(temporal_attention(cache, query=query)[0], profile, equal_nan=True)
    query[1, 0] = True
    with pytest.raises(ValueError, match=r"padding positions \(attention mask 0\) in rows \[1\]"):
        temporal_attention(cache, query=query)


def test_localise_refuses_a_window_that_holds_no_token_centre():
    seconds = (torch.arange(50) + 0.5) * 0.04
    change = torch.zeros(50)
    change[30] = 1.0  # centre 1.22 s
    start, end = localise(change, seconds, 0.03)  # just over half the spacing: one token per window
    assert start == pytest.approx(1.2) and end == pytest.approx(1.23)
    with pytest.raises(ValueError, match=r"holds no token centre: the tokens are 0.04 s apart .* longer than 0.02 s"):
        localise(change, seconds, 0.01)  # was (0.0, 0.01): every window summed to 0
    inf = change.clone()
    inf[3] = -float("inf")
    with pytest.raises(ValueError, match="inf"):
        localise(inf, seconds, 0.2)


def test_interval_scores_refuse_non_finite_intervals_and_counts():
    assert interval_overlap((0.0, 1.0), (0.2, 0.5), "iou") == pytest.approx(0.3)
    for predicted in ((float("nan"), 1.0), (1.0, 0.5), (0.0, float("inf"))):
        with pytest.raises(ValueError, match="finite"):
            interval_overlap(predicted, (0.2, 0.5))
    assert 0 < random_window_baseline(1.0, 0.2, (0.2, 0.5), n=10) <= 1
    for n in (0, -1, 2.0):
        with pytest.raises(ValueError, match="whole number >= 1"):
            random_window_baseline(1.0, 0.2, (0.2, 0.5), n=n)
    with pytest.raises(ValueError, match="both finite"):
        random_window_baseline(float("inf"), 0.2, (0.2, 0.5))
    with pytest.raises(ValueError, match="truth must be a finite"):
        random_window_baseline(1.0, 0.2, (float("nan"), 0.5))


# ablation


def test_head_ablation_hooks_refuse_empty_and_repeated_heads(model):
    assert [name for name, _ in head_ablation_hooks([(1, 0), (1, 2)], model=model)] == ["blocks.1.attn.hook_z"]
    for kwargs in ({}, {"model": model}):
        with pytest.raises(ValueError, match="heads is empty"):
            head_ablation_hooks([], **kwargs)
    with pytest.raises(ValueError, match=r"heads \[\(1, 0\)\] are named more than once"):
        head_ablation_hooks([(1, 0), (0, 2), (1, 0)])


def test_random_heads_refuse_exclude_pairs_outside_the_model():
    pool = [(l, h) for l in range(2) for h in range(4) if (l, h) != (0, 0)]
    assert random_heads(2, 4, 3, exclude=[(0, 0)], seed=4) == random.Random(4).sample(pool, 3)
    with pytest.raises(ValueError, match=r"exclude names \[\(5, 5\)\], outside the 2 layers x 4 heads"):
        random_heads(2, 4, 3, exclude=[(5, 5)])
    with pytest.raises(ValueError, match="negative index"):
        random_heads(2, 4, 3, exclude=[(-1, 3)])
    with pytest.raises(ValueError, match="n_layers and n_heads"):
        random_heads(2.0, 4, 3)


def test_a_head_score_table_of_other_inputs_is_refused(model, padded):
    """Was: listening_head_scores(model, inputs, correct, attention=table) never looked at inputs, so a table of
    another batch was scored as these rows'. Control: the table of these inputs, with inputs given or not."""
    inputs, _ = padded
    table = audio_attention_per_row(model, inputs)
    correct = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match="the attention table has 2 rows but inputs has 3"):
        listening_head_scores(model, inputs, correct[:2], attention=table[:2])
    torch.testing.assert_close(listening_head_scores(model, inputs, correct, attention=table),
                               listening_head_scores(model, None, correct, attention=table), rtol=0, atol=0)


def test_a_query_on_the_keys_or_an_empty_query_says_which(model, padded):
    """Was: a query mask that also marked audio keys was refused as "rows without: []" (no row named). Each case
    now names its rows; control: a query at each row's last position runs."""
    inputs, _ = padded
    last = torch.zeros(inputs.shape, dtype=torch.bool)
    last[torch.arange(3), inputs.last_positions] = True
    on_audio = last | (inputs.audio_mask & (torch.arange(3) == 0)[:, None])
    with pytest.raises(ValueError, match=r"query positions are also key positions in rows \[0\]"):
        audio_attention_per_row(model, inputs, query=on_audio)
    empty = last.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"at least one query position \(rows without: \[1\]\)"):
        audio_attention_per_row(model, inputs, query=empty)
    torch.testing.assert_close(audio_attention_per_row(model, inputs, query=last), audio_attention_per_row(model, inputs))
