"""Causal tracing: identities a broken implementation would miss, a cell by hand, and the refusals."""

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import causal_tracing, position_groups, silence_like

METRIC = lambda logits: logits[:, -1, 7]  # noqa: E731  (one value per row: averaged)


@pytest.fixture(scope="module")
def inputs(model):
    return model.to_inputs(make_inputs([[100], [100]], seed=4))


def test_restoring_the_last_layer_recovers_everything_and_early_text_nothing(model, inputs):
    """The last layer's output at the last position is all the next-token logits read: restoring it gives RR
    exactly 1, restoring it anywhere else exactly 0."""
    trace = causal_tracing(model, inputs, METRIC, corrupt="silence")
    assert trace.clean != pytest.approx(trace.corrupt)
    assert trace.recovery[-1] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="by layer"):
        trace.first_layer_above(0.5, group="last")
    groups = causal_tracing(model, inputs, METRIC, corrupt="silence", by="position_group")
    assert groups.groups == ["early", "late", "last"]
    rr = groups.recovery
    assert rr[-1, groups.groups.index("last")] == pytest.approx(1.0, abs=1e-5)
    assert rr[-1, groups.groups.index("early")].abs() < 1e-5 and rr[-1, groups.groups.index("late")].abs() < 1e-5
    first = groups.first_layer_above(0.5, group="last")
    assert first == int(torch.nonzero(rr[:, 2] > 0.5).flatten()[0])


@torch.no_grad()
def test_a_cell_equals_the_patch_written_by_hand(model, inputs):
    trace = causal_tracing(model, inputs, METRIC, corrupt="silence", layers=[0])
    _, clean = model.run_with_cache(inputs, names_filter="blocks.0.hook_resid_post")
    text = inputs.text_mask

    def restore(resid, hook):
        return torch.where(text[..., None], clean["blocks.0.hook_resid_post"], resid)

    by_hand = METRIC(model.run_with_hooks(silence_like(inputs), fwd_hooks=[("blocks.0.hook_resid_post", restore)]))
    assert trace.patched[0] == pytest.approx(float(by_hand.mean()), abs=1e-6)
    assert trace.corrupt == pytest.approx(float(METRIC(model(silence_like(inputs))).mean()), abs=1e-6)


def test_noise_corruption_zero_noise_and_the_clean_run_as_its_own_corruption(model, inputs):
    quiet = causal_tracing(model, inputs, METRIC, corrupt="noise", noise_scale=0.0)
    assert torch.equal(quiet.effect, torch.zeros_like(quiet.effect))
    with pytest.raises(ValueError, match="undefined"):
        quiet.recovery
    noisy = causal_tracing(model, inputs, METRIC, corrupt="noise", noise_scale=3.0, seed=1)
    assert abs(noisy.clean - noisy.corrupt) > 1e-4 and noisy.recovery[-1] == pytest.approx(1.0, abs=1e-5)
    again = causal_tracing(model, inputs, METRIC, corrupt="noise", noise_scale=3.0, seed=1)
    assert torch.equal(noisy.patched, again.patched)  # seeded
    with pytest.raises(ValueError, match="0 / 0"):
        causal_tracing(model, inputs, METRIC, corrupt=inputs)
    for scale in (-1.0, float("nan"), float("inf")):  # inf noise made every corrupted logit NaN
        with pytest.raises(ValueError, match="noise_scale must be a finite number >= 0"):
            causal_tracing(model, inputs, METRIC, corrupt="noise", noise_scale=scale)


def test_groups_and_refusals(model, inputs):
    groups = position_groups(inputs)
    union = sum(g.long() for g in groups.values())
    assert torch.equal(union.bool(), inputs.text_mask.cpu()) and int(union.max()) == 1  # a partition of the text
    attribute = torch.zeros(inputs.shape, dtype=torch.bool)
    attribute[:, -3] = True
    assert "attribute" in position_groups(inputs, attribute)
    with pytest.raises(ValueError, match="non-empty"):
        causal_tracing(model, inputs, METRIC, by="position_group", groups={"none": torch.zeros(inputs.shape, dtype=torch.bool)})
    with pytest.raises(ValueError, match="by must"):
        causal_tracing(model, inputs, METRIC, by="head")
    mixed = model.to_inputs(make_inputs([[100], []], seed=4))  # the second row is text only
    with pytest.raises(ValueError, match=r"rows \[1\] have no audio"):
        causal_tracing(model, mixed, METRIC)
    with pytest.raises(ValueError, match="have none"):
        causal_tracing(model, torch.tensor([[8, 9, 10]]), METRIC)


