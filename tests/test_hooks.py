"""The hook contract: every point fires, edits at audio positions matter, hooks never leak."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_inputs


def test_every_hook_point_fires_on_an_audio_text_forward(model):
    inputs = make_inputs([[100, 40], [60]])
    fired = set()
    model.run_with_hooks(**inputs, fwd_hooks=[(lambda name: True, lambda x, hook: fired.add(hook.name))])
    assert set(model.hook_dict) - fired == set()
    # and the contract's names are there, in the encoder as in the decoder
    for name in ["hook_embed", "hook_audio_embeds", "blocks.1.attn.hook_result", "blocks.0.mlp.hook_pre_linear",
                 "audio_encoder.hook_in", "audio_encoder.hook_conv_out", "audio_encoder.hook_pos_embed",
                 "audio_encoder.blocks.1.attn.hook_pattern", "audio_encoder.hook_pooled",
                 "audio_encoder.ln_post.hook_normalized", "audio_encoder.hook_out", "ln_final.hook_scale"]:
        assert name in model.hook_dict


def test_hook_shapes_follow_transformer_lens(model):
    inputs = make_inputs([[100]], text_lengths=[5])
    _, cache = model.run_with_cache(**inputs)
    batch, pos = inputs["input_ids"].shape
    cfg = model.cfg
    assert cache["blocks.0.attn.hook_q"].shape == (batch, pos, cfg.n_heads, cfg.d_head)
    assert cache["blocks.0.attn.hook_k"].shape == (batch, pos, cfg.n_key_value_heads, cfg.d_head)
    assert cache["pattern", 1].shape == (batch, cfg.n_heads, pos, pos)
    assert cache["hook_audio_embeds"].shape == (25, cfg.d_model)
    # hook_result, as in TransformerLens: out of the default cache unless use_attn_result, computed when named
    assert "blocks.0.attn.hook_result" not in cache.cache_dict
    with pytest.raises(KeyError, match="set_use_attn_result"):  # the way to get it, not a bare KeyError
        cache["result", 0]
    _, named = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith("hook_result"))
    assert named["blocks.0.attn.hook_result"].shape == (batch, pos, cfg.n_heads, cfg.d_model)
    model.set_use_attn_result(True)
    try:
        _, full = model.run_with_cache(**inputs)
    finally:
        model.set_use_attn_result(False)
    torch.testing.assert_close(full["blocks.0.attn.hook_result"], named["blocks.0.attn.hook_result"])
    assert "audio_encoder.blocks.0.attn.hook_result" in full.cache_dict
    # the pattern rows are distributions and causal
    pattern = cache["pattern", 0][0]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    assert pattern.triu(1).abs().max() == 0


def test_hook_embed_holds_the_spliced_audio(model):
    inputs = make_inputs([[100]])
    _, cache = model.run_with_cache(**inputs)
    audio = cache.inputs.audio_mask[0]
    torch.testing.assert_close(cache["hook_embed"][0, audio], cache["hook_audio_embeds"])
    text_ids = inputs["input_ids"][0, ~audio]
    torch.testing.assert_close(cache["hook_embed"][0, ~audio], model.W_E[text_ids])


@pytest.mark.parametrize("hook_name", ["hook_embed", "hook_audio_embeds"])
def test_editing_audio_positions_changes_logits(model, hook_name):
    inputs = make_inputs([[100]])
    audio = model.to_inputs(**inputs).audio_mask

    def add_at_audio(x, hook):
        if hook.name == "hook_embed":
            return x + 5.0 * audio[..., None]
        return x + 5.0

    clean = model(**inputs)
    edited = model.run_with_hooks(**inputs, fwd_hooks=[(hook_name, add_at_audio)])
    last = inputs["input_ids"].shape[1] - 1
    assert (edited[0, last] - clean[0, last]).abs().max() > 1e-2


def test_zero_ablating_one_encoder_head_changes_logits_and_only_it(model):
    inputs = make_inputs([[100]])

    def zero_head(z, hook, head=1):
        z = z.clone()
        z[:, :, head] = 0
        return z

    clean = model(**inputs)
    ablated = model.run_with_hooks(**inputs, fwd_hooks=[("audio_encoder.blocks.0.attn.hook_z", zero_head)])
    assert (ablated - clean).abs().max() > 1e-3
    # The ablation is exactly the removal of that head's result from the layer's output.
    _, cache = model.run_with_cache(**inputs, names_filter=lambda n: n.startswith("audio_encoder.blocks.0.attn"))
    result = cache["audio_encoder.blocks.0.attn.hook_result"]
    with model.hooks(fwd_hooks=[("audio_encoder.blocks.0.attn.hook_z", zero_head)]):
        _, ablated_cache = model.run_with_cache(**inputs, names_filter=["audio_encoder.blocks.0.hook_attn_out"])
    _, clean_cache = model.run_with_cache(**inputs, names_filter=["audio_encoder.blocks.0.hook_attn_out"])
    torch.testing.assert_close(
        clean_cache["audio_encoder.blocks.0.hook_attn_out"] - ablated_cache["audio_encoder.blocks.0.hook_attn_out"],
        result[:, :, 1],
        atol=1e-5,
        rtol=1e-4,
    )


def test_hooks_are_removed_after_an_exception(model):
    inputs = make_inputs([[100]])

    def broken(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(**inputs, fwd_hooks=[("blocks.0.hook_resid_pre", broken)])
    assert not any(hp.fwd_hooks or hp._forward_hooks for hp in model.hook_dict.values())
    with pytest.raises(RuntimeError, match="boom"):  # caching on every point, then a failure mid-forward
        with model.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", broken)]):
            model.run_with_cache(**inputs)
    assert not any(hp.fwd_hooks or hp._forward_hooks or hp.cache_into is not None for hp in model.hook_dict.values())


def test_permanent_hooks_survive_temporary_ones(model):
    inputs = make_inputs([[100]])
    calls = []
    model.add_hook("blocks.1.hook_resid_post", lambda x, hook: calls.append(1), is_permanent=True)
    try:
        model.run_with_hooks(**inputs, fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: None)])
        model(**inputs)
        assert len(calls) == 2
    finally:
        model.reset_hooks(including_permanent=True)
    assert not model.hook_dict["blocks.1.hook_resid_post"].fwd_hooks


def test_unknown_hook_name_suggests_close_names(model):
    inputs = make_inputs([[100]])
    with pytest.raises(KeyError, match="blocks.0.hook_resid_pre"):
        model.run_with_hooks(**inputs, fwd_hooks=[("blocks.0.hook_resid_pr", lambda x, hook: None)])
    with pytest.raises(KeyError, match="Unknown hook name"):
        model.add_hook("audio_encoder.block.0.hook_resid_pre", lambda x, hook: None)
    with pytest.raises(KeyError, match="blocks.1.attn.hook_pattern"):
        model.run_with_cache(**inputs, names_filter=["blocks.1.attn.hook_patern"])
    for name, switch in [("blocks.0.hook_mlp_in", "set_use_hook_mlp_in"), ("blocks.1.attn.hook_q_input",
                         "set_use_split_qkv_input"), ("audio_encoder.blocks.0.hook_attn_in", "set_use_attn_in")]:
        with pytest.raises(KeyError, match=f"exists only while its TransformerLens switch is on: call model.{switch}"):
            model.run_with_hooks(**inputs, fwd_hooks=[(name, lambda x, hook: None)])  # was: "Did you mean hook_mlp_out"



def test_a_hook_name_filter_that_matches_nothing_is_refused(model):
    """Was: run_with_hooks / hooks() / add_hook with a filter matching no point ran with no hook at all, so a
    typo'd ablation read as "no effect". Control: the right filter changes the logits."""
    inputs = make_inputs([[100]])
    zero = lambda z, hook: torch.zeros_like(z)  # noqa: E731
    with pytest.raises(ValueError, match="matches none of the model's"):
        model.run_with_hooks(**inputs, fwd_hooks=[(lambda n: n.endswith("attn.hook_zz"), zero)])
    with pytest.raises(ValueError, match="matches none of the model's"):
        model.add_hook(lambda n: n.endswith("attn.hook_zz"), zero)
    assert model.attached_hook_names() == []
    ablated = model.run_with_hooks(**inputs, fwd_hooks=[(lambda n: n.endswith("attn.hook_z"), zero)])
    assert (ablated - model(**inputs)).abs().max() > 1e-3


