"""Analysis helpers with bad or tricky arguments (issue 9, class 8): the right value or a clear error."""

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

Z1 = "blocks.1.attn.hook_z"


def _padded(model):
    """Two rows, the second left-padded by 15 positions (a 1 s and a 0.4 s clip)."""
    inputs = model.to_inputs(**make_inputs([[100], [40]]))
    assert not inputs.attention_mask[1, 0] and inputs.attention_mask[0].all()
    return inputs


def _ablated_z(model, inputs, hooks):
    """hook_z of layer 1 as the rest of the model sees it after ``hooks``."""
    seen = {}
    capture = (Z1, lambda z, hook: seen.__setitem__("z", z.detach().clone()))
    model.run_with_hooks(inputs, fwd_hooks=[*hooks, capture])
    return seen["z"]


# --- head ablation ------------------------------------------------------------------------------------------


def test_mean_ablation_averages_real_positions_only(model):
    inputs = _padded(model)
    _, cache = model.run_with_cache(inputs, names_filter=[Z1])
    z = cache[Z1]
    real = inputs.attention_mask.bool()
    expected = z[real][:, 3].mean(0)  # [d_head], over the real positions of both rows
    with_padding = z[:, :, 3].mean(dim=(0, 1))
    assert (expected - with_padding).abs().max() > 1e-3  # padding would change the answer
    ablated = _ablated_z(model, inputs, head_ablation_hooks([(1, 3)], mode="mean", inputs=inputs))
    torch.testing.assert_close(ablated[:, :, 3], expected.expand_as(ablated[:, :, 3]), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ablated[:, :, :3], z[:, :, :3])  # other heads untouched
    # an explicit mask means the same
    by_mask = _ablated_z(model, inputs, head_ablation_hooks([(1, 3)], mode="mean", inputs=inputs.attention_mask))
    torch.testing.assert_close(by_mask, ablated)


def test_mean_ablation_of_a_batch_without_a_mask_is_refused(model):
    inputs = _padded(model)
    with pytest.raises(ValueError, match="mean ablation over a batch of 2 rows needs inputs="):
        model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(1, 3)], mode="mean"))
    with pytest.raises(ValueError, match=r"the mask given as inputs= is \(1, \d+\)"):
        model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(1, 3)], mode="mean", inputs=inputs.attention_mask[:1]))
    with pytest.raises(ValueError, match="inputs= is used by mode='mean' and by encoder resampling only"):
        head_ablation_hooks([(1, 3)], mode="zero", inputs=inputs)


def test_mean_ablation_of_one_row_needs_no_mask(model):
    inputs = model.to_inputs(**make_inputs([[100]]))
    _, cache = model.run_with_cache(inputs, names_filter=[Z1])
    ablated = _ablated_z(model, inputs, head_ablation_hooks([(1, 0)], mode="mean"))
    torch.testing.assert_close(ablated[0, :, 0], cache[Z1][0, :, 0].mean(0).expand_as(ablated[0, :, 0]))


ENCODER_Z0 = "audio_encoder.blocks.0.attn.hook_z"


def test_encoder_mean_ablation_of_one_clip_leaves_its_padded_frames_out(model):
    """Was: one clip needed no mask, so the mean ran over its whole padded window (here 30 of 50 frames are the
    clip's): the ablation then wrote padding into the clip's frames."""
    inputs = model.to_inputs(**make_inputs([[60]]))
    real = model.encoder_real_frames(inputs)
    assert real.shape == (1, 50) and int(real.sum()) == (60 - 1) // 2 + 1 and real[0, :30].all()  # Whisper's conv
    _, cache = model.run_with_cache(inputs, names_filter=[ENCODER_Z0])
    z = cache[ENCODER_Z0]

    def mark_padding(t, hook):  # the padded frames' values made unmistakable: any mean that reads them shows it
        t = t.clone()
        t[:, 30:] = 100.0
        return t

    seen = {}
    capture = (ENCODER_Z0, lambda t, hook: seen.__setitem__("z", t.detach().clone()))
    model.run_with_hooks(inputs, fwd_hooks=[(ENCODER_Z0, mark_padding), *head_ablation_hooks(
        [(0, 1)], "mean", "audio_encoder.", inputs=inputs, model=model), capture])
    expected = z[0, :30, 1].mean(0)
    torch.testing.assert_close(seen["z"][0, :, 1], expected.expand(z.shape[1], -1), atol=1e-6, rtol=1e-5)
    assert seen["z"][0, :30, 0].sub(z[0, :30, 0]).abs().max() == 0  # other heads untouched
    with pytest.raises(ValueError, match="needs inputs= .*and model="):
        head_ablation_hooks([(0, 1)], "mean", "audio_encoder.")


