"""TransformerLens's input switches: ``set_use_attn_in``, ``set_use_split_qkv_input``, ``set_use_hook_mlp_in``.

Their hook points exist only while switched on (so every listed point fires), in the decoder and the audio
encoder; with them on and nothing hooked the logits are the same on every family; an edit to one head's copy
changes only that head; TransformerLens 4's ``patching.get_act_patch_direct_path`` (which reads
``blocks.{l}.attn.hook_q_input``) equals a hand-written patch on an audio input; ``generate`` is unchanged.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import pytest
import torch
from conftest import make_hf_model, make_inputs, make_processor
from family_harness import assert_logits_match, build_pair
from test_family_contract import VARIANTS, inputs_of

from hooked_audio import HookedAudioTransformer

SPLIT = ("hook_q_input", "hook_k_input", "hook_v_input")
NEW_NAMES = ("hook_attn_in", *SPLIT, "hook_mlp_in")
MODES = {"split_qkv_input+mlp_in": ("split_qkv_input", "hook_mlp_in"), "attn_in+mlp_in": ("attn_in", "hook_mlp_in")}


@contextmanager
def switched_on(model: HookedAudioTransformer, *switches: str):
    """The given switches on for the block, always off again after (the models are shared between tests)."""
    setters = {"split_qkv_input": model.set_use_split_qkv_input, "attn_in": model.set_use_attn_in,
               "hook_mlp_in": model.set_use_hook_mlp_in}
    try:
        for name in switches:
            setters[name](True)
        yield model
    finally:
        for name in switches:
            setters[name](False)


@pytest.fixture(scope="module")
def gqa_model():
    """The tiny Qwen2-Audio with 4 query heads over 2 kv heads."""
    return HookedAudioTransformer.from_hf_model(make_hf_model(n_kv_heads=2), processor=make_processor()).eval()


def _new_points(model) -> set[str]:
    return {name for name in model.hook_dict if name.rsplit(".", 1)[-1] in NEW_NAMES}


def test_points_exist_only_while_switched_on_with_transformer_lens_shapes(gqa_model):
    model, inputs = gqa_model, make_inputs([[100, 40], [60]])
    cfg, n_names = model.cfg, len(model.hook_dict)
    assert not _new_points(model)
    with switched_on(model, "split_qkv_input", "hook_mlp_in"):
        assert cfg.use_split_qkv_input and cfg.use_hook_mlp_in and not cfg.use_attn_in
        _, cache = model.run_with_cache(**inputs)
        # every point, the new ones included, fires (hook_result only with use_attn_result, as in TransformerLens)
        assert {n for n in model.hook_dict if not n.endswith("hook_result")} <= set(cache.keys())
        batch, pos = inputs["input_ids"].shape
        for prefix in ("blocks.1.", "blocks.1.attn."):  # TransformerLens 2's name and TransformerLens 4's
            assert cache[prefix + "hook_q_input"].shape == (batch, pos, cfg.n_heads, cfg.d_model)
            # grouped-query attention: one copy per kv head, as TransformerLens's GroupedQueryAttention
            assert cache[prefix + "hook_k_input"].shape == (batch, pos, cfg.n_key_value_heads, cfg.d_model)
            assert cache[prefix + "hook_v_input"].shape == (batch, pos, cfg.n_key_value_heads, cfg.d_model)
        assert cache["blocks.1.hook_mlp_in"].shape == (batch, pos, cfg.d_model)
        torch.testing.assert_close(cache["blocks.1.hook_mlp_in"], cache["blocks.1.hook_resid_mid"])
        torch.testing.assert_close(cache["blocks.1.hook_q_input"][:, :, 3], cache["blocks.1.hook_resid_pre"])
        # ln1's own hooks keep the unsplit shape (what apply_ln_to_stack divides by)
        assert cache["blocks.1.ln1.hook_scale"].shape == (batch, pos, 1)
        # model-wide: the audio encoder's blocks too
        enc = cfg.audio
        assert cache["audio_encoder.blocks.0.attn.hook_k_input"].shape[2:] == (enc.n_heads, enc.d_model)
        assert "audio_encoder.blocks.0.hook_mlp_in" in cache
        with pytest.raises(ValueError, match="exclusive"):
            model.set_use_attn_in(True)
        assert not cfg.use_attn_in and "blocks.0.hook_attn_in" not in model.hook_dict  # refused before changing
    with switched_on(model, "attn_in"):
        _, cache = model.run_with_cache(**inputs, names_filter=lambda n: "attn_in" in n)
        assert cache["blocks.0.hook_attn_in"].shape == (batch, pos, cfg.n_heads, cfg.d_model)
        assert cache["audio_encoder.blocks.1.attn.hook_attn_in"].shape[2] == enc.n_heads
        assert {n.rsplit(".", 1)[-1] for n in _new_points(model)} == {"hook_attn_in"}
    assert not _new_points(model) and len(model.hook_dict) == n_names
    assert not (cfg.use_attn_in or cfg.use_split_qkv_input or cfg.use_hook_mlp_in)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec, variant", VARIANTS)
def test_switches_on_keep_the_logits_on_every_family(spec, variant, mode):
    _, model = build_pair(spec, variant)
    inputs = inputs_of(spec, "batch_mixed_clip_counts", seed=2)
    with torch.no_grad():
        off = model(**inputs)
        with switched_on(model, *MODES[mode]):
            assert _new_points(model)
            on = model(**inputs)
    assert_logits_match(off, on, inputs["attention_mask"], tol=1e-5)
    mask = inputs["attention_mask"].bool()
    print(f"{spec.name}-{variant} {mode}: max |on - off| = {(on - off)[mask].abs().max().item():.2e}")


def _edit_head(head: int, scale: float = 2.0):
    """Add a fixed random direction to one head's copy (a constant shift would vanish in a LayerNorm)."""

    def hook(x, hook):
        x = x.clone()
        x[:, :, head] += scale * torch.randn(x.shape[-1], generator=torch.Generator().manual_seed(head))
        return x

    return hook


