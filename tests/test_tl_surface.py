"""Probing TransformerLens's surface for silent wrong answers on audio inputs (left padding, several clips):
gradients cached by ``incl_bwd`` follow their activation's layout, the fused norm-and-project neuron path is
exact without folding, an int batch slice drops the batch axis, patching from a positions-restricted cache is
refused, and ``run_with_cache``'s TransformerLens options are honoured or refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_hf_model, make_inputs, make_processor
from transformer_lens import patching

from hooked_audio import HookedAudioTransformer

ATOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def gqa_model():
    """As loaded by default (norm weights not folded, and random), grouped-query attention, qkv biases."""
    return HookedAudioTransformer.from_hf_model(make_hf_model(n_kv_heads=2, seed=3), processor=make_processor())


@pytest.fixture(scope="module")
def inputs(gqa_model):
    return gqa_model.to_inputs(**make_inputs([[100], [60, 40]]))  # row 0 left-padded, row 1 two clips


def test_cached_positions_that_are_padding_in_some_row_are_refused(gqa_model, inputs):
    """Was: positions=[0] (or pos_slice=0, a slice) on a left-padded batch cached row 0's padding as if it were a
    token, and the lens read from that cache read padding."""
    for positions in ([0], slice(0, 5)):
        with pytest.raises(ValueError, match=r"are padding in rows \[0\]"):
            gqa_model.run_with_cache(inputs, positions=positions, names_filter=["hook_embed"])
    with pytest.raises(ValueError, match=r"are padding in rows \[0\]"):
        gqa_model.run_with_cache(inputs, pos_slice=0, names_filter=["hook_embed"])
    _, cache = gqa_model.run_with_cache(inputs, positions=[-1], names_filter=["hook_embed"])  # control: left padding
    assert cache["hook_embed"].shape[1] == 1


def test_gradients_keep_their_activations_layout(gqa_model, inputs):
    """``name_grad`` used to be read as an encoder activation: ``positions=`` cut a pattern's gradient along its
    head axis and left ``hook_embed_grad`` whole, and a batch slice emptied ``hook_embed_grad``."""
    model = gqa_model
    names = ["hook_embed", "hook_audio_embeds", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"]
    kw = dict(names_filter=names, incl_bwd=True, return_type="loss")
    _, full = model.run_with_cache(inputs, **kw)
    model.zero_grad()
    keep = [4, 5, 36]  # real in both rows (row 0's 0..3 are padding); one audio token (row 1's 5)
    _, part = model.run_with_cache(inputs, positions=keep, **kw)
    model.zero_grad()
    pattern_grad = full["blocks.0.attn.hook_pattern_grad"]
    # was cut along the head axis: an IndexError here, a silently wrong (2, 3, 37, 37) for positions [0, 1, 2]
    assert part["blocks.0.attn.hook_pattern_grad"].shape == (2, model.cfg.n_heads, 3, 3)
    torch.testing.assert_close(part["blocks.0.attn.hook_pattern_grad"], pattern_grad[:, :, keep][:, :, :, keep])
    torch.testing.assert_close(part["hook_embed_grad"], full["hook_embed_grad"][:, keep])  # was all 37 positions
    assert part["hook_audio_embeds_grad"].shape == part["hook_audio_embeds"].shape == (1, model.cfg.d_model)
    # control: the activations themselves were always cut right
    torch.testing.assert_close(part["blocks.0.attn.hook_pattern"], full["blocks.0.attn.hook_pattern"][:, :, keep][:, :, :, keep])

    # a batch whose second row is text only: its row of hook_embed_grad was dropped (0 rows)
    other = model.to_inputs(**make_inputs([[60], [], [100]]))
    _, cache = model.run_with_cache(other, **kw)
    model.zero_grad()
    for rows in ([1], [2], [0, 2]):
        sliced = cache.apply_slice_to_batch_dim(rows)
        torch.testing.assert_close(sliced["hook_embed_grad"], cache["hook_embed_grad"][rows])
        torch.testing.assert_close(sliced["hook_embed"], cache["hook_embed"][rows])  # control
    # row 2's 25 audio tokens come after row 0's 15 (the gradient used to be split evenly by window)
    row_2 = cache.apply_slice_to_batch_dim([2])
    torch.testing.assert_close(row_2["hook_audio_embeds_grad"], cache["hook_audio_embeds_grad"][15:])
    torch.testing.assert_close(row_2["hook_audio_embeds"], cache["hook_audio_embeds"][15:])
    one = model.to_inputs(**make_inputs([[60, 40]]))
    _, single = model.run_with_cache(one, remove_batch_dim=True, **kw)
    model.zero_grad()
    assert single["hook_embed_grad"].shape == single["hook_embed"].shape == (one.shape[1], model.cfg.d_model)


def test_projected_neuron_decomposition_applies_the_norm_weight(gqa_model, inputs):
    """``project_output_onto`` with ``apply_ln=True`` takes TransformerLens's fused path, which divided by the
    cached scale only: the neuron stack missed ln_final's weight (off by up to ~0.009 in a logit here)."""
    model = gqa_model
    assert not torch.allclose(model.ln_final.w, torch.ones_like(model.ln_final.w))
    logits, cache = model.run_with_cache(inputs)
    direction = model.W_U[:, 7]
    parts = cache.get_full_resid_decomposition(apply_ln=True, project_output_onto=direction)
    torch.testing.assert_close(parts.sum(0), logits[..., 7], **ATOL)
    for layer, mlp_input in ((model.cfg.n_layers, False), (1, True), (1, False)):
        stack = cache.stack_neuron_results(layer, apply_ln=True, mlp_input=mlp_input)  # control: the unfused path
        fused = cache.stack_neuron_results(layer, apply_ln=True, mlp_input=mlp_input, project_output_onto=direction)
        torch.testing.assert_close(fused, stack @ direction, **ATOL)
    torch.testing.assert_close(cache.get_full_resid_decomposition(apply_ln=True).sum(0),
                               cache["ln_final.hook_normalized"], **ATOL)