def test_encoder_resample_gives_each_clip_the_donor_rows_clip_in_the_same_place(model):
    """Was: row donors [1, 0] were applied to the encoder's rows, which are clips: with two clips per row, row 0's
    clips swapped with each other instead of taking row 1's. Now clip i of a row takes clip i of its donor row."""
    inputs = model.to_inputs(**make_inputs([[100, 60], [100, 60]], text_lengths=[3, 3], seed=4))
    inputs = inputs.with_token_rows([inputs.real_token_rows()[0]] * 2, pad_id=0)
    donors = same_prompt_donors(inputs)
    assert donors.tolist() == [1, 0] and model.window_clips(inputs).tolist() == [0, 1, 2, 3]
    _, cache = model.run_with_cache(inputs, names_filter=[ENCODER_Z0])
    z, seen = cache[ENCODER_Z0], {}
    capture = (ENCODER_Z0, lambda t, hook: seen.__setitem__("z", t.detach().clone()))
    model.run_with_hooks(inputs, fwd_hooks=[*head_ablation_hooks(
        [(0, 2)], "resample", "audio_encoder.", donors, inputs=inputs, model=model), capture])
    torch.testing.assert_close(seen["z"][:, :, 2], z[[2, 3, 0, 1], :, 2])  # clips of the other row, same places
    assert (z[[1, 0, 3, 2], :, 2] - z[[2, 3, 0, 1], :, 2]).abs().max() > 1e-3  # control: the old swap differs
    with pytest.raises(ValueError, match="needs inputs= .*and model="):
        head_ablation_hooks([(0, 2)], "resample", "audio_encoder.", donors)


@pytest.mark.parametrize(
    "heads, error, match",
    [
        ([(1, -1)], ValueError, r"\(1, -1\) has a negative index"),
        ([(-1, 0)], ValueError, r"\(-1, 0\) has a negative index"),
        ([(1, 1.0)], TypeError, "must be integers"),
        ([(True, 0)], TypeError, "must be integers"),
        ([(1,)], ValueError, r"heads must be \(layer, head\) pairs"),
    ],
)
def test_bad_head_indices_are_refused_when_the_hooks_are_built(heads, error, match):
    with pytest.raises(error, match=match):
        head_ablation_hooks(heads)


def test_out_of_range_heads_are_refused(model):
    with pytest.raises(ValueError, match=r"\(0, 4\) is out of range: the decoder model has 2 layers x 4 heads"):
        head_ablation_hooks([(0, 4)], model=model)
    with pytest.raises(ValueError, match=r"\(2, 0\) is out of range"):
        head_ablation_hooks([(2, 0)], model=model)
    inputs = model.to_inputs(**make_inputs([[100]]))
    with pytest.raises(ValueError, match="head 4 of layer 1 does not exist: blocks.1.attn.hook_z has 4 heads"):
        model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(1, 4)]))  # without model=: at the hook
    with pytest.raises(Exception, match="blocks.7.attn.hook_z"):
        model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(7, 0)]))


