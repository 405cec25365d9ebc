"""Analysis helpers on a random tiny model: checks a broken implementation would fail."""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import (
    audio_attention_by_head,
    head_ablation_hooks,
    logit_lens,
    random_heads,
    same_prompt_donors,
    steering_hook,
    top_heads,
)
from hooked_audio.analysis.logit_lens import at_last_positions


def test_logit_lens_last_layer_is_the_model_output(model):
    inputs = make_inputs([[100], [40]])
    logits, cache = model.run_with_cache(**inputs)
    lens = logit_lens(model, cache)
    torch.testing.assert_close(lens.log_probs[-1], logits.log_softmax(-1), atol=1e-4, rtol=1e-4)
    last = cache.last_positions
    final = at_last_positions(lens, last)[-1]
    top = final.argmax(-1)
    assert (lens.target_rank(top)[-1, torch.arange(2), last] == 0).all()
    prob = lens.target_prob(top)[-1, torch.arange(2), last]
    torch.testing.assert_close(prob, final.exp().max(-1).values)


def test_audio_attention_by_head_matches_a_direct_sum(model):
    inputs = make_inputs([[100], [60]])
    _, cache = model.run_with_cache(**inputs)
    scores = audio_attention_by_head(cache, model.cfg.n_layers)
    audio = cache.inputs.audio_mask
    layer, head = 1, 2
    expected = torch.stack([cache["pattern", layer][b, head, -1][audio[b]].sum() for b in range(2)]).mean()
    torch.testing.assert_close(scores[layer, head], expected)
    best = top_heads(scores, 3)
    assert scores[best[0]] == scores.max() and len(set(best)) == 3


def test_head_ablation_removes_exactly_that_heads_result(model):
    inputs = make_inputs([[100]])
    _, cache = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith(("hook_result", "hook_attn_out")))
    with model.hooks(fwd_hooks=head_ablation_hooks([(1, 3), (1, 0)])):
        _, ablated = model.run_with_cache(**inputs, names_filter=["blocks.1.hook_attn_out"])
    removed = cache["blocks.1.attn.hook_result"][:, :, [3, 0]].sum(2)
    torch.testing.assert_close(cache["attn_out", 1] - ablated["attn_out", 1], removed, atol=1e-5, rtol=1e-4)


def _same_prompt_three_clips() -> dict:
    """One prompt three times, each row with its own 100-frame clip."""
    rows = [make_inputs([[100]], seed=seed) for seed in range(3)]
    inputs = dict(rows[0])
    inputs["input_ids"] = rows[0]["input_ids"].repeat(3, 1)
    inputs["attention_mask"] = rows[0]["attention_mask"].repeat(3, 1)
    inputs["input_features"] = torch.cat([r["input_features"] for r in rows])
    inputs["feature_attention_mask"] = torch.cat([r["feature_attention_mask"] for r in rows])
    return inputs


def test_resample_ablation_swaps_in_the_donor_rows_head_output(model):
    inputs = model.to_inputs(_same_prompt_three_clips())
    donors = same_prompt_donors(inputs)
    assert donors.tolist() == [1, 2, 0]
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith(("hook_result", "hook_attn_out")))
    with model.hooks(fwd_hooks=head_ablation_hooks([(1, 3), (1, 0)], mode="resample", donors=donors)):
        _, ablated = model.run_with_cache(inputs, names_filter=["blocks.1.hook_attn_out"])
    result = cache["blocks.1.attn.hook_result"][:, :, [3, 0]].sum(2)
    expected = cache["attn_out", 1] - result + result[donors]
    torch.testing.assert_close(ablated["attn_out", 1], expected, atol=1e-5, rtol=1e-4)
    assert (ablated["attn_out", 1] - cache["attn_out", 1]).abs().max() > 1e-4  # 10x the tolerance: clips differ


