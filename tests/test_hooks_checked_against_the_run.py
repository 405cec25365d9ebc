"""Hooks built for one batch act on that batch's positions: every forward (run_with_hooks, a ``model.hooks()``
context around a plain call or run_with_cache, generate) refuses them on another layout instead of acting on the
wrong positions. Each refusal next to its control: the same hooks on the inputs they were built for run."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import (
    audio_masking_hooks, audio_silence_steering_hooks, enrichment_hook, head_ablation_hooks, same_prompt_donors,
)


def _left(model):
    inputs = model.to_inputs(make_inputs([[100], [40]], seed=4))
    assert not inputs.attention_mask[1].all()
    return inputs


def _right(inputs):
    """The same rows, padded on the right."""
    ids, mask = torch.zeros_like(inputs.input_ids), torch.zeros_like(inputs.attention_mask)
    for row in range(ids.shape[0]):
        real = inputs.input_ids[row][inputs.attention_mask[row].bool()]
        ids[row, : len(real)], mask[row, : len(real)] = real, 1
    return replace(inputs, input_ids=ids, attention_mask=mask)


@torch.no_grad()
def test_silence_steering_built_for_one_padding_side_is_refused_on_the_other(model):
    left = _left(model)
    hooks = audio_silence_steering_hooks(model, left, [(1, 0)], beta=2.0, min_relative_norm=0)
    assert (model.run_with_hooks(left, fwd_hooks=hooks) - model(left)).abs().max() > 1e-4  # control: it steers
    with pytest.raises(ValueError, match="built for other inputs"):
        model.run_with_hooks(_right(left), fwd_hooks=hooks)


def test_silence_steering_of_other_rows_in_the_same_layout_is_refused(model):
    """Was: the hooks hold s(x) per row, but only the layout was checked, so hooks built on one batch steered
    another of the same prompts and clip lengths (or the same rows reordered) with the first batch's directions.
    Control: a copy of the inputs they were built for (equal tokens and audio, another object) runs."""
    inputs = model.to_inputs(make_inputs([[100], [100]], seed=4))
    other = model.to_inputs(make_inputs([[100], [100]], seed=5))  # other words and audio, the same layout
    same_prompts = replace(other, input_ids=inputs.input_ids)  # only the audio differs
    swapped = replace(inputs, input_ids=inputs.input_ids.flip(0), audio={k: v.flip(0) for k, v in inputs.audio.items()})
    assert torch.equal(other.audio_mask, inputs.audio_mask) and not torch.equal(swapped.input_ids, inputs.input_ids)
    hooks = audio_silence_steering_hooks(model, inputs, [(1, 0)], beta=2.0, min_relative_norm=0)
    for run in (other, same_prompts, swapped):
        with pytest.raises(ValueError, match="hold s\\(x\\) of each row they were built for"):
            model.run_with_hooks(run, fwd_hooks=hooks)
    copy = replace(inputs, input_ids=inputs.input_ids.clone())
    torch.testing.assert_close(model.run_with_hooks(copy, fwd_hooks=hooks), model.run_with_hooks(inputs, fwd_hooks=hooks),
                               rtol=0, atol=0)


def test_a_silence_reference_of_other_rows_is_refused(model):
    """Was: silence_direction(reference=) paired row i with the reference's row i on the row count alone, so the
    same prompts in another order gave another row's direction. Controls: silence and the prompt without its
    audio, both built from these inputs, are taken."""
    from hooked_audio.analysis import silence_direction, silence_like, without_audio

    inputs = model.to_inputs(make_inputs([[100], [60]], seed=4))
    reordered = replace(inputs, input_ids=inputs.input_ids.flip(0), attention_mask=inputs.attention_mask.flip(0),
                        audio={k: v.flip(0) for k, v in inputs.audio.items()}, window_rows=None)
    for reference in (silence_like(reordered), without_audio(model, reordered)):
        with pytest.raises(ValueError, match=r"reference row\(s\) \[0, 1\] are not the inputs' rows"):
            silence_direction(model, inputs, [(1, 0)], reference=reference)
    for reference in (silence_like(inputs), without_audio(model, inputs)):
        silence_direction(model, inputs, [(1, 0)], reference=reference)


@torch.no_grad()
def test_enrichment_without_inputs_is_refused_where_rows_end_in_padding(model):
    left, right, n_layers = _left(model), _right(_left(model)), model.cfg.n_layers
    hooks = enrichment_hook(0, k=1, lam=1.0, n_layers=n_layers)
    torch.testing.assert_close(model.run_with_hooks(left, fwd_hooks=hooks),  # left padding: the final column is last
                               model.run_with_hooks(left, fwd_hooks=enrichment_hook(0, 1, 1.0, n_layers=n_layers, inputs=left)))
    with pytest.raises(ValueError, match="rows \\[1\\] end in padding"):
        model.run_with_hooks(right, fwd_hooks=hooks)
    model.run_with_hooks(right, fwd_hooks=enrichment_hook(0, 1, 1.0, n_layers=n_layers, inputs=right))  # with inputs=


@torch.no_grad()
def test_mean_ablation_built_for_one_padding_is_refused_on_another(model):
    """The mean leaves out the padding of the inputs it was built for; on the same rows padded on the other side it
    would average padding in."""
    left = _left(model)
    hooks = head_ablation_hooks([(1, 0)], "mean", inputs=left)
    assert (model.run_with_hooks(left, fwd_hooks=hooks) - model(left)).abs().max() > 1e-4  # control: it ablates
    with pytest.raises(ValueError, match="built for other inputs"):
        model.run_with_hooks(_right(left), fwd_hooks=hooks)


@torch.no_grad()
def test_resample_donors_from_other_prompts_are_refused(model):
    left = _left(model)
    with pytest.raises(ValueError, match="different prompts"):
        model.run_with_hooks(left, fwd_hooks=head_ablation_hooks([(1, 0)], "resample", donors=torch.tensor([1, 0])))
    twice = model.to_inputs(make_inputs([[100], [100]], text_lengths=[4, 4], seed=4))
    twice = replace(twice, input_ids=twice.input_ids[[0, 0]], attention_mask=twice.attention_mask[[0, 0]])
    model.run_with_hooks(twice, fwd_hooks=head_ablation_hooks([(1, 0)], "resample", donors=same_prompt_donors(twice)))


@torch.no_grad()
def test_a_hooks_context_is_checked_by_plain_calls_run_with_cache_and_generate(model):
    left = _left(model)
    hooks = audio_masking_hooks(left)
    with model.hooks(fwd_hooks=hooks):
        masked = model(left)  # control: the inputs it was built for
        with pytest.raises(ValueError, match="built for other inputs"):
            model(_right(left))
        with pytest.raises(ValueError, match="built for other inputs"):
            model.run_with_cache(_right(left))
        other = model.to_inputs(make_inputs([[60], [100]], seed=4))
        with pytest.raises(ValueError, match="built for other inputs"):
            model.generate(other, max_new_tokens=1)
    assert model.active_hook_fns == []
    model(_right(left))  # outside the context nothing is checked, nothing applied
    torch.testing.assert_close(model.run_with_hooks(left, fwd_hooks=hooks), masked)
    with pytest.raises(ValueError, match="built for other inputs"):
        model.generate(other, max_new_tokens=1, fwd_hooks=hooks)
    assert model.active_hook_fns == []


def test_hooks_passed_as_inputs_say_where_they_go(model):
    with pytest.raises(TypeError, match="fwd_hooks= is not an input"):
        model.run_with_cache(_left(model), fwd_hooks=[])


@torch.no_grad()
def test_encoder_activations_are_checked_against_the_audio_not_the_prompt(model):
    """Encoder frames do not depend on the prompt: was, a patch of them into a run of the same clip under a longer
    prompt was refused as misaligned text. A clip of another length, whose frames would land on padding frames,
    is refused instead."""
    from functools import partial

    name = "audio_encoder.blocks.0.hook_resid_post"
    clean = model.to_inputs(make_inputs([[100]], [3], seed=1))
    _, cache = model.run_with_cache(clean, names_filter=name)

    def patch(x, hook, source):
        return source

    hook = partial(patch, source=cache[name])
    longer_prompt = model.to_inputs(make_inputs([[100]], [6], seed=1))
    assert longer_prompt.shape[1] > clean.shape[1]
    patched = model.run_with_hooks(longer_prompt, fwd_hooks=[(name, hook)])
    assert (patched - model(longer_prompt)).abs().max() > 1e-4  # it ran, and it patched
    other_clip = model.to_inputs(make_inputs([[60]], [3], seed=1))
    assert other_clip.audio["input_features"].shape == clean.audio["input_features"].shape  # same padded window
    with pytest.raises(ValueError, match="audio-encoder activations cached from a run whose audio has another layout"):
        model.run_with_hooks(other_clip, fwd_hooks=[(name, hook)])


@torch.no_grad()
def test_steering_at_an_index_that_is_padding_in_a_row_is_refused(model):
    """Was: steering_hook(..., positions=[-1]) on a right-padded batch steered the shorter row's last padding
    position, not its last token. Control: on left padding [-1] is every row's last token, and it steers."""
    from hooked_audio.analysis import steering_hook

    left = _left(model)
    direction = torch.randn(model.cfg.d_model)
    hooks = [("blocks.0.hook_resid_post", steering_hook(direction, 4.0, [-1]))]
    assert (model.run_with_hooks(left, fwd_hooks=hooks) - model(left))[:, -1].abs().amax(-1).min() > 1e-3
    with pytest.raises(ValueError, match=r"steering positions \[-1\] are padding in rows \[1\]"):
        model.run_with_hooks(_right(left), fwd_hooks=hooks)
    with pytest.raises(ValueError, match=r"steering positions \[0\] are padding in rows \[1\]"):  # left padding's start
        model.run_with_hooks(left, fwd_hooks=[("blocks.0.hook_resid_post", steering_hook(direction, 4.0, [0]))])


