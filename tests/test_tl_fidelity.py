"""TransformerLens's own analysis calls give exact values on the model as loaded by default (norm weights not
folded), with audio in the input; TL's signatures and weight views are there."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_hf_model, make_inputs, make_processor

from hooked_audio import HookedAudioTransformer


@pytest.fixture(scope="module")
def gqa_model():
    """Unfolded (as loaded by default), grouped-query attention, random norm weights (so folding matters)."""
    return HookedAudioTransformer.from_hf_model(make_hf_model(n_kv_heads=2, seed=3), processor=make_processor())


def test_direct_logit_attribution_is_exact_without_folding(gqa_model):
    model = gqa_model
    assert not model.cfg.fold_ln and not torch.allclose(model.ln_final.w, torch.ones_like(model.ln_final.w))
    inputs = make_inputs([[100], [40]])
    logits, cache = model.run_with_cache(**inputs)
    right, wrong = torch.tensor([7, 9]), torch.tensor([8, 8])
    attrs = cache.logit_attrs(cache.decompose_resid(pos_slice=-1), tokens=right, incorrect_tokens=wrong, pos_slice=-1)
    true_diff = logits[torch.arange(2), -1, right] - logits[torch.arange(2), -1, wrong]
    torch.testing.assert_close(attrs.sum(0), true_diff, atol=1e-4, rtol=1e-4)
    # per-head attributions add up to each layer's attention attribution
    heads = cache.logit_attrs(cache.stack_head_results(layer=-1, pos_slice=-1), tokens=right, incorrect_tokens=wrong,
                              pos_slice=-1)
    attn = cache.logit_attrs(cache.decompose_resid(pos_slice=-1, mode="attn", incl_embeds=False), tokens=right,
                             incorrect_tokens=wrong, pos_slice=-1)
    n = model.cfg.n_heads
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(heads[layer * n : (layer + 1) * n].sum(0), attn[layer], atol=1e-4, rtol=1e-4)


def test_logit_lens_and_full_decomposition_end_at_the_logits(gqa_model):
    model = gqa_model
    inputs = make_inputs([[100]])
    logits, cache = model.run_with_cache(**inputs)
    final = cache.accumulated_resid(apply_ln=True)[-1]
    torch.testing.assert_close(final @ model.W_U + model.b_U, logits, atol=1e-4, rtol=1e-4)
    lens = cache.logit_lens()  # TransformerLens 4's one-call lens
    assert lens.labels[-1] == "final_post"
    torch.testing.assert_close(lens.values[-1], logits[:, -1], atol=1e-4, rtol=1e-4)  # at the last position
    parts = cache.get_full_resid_decomposition(expand_neurons=False)
    torch.testing.assert_close(parts.sum(0), cache["resid_post", model.cfg.n_layers - 1], atol=1e-4, rtol=1e-4)


def test_weight_views_follow_transformer_lens(gqa_model):
    model = gqa_model
    L, H, d, dh = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model, model.cfg.d_head
    assert model.W_Q.shape == model.W_K.shape == model.W_V.shape == (L, H, d, dh)
    assert model._W_K.shape == (L, model.cfg.n_key_value_heads, d, dh)
    torch.testing.assert_close(model.W_K[:, 1], model._W_K[:, 0])  # heads 0 and 1 share kv head 0
    torch.testing.assert_close(model.OV.AB, model.W_V @ model.W_O)
    torch.testing.assert_close(model.QK.AB, model.W_Q @ model.W_K.transpose(-2, -1))
    assert model.all_head_labels()[:3] == ["L0H0", "L0H1", "L0H2"] and len(model.all_head_labels()) == L * H
    # a head's write to the residual stream is its z times W_O: OV applied to the value input
    inputs = make_inputs([[100]])
    _, cache = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith(("hook_z", "hook_result")))
    z = cache["z", 1][0, -1, 2]
    torch.testing.assert_close(cache["result", 1][0, -1, 2], z @ model.W_O[1, 2], atol=1e-5, rtol=1e-5)


def test_dtype_and_device_stay_true_after_to(model):
    moved = copy.deepcopy(model).to(torch.bfloat16)
    assert moved.cfg.dtype == torch.bfloat16 and moved.cfg.device == "cpu"
    assert model.cfg.dtype == torch.float32


def test_run_with_cache_takes_transformer_lens_arguments_and_caches_gradients(model):
    inputs = make_inputs([[100]])
    loss, cache = model.run_with_cache(**inputs, incl_bwd=True, return_type="loss",
                                       names_filter=["blocks.0.hook_resid_post", "hook_audio_embeds"])
    assert loss.ndim == 0
    held = {}

    def keep(x, hook):
        x.retain_grad()
        held[hook.name] = x
        return x

    model.zero_grad()
    again = model.run_with_hooks(**inputs, return_type="loss", fwd_hooks=[("blocks.0.hook_resid_post", keep)])
    again.backward()
    torch.testing.assert_close(cache["blocks.0.hook_resid_post_grad"], held["blocks.0.hook_resid_post"].grad)
    assert cache["hook_audio_embeds_grad"].abs().sum() > 0  # the loss depends on the audio
    model.zero_grad()
    with pytest.raises(ValueError, match="loss"):
        model.run_with_cache(**inputs, incl_bwd=True)
    with pytest.raises(ValueError, match="either positions= or"):
        model.run_with_cache(**inputs, positions="last", pos_slice=-1)


def test_transformer_lens_switches_and_accumulated_bias(model):
    model.set_use_attn_result(True)  # a full cache then holds hook_result (tests/test_hooks.py)
    assert model.cfg.use_attn_result
    model.set_use_attn_result(False)
    # the per-head input switches (tests/test_tl_split_inputs.py): off by default, and off adds nothing
    for switch in (model.set_use_split_qkv_input, model.set_use_hook_mlp_in, model.set_use_attn_in):
        switch(False)
    assert not any(name.endswith(("_input", "hook_attn_in", "hook_mlp_in")) for name in model.hook_dict)
    assert model.accumulated_bias(0).abs().sum() == 0
    with pytest.raises(ValueError, match="layer must be"):
        model.accumulated_bias(model.cfg.n_layers + 1)


def test_transformer_lens_attribution_patching_runs_on_audio_inputs(model):
    """TL 4's ``tools.analysis.attribution_patch`` on a clean clip against silence: only the audio positions of
    the embedding differ between the runs, so only they get a first-order effect, and it is grad x delta."""
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch

    raw = make_inputs([[100]], seed=1)
    clean = model.to_inputs(**raw)
    corrupt = model.to_inputs(**dict(raw, input_features=torch.full_like(raw["input_features"], -0.8)))
    metric = lambda logits: logits[0, -1, 7]  # noqa: E731
    result = attribution_patch(model, clean, corrupt, metric)
    embed = {node.position: score for node, score in result.node_scores.items() if node.kind == "embed"}
    audio = set(torch.nonzero(clean.audio_mask[0]).flatten().tolist())
    assert all(score == 0 for pos, score in embed.items() if pos not in audio)
    assert all(abs(score) > 0 for pos, score in embed.items() if pos in audio)
    # the embedding cells by hand: d(metric)/d(hook_embed) on the corrupt run, times (clean - corrupt)
    _, clean_cache = model.run_with_cache(clean, names_filter="hook_embed")
    held = {}

    def keep(x, hook):
        x.retain_grad()
        held["x"] = x
        return x

    metric(model.run_with_hooks(corrupt, fwd_hooks=[("hook_embed", keep)])).backward()
    model.zero_grad()
    by_hand = ((clean_cache["hook_embed"] - held["x"].detach()) * held["x"].grad)[0].sum(-1)
    pos = min(audio)
    assert abs(embed[pos] - by_hand[pos].item()) < 1e-5


def test_weight_processing_options_keep_what_they_promise(gqa_model):
    hf = make_hf_model(n_kv_heads=2, seed=3)
    inputs = make_inputs([[100], [40]])
    with torch.no_grad():
        reference = gqa_model(**inputs)
        folded = HookedAudioTransformer.from_hf_model(hf, fold_ln=True, fold_value_biases=True)
        torch.testing.assert_close(folded(**inputs), reference, atol=1e-4, rtol=1e-4)
        assert all(b.attn.v.bias.abs().sum() == 0 for b in folded.blocks) and folded.cfg.fold_ln
        centred = HookedAudioTransformer.from_hf_model(hf, center_unembed=True)
        shift = centred(**inputs) - reference  # the same constant for every token of a position
        torch.testing.assert_close(shift, shift[..., :1].expand_as(shift), atol=1e-4, rtol=1e-4)
        assert shift.abs().max() > 1e-3
        torch.testing.assert_close(centred(**inputs).log_softmax(-1), reference.log_softmax(-1), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="RMSNorm"):
        HookedAudioTransformer.from_hf_model(hf, center_writing_weights=True)
    with pytest.raises(ValueError, match="copy_weights"):
        HookedAudioTransformer.from_hf_model(hf, fold_ln=True, copy_weights=False)


def test_loss_and_tokens_follow_transformer_lens(model):
    inputs = model.to_inputs(**make_inputs([[100], [40]]))
    logits = model(inputs)
    per_token = model.loss_fn(logits, inputs, per_token=True)
    real = inputs.attention_mask.bool()
    keep = inputs.text_mask[:, 1:] & real[:, :-1]  # real text targets predicted from real positions
    assert not real[1, 0] and keep[1].sum() < inputs.text_mask[1, 1:].sum()  # the padded row loses its first target
    assert torch.isnan(per_token[~keep]).all() and not torch.isnan(per_token[keep]).any()
    torch.testing.assert_close(model.loss_fn(logits, inputs), per_token[keep].mean())
    torch.testing.assert_close(model(inputs, return_type="loss"), per_token[keep].mean())
    right = model.to_tokens(["hello world one", "yes"], padding_side="right")
    left = model.to_tokens(["hello world one", "yes"])
    assert right[1, 0] == left[1, -1] == model.to_single_token("yes")
    with pytest.raises(ValueError, match="no BOS"):
        model.to_tokens("hello", prepend_bos=True)


def test_transformer_lens_edge_attribution_runs_on_a_fresh_model(model):
    """TL 4's edge attribution reads ``cfg.use_split_qkv_input`` etc. before any setter: they default to False.
    Only the audio differs between the runs, so only edges out of audio positions of the embedding score."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    fresh = copy.deepcopy(model)
    raw = make_inputs([[100]], seed=1)
    clean = fresh.to_inputs(**raw)
    corrupt = fresh.to_inputs(**dict(raw, input_features=torch.full_like(raw["input_features"], -0.8)))
    result = attribution_patch(fresh, clean, corrupt, lambda logits: logits[0, -1, 7],
                               EdgeAttributionConfig(granularity="edge"))
    embed = {node.position: score for node, score in result.node_scores.items() if node.kind == "embed"}
    audio = set(torch.nonzero(clean.audio_mask[0]).flatten().tolist())
    assert embed and all(score == 0 for pos, score in embed.items() if pos not in audio)
    assert any(abs(score) > 0 for pos, score in embed.items() if pos in audio)