def test_an_int_batch_slice_drops_the_batch_axis_as_transformer_lens(gqa_model, inputs):
    """``apply_slice_to_batch_dim(1)`` kept a batch axis of 1 (TransformerLens drops it), so ``[..., -1]``-style
    indexing read another axis than the user meant."""
    _, cache = gqa_model.run_with_cache(inputs)
    row = cache.apply_slice_to_batch_dim(1)
    assert not row.has_batch_dim
    torch.testing.assert_close(row["resid_post", 1], cache["resid_post", 1][1])
    torch.testing.assert_close(row["pattern", 0], cache["pattern", 0][1])
    torch.testing.assert_close(row["hook_audio_embeds"], cache["hook_audio_embeds"][25:])  # row 1's two clips
    assert torch.equal(row.audio_positions, cache.audio_positions[1])
    parts = row.decompose_resid(apply_ln=True)
    torch.testing.assert_close(parts.sum(0), row["ln_final.hook_normalized"], **ATOL)
    # control: a list keeps the axis
    kept = cache.apply_slice_to_batch_dim([1])
    assert kept.has_batch_dim and kept["resid_post", 1].shape == (1, *cache["resid_post", 1].shape[1:])


def test_patching_from_a_positions_cache_is_refused(gqa_model, inputs):
    """TransformerLens's patching indexes the clean activation by the corrupted run's positions: from a cache
    of the last position only, position 0 received the last position's activation, silently."""
    model = gqa_model.eval()
    raw = make_inputs([[100], [60, 40]])
    corrupt = model.to_inputs(**dict(raw, input_features=torch.full_like(raw["input_features"], -0.8)))
    metric = lambda logits: logits[:, -1, 7].sum()  # noqa: E731
    cells = pd.DataFrame({"layer": [1], "pos": [0]})
    _, last = model.run_with_cache(inputs, positions="last")
    with pytest.raises(ValueError, match="restricted to 1 of its run's 37 positions"):
        patching.generic_activation_patch(model, corrupt, last, metric, patching.layer_pos_patch_setter, "resid_pre",
                                          index_df=cells)
    # control: the full cache patches, and an encoder activation of the restricted cache (kept whole) is usable
    _, full = model.run_with_cache(inputs)
    result = patching.generic_activation_patch(model, corrupt, full, metric, patching.layer_pos_patch_setter,
                                               "resid_pre", index_df=cells)

    def patch(x, hook):
        x = x.clone()
        x[:, 0] = full[hook.name][:, 0]
        return x

    by_hand = metric(model.run_with_hooks(corrupt, fwd_hooks=[("blocks.1.hook_resid_pre", patch)]))
    assert abs(result.item() - by_hand.item()) < 1e-5
    clean_audio = last["audio_encoder.hook_out"]
    patched = model.run_with_hooks(corrupt, fwd_hooks=[("audio_encoder.hook_out", lambda x, hook: clean_audio)])
    torch.testing.assert_close(patched, model(inputs), **ATOL)
    own_copy = last["resid_post", 1][:, 0].clone()  # indexed by the user: no longer a cache tensor
    model.run_with_hooks(corrupt, fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: x + 0 * own_copy[:, None])])