@torch.no_grad()
def test_lasting_hooks_are_checked_like_a_hooks_context(model):
    """Was: only the hooks of open hooks() contexts were checked, so masking hooks built for one batch and attached
    with add_hook (or left by run_with_hooks(reset_hooks_end=False)) masked that batch's audio positions in another."""
    left = _left(model)
    hooks = audio_masking_hooks(left)
    try:
        for name, hook in hooks:
            model.add_hook(name, hook)
        masked = model(left)  # control: the inputs they were built for
        with pytest.raises(ValueError, match="built for other inputs"):
            model(_right(left))
        other = model.to_inputs(make_inputs([[60], [100]], seed=4))
        with pytest.raises(ValueError, match="built for other inputs"):
            model.generate(other, max_new_tokens=1)
    finally:
        model.reset_hooks()
    model.run_with_hooks(left, fwd_hooks=hooks, reset_hooks_end=False)
    try:
        with pytest.raises(ValueError, match="built for other inputs"):
            model(_right(left))
    finally:
        model.reset_hooks()
    assert model.attached_hook_fns() == []
    model(_right(left))  # nothing attached: nothing checked
    torch.testing.assert_close(model.run_with_hooks(left, fwd_hooks=hooks), masked)


def test_per_run_hook_state_lives_only_as_long_as_its_run(model):
    """Was: steering_hook(positions="audio") kept the last checked run's mask, so a forward that skipped the check
    (forward_inputs, as a hand-written decoding loop calls it) steered that run's audio columns; and one hook shared
    by two models in two threads took the other thread's mask. Now the mask belongs to its run: refused without
    one, each thread's own with two. Control: the same runs through the entry points equal a hand-written hook."""
    import threading

    from hooked_audio.analysis import steering_hook

    a, b = _left(model), _right(_left(model))
    assert not torch.equal(a.audio_mask, b.audio_mask)
    direction, name = torch.randn(model.cfg.d_model), "blocks.0.hook_resid_post"
    steer = steering_hook(direction, 3.0, positions="audio")

    def by_hand(m, x):
        return m.run_with_hooks(x, fwd_hooks=[(name, lambda r, hook: r + 3.0 * x.audio_mask[..., None] * direction)])

    model(a)
    with model.hooks(fwd_hooks=[(name, steer)]):
        model(a)  # a checked run of a, then one that skips the check
        with pytest.raises(ValueError, match="this forward was not run through the model's entry points"):
            model.forward_inputs(b)
    other = copy.deepcopy(model)
    paused, resume, out = threading.Event(), threading.Event(), {}

    def pause(x, hook):  # a's forward waits after its check, while the other model runs b with the same hook
        paused.set()
        resume.wait(timeout=60)
        return x

    thread = threading.Thread(target=lambda: out.update(a=model.run_with_hooks(a, fwd_hooks=[("hook_embed", pause), (name, steer)])))
    thread.start()
    paused.wait(timeout=60)
    out["b"] = other.run_with_hooks(b, fwd_hooks=[(name, steer)])
    resume.set()
    thread.join()
    torch.testing.assert_close(out["a"], by_hand(model, a), rtol=0, atol=0)
    torch.testing.assert_close(out["b"], by_hand(other, b), rtol=0, atol=0)


def test_a_forward_inside_a_forward_of_the_same_model_is_refused(model):
    """Was: a hook that ran the model from inside its forward mixed the two runs: the inner run_with_cache reset the
    outer's cache points (entries missing), an inner plain call wrote its activations into the outer cache, and
    per-run hook state was the inner run's. Control: a hook that runs a copy of the model works."""
    inputs = _left(model)
    other = copy.deepcopy(model)

    def run_model(m):
        def hook(x, hook):
            m(inputs)
            return x
        return [("hook_embed", hook)]

    with pytest.raises(RuntimeError, match="this model is already running a forward"):
        model.run_with_hooks(inputs, fwd_hooks=run_model(model))
    with model.hooks(fwd_hooks=run_model(model)), pytest.raises(RuntimeError, match="already running a forward"):
        model.run_with_cache(inputs)
    with model.hooks(fwd_hooks=run_model(other)):
        logits, cache = model.run_with_cache(inputs)
    plain_logits, plain_cache = model.run_with_cache(inputs)
    assert set(cache.keys()) == set(plain_cache.keys())
    torch.testing.assert_close(cache["hook_embed"], plain_cache["hook_embed"], rtol=0, atol=0)
    torch.testing.assert_close(logits, plain_logits, rtol=0, atol=0)