@pytest.mark.parametrize("as_collection", [frozenset, lambda names: dict.fromkeys(names).keys(), iter])
def test_names_filter_takes_any_collection_of_names(model, as_collection):
    """TransformerLens's list of names may come as a frozenset, ``dict.keys()`` or a generator (the old code
    called them as predicates: TypeError); a typo in one is still named. Control: the list form."""
    inputs = make_inputs([[100]])
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"]
    _, expected = model.run_with_cache(**inputs, names_filter=names)
    _, cache = model.run_with_cache(**inputs, names_filter=as_collection(names))
    assert sorted(cache.keys()) == sorted(expected.keys()) == sorted(names)
    for name in names:
        assert torch.equal(cache[name], expected[name])
    with pytest.raises(KeyError, match="blocks.1.attn.hook_pattern"):
        model.run_with_cache(**inputs, names_filter=as_collection(["blocks.1.attn.hook_patern"]))
    with pytest.raises(TypeError, match="names_filter must be"):
        model.run_with_cache(**inputs, names_filter=3)

def test_removing_temporary_hooks_touches_only_their_points(model, monkeypatch):
    """Leaving ``hooks()`` must not walk all ~hook points (O(hooks added), not O(all points))."""
    from hooked_audio.hook_points import HookPoint

    touched = []
    original = HookPoint.remove_hooks
    monkeypatch.setattr(HookPoint, "remove_hooks", lambda self, *a, **k: (touched.append(self.name), original(self, *a, **k)))
    monkeypatch.setattr(HookPoint, "clear_context", lambda self: touched.append(self.name))
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: None)]):
        pass
    assert touched == []
    assert not model.hook_dict["blocks.0.hook_resid_pre"].fwd_hooks