def test_tensor_indices_from_a_ranking_are_accepted(model):
    scores = torch.zeros(2, 4)
    scores[1, 2] = 1.0
    hooks = head_ablation_hooks([tuple(torch.tensor(top_heads(scores, 1)[0]))], model=model)
    assert [name for name, _ in hooks] == ["blocks.1.attn.hook_z"]


def test_donors_that_ablate_nothing_or_do_not_exist_are_refused(model):
    with pytest.raises(ValueError, match=r"rows \[1\] are their own donors"):
        head_ablation_hooks([(1, 0)], mode="resample", donors=torch.tensor([2, 1, 0]))
    with pytest.raises(TypeError, match="1-D integer tensor"):
        head_ablation_hooks([(1, 0)], mode="resample", donors=torch.tensor([1.0, 0.0]))
    inputs = model.to_inputs(**make_inputs([[100], [100]]))
    with pytest.raises(ValueError, match="donors names row 5, but the batch has 2 rows"):
        model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(1, 0)], mode="resample", donors=torch.tensor([5, 0])))


def test_same_prompt_donors_without_an_attention_mask(model):
    ids, other = make_inputs([[100]]), make_inputs([[100]], seed=1)  # one prompt, two clips (not one clip twice)
    inputs = model.to_inputs(input_ids=ids["input_ids"].repeat(2, 1),
                             input_features=torch.cat([ids["input_features"], other["input_features"]]),
                             feature_attention_mask=ids["feature_attention_mask"].repeat(2, 1))
    assert same_prompt_donors(inputs).tolist() == [1, 0]


def test_random_heads_and_top_heads_refuse_impossible_counts():
    with pytest.raises(ValueError, match="k must be a whole number >= 0"):
        random_heads(2, 4, -1)
    with pytest.raises(ValueError, match=r"cannot draw 7 heads from 6 candidates \(2 layers x 4 heads, 2 excluded\)"):
        random_heads(2, 4, 7, exclude=[(0, 0), (1, 1)])
    scores = torch.arange(8.0).reshape(2, 4)
    with pytest.raises(ValueError, match=r"k must be a whole number from 0 to 8 \(2 layers x 4 heads\), got 9"):
        top_heads(scores, 9)
    assert top_heads(scores, 0) == [] and top_heads(scores, 2) == [(1, 3), (1, 2)]
    with pytest.raises(ValueError, match="NaN"):
        top_heads(torch.tensor([[0.0, float("nan")]]), 1)


# --- audio attention by head -------------------------------------------------------------------------------------


def test_audio_attention_needs_every_layer_its_batch_axis_and_audio(model):
    inputs = model.to_inputs(**make_inputs([[100]]))
    _, only_layer_0 = model.run_with_cache(inputs, names_filter=["blocks.0.attn.hook_pattern"])
    with pytest.raises(ValueError, match=r"no blocks.\{l\}.attn.hook_pattern for layers \[1\]"):
        audio_attention_by_head(only_layer_0, 2)
    _, no_batch = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern"), remove_batch_dim=True)
    with pytest.raises(ValueError, match="batch dimension"):
        audio_attention_by_head(no_batch, 2)
    mixed = model.to_inputs(**make_inputs([[100], []]))
    _, cache = model.run_with_cache(mixed, names_filter=lambda n: n.endswith("hook_pattern"))
    with pytest.raises(ValueError, match=r"rows \[1\] have no audio tokens"):
        audio_attention_by_head(cache, 2)


# --- logit lens -------------------------------------------------------------------------------------------------


