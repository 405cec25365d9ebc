"""TransformerLens's ActivationCache methods and patching, run on audio inputs."""

from __future__ import annotations

import pytest
import torch
from conftest import make_hf_model, make_inputs, make_processor
from transformer_lens import patching

from hooked_audio import AudioTextInput, HookedAudioTransformer


@pytest.fixture(scope="module")
def folded():
    hf = make_hf_model(seed=11)
    return hf, HookedAudioTransformer.from_hf_model(hf, processor=make_processor(), fold_ln=True)


def test_decompose_resid_sums_to_the_residual_at_audio_positions(model):
    inputs = make_inputs([[100], [60]])
    _, cache = model.run_with_cache(**inputs)
    final = cache["resid_post", model.cfg.n_layers - 1]
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and len(labels) == 1 + 2 * model.cfg.n_layers
    audio = cache.inputs.audio_mask
    torch.testing.assert_close(parts.sum(0)[audio], final[audio], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts.sum(0), final, atol=1e-5, rtol=1e-5)


def test_accumulated_resid_is_the_residual_stream(model):
    inputs = make_inputs([[100]])
    _, cache = model.run_with_cache(**inputs)
    stack, labels = cache.accumulated_resid(return_labels=True)
    assert labels[-1] == "final_post"
    torch.testing.assert_close(stack[1], cache["resid_pre", 1])
    torch.testing.assert_close(stack[-1], cache["resid_post", model.cfg.n_layers - 1])
    # logit lens at the last layer with the final norm reproduces the logits
    logits, _ = model.run_with_cache(**inputs)
    lens = model.unembed(cache.accumulated_resid(apply_ln=True)[-1])
    torch.testing.assert_close(lens, logits, atol=1e-4, rtol=1e-4)


def test_stack_head_results_sum_to_attn_out(model):
    inputs = make_inputs([[100]])
    _, cache = model.run_with_cache(**inputs)
    heads = cache.stack_head_results(layer=-1)
    n_heads = model.cfg.n_heads
    for layer in range(model.cfg.n_layers):
        per_layer = heads[layer * n_heads : (layer + 1) * n_heads].sum(0) + model.blocks[layer].attn.b_O
        torch.testing.assert_close(per_layer, cache["attn_out", layer], atol=1e-5, rtol=1e-5)
    # recomputed from hook_z and W_O when hook_result was not cached
    _, small = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith("hook_z"))
    torch.testing.assert_close(small.stack_head_results(layer=-1), heads, atol=1e-5, rtol=1e-5)


def test_folded_model_keeps_logits_and_logit_attrs_are_exact(folded):
    hf, model = folded
    inputs = make_inputs([[100], [40]])
    with torch.no_grad():
        theirs = hf(**inputs).logits
    logits, cache = model.run_with_cache(**inputs)
    real = inputs["attention_mask"].bool()
    assert (logits - theirs)[real].abs().max() <= 1e-4
    target = logits[:, -1].argmax(-1)
    parts = cache.decompose_resid(pos_slice=-1)  # logit_attrs applies the final norm scale
    attrs = cache.logit_attrs(parts, tokens=target, pos_slice=-1)
    torch.testing.assert_close(attrs.sum(0), logits[torch.arange(2), -1, target], atol=1e-4, rtol=1e-4)


def test_activation_patching_carries_the_audio(model):
    clean = make_inputs([[100]], seed=1)
    silence = torch.full_like(clean["input_features"], -0.8)  # log-mel of digital silence, as padded
    corrupted = dict(clean, input_features=silence)
    clean_input, corrupted_input = model.to_inputs(**clean), model.to_inputs(**corrupted)
    assert torch.equal(clean_input.input_ids, corrupted_input.input_ids)
    clean_logits, clean_cache = model.run_with_cache(clean_input)
    answer = int(clean_logits[0, -1].argmax())

    def metric(logits):
        return logits[0, -1].log_softmax(-1)[answer]

    baseline = metric(model(corrupted_input)).item()
    assert abs(baseline - metric(clean_logits).item()) > 1e-4  # the audio moves the metric (float noise ~1e-7)
    result = patching.get_act_patch_resid_pre(model, corrupted_input, clean_cache, metric)
    assert result.shape == (model.cfg.n_layers, clean_input.shape[1])
    audio = clean_input.audio_mask[0]
    # Layer 0, text positions: same tokens in both runs, so patching them changes nothing;
    # audio positions carry the clean audio and move the metric.
    torch.testing.assert_close(result[0, ~audio], torch.full_like(result[0, ~audio], baseline), atol=1e-6, rtol=0)
    assert (result[0, audio] - baseline).abs().max() > 2e-5
    # One cell recomputed by hand.
    layer, pos = 1, int(torch.nonzero(audio)[3])

    def patch(x, hook):
        x = x.clone()
        x[:, pos] = clean_cache[hook.name][:, pos]
        return x

    manual = metric(model.run_with_hooks(corrupted_input, fwd_hooks=[("blocks.1.hook_resid_pre", patch)]))
    assert abs(result[layer, pos].item() - manual.item()) < 1e-5


def test_patching_without_the_audio_is_an_error(model):
    clean = make_inputs([[100]])
    _, clean_cache = model.run_with_cache(**clean)
    with pytest.raises(ValueError, match="no audio features"):
        patching.get_act_patch_resid_pre(model, clean["input_ids"], clean_cache, lambda logits: logits[0, -1, 0])


def test_cache_knows_the_audio_positions_and_times(model):
    inputs = make_inputs([[100, 40], [60]], text_lengths=[3, 5])
    _, cache = model.run_with_cache(**inputs)
    spans = cache.audio_spans
    assert [[len(s) for s in row] for row in spans] == [[25, 10], [15]]
    assert [s.clip for row in spans for s in row] == [0, 1, 2]
    times = cache.token_times()
    first = spans[0][1]
    torch.testing.assert_close(times[0, first.start], torch.tensor([0.0, 0.04]))
    assert abs(times[0, first.end - 1, 1].item() - 0.40) < 1e-6
    assert torch.isnan(times[0, first.start - 1]).all()
    assert cache.last_positions.tolist() == [inputs["input_ids"].shape[1] - 1] * 2


def test_run_with_cache_selects_positions_and_offloads(model):
    inputs = make_inputs([[100]])
    full_logits, full = model.run_with_cache(**inputs)
    _, audio_only = model.run_with_cache(**inputs, positions="audio", names_filter=lambda n: "resid" in n)
    audio = full.inputs.audio_mask[0]
    torch.testing.assert_close(audio_only["resid_pre", 1], full["resid_pre", 1][:, audio])
    _, last = model.run_with_cache(**inputs, positions="last", device="cpu")
    torch.testing.assert_close(last["resid_post", 1], full["resid_post", 1][:, -1:])
    assert last["audio_encoder.blocks.0.hook_resid_pre"].shape == full["audio_encoder.blocks.0.hook_resid_pre"].shape
    assert isinstance(full.inputs, AudioTextInput)
