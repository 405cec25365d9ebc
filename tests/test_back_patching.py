"""Back-patching: exact identities on a tiny model, the patch by hand, its controls and its refusals."""

import pytest
import torch
from conftest import make_inputs, needs_espeak

from hooked_audio.analysis import back_patching_hooks, back_patching_sweep, patch_positions

RESID_POST = lambda name: name.endswith("hook_resid_post")  # noqa: E731


@pytest.fixture(scope="module")
def run(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], seed=1))
    with torch.no_grad():
        _, cache = model.run_with_cache(inputs, names_filter=RESID_POST)
        return inputs, cache, model(inputs)


@torch.no_grad()
def test_source_equal_to_destination_reproduces_the_unpatched_run_bit_for_bit(model, run):
    inputs, cache, logits = run
    for layer in range(model.cfg.n_layers):
        assert torch.equal(model.run_with_hooks(inputs, fwd_hooks=back_patching_hooks(cache, layer, layer)), logits)
    zero_add = back_patching_hooks(cache, 1, 0, mode="add", scale=0.0)
    assert torch.equal(model.run_with_hooks(inputs, fwd_hooks=zero_add), logits)
    # control: a real back-patch changes the output
    assert (model.run_with_hooks(inputs, fwd_hooks=back_patching_hooks(cache, 1, 0)) - logits).abs().max() > 1e-4