def test_lens_at_some_positions_reads_the_same_values_as_the_full_lens(model):
    inputs = _padded(model)
    _, cache = model.run_with_cache(inputs)
    full = logit_lens(model, cache)
    last_only = logit_lens(model, cache, positions=[-1])
    torch.testing.assert_close(at_last_positions(last_only, cache.last_positions), at_last_positions(full, cache.last_positions))
    n = inputs.shape[1]
    torch.testing.assert_close(logit_lens(model, cache, positions=slice(n - 6, n - 3)).log_probs,
                               full.log_probs[:, :, n - 6 : n - 3])
    earlier = logit_lens(model, cache, positions=[-3, -2])
    with pytest.raises(ValueError, match=r"do not include the last position\(s\)"):
        at_last_positions(earlier, cache.last_positions)
    # was: the lens of row 1's left padding, returned as a position of that row
    with pytest.raises(ValueError, match=r"positions=\[0, 1\] are padding in rows \[1\]"):
        logit_lens(model, cache, positions=[0, 1])
    with pytest.raises(ValueError, match=f"position 1000 is out of range: the cache has {n} positions"):
        logit_lens(model, cache, positions=[1000])


def test_lens_targets_one_id_for_all_rows_or_one_per_row(model):
    _, cache = model.run_with_cache(_padded(model))
    lens = logit_lens(model, cache)
    torch.testing.assert_close(lens.target_prob(7), lens.target_prob(torch.tensor([7, 7])))
    with pytest.raises(ValueError, match=r"target id 64 is outside the vocabulary \(0..63\)"):
        lens.target_prob(torch.tensor([3, 64]))
    with pytest.raises(ValueError, match=r"one token id per row \(2 rows\)"):
        lens.target_rank(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="token ids"):
        lens.target_prob(torch.tensor([0.5, 1.0]))


def test_lens_of_a_cache_without_its_batch_axis(model):
    inputs = model.to_inputs(**make_inputs([[100]]))
    _, cache = model.run_with_cache(inputs)
    _, no_batch = model.run_with_cache(inputs, remove_batch_dim=True)
    torch.testing.assert_close(logit_lens(model, no_batch, positions=[-1]).log_probs,
                               logit_lens(model, cache, positions=[-1]).log_probs)


# --- steering -------------------------------------------------------------------------------------------------


def test_steering_at_listed_positions_equals_the_same_mask(model):
    inputs = _padded(model)
    direction = torch.randn(model.cfg.d_model)
    mask = torch.zeros(inputs.shape, dtype=torch.bool)
    mask[:, [-2, -1]] = True
    name = "blocks.0.hook_resid_post"
    by_mask = model.run_with_hooks(inputs, fwd_hooks=[(name, steering_hook(direction, 2.0, mask))])
    by_index = model.run_with_hooks(inputs, fwd_hooks=[(name, steering_hook(direction, 2.0, [-2, -1]))])
    torch.testing.assert_close(by_index, by_mask)
    assert (by_mask - model(inputs)).abs().max() > 1e-4


def test_steering_refuses_what_it_would_misread(model):
    inputs = _padded(model)
    name = "blocks.0.hook_resid_post"
    with pytest.raises(TypeError, match="integer tensor of 0s and 1s"):
        steering_hook(torch.ones(model.cfg.d_model), positions=inputs.attention_mask)
    with pytest.raises(ValueError, match=r"direction must be one vector \[d_model\]"):
        steering_hook(torch.ones(2, model.cfg.d_model))
    with pytest.raises(ValueError, match="direction has 10 entries but blocks.0.hook_resid_post has width 64"):
        model.run_with_hooks(inputs, fwd_hooks=[(name, steering_hook(torch.ones(10)))])
    three_rows = torch.ones(3, inputs.shape[1], dtype=torch.bool)
    with pytest.raises(ValueError, match="positions mask has 3 rows but the batch has 2"):
        model.run_with_hooks(inputs, fwd_hooks=[(name, steering_hook(torch.ones(model.cfg.d_model), 1.0, three_rows))])
    with pytest.raises(ValueError, match="out of range"):
        model.run_with_hooks(inputs, fwd_hooks=[(name, steering_hook(torch.ones(model.cfg.d_model), 1.0, [1000]))])