def test_run_with_cache_honours_or_refuses_transformer_lens_options(gqa_model, inputs):
    model = gqa_model
    logits, plain = model.run_with_cache(inputs, names_filter="blocks.0.hook_resid_post", return_cache_object=False)
    assert type(plain) is dict and list(plain) == ["blocks.0.hook_resid_post"]  # was "keyword inputs, not both"
    _, cache = model.run_with_cache(inputs, names_filter="blocks.0.hook_resid_post")
    torch.testing.assert_close(plain["blocks.0.hook_resid_post"], cache["resid_post", 0])
    with pytest.raises(ValueError, match="matches none of the model's"):  # was an empty cache
        model.run_with_cache(inputs, names_filter=lambda name: name == "resid_post")
    with pytest.raises(TypeError, match="stop_at_layer"):
        model.run_with_cache(inputs, stop_at_layer=1)
    _, some = model.run_with_cache(inputs, names_filter=lambda name: name.endswith("ln_final.hook_scale"))  # control
    assert list(some.keys()) == ["ln_final.hook_scale"]


def test_neurons_of_a_mixture_of_experts_decoder_are_refused_clearly():
    from test_family_qwen3_omni import inputs_for, make_hf_model as make_moe

    model = HookedAudioTransformer.from_hf_model(make_moe(seed=2))
    _, cache = model.run_with_cache(**inputs_for([[100], [37]]))
    with pytest.raises(KeyError, match="mixtures of experts"):
        cache.get_full_resid_decomposition()  # TransformerLens's default expands neurons
    parts = cache.get_full_resid_decomposition(expand_neurons=False)  # control
    torch.testing.assert_close(parts.sum(0), cache["resid_post", -1], **ATOL)


def test_to_str_tokens_of_prompts_and_batches_as_transformer_lens(gqa_model, inputs):
    """Was: a list of prompts gave the first prompt only, padding included, and a batch of rows its row 0.
    TransformerLens gives one unpadded list per prompt; a batch of several rows needs row= (or row=None)."""
    model = gqa_model
    prompts = ["a b", "c d e f"]  # two lengths: a batch of them is padded
    per_prompt = model.to_str_tokens(prompts)
    assert per_prompt == [model.to_str_tokens(p) for p in prompts]
    assert [len(s) for s in per_prompt] == [len(model.to_tokens(p)[0]) for p in prompts]  # no padding
    assert len(per_prompt[0]) < len(per_prompt[1])
    with pytest.raises(ValueError, match="these inputs have 2 rows: pass row="):
        model.to_str_tokens(inputs)
    rows = model.to_str_tokens(inputs, row=None)
    assert model.to_str_tokens(inputs, row=1) == rows[1] and len(rows[0]) == inputs.shape[1]
    assert model.to_str_tokens("a b", prepend_bos=False) == per_prompt[0]  # TL's keyword, as test_prompt passes it


def test_loss_per_token_and_transformer_lens_forward_options(gqa_model, inputs):
    """Was: loss_per_token=True was refused as "keyword inputs, not both" (or an unknown model input), and
    stop_at_layer= in forward likewise; now the per-token loss is loss_fn's, and the TL-only options are refused
    by name."""
    model = gqa_model
    logits = model(inputs)
    want = model.loss_fn(logits, inputs, per_token=True)
    for got in (model(inputs, return_type="loss", loss_per_token=True),
                model.run_with_hooks(inputs, return_type="loss", loss_per_token=True),
                model.run_with_cache(inputs, return_type="loss", loss_per_token=True, names_filter="hook_embed")[0]):
        torch.testing.assert_close(got, want, equal_nan=True)
    assert got.shape == (2, inputs.shape[1] - 1) and bool(got.isnan().any()) and not bool(got.isnan().all())
    assert model(inputs, return_type="loss").item() == pytest.approx(want.nanmean().item(), abs=1e-6)  # control
    with pytest.raises(ValueError, match="loss_per_token=True shapes the loss"):
        model(inputs, loss_per_token=True)
    for option in ("stop_at_layer", "start_at_layer"):
        with pytest.raises(TypeError, match=f"{option}= is TransformerLens's: the forward runs every layer"):
            model(inputs, **{option: 1})