@pytest.mark.parametrize("name", ["blocks.1.hook_q_input", "blocks.1.attn.hook_q_input"])
def test_editing_one_heads_q_input_changes_only_that_heads_query(gqa_model, name):
    model, inputs = gqa_model, make_inputs([[100]], text_lengths=[5])
    q = "blocks.1.attn.hook_q"
    with switched_on(model, "split_qkv_input"):
        _, clean = model.run_with_cache(**inputs, names_filter=q)
        with model.hooks([(name, _edit_head(2))]):
            logits, edited = model.run_with_cache(**inputs, names_filter=[q, "blocks.1.attn.hook_k"])
    change = (edited[q] - clean[q]).abs().amax(dim=(0, 1, 3))
    assert change[2] > 0.1 and change[[0, 1, 3]].max() == 0
    assert logits.abs().sum() > 0


def test_editing_one_kv_input_changes_only_that_kv_head(gqa_model):
    model, inputs = gqa_model, make_inputs([[100]], text_lengths=[5])
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v"]
    with switched_on(model, "split_qkv_input"):
        _, clean = model.run_with_cache(**inputs, names_filter=names)
        with model.hooks([("blocks.0.hook_k_input", _edit_head(1))]):
            _, edited = model.run_with_cache(**inputs, names_filter=names)
    k_change = (edited[names[1]] - clean[names[1]]).abs().amax(dim=(0, 1, 3))
    assert k_change[1] > 0.1 and k_change[0] == 0
    assert torch.equal(edited[names[0]], clean[names[0]]) and torch.equal(edited[names[2]], clean[names[2]])