def test_lens_at_a_negative_position_is_refused_where_a_row_ends_in_padding(model):
    """Right padding: [-1] is padding for the shorter row (was: its lens returned as if real)."""
    from dataclasses import replace

    left = _padded(model)
    ids, mask = torch.zeros_like(left.input_ids), torch.zeros_like(left.attention_mask)
    for row in range(2):
        real = left.input_ids[row][left.attention_mask[row].bool()]
        ids[row, : len(real)], mask[row, : len(real)] = real, 1
    _, cache = model.run_with_cache(replace(left, input_ids=ids, attention_mask=mask))
    with pytest.raises(ValueError, match=r"positions=\[-1\] are padding in rows \[1\]"):
        logit_lens(model, cache, positions=[-1])
    lens = logit_lens(model, cache)  # control: every position, then each row's own last
    assert at_last_positions(lens, cache.last_positions).shape[1] == 2


def test_masks_built_for_other_inputs_are_refused_outside_generate(model):
    """Was: a steering mask or a mean-ablation mask narrower than the run (built for another batch) was padded out
    and applied to the wrong columns: steering other tokens, a mean taking in padding."""
    short = model.to_inputs(**make_inputs([[60], [40]]))
    inputs = _padded(model)
    assert short.shape[1] < inputs.shape[1]
    direction = torch.randn(model.cfg.d_model)
    steer = [("blocks.0.hook_resid_post", steering_hook(direction, positions=short.audio_mask))]
    with pytest.raises(ValueError, match="covers .* positions but blocks.0.hook_resid_post has"):
        model.run_with_hooks(inputs, fwd_hooks=steer)
    with pytest.raises(ValueError, match="covers .* positions but blocks.1.attn.hook_z has"):
        model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(1, 3)], "mean", inputs=short.attention_mask))
    own = [("blocks.0.hook_resid_post", steering_hook(direction, positions=inputs.audio_mask))]
    assert (model.run_with_hooks(inputs, fwd_hooks=own) - model(inputs)).abs().max() > 0  # control: its own mask


def test_a_steering_mask_built_for_another_batch_of_the_same_width_is_refused(model):
    """Was: only a mask of another width was refused, so the audio mask of the same two rows in the other order
    steered text and padding columns; a mask that marks all of a row's padding but not all of its text (the text
    mask of the other padding side can) is refused too. Controls: the batch's own mask, in run_with_hooks and in generate, and masks
    of these inputs that mark all of a row's padding (~audio_mask, all True: the same as positions=None)."""
    inputs = _padded(model)
    swapped = model.to_inputs(**make_inputs([[40], [100]]))
    assert swapped.shape == inputs.shape
    direction = torch.randn(model.cfg.d_model)
    hook = [("blocks.0.hook_resid_post", steering_hook(direction, positions=swapped.audio_mask))]
    with pytest.raises(ValueError, match=r"marks padding positions in rows \[1\] \(but not all of their text\)"):
        model.run_with_hooks(inputs, fwd_hooks=hook)
    # all of row 1's padding but not its text (here: with its audio), as a text mask of the other padding side can
    shifted = [("blocks.0.hook_resid_post",
                steering_hook(direction, positions=~inputs.attention_mask.bool() | inputs.audio_mask))]
    with pytest.raises(ValueError, match=r"marks padding positions in rows \[1\] \(but not all of their text\)"):
        model.run_with_hooks(inputs, fwd_hooks=shifted)
    own = [("blocks.0.hook_resid_post", steering_hook(direction, positions=inputs.audio_mask))]
    assert (model.run_with_hooks(inputs, fwd_hooks=own) - model(inputs)).abs().max() > 0
    model.generate(inputs, max_new_tokens=2, fwd_hooks=own)
    everywhere = model.run_with_hooks(inputs, fwd_hooks=[("blocks.0.hook_resid_post", steering_hook(direction))])
    for mask in (~inputs.audio_mask, torch.ones(1, inputs.shape[1], dtype=torch.bool)):  # all of the padding: fine
        hooks = [("blocks.0.hook_resid_post", steering_hook(direction, positions=mask))]
        steered = model.run_with_hooks(inputs, fwd_hooks=hooks)
        if mask.shape[0] == 1:  # every position, as positions=None
            real = inputs.attention_mask.bool()
            torch.testing.assert_close(steered[real], everywhere[real], rtol=0, atol=0)
        model.generate(inputs, max_new_tokens=2, fwd_hooks=hooks)