def test_mlp_bias_views_are_the_biases_the_forward_adds(gqa_model):
    """TransformerLens's b_in / b_out views (were missing): the biases of W_in and W_out, zeros where the decoder has
    none; checked on MLPs with biases against their own forward."""
    from hooked_audio.components.mlp import MLP, GatedMLP

    assert gqa_model.b_in.shape == (gqa_model.cfg.n_layers, gqa_model.cfg.d_mlp) and not gqa_model.b_in.any()
    assert gqa_model.b_out.shape == (gqa_model.cfg.n_layers, gqa_model.cfg.d_model)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8)
    gated, plain = GatedMLP(8, 16, bias=True), MLP(8, 16, bias=True)
    by_hand = (gated.act(x @ gated.W_gate + gated.b_gate) * (x @ gated.W_in + gated.b_in)) @ gated.W_out + gated.b_out
    torch.testing.assert_close(gated(x), by_hand)
    by_hand = plain.act(x @ plain.W_in + plain.b_in) @ plain.W_out + plain.b_out
    torch.testing.assert_close(plain(x), by_hand)


def test_a_named_point_that_never_fires_is_said(gqa_model, inputs):
    """Was: names_filter naming hook_audio_embeds on a text-only batch returned a cache without it, silently; the
    KeyError came later, without the cause."""
    import warnings

    text_only = gqa_model.to_inputs(**make_inputs([[], []]))
    with pytest.warns(UserWarning, match=r"\['hook_audio_embeds'\] did not fire .*holds no audio"):
        _, cache = gqa_model.run_with_cache(text_only, names_filter=["hook_embed", "hook_audio_embeds"])
    assert list(cache.keys()) == ["hook_embed"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # control: with audio both fire, nothing is said
        _, cache = gqa_model.run_with_cache(inputs, names_filter=["hook_embed", "hook_audio_embeds"])
    assert sorted(cache.keys()) == ["hook_audio_embeds", "hook_embed"]


def test_gradients_under_no_grad_and_with_frozen_weights(gqa_model, inputs):
    """Was: incl_bwd=True under torch.no_grad(), or with frozen weights, died in torch's "element 0 of tensors
    does not require grad"."""
    names = ["blocks.1.hook_resid_post"]
    _, plain = gqa_model.run_with_cache(inputs, names_filter=names, incl_bwd=True, return_type="loss")
    with torch.no_grad():
        _, quiet = gqa_model.run_with_cache(inputs, names_filter=names, incl_bwd=True, return_type="loss")
    gqa_model.zero_grad()
    torch.testing.assert_close(quiet["blocks.1.hook_resid_post_grad"], plain["blocks.1.hook_resid_post_grad"])
    gqa_model.requires_grad_(False)
    try:
        with pytest.raises(ValueError, match="no parameter of the model requires grad"):
            gqa_model.run_with_cache(inputs, names_filter=names, incl_bwd=True, return_type="loss")
    finally:
        gqa_model.requires_grad_(True)


def test_gradients_under_inference_mode_are_refused_with_the_fix(gqa_model, inputs):
    """Was: incl_bwd=True under torch.inference_mode() blamed frozen weights and told to call requires_grad_(True),
    which changes nothing (no enable_grad lifts inference mode); attribution patching and the conflict probe's fit
    died in torch. Control: under no_grad the same calls run (above)."""
    from hooked_audio.analysis import LinearProbe, attribution_patching

    names = ["blocks.1.hook_resid_post"]
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"incl_bwd=True\) needs gradients, but this runs under torch.inference_mode"):
            gqa_model.run_with_cache(inputs, names_filter=names, incl_bwd=True, return_type="loss")
        with pytest.raises(RuntimeError, match="attribution_patching needs gradients"):
            attribution_patching(gqa_model, inputs, inputs, lambda logits: logits[:, -1, 0].sum(), names)
        with pytest.raises(RuntimeError, match="LinearProbe.fit needs gradients"):
            LinearProbe().fit(torch.randn(6, 3), torch.tensor([0, 1] * 3))
        gqa_model.run_with_cache(inputs, names_filter=names)  # without gradients it runs