@torch.no_grad()
def test_a_cache_of_lower_precision_is_said_to_round_the_patch(model, run):
    """Was: a bfloat16 cache (cache_dtype) patched into the float32 run without a word, and source = destination
    moved the logits (0.024 on the toy). Now a warning says so, for back-patching and encoder patching; control: a
    cache in the model's dtype patches exactly, without a warning."""
    import warnings

    from hooked_audio.analysis import encoder_patching, silence_like

    inputs, cache, logits = run
    encoder = "audio_encoder.blocks.0.hook_resid_pre"
    _, rounded = model.run_with_cache(inputs, names_filter=lambda n: RESID_POST(n) or n == encoder, cache_dtype=torch.bfloat16)
    with pytest.warns(UserWarning, match="back_patching_hooks: the cache holds torch.bfloat16 activations, written rounded"):
        hooks = back_patching_hooks(rounded, 1, 1)
    assert not torch.equal(model.run_with_hooks(inputs, fwd_hooks=hooks), logits)
    with pytest.warns(UserWarning, match="encoder_patching: the cache holds torch.bfloat16"):
        encoder_patching(model, silence_like(inputs), rounded, lambda out: out[:, -1, 0].mean(), layers=[0],
                         window_s=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(model.run_with_hooks(inputs, fwd_hooks=back_patching_hooks(cache, 1, 1)), logits)


@torch.no_grad()
def test_the_patch_writes_the_late_audio_span_into_the_early_layer_and_nothing_else(model, run):
    inputs, cache, _ = run
    audio = inputs.audio_mask
    late, early = cache["blocks.1.hook_resid_post"], cache["blocks.0.hook_resid_post"]
    for mode, scale, expected in [("replace", 1.0, late), ("replace", 0.5, early + 0.5 * (late - early)),
                                  ("add", 2.0, early + 2.0 * late)]:
        seen = {}
        hooks = back_patching_hooks(cache, 1, 0, mode=mode, scale=scale)
        hooks.append(("blocks.0.hook_resid_post", lambda x, hook: seen.setdefault("x", x.clone())))
        model.run_with_hooks(inputs, fwd_hooks=hooks)
        torch.testing.assert_close(seen["x"][audio], expected[audio], rtol=1e-6, atol=1e-6)
        assert torch.equal(seen["x"][~audio], early[~audio])


@torch.no_grad()
def test_random_control_has_the_patchs_norm_but_not_its_direction(model, run):
    inputs, cache, _ = run
    audio = inputs.audio_mask
    early, late = cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_post"]
    seen = {}
    hooks = back_patching_hooks(cache, 1, 0, control="random", seed=3)
    hooks.append(("blocks.0.hook_resid_post", lambda x, hook: seen.setdefault("x", x.clone())))
    model.run_with_hooks(inputs, fwd_hooks=hooks)
    change, patch = (seen["x"] - early)[audio], (late - early)[audio]
    torch.testing.assert_close(change.norm(dim=-1), patch.norm(dim=-1), rtol=1e-4, atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(change, patch, dim=-1)
    assert cosine.abs().mean() < 0.3
    assert torch.equal(seen["x"][~audio], early[~audio])


def test_positions_and_seconds_select_what_they_say(model, run):
    inputs, cache, _ = run
    assert torch.equal(patch_positions(cache, "text"), inputs.text_mask.cpu())
    window = patch_positions(cache, "audio", seconds=(0.2, 0.4))
    centres = inputs.token_times().mean(-1)
    assert window.any() and bool(((centres[window] >= 0.2) & (centres[window] < 0.4)).all())
    assert int(window.sum()) == int(((centres >= 0.2) & (centres < 0.4) & inputs.audio_mask.cpu()).sum())
    with pytest.raises(ValueError, match="select no position"):
        patch_positions(cache, "audio", seconds=(50.0, 60.0))


@torch.no_grad()
def test_refusals(model, run):
    inputs, cache, _ = run
    with pytest.raises(ValueError, match="outside"):
        back_patching_hooks(cache, model.cfg.n_layers, 0)
    with pytest.raises(ValueError, match="mode"):
        back_patching_hooks(cache, 1, 0, mode="swap")
    _, pattern_only = model.run_with_cache(inputs, names_filter="blocks.0.attn.hook_pattern")
    with pytest.raises(ValueError, match="lacks"):
        back_patching_hooks(pattern_only, 1, 0)
    other = model.to_inputs(make_inputs([[60], [100]], seed=1))  # audio at other positions
    with pytest.raises(ValueError, match="audio positions differ"):
        model.run_with_hooks(other, fwd_hooks=back_patching_hooks(cache, 1, 0))


@torch.no_grad()
def test_sweep_and_generation(model, run):
    inputs, cache, logits = run
    metric = lambda out: out[:, -1, 7].mean()  # noqa: E731
    sweep = back_patching_sweep(model, inputs, metric, pairs=[(1, 0), (1, 1)])
    assert sweep[1, 1] == pytest.approx(float(metric(logits)), abs=1e-6)
    by_hand = metric(model.run_with_hooks(inputs, fwd_hooks=back_patching_hooks(cache, 1, 0)))
    assert sweep[1, 0] == pytest.approx(float(by_hand), abs=1e-6) and torch.isnan(sweep[0, 1])
    # during generate the prompt is patched and the new tokens left alone: source = destination changes nothing
    plain = model.generate(inputs, max_new_tokens=3, do_sample=False)
    with model.hooks(fwd_hooks=back_patching_hooks(cache, 1, 1)):
        assert torch.equal(model.generate(inputs, max_new_tokens=3, do_sample=False), plain)
    # and without the KV cache (each step re-runs the prompt and the new tokens; was refused as a width mismatch):
    # a real patch gives the same tokens and logits in both modes
    patch = back_patching_hooks(cache, 1, 0)
    cached = model.generate(inputs, max_new_tokens=3, fwd_hooks=patch, return_logits=True)
    full = model.generate(inputs, max_new_tokens=3, fwd_hooks=patch, return_logits=True, use_past_kv_cache=False)
    assert torch.equal(cached[0], full[0]) and (cached[1] - full[1]).abs().max() < 1e-4
    assert (cached[1] - model.generate(inputs, max_new_tokens=3, return_logits=True)[1]).abs().max() > 1e-3


@needs_espeak
@pytest.mark.xfail(strict=True, reason=(
    "measured on toy-qwen2-audio-textual (tutorial 04's pitch / beeps / events_when / events_order conflicts, 20 per "
    "task, pair chosen on the even rows among sources 1-3): no pair lowers the dev rate by more than one conflict "
    "of 40 (0.17 -> 0.15 at best, pair (2, 1)); test rate 0.40 unpatched, 0.40 back-patched, 0.40 with the random "
    "control. The organism's late audio span holds nothing its early layers lack"))
@torch.no_grad()
def test_back_patching_lowers_text_dominance_on_the_textual_organism_beyond_the_random_control():
    from hooked_audio import HookedAudioTransformer
    from hooked_audio.toy import evaluate

    model = HookedAudioTransformer.from_pretrained("toy-qwen2-audio-textual")
    conflict = [s for s in evaluate.make_eval_set(n_per_task=20, task_names=["pitch", "beeps", "events_when", "events_order"]) if s.hint_kind == "wrong"]
    inputs = model.to_inputs(evaluate.encode(model.processor, conflict))
    text_ids = torch.tensor([model.to_single_token(s.hint) for s in conflict])

    def rate_of(rows):
        last, ids = inputs.select_rows(rows).last_positions, text_ids[rows]
        return lambda logits: float((logits[torch.arange(len(rows)), last].argmax(-1) == ids).float().mean())

    dev, test = list(range(0, len(conflict), 2)), list(range(1, len(conflict), 2))
    pairs = [(s, d) for s in (1, 2, 3) for d in range(s)]
    sweep = back_patching_sweep(model, inputs.select_rows(dev), rate_of(dev), pairs=pairs)
    best = min(pairs, key=lambda p: float(sweep[p]))
    test_inputs = inputs.select_rows(test)
    _, cache = model.run_with_cache(test_inputs, names_filter=RESID_POST)
    rate = rate_of(test)
    unpatched = rate(model(test_inputs))
    patched = rate(model.run_with_hooks(test_inputs, fwd_hooks=back_patching_hooks(cache, *best)))
    control = rate(model.run_with_hooks(test_inputs, fwd_hooks=back_patching_hooks(cache, *best, control="random")))
    assert patched < unpatched - 0.1 and patched < control - 0.1