def test_steering_at_audio_or_text_reads_each_runs_own_positions(model):
    """positions="audio" / "text" steer what each run's inputs say, so one hook serves batches whose audio sits in
    other columns (a mask of one of them would be refused, or, lining up with real tokens, steer them). Equal, bit
    for bit, to each batch's own mask, in run_with_hooks and in generate with and without the KV cache ("text"
    takes the generated tokens too); the control: the two batches' masks differ, and the hook does steer."""
    inputs, swapped = _padded(model), model.to_inputs(**make_inputs([[40], [100]]))
    assert not torch.equal(inputs.audio_mask, swapped.audio_mask)
    direction = torch.randn(model.cfg.d_model)
    def hooks(positions):
        return [("blocks.0.hook_resid_post", steering_hook(direction, 3.0, positions=positions))]

    def with_generated(mask, value):  # a mask over the prompt and 3 generated tokens
        return torch.cat([mask, torch.full((mask.shape[0], 3), value)], dim=1)

    for where in ("audio", "text"):
        by_name = hooks(where)
        for batch in (inputs, swapped, inputs):  # the same hook, run after run
            own = batch.audio_mask if where == "audio" else batch.text_mask
            steered = model.run_with_hooks(batch, fwd_hooks=by_name)
            torch.testing.assert_close(steered, model.run_with_hooks(batch, fwd_hooks=hooks(own)), rtol=0, atol=0)
            assert (steered - model(batch)).abs().max() > 1e-3
            by_mask = hooks(with_generated(own, where == "text"))  # generated tokens are text, never audio
            for kv in (True, False):
                named = model.generate(batch, max_new_tokens=3, fwd_hooks=by_name, use_past_kv_cache=kv,
                                       return_logits=True)[1]
                masked = model.generate(batch, max_new_tokens=3, fwd_hooks=by_mask, use_past_kv_cache=kv,
                                        return_logits=True)[1]
                torch.testing.assert_close(named, masked, rtol=0, atol=0)
    with pytest.raises(ValueError, match='positions must be "audio", "text"'):
        steering_hook(direction, positions="last")
    with pytest.raises(ValueError, match="no position axis"):
        model.run_with_hooks(inputs, fwd_hooks=[("hook_audio_embeds", steering_hook(direction, positions="audio"))])


def test_a_mask_of_these_inputs_that_marks_padding_is_taken_once_its_padding_is_dropped(model):
    """A complement of these inputs (every position but each row's answer) marks all padding but not all text, as a
    mask of the other padding side does, so it is refused; the message's fix (drop the padding) steers exactly
    what a hand-written hook steers at real positions. The same for a keys mask of audio_masking_hooks."""
    from hooked_audio.analysis import audio_masking_hooks

    inputs = _padded(model)
    real = inputs.attention_mask.bool()
    but_last = torch.ones(inputs.shape, dtype=torch.bool)
    but_last[torch.arange(2), inputs.last_positions] = False
    direction = torch.randn(model.cfg.d_model)
    with pytest.raises(ValueError, match=r"If it is these inputs' own, drop the padding \(mask & inputs.attention_mask.bool\(\)\)"):
        model.run_with_hooks(inputs, fwd_hooks=[("blocks.0.hook_resid_post", steering_hook(direction, positions=but_last))])
    steered = model.run_with_hooks(
        inputs, fwd_hooks=[("blocks.0.hook_resid_post", steering_hook(direction, positions=but_last & real))])
    by_hand = model.run_with_hooks(
        inputs, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x + (but_last & real)[..., None] * direction)])
    torch.testing.assert_close(steered[real], by_hand[real], rtol=0, atol=0)
    keys = ~inputs.text_mask  # the audio and the padding
    with pytest.raises(ValueError, match="drop the padding"):
        audio_masking_hooks(inputs, keys=keys)
    torch.testing.assert_close(model.run_with_hooks(inputs, fwd_hooks=audio_masking_hooks(inputs, keys=keys & real)),
                               model.run_with_hooks(inputs, fwd_hooks=audio_masking_hooks(inputs)), rtol=0, atol=0)