def test_attn_in_feeds_each_head_and_under_gqa_each_kv_head_its_first_query_head(gqa_model):
    """kv head g reads the copy of query head g * n_heads // n_key_value_heads (here 0 and 2): an edit to head 1
    moves only q of head 1; an edit to head 2 moves q of head 2 and kv head 1."""
    model, inputs = gqa_model, make_inputs([[100]], text_lengths=[5])
    names = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_v"]
    with switched_on(model, "attn_in"):
        _, clean = model.run_with_cache(**inputs, names_filter=names)
        for head, q_heads, kv_heads in [(1, [1], []), (2, [2], [1])]:
            with model.hooks([("blocks.1.hook_attn_in", _edit_head(head))]):
                _, edited = model.run_with_cache(**inputs, names_filter=names)
            moved = [(edited[n] - clean[n]).abs().amax(dim=(0, 1, 3)) > 0 for n in names]
            assert moved[0].nonzero().flatten().tolist() == q_heads
            assert moved[1].nonzero().flatten().tolist() == kv_heads == moved[2].nonzero().flatten().tolist()


def test_an_encoder_head_input_edit_reaches_only_that_encoder_head(model):
    inputs = make_inputs([[100]])
    z = "audio_encoder.blocks.1.attn.hook_z"
    with switched_on(model, "attn_in"):
        _, clean = model.run_with_cache(**inputs, names_filter=z)
        with model.hooks([("audio_encoder.blocks.1.attn.hook_attn_in", _edit_head(0))]):
            logits, edited = model.run_with_cache(**inputs, names_filter=z)
        base = model(**inputs)
    change = (edited[z] - clean[z]).abs().amax(dim=(0, 1, 3))
    assert change[0] > 0.01 and change[1:].max() == 0
    assert (logits - base).abs().max() > 1e-4  # and the decoder hears it


