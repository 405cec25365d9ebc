"""Arguments the analysis helpers used to misread without a word (a bool mask in a list read as positions 0
and 1, hooks built for one input run on another, a float layer truncated, a float answer index): each is now
read as meant or refused, next to the valid neighbouring call as the control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import (
    attribute_information, attribution_patching, audio_masking_hooks, back_patching_hooks, back_patching_sweep,
    causal_tracing, head_ablation_effects, logit_lens,
    critical_layer, enrichment_hook, information_scores, instruction_steering_hooks, instruction_steering_vector,
    label_log_probs, matched_noise, patch_positions, silence_like, steering_hook, text_dominance,
)

LABELS = ["yes", "no", "hello"]
RESID = "blocks.0.hook_resid_post"


@pytest.fixture
def batch(model):
    """Three rows, left-padded (clips of 1 s, 0.6 s and 0.8 s)."""
    return model.to_inputs(make_inputs([[100], [60], [80]]))


@pytest.fixture
def cache(model, batch):
    return model.run_with_cache(batch, names_filter=lambda name: name.endswith("hook_resid_post"))[1]


def _last(logits, inputs):
    return logits[torch.arange(inputs.shape[0]), inputs.last_positions.long()]


@pytest.mark.parametrize("container", [lambda m: m.tolist(), lambda m: m.numpy()], ids=["list", "numpy"])
def test_a_bool_mask_in_a_list_or_array_is_a_mask_not_positions_0_and_1(model, batch, cache, container):
    mask = batch.audio_mask.cpu()
    assert torch.equal(patch_positions(cache, container(mask)), mask)
    n = mask.shape[1]  # the last two columns: real in every (left-padded) row
    assert torch.equal(patch_positions(cache, [n - 2, n - 1]), torch.zeros_like(mask).index_fill_(1, torch.tensor([n - 2, n - 1]), True))
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    by_tensor = model.run_with_hooks(batch, fwd_hooks=[(RESID, steering_hook(direction, 2.0, mask))])
    by_container = model.run_with_hooks(batch, fwd_hooks=[(RESID, steering_hook(direction, 2.0, container(mask)))])
    torch.testing.assert_close(by_container, by_tensor, rtol=0, atol=0)
    with pytest.raises(TypeError, match="integer tensor of 0s and 1s"):
        patch_positions(cache, mask.long())
    with pytest.raises(TypeError, match="positions must be integers"):
        patch_positions(cache, [5.9])
    with pytest.raises(ValueError, match="must be 1-d"):
        patch_positions(cache, torch.tensor([[5, 6], [7, 8]]))


@torch.no_grad()
def test_masking_hooks_built_for_other_inputs_refuse_to_run(model, batch):
    masked = model.run_with_hooks(batch, fwd_hooks=audio_masking_hooks(batch))
    again = model.to_inputs(make_inputs([[100], [60], [80]]))  # equal inputs, another object: fine
    torch.testing.assert_close(model.run_with_hooks(again, fwd_hooks=audio_masking_hooks(batch)), masked, rtol=0, atol=0)
    assert (_last(masked, batch) - _last(model(batch), batch)).abs().max() > 1e-3  # the masking acts
    with pytest.raises(ValueError, match="built for other inputs"):  # row 0's layout would be broadcast
        model.run_with_hooks(batch, fwd_hooks=audio_masking_hooks(batch.select_rows([0])))
    other = model.to_inputs(make_inputs([[60], [100], [80]]))  # same shape, audio elsewhere
    with pytest.raises(ValueError, match="built for other inputs"):
        model.run_with_hooks(other, fwd_hooks=audio_masking_hooks(batch))
    with model.hooks(fwd_hooks=audio_masking_hooks(batch.select_rows([0]))):  # checked by the plain forward too
        with pytest.raises(ValueError, match="built for other inputs"):
            model(batch)
    with pytest.raises(ValueError, match="built for other inputs"):  # a list of hooks run per chunk of rows
        text_dominance(model, batch, ["yes"] * 3, ["no"] * 3, fwd_hooks=audio_masking_hooks(batch), batch_size=2)


@pytest.mark.parametrize("layers, error, match", [
    ([1.7], TypeError, "integer layer indices"), ([-1], ValueError, "negative"), ([1, 1], ValueError, "more than once"),
    ([], ValueError, "empty"), ([True], TypeError, "integer layer indices"),
])
def test_layer_lists_that_would_be_misread_are_refused(model, batch, layers, error, match):
    with pytest.raises(error, match=match):
        audio_masking_hooks(batch, layers=layers)
    with pytest.raises(error, match=match):
        instruction_steering_hooks(torch.ones(model.cfg.d_model), layers, 1.0, batch)
    with pytest.raises(error, match=match):
        causal_tracing(model, batch, lambda logits: logits[:, -1, 0].mean(), layers=layers)


def test_one_layer_given_as_a_float_is_refused_not_truncated(model, batch, cache):
    with pytest.raises(TypeError, match="integer layer indices"):
        back_patching_hooks(cache, 1.0, 0)
    with pytest.raises(TypeError, match="integer layer indices"):
        instruction_steering_vector(model, batch, batch.select_rows([0, 1, 2]), layer=1.7)
    with pytest.raises(ValueError, match="outside 0..1"):
        audio_masking_hooks(batch, layers=[2], n_layers=model.cfg.n_layers)
    assert len(audio_masking_hooks(batch, layers=[np.int64(1)], n_layers=2)) == 1  # control: a numpy int is a layer


@torch.no_grad()
def test_instruction_steering_hooks_steer_only_the_rows_they_were_built_for(model, batch):
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    steered = model.run_with_hooks(batch, fwd_hooks=instruction_steering_hooks(vector, [1], 3.0, batch))
    row = batch.select_rows([1])
    alone = model.run_with_hooks(row, fwd_hooks=instruction_steering_hooks(vector, [1], 3.0, row))
    torch.testing.assert_close(_last(alone, row)[0], _last(steered, batch)[1], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="built for other inputs"):  # row 1's text mask would steer every row
        model.run_with_hooks(batch, fwd_hooks=instruction_steering_hooks(vector, [1], 3.0, row))
    with model.hooks(fwd_hooks=instruction_steering_hooks(vector, [1], 3.0, row)):
        with pytest.raises(ValueError, match="built for other inputs"):
            model(batch)


@torch.no_grad()
def test_enrichment_refuses_a_shift_that_reaches_no_layer(model, batch):
    n_layers = model.cfg.n_layers
    plain = model(batch)
    one = model.run_with_hooks(batch, fwd_hooks=enrichment_hook(0, k=1, lam=1.0, n_layers=n_layers, inputs=batch))
    as_numpy = model.run_with_hooks(
        batch, fwd_hooks=enrichment_hook(np.int64(0), k=1, lam=1.0, n_layers=n_layers, inputs=batch))
    torch.testing.assert_close(as_numpy, one, rtol=0, atol=0)  # a numpy int is one layer, not one per row
    assert (_last(one, batch) - _last(plain, batch)).abs().max() > 1e-3
    for k in (0.5, -1, True):
        with pytest.raises(ValueError, match="k .* must be an integer >= 0"):
            enrichment_hook(0, k=k, lam=1.0, n_layers=n_layers, inputs=batch)
    with pytest.raises(ValueError, match="lam must be a finite number"):
        enrichment_hook(0, k=1, lam=float("nan"), n_layers=n_layers, inputs=batch)
    with pytest.raises(ValueError, match="built for other inputs"):
        model.run_with_hooks(batch, fwd_hooks=enrichment_hook(
            0, k=1, lam=1.0, n_layers=n_layers, inputs=batch.select_rows([0])))
    with model.hooks(fwd_hooks=enrichment_hook(0, k=1, lam=1.0, n_layers=n_layers, inputs=batch.select_rows([0]))):
        with pytest.raises(ValueError, match="built for other inputs"):  # row 0's last position would be used for all
            model(batch)


def test_attribution_refuses_runs_whose_audio_sits_elsewhere(model):
    clean = model.to_inputs(make_inputs([[100], [60]]))
    swapped = model.to_inputs(make_inputs([[60], [100]]))  # same shape, audio at other positions
    metric = lambda logits: logits[:, -1, 0].sum()  # noqa: E731
    with pytest.raises(ValueError, match="audio positions differ"):
        attribution_patching(model, clean, swapped, metric)
    assert attribution_patching(model, clean, silence_like(clean), metric, names_filter=[RESID])[RESID].abs().sum() > 0


@torch.no_grad()
def test_answers_labels_and_positions_that_would_be_misread_are_refused(model, batch):
    _, cache = model.run_with_cache(batch)
    log_probs = label_log_probs(model, cache, LABELS)
    answers = log_probs[-1].argmax(-1)
    assert float(information_scores(log_probs, answers)[-1]) == 1.0  # control
    with pytest.raises(TypeError, match="answers .* must be integers"):
        information_scores(log_probs, answers.float() + 0.9)
    with pytest.raises(TypeError, match="answers .* must be integers"):
        information_scores(log_probs, [True, False, True])
    with pytest.raises(TypeError, match="labels must be a list of label strings"):
        label_log_probs(model, cache, torch.tensor([5, 6, 7]))
    torch.testing.assert_close(label_log_probs(model, cache, np.array(LABELS)), log_probs)
    with pytest.raises(TypeError, match="positions must be integers"):
        label_log_probs(model, cache, LABELS, positions=[10.7, 10.2, 12.9])
    last = batch.last_positions.cpu()
    torch.testing.assert_close(label_log_probs(model, cache, LABELS, positions=last), log_probs)
    with pytest.raises(ValueError, match=r"rows \[1, 2\] are padding"):
        label_log_probs(model, cache, LABELS, positions=[0, 0, 0])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        attribute_information(model, batch, LABELS, answers, batch_size=0)


@torch.no_grad()
def test_text_dominance_refuses_token_ids_it_would_misread(model, batch):
    yes, no = model.to_single_token("yes"), model.to_single_token("no")
    audio_ids, text_ids = torch.tensor([yes] * 3), torch.tensor([no] * 3)
    result = text_dominance(model, batch, audio_ids, text_ids, n_boot=50)
    assert result["rate"] == pytest.approx(np.mean([row[no] > row[yes] for row in _last(model(batch), batch).tolist()]))
    with pytest.raises(ValueError, match="special token ids .* not label indices"):  # was: scored <|audio_eos|> etc.
        text_dominance(model, batch, torch.tensor([5, 5, 5]), text_ids, n_boot=50)
    with pytest.raises(TypeError, match="must be integers"):
        text_dominance(model, batch, audio_ids, torch.tensor([True, True, True]), n_boot=50)
    with pytest.raises(TypeError, match="must be integers"):
        text_dominance(model, batch, audio_ids.float(), text_ids, n_boot=50)
    with pytest.raises(ValueError, match=r"one answer per row \(3\)"):
        text_dominance(model, batch, audio_ids, torch.tensor([[6], [6], [6]]), n_boot=50)
    with pytest.raises(TypeError, match="answer strings or integer token ids"):
        text_dominance(model, batch, [5.0, 5.0, 5.0], text_ids, n_boot=50)
    with pytest.raises(TypeError, match="one string"):
        text_dominance(model, batch, audio_ids, text_ids, groups="abc", n_boot=50)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        text_dominance(model, batch, audio_ids, text_ids, batch_size=0, n_boot=50)


def test_critical_layer_refuses_a_margin_or_label_count_it_cannot_mean():
    scores = torch.tensor([0.3, 0.5, 0.9])
    assert critical_layer(scores, 3, alpha=0.0) == pytest.approx((0.5 - 1 / 3 + 2 * (0.9 - 1 / 3)) / (0.5 + 0.9 - 2 / 3))
    for alpha in (-5.0, float("nan")):
        with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
            critical_layer(scores, 3, alpha=alpha)
    with pytest.raises(ValueError, match="n_labels must be an integer"):
        critical_layer(scores, 2.5)
    with pytest.raises(ValueError, match=r"one information score per layer"):
        critical_layer(scores[None], 3)


@torch.no_grad()
def test_sweeps_refuse_a_metric_with_one_value_per_row(model, batch):
    per_row = lambda logits: logits[:, -1, 0]  # noqa: E731
    with pytest.raises(ValueError, match=r"must return one number, got a tensor of shape \(3,\)"):
        head_ablation_effects(model, batch, per_row)
    with pytest.raises(ValueError, match="must return one number"):
        back_patching_sweep(model, batch, per_row, pairs=[(1, 0)])
    total = lambda logits: logits[:, -1, 0].sum()  # noqa: E731  control: the reduced metric is the patched run's
    _, cache = model.run_with_cache(batch, names_filter=lambda name: name.endswith("hook_resid_post"))
    by_hand = float(total(model.run_with_hooks(batch, fwd_hooks=back_patching_hooks(cache, 1, 0))))
    assert float(back_patching_sweep(model, batch, total, pairs=[(1, 0)])[1, 0]) == pytest.approx(by_hand, abs=1e-5)


def test_the_lens_refuses_a_position_given_as_a_word(model, batch):
    _, cache = model.run_with_cache(batch)
    with pytest.raises(TypeError, match="got the string 'last'"):
        logit_lens(model, cache, positions="last")
    torch.testing.assert_close(logit_lens(model, cache, positions=[-1]).log_probs,
                               logit_lens(model, cache).log_probs[:, :, -1:], rtol=0, atol=0)


def test_counterfactual_builders_name_what_was_wrong(batch):
    with pytest.raises(ValueError, match="features_key 'input_feature' is not one of the audio tensors"):
        silence_like(batch, features_key="input_feature")
    key = [k for k, v in batch.audio.items() if v.is_floating_point()][0]
    assert torch.equal(silence_like(batch, features_key=key).audio[key], silence_like(batch).audio[key])
    wave = np.sin(np.linspace(0, 100, 1600)).astype(np.float32)
    with pytest.raises(TypeError, match="one waveform"):
        matched_noise(wave)
    (noise,) = matched_noise([wave])
    assert noise.shape == wave.shape and np.sqrt(np.mean(noise**2)) == pytest.approx(np.sqrt(np.mean(wave**2)), rel=1e-5)


@torch.no_grad()
def test_the_lens_refuses_a_cache_of_another_model(model, batch, cache):
    """Was: logit_lens / label_log_probs normalised the cache's residuals with the cache's model and unembedded them
    with the model passed, a value of neither (a sibling organism's lens on the listener's cache). Control: the
    cache's own model."""
    import copy

    other = copy.deepcopy(model)
    _, full = model.run_with_cache(batch)
    with pytest.raises(ValueError, match="made by another model"):
        logit_lens(other, full)
    with pytest.raises(ValueError, match="made by another model"):
        label_log_probs(other, full, LABELS)
    with pytest.raises(TypeError, match="targets are token ids"):  # was: "new(): invalid data type 'str'"
        logit_lens(model, full).target_prob("yes")
    final = logit_lens(model, full).log_probs[-1]
    torch.testing.assert_close(final, torch.log_softmax(model(batch), -1))


@torch.no_grad()
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_penultimate_on_a_row_of_one_real_token_says_so(model, padding_side):
    """Was: "positions [-1, 18] are outside the cache's 20 positions" (right padding) or "positions [18] of rows
    [0] are padding" (left): neither said that row 0 has no penultimate token. Control: positions="last"."""
    ids = torch.tensor([[7, 0, 0, 0], [7, 8, 9, 10]]) if padding_side == "right" else torch.tensor([[0, 0, 0, 7], [7, 8, 9, 10]])
    inputs = model.to_inputs(input_ids=ids, attention_mask=(ids != 0).long())
    logits, cache = model.run_with_cache(inputs)
    with pytest.raises(ValueError, match=r"rows \[0\] have one real token, so no penultimate position"):
        label_log_probs(model, cache, LABELS, positions="penultimate")
    label_ids = [model.to_single_token(label) for label in LABELS]
    last = logits[torch.arange(2), inputs.last_positions][:, label_ids]
    torch.testing.assert_close(label_log_probs(model, cache, LABELS, positions="last")[-1], last.log_softmax(-1))