def test_a_mean_ablation_mask_of_another_batch_of_the_same_width_is_refused(model):
    """The steering mask's neighbour: head_ablation_hooks(mode="mean", inputs=<attention mask>) of the same rows in
    the other order took row 1's padding into the mean. Control: this run's own mask, and its AudioTextInput."""
    inputs = _padded(model)
    swapped = model.to_inputs(**make_inputs([[40], [100]]))
    with pytest.raises(ValueError, match=r"mean-ablation mask \(inputs=\) marks padding positions in rows \[1\]"):
        model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(1, 3)], "mean", inputs=swapped.attention_mask))
    own = model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(1, 3)], "mean", inputs=inputs.attention_mask))
    as_input = model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(1, 3)], "mean", inputs=inputs))
    torch.testing.assert_close(own, as_input, rtol=0, atol=0)
    assert (own - model(inputs)).abs().max() > 1e-4


def test_steering_an_index_on_left_padding_is_refused_in_generate_too(model):
    """Was: generate skipped the padding check, so positions=[0] on a left-padded batch steered only padding in
    the padded rows (their tokens untouched) without a word; run_with_hooks refused it."""
    inputs = _padded(model)
    hook = [("blocks.0.hook_resid_post", steering_hook(torch.randn(model.cfg.d_model), positions=[0]))]
    with pytest.raises(ValueError, match=r"steering positions \[0\] are padding in rows \[1\]"):
        model.generate(inputs, max_new_tokens=2, fwd_hooks=hook)
    last = [("blocks.0.hook_resid_post", steering_hook(torch.randn(model.cfg.d_model), positions=[-1]))]
    model.generate(inputs, max_new_tokens=2, fwd_hooks=last)  # control: the last prompt position is real in every row


def test_steering_positions_on_an_encoder_point_are_refused(model):
    """Was: decoder positions were applied to the encoder's [window, frame] activations: [-1] steered frame 49,
    padding in a short clip's window, without a word (and real frames could be refused as decoder padding)."""
    inputs = model.to_inputs(**make_inputs([[100], [60]]))
    direction = torch.randn(model.cfg.audio.d_model)
    for positions in ([-1], inputs.audio_mask):
        hook = [("audio_encoder.blocks.0.hook_resid_post", steering_hook(direction, positions=positions))]
        with pytest.raises(ValueError, match="encoder point"):
            model.run_with_hooks(inputs, fwd_hooks=hook)
    for positions in ([-1], inputs.audio_mask):  # the audio tokens themselves, [n_audio_tok, d_model]
        embeds = [("hook_audio_embeds", steering_hook(torch.randn(model.cfg.d_model), positions=positions))]
        with pytest.raises(ValueError, match="hook_audio_embeds has no position axis"):
            model.run_with_hooks(inputs, fwd_hooks=embeds)
    padded = [("audio_encoder.blocks.0.hook_resid_post", steering_hook(direction, positions=[0]))]
    with pytest.raises(ValueError, match="padding in rows .* on an audio_encoder point or hook_audio_embeds, steer with"):
        model.run_with_hooks(_padded(model), fwd_hooks=padded)  # the padding check runs first: it names both
    for scale in (True, "2"):  # was: True taken as 1, "2" an index error at run time
        with pytest.raises(TypeError, match="scale must be a number"):
            steering_hook(direction, scale=scale)
    every = [("audio_encoder.blocks.0.hook_resid_post", steering_hook(direction))]  # control: every frame
    assert (model.run_with_hooks(inputs, fwd_hooks=every) - model(inputs)).abs().max() > 0