def test_mlp_in_edit_changes_the_mlp_input_not_the_skip(model):
    inputs = make_inputs([[60]], text_lengths=[4])
    names = ["blocks.0.hook_mlp_out", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"]
    delta = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with switched_on(model, "hook_mlp_in"):
        with model.hooks([("blocks.0.hook_mlp_in", lambda x, hook: x + delta)]):
            _, cache = model.run_with_cache(**inputs, names_filter=names)
    with torch.no_grad():
        expected = model.blocks[0].mlp(model.blocks[0].ln2(cache["blocks.0.hook_resid_mid"] + delta))
    torch.testing.assert_close(cache["blocks.0.hook_mlp_out"], expected)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_mid"] + expected)


def test_hooking_both_names_of_one_input_is_refused(model):
    inputs = make_inputs([[60]])
    with switched_on(model, "split_qkv_input"):
        with pytest.raises(ValueError, match="would apply twice"):
            model.run_with_hooks(**inputs, fwd_hooks=[(lambda n: n.endswith("blocks.0.hook_q_input")
                                                       or n.endswith("blocks.0.attn.hook_q_input"),
                                                       lambda x, hook: x)])
        model(**inputs)  # and nothing is left behind


@pytest.fixture(scope="module")
def toy():
    """The bundled toy organism (trained: its audio matters), 4 query heads over 2 kv heads."""
    return HookedAudioTransformer.from_pretrained("toy-qwen2-audio").eval()


def test_transformer_lens_direct_path_patching_equals_a_hand_written_patch_on_audio(toy):
    """TL 4's ``get_act_patch_direct_path`` (it switches ``use_split_qkv_input`` on and hooks
    ``blocks.{l}.attn.hook_q_input``) on a toy pitch clip against silence, from head (1, 0); the layer-2 cell
    where the path matters most recomputed by hand with the switches off: that head's query from
    ln1(silence run's resid_pre + the source head's clean-minus-silence write)."""
    from transformer_lens.patching import get_act_patch_direct_path

    from hooked_audio.analysis.audiolens import label_token_ids
    from hooked_audio.toy import evaluate, tasks

    labels = list(tasks.TASKS_BY_NAME["pitch"].answers)
    sample = next(s for s in tasks.make_probe_set(seed=5, n_per_task=4, task_names=["pitch"]) if s.hint is None)
    clean = toy.to_inputs(evaluate.encode(toy.processor, [sample]))
    silence = {k: torch.full_like(v, -0.8) if k == "input_features" else v for k, v in clean.audio.items()}
    corrupt = dataclasses.replace(clean, audio=silence)
    ids = label_token_ids(toy, labels)
    last = int(clean.last_positions[0])
    metric = lambda logits: logits[0, last, ids[0]] - logits[0, last, ids[1]]  # noqa: E731
    _, clean_cache = toy.run_with_cache(clean)
    _, corrupt_cache = toy.run_with_cache(corrupt)
    src_layer, src_head, dst_layer = 1, 0, 2
    with torch.no_grad():
        unpatched, full = metric(toy(corrupt)), metric(toy(clean))
    result = get_act_patch_direct_path(
        toy, corrupt, clean_cache, corrupt_cache, metric, src_layer=src_layer, src_head=src_head, verbose=False
    )
    assert result.shape == (toy.cfg.n_layers, toy.cfg.n_heads) and result[:dst_layer].abs().max() == 0
    assert not toy.cfg.use_split_qkv_input and f"blocks.{dst_layer}.attn.hook_q_input" not in toy.hook_dict
    dst_head = int((result[dst_layer] - unpatched).abs().argmax())

    block = toy.blocks[dst_layer]
    W_O = toy.blocks[src_layer].attn.W_O[src_head]
    z = f"blocks.{src_layer}.attn.hook_z"
    delta = clean_cache[z][:, :, src_head] @ W_O - corrupt_cache[z][:, :, src_head] @ W_O
    held = {}

    def keep_resid(x, hook):
        held["resid"] = x

    def patch_q(q, hook):
        q = q.clone()
        q[:, :, dst_head] = block.ln1(held["resid"] + delta) @ block.attn.W_Q[dst_head] + block.attn.b_Q[dst_head]
        return q

    with torch.no_grad():
        by_hand = metric(toy.run_with_hooks(corrupt, fwd_hooks=[
            (f"blocks.{dst_layer}.hook_resid_pre", keep_resid), (f"blocks.{dst_layer}.attn.hook_q", patch_q)
        ]))
    print(f"direct path ({src_layer},{src_head})->({dst_layer},{dst_head}) q: "
          f"TL {result[dst_layer, dst_head].item():.7f} by hand {by_hand.item():.7f}; unpatched {unpatched.item():.5f}, clean {full.item():.5f}")
    torch.testing.assert_close(result[dst_layer, dst_head], by_hand, atol=1e-5, rtol=0)
    assert (by_hand - unpatched).abs() > 1e-3  # the path matters


def test_transformer_lens_head_patching_runs_with_the_switches_on(model):
    from transformer_lens.patching import get_act_patch_attn_head_out_all_pos

    raw = make_inputs([[100]], text_lengths=[4], seed=5)
    clean, corrupt = model.to_inputs(**raw), model.to_inputs(**dict(raw, input_features=raw["input_features"] * 0.5))
    metric = lambda logits: logits[0, -1, 7]  # noqa: E731
    _, clean_cache = model.run_with_cache(clean)
    off = get_act_patch_attn_head_out_all_pos(model, corrupt, clean_cache, metric)
    with switched_on(model, "split_qkv_input", "hook_mlp_in"):
        _, clean_cache = model.run_with_cache(clean)
        on = get_act_patch_attn_head_out_all_pos(model, corrupt, clean_cache, metric)
    torch.testing.assert_close(on, off, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_generate_gives_the_same_tokens_with_the_switches_on(gqa_model, mode):
    inputs = make_inputs([[100, 40], [60]], text_lengths=[3, 6], seed=7)
    kwargs = dict(max_new_tokens=6, eos_token_id=[], return_logits=True)
    tokens, logits = gqa_model.generate(**inputs, **kwargs)
    with switched_on(gqa_model, *MODES[mode]):
        tokens_on, logits_on = gqa_model.generate(**inputs, **kwargs)
        uncached, _ = gqa_model.generate(**inputs, **kwargs, use_past_kv_cache=False)
    assert torch.equal(tokens, tokens_on) and torch.equal(tokens, uncached)
    torch.testing.assert_close(logits_on, logits, atol=1e-5, rtol=0)