def test_get_token_position_finds_each_rows_token_and_never_padding(gqa_model, inputs):
    """TransformerLens's get_token_position on an audio batch: each row's own column (row 0 is left-padded, so
    the same token sits further right), padding never counted although its id is the searched one (here also a
    real token of each row); controls: the positions written out by hand, and a token in no row refused."""
    ids, real = inputs.input_ids.clone(), inputs.attention_mask.bool()
    pad = int(ids[0, 0])
    assert not real[0, 0]
    last_text = [int(real[r].nonzero()[-1]) for r in range(2)]
    ids[0, last_text[0]], ids[1, last_text[1]] = pad, pad  # the padding id as a real token too
    batch = gqa_model.to_inputs(input_ids=ids, attention_mask=inputs.attention_mask)
    for token in (pad, gqa_model.cfg.audio_token_id):
        for mode, pick in (("first", 0), ("last", -1)):
            by_hand = [int(((ids[r] == token) & real[r]).nonzero()[pick]) for r in range(2)]
            assert gqa_model.get_token_position(token, batch, mode=mode).tolist() == by_hand
    assert gqa_model.get_token_position(pad, batch).tolist() == last_text  # not row 0's padding at column 0
    one_row = gqa_model.to_inputs(input_ids=ids[1:], attention_mask=inputs.attention_mask[1:])
    audio_start = gqa_model.get_token_position(gqa_model.cfg.audio_token_id, one_row)
    assert isinstance(audio_start, int) and audio_start == one_row.audio_spans[0][0].start
    absent = next(t for t in range(gqa_model.cfg.d_vocab) if not (ids == t).any())
    with pytest.raises(ValueError, match=r"is not in row\(s\) \[0, 1\]"):
        gqa_model.get_token_position(absent, batch)
    with pytest.raises(ValueError, match="mode must be"):
        gqa_model.get_token_position(pad, batch, mode="all")


def test_positions_out_of_order_are_refused_before_the_forward(gqa_model, inputs):
    """Was: positions=[-1, -2, -3] passed the early check, the whole forward ran, and only then the cache refused
    them, quoting resolved columns. Now refused before any hook fires; control: the same positions in order."""
    fired = []
    hook = [("blocks.1.hook_resid_post", lambda x, hook: fired.append(1))]
    for positions in ([-1, -2, -3], [3, 3]):
        with gqa_model.hooks(fwd_hooks=hook), pytest.raises(ValueError, match=r"must be increasing and distinct"):
            gqa_model.run_with_cache(inputs, positions=positions)
    assert not fired
    _, cache = gqa_model.run_with_cache(inputs, positions=[-3, -2, -1], names_filter=["hook_embed"])
    assert cache["hook_embed"].shape[1] == 3


def test_token_helpers_given_several_words(gqa_model):
    """Was: to_single_token(["a", "b"]) died in str.strip, tokens_to_residual_directions of a word list in torch.
    Now one refuses with the loop to write, the other gives one direction per word (the words' own, as a control)."""
    words = [gqa_model.to_string([t]) for t in (7, 9)]
    with pytest.raises(TypeError, match="to_single_token takes one token's string"):
        gqa_model.to_single_token(words)
    directions = gqa_model.tokens_to_residual_directions(words)
    torch.testing.assert_close(directions, torch.stack([gqa_model.tokens_to_residual_directions(w) for w in words]))


def test_positions_as_a_numpy_array_or_a_0d_tensor(gqa_model, inputs):
    """Was: positions=np.array([...]) died in "truth value of an array is ambiguous" and positions=torch.tensor(-1) in
    "len() of a 0-d tensor". Control: the same positions as a list."""
    _, listed = gqa_model.run_with_cache(inputs, positions=[-3, -1], names_filter=["hook_embed"])
    _, array = gqa_model.run_with_cache(inputs, positions=np.array([-3, -1]), names_filter=["hook_embed"])
    _, scalar = gqa_model.run_with_cache(inputs, positions=torch.tensor(-1), names_filter=["hook_embed"])
    assert torch.equal(array["hook_embed"], listed["hook_embed"])
    assert torch.equal(scalar["hook_embed"], listed["hook_embed"][:, 1:])