def test_a_part_with_transformer_lens_own_hook_point_is_cached_too(model):
    """A user's part may use TransformerLens's HookPoint (no direct cache route): it is cached by a module hook."""
    import copy

    from transformer_lens.hook_points import HookPoint as TLHookPoint

    other = copy.deepcopy(model)
    other.hook_embed = TLHookPoint()
    other.setup()
    inputs = make_inputs([[100]])
    _, ours = model.run_with_cache(**inputs, names_filter="hook_embed")
    _, theirs = other.run_with_cache(**inputs, names_filter="hook_embed")
    torch.testing.assert_close(theirs["hook_embed"], ours["hook_embed"])


def test_hook_lists_are_read_once_and_a_bare_pair_is_refused(model):
    """``run_with_hooks`` reads its hooks twice (the alignment check, then attaching them): a generator of hooks
    was used up by the first read and the forward ran unhooked. It now acts like the list; one bare pair, or a
    dict, is refused with the fix, in ``hooks()`` and ``generate`` alike."""
    inputs = make_inputs([[100]])
    zero = lambda x, hook: torch.zeros_like(x)  # noqa: E731
    as_list = model.run_with_hooks(inputs, fwd_hooks=[("blocks.1.hook_resid_post", zero)])
    as_generator = model.run_with_hooks(inputs, fwd_hooks=((n, f) for n, f in [("blocks.1.hook_resid_post", zero)]))
    assert torch.equal(as_generator, as_list) and not torch.equal(as_list, model(inputs))
    with pytest.raises(TypeError, match=r"wrap one pair in a list"):
        model.run_with_hooks(inputs, fwd_hooks=("blocks.1.hook_resid_post", zero))
    with pytest.raises(TypeError, match=r"bwd_hooks must be a list of \(name, hook\) pairs"):
        with model.hooks(bwd_hooks={"blocks.1.hook_resid_post": zero}):
            pass


@torch.no_grad()
def test_a_hook_returning_another_shape_or_dtype_is_refused_by_name(model):
    """Was: a hook returning one row for a batch of two was broadcast over both rows by the next residual add, and
    one returning float32 in a bfloat16 model failed later in a matmul naming neither. Control: a hook returning
    the activation's shape and dtype runs."""
    from conftest import make_inputs

    inputs = model.to_inputs(make_inputs([[100], [40]], seed=1))
    name = "blocks.0.hook_resid_post"
    with pytest.raises(ValueError, match=rf"a hook on {name} returned a tensor of shape \(1, "):
        model.run_with_hooks(inputs, fwd_hooks=[(name, lambda x, hook: x[:1])])
    half = copy.deepcopy(model).to(torch.bfloat16)
    with pytest.raises(ValueError, match=rf"a hook on {name} .* dtype torch.float32 for an activation .* torch.bfloat16"):
        half.run_with_hooks(inputs, fwd_hooks=[(name, lambda x, hook: x.float() + 1.0)])
    changed = half.run_with_hooks(inputs, fwd_hooks=[(name, lambda x, hook: (x.float() + 1.0).to(x.dtype))])
    assert (changed.float() - half(inputs).float()).abs().max() > 1e-3