@torch.no_grad()
def test_noise_corrupts_each_item_alike_whatever_its_batch(model):
    """Was: one draw over the batch's audio tokens, scaled by the batch's std, so an item's corruption (and the
    row mean) changed with the order and company of the rows. Now the mean over rows equals the mean of the items
    traced alone, in any order; control: another seed gives another corruption."""
    from dataclasses import replace

    ids = [model.to_inputs(make_inputs([[n]], [t], seed=s)) for n, t, s in ((100, 3, 1), (60, 6, 2), (80, 4, 3))]
    alone = [causal_tracing(model, x, METRIC, corrupt="noise", seed=5, layers=[0, 1]) for x in ids]
    # the same three items as one left-padded batch, then in another order
    width = max(x.shape[1] for x in ids)
    pad = lambda t, value: torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)  # noqa: E731
    key = next(k for k, v in ids[0].audio.items() if v.is_floating_point())
    mask_key = next(k for k, v in ids[0].audio.items() if not v.is_floating_point())
    batch = replace(ids[0], input_ids=torch.cat([pad(x.input_ids, 0) for x in ids]),
                    attention_mask=torch.cat([pad(x.attention_mask, 0) for x in ids]),
                    audio={key: torch.cat([x.audio[key] for x in ids]), mask_key: torch.cat([x.audio[mask_key] for x in ids])})
    order = [2, 0, 1]
    shuffled = replace(batch, input_ids=batch.input_ids[order], attention_mask=batch.attention_mask[order],
                       audio={k: v[order] for k, v in batch.audio.items()})
    for together in (causal_tracing(model, batch, METRIC, corrupt="noise", seed=5, layers=[0, 1]),
                     causal_tracing(model, shuffled, METRIC, corrupt="noise", seed=5, layers=[0, 1])):
        assert together.corrupt == pytest.approx(sum(a.corrupt for a in alone) / 3, abs=1e-4)
        for layer in range(2):
            assert together.patched[layer] == pytest.approx(sum(float(a.patched[layer]) for a in alone) / 3, abs=1e-4)
    other = causal_tracing(model, batch, METRIC, corrupt="noise", seed=6, layers=[0])
    assert abs(other.corrupt - together.corrupt) > 1e-3


def test_corrupted_inputs_of_other_rows_or_padding_are_refused(model):
    """Was: corrupted inputs holding other rows' prompts in the same layout (the same prompts in another order)
    were taken, so each row's clean run was compared with another row's corrupted one (the toy's recovery curve
    moved by up to 0.54), and encoder patching also took the other padding side, its metric then reading other
    positions (recovery 0.32 for 1.0). Control: the same rows' silence runs in both methods."""
    from dataclasses import replace

    from hooked_audio.analysis import encoder_patching

    clean = model.to_inputs(make_inputs([[100], [100]], text_lengths=[4, 6], seed=3))
    silence = silence_like(clean)
    assert not torch.equal(clean.input_ids[0], clean.input_ids[1]) and not clean.attention_mask[0, 0]
    tail = silence.input_ids[1, :2]  # row 1's first tokens on row 0's padding: row 0 holds another prompt
    swapped = replace(silence, input_ids=torch.stack([torch.cat([tail, silence.input_ids[0, 2:]]), silence.input_ids[1]]),
                      attention_mask=torch.ones_like(silence.attention_mask))
    right = replace(silence, input_ids=silence.input_ids.clone(), attention_mask=silence.attention_mask.clone())
    right.input_ids[0] = silence.input_ids[0].roll(-2)  # row 0 padded on the right
    right.attention_mask[0] = silence.attention_mask[0].roll(-2)

    def metric(logits):
        return logits[:, -1, 0].mean()

    with pytest.raises(ValueError, match=r"causal_tracing corrupts the audio only, .* differ from the clean inputs' in rows \[0\]"):
        causal_tracing(model, clean, metric, corrupt=swapped)
    causal_tracing(model, clean, metric, corrupt=silence)
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n.startswith("audio_encoder.blocks"))
    for corrupted in (swapped, right):
        with pytest.raises(ValueError, match="encoder_patching corrupts the audio only"):
            encoder_patching(model, corrupted, cache, metric, layers=[0], window_s=1.0)
    encoder_patching(model, silence, cache, metric, layers=[0], window_s=1.0)