def test_resample_ablation_refuses_rows_without_a_same_prompt_partner(model):
    inputs = model.to_inputs(make_inputs([[100], [60]]))
    with pytest.raises(ValueError, match="no other row with the same prompt"):
        same_prompt_donors(inputs)
    with pytest.raises(ValueError, match="donors"):
        head_ablation_hooks([(0, 0)], mode="resample")


def test_resample_donors_with_labels_take_a_clip_of_another_answer(model):
    """Rows 0 and 1 support the same answer: with labels each takes its donor from row 2, the next row whose label
    differs (without labels row 0 would take row 1's clip, which supports its own answer)."""
    inputs = model.to_inputs(_same_prompt_three_clips())
    assert same_prompt_donors(inputs, labels=["a", "a", "b"]).tolist() == [2, 2, 0]
    assert same_prompt_donors(inputs, labels=torch.tensor([0, 1, 1])).tolist() == [1, 0, 0]
    assert same_prompt_donors(inputs, labels=["a", "b", "c"]).tolist() == same_prompt_donors(inputs).tolist()
    with pytest.raises(ValueError, match="no row with the same prompt and another label"):
        same_prompt_donors(inputs, labels=["a", "a", "a"])
    with pytest.raises(ValueError, match="labels has 2 labels but there are 3 rows"):
        same_prompt_donors(inputs, labels=["a", "b"])


def test_resample_donors_never_hold_the_rows_own_clip(model):
    """Was: with the same clip twice under one prompt (a duplicate row), rotation gave a row the duplicate as its
    donor, so resampling returned its own heads' output and the ablation's effect was diluted (halved on the toy).
    Donors now skip rows holding the same clip, and a forward refuses donors that do; control: the donors built
    run, and differ from the plain rotation exactly where a duplicate was next."""
    from dataclasses import replace

    inputs = model.to_inputs(_same_prompt_three_clips())
    features = inputs.audio["input_features"].clone()
    features[1] = features[0]  # row 1 holds row 0's clip
    twice = replace(inputs, audio={**inputs.audio, "input_features": features})
    assert same_prompt_donors(inputs).tolist() == [1, 2, 0]
    donors = same_prompt_donors(twice)
    assert donors.tolist() == [2, 2, 0]
    model.run_with_hooks(twice, fwd_hooks=head_ablation_hooks([(1, 3)], mode="resample", donors=donors))
    with pytest.raises(ValueError, match=r"rows \[0, 1\] and their resample donors \[1, 0\] hold the same clip"):
        model.run_with_hooks(twice, fwd_hooks=head_ablation_hooks([(1, 3)], mode="resample",
                                                                  donors=torch.tensor([1, 0, 0])))
    features[2] = features[0]
    with pytest.raises(ValueError, match="row 0 has no row with the same prompt and another clip"):
        same_prompt_donors(replace(inputs, audio={**inputs.audio, "input_features": features}))


def test_random_heads_exclude_and_are_reproducible():
    chosen = random_heads(4, 4, 5, exclude=[(0, 0), (3, 3)], seed=1)
    assert chosen == random_heads(4, 4, 5, exclude=[(0, 0), (3, 3)], seed=1)
    assert len(set(chosen)) == 5 and (0, 0) not in chosen and (3, 3) not in chosen


def test_steering_at_audio_positions_only_moves_those_positions_at_that_layer(model):
    inputs = make_inputs([[100]])
    audio = model.to_inputs(**inputs).audio_mask
    direction = torch.randn(model.cfg.d_model)
    _, clean = model.run_with_cache(**inputs, names_filter=["blocks.1.hook_resid_pre"])
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", steering_hook(direction, 3.0, audio))]):
        logits, steered = model.run_with_cache(**inputs, names_filter=["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"])
    delta = steered["resid_pre", 1] - clean["resid_pre", 1]
    torch.testing.assert_close(delta[audio], (3.0 * direction).expand(int(audio.sum()), -1), atol=1e-5, rtol=1e-5)
    assert delta[~audio].abs().max() == 0
    assert (logits - model(**inputs))[0, -1].abs().max() > 1e-4