@torch.no_grad()
def test_a_hook_editing_in_place_changes_only_its_own_run(model):
    """Was: hook_in held the caller's own features and hook_pos_embed a view of W_pos, so an in-place edit (the
    TransformerLens idiom of returning None) changed the caller's inputs or the model for every later run."""
    raw = make_inputs([[100]], seed=5)
    inputs = model.to_inputs(**raw)
    features = inputs.audio["input_features"].clone()
    weights = model.audio_encoder.W_pos.detach().clone()
    clean = model(inputs)
    edited = model.run_with_hooks(inputs, fwd_hooks=[
        ("audio_encoder.hook_in", lambda x, hook: x.mul_(0.5)),
        ("audio_encoder.hook_pos_embed", lambda x, hook: x.mul_(0.0))])
    assert (edited - clean).abs().max() > 1e-4  # the edits took effect in their run
    assert torch.equal(inputs.audio["input_features"], features) and torch.equal(raw["input_features"], features)
    assert torch.equal(model.audio_encoder.W_pos, weights)
    assert torch.equal(model(inputs), clean)  # control: the next run is the clean one


def test_ln1_forward_hooks_are_refused_while_per_head_inputs_are_on(model):
    """Was: with split q/k/v inputs the attention normalised its per-head copies itself, so an edit on
    blocks.{l}.ln1.hook_* fired and was dropped (a frozen-LN-scale patch silently did nothing)."""
    inputs = model.to_inputs(**make_inputs([[100]], seed=5))
    hook = [("blocks.0.ln1.hook_scale", lambda x, hook: x * 2)]
    model.set_use_split_qkv_input(True)
    try:
        with pytest.raises(ValueError, match="ln1.hook_scale would change nothing while per-head inputs are on"):
            model.run_with_hooks(inputs, fwd_hooks=hook)
        _, cache = model.run_with_cache(inputs, names_filter=["blocks.0.ln1.hook_scale"])  # caching still works
    finally:
        model.set_use_split_qkv_input(False)
    _, plain = model.run_with_cache(inputs, names_filter=["blocks.0.ln1.hook_scale"])
    torch.testing.assert_close(cache["blocks.0.ln1.hook_scale"], plain["blocks.0.ln1.hook_scale"])
    assert (model.run_with_hooks(inputs, fwd_hooks=hook) - model(inputs)).abs().max() > 1e-4  # control: split off


def test_ln1_backward_hooks_are_refused_while_per_head_inputs_are_on(model):
    """Was: ln1's output is off the graph under split q/k/v inputs, so a backward hook there never fired and
    run_with_cache(incl_bwd=True) left its gradient out without a word. Control: with split inputs off, the
    gradient is cached and the backward hook fires."""
    inputs = model.to_inputs(**make_inputs([[100]], seed=5))
    model.requires_grad_(True)
    fired = []
    hook = [("blocks.0.ln1.hook_normalized", lambda grad, hook: fired.append(grad.shape))]
    model.set_use_split_qkv_input(True)
    try:
        with pytest.raises(ValueError, match="ln1.hook_normalized would never fire while per-head inputs are on"):
            with model.hooks(bwd_hooks=hook):
                model(inputs, return_type="loss").backward()
        names = ["blocks.0.ln1.hook_normalized", "blocks.0.hook_q_input"]
        with pytest.warns(UserWarning, match=r"ln1.hook_normalized'\] have no gradient"):
            _, cache = model.run_with_cache(inputs, names_filter=names, incl_bwd=True, return_type="loss")
        assert "blocks.0.hook_q_input_grad" in cache.cache_dict
        assert "blocks.0.ln1.hook_normalized_grad" not in cache.cache_dict
    finally:
        model.set_use_split_qkv_input(False)
    _, cache = model.run_with_cache(inputs, names_filter=names[:1], incl_bwd=True, return_type="loss")
    assert cache["blocks.0.ln1.hook_normalized_grad"].abs().max() > 0
    with model.hooks(bwd_hooks=hook):
        model(inputs, return_type="loss").backward()
    assert len(fired) == 1
    model.zero_grad(set_to_none=True)


def test_switching_off_a_per_head_input_that_carries_a_hook_is_refused(model):
    """Was: the point was removed with its (permanent) hook, and switching back on gave a fresh point: the hook
    was gone without a word."""
    model.set_use_split_qkv_input(True)
    try:
        model.add_hook("blocks.0.hook_q_input", lambda x, hook: x, is_permanent=True)
        with pytest.raises(ValueError, match="blocks.0.hook_q_input still carry hooks"):
            model.set_use_split_qkv_input(False)
        assert model.attached_hook_names() == ["blocks.0.hook_q_input"]  # still attached, still on
        model.reset_hooks(including_permanent=True)
    finally:
        model.set_use_split_qkv_input(False)  # control: without hooks the switch goes off
    assert "blocks.0.hook_q_input" not in model.hook_dict
