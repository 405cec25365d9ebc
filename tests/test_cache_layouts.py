"""The cache knows each activation's layout (batch row, audio token, encoder window, position) and keeps rows,
positions and audio metadata aligned through every batch and position operation; patching between runs
whose audio sits elsewhere is refused; concurrent calls from threads never mix."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import make_inputs
from transformer_lens import patching


def test_remove_batch_dim_keeps_every_audio_token_and_window(model):
    inputs = make_inputs([[100, 40]])
    _, full = model.run_with_cache(**inputs)
    _, single = model.run_with_cache(**inputs, remove_batch_dim=True)
    n_audio = int(full.inputs.audio_mask.sum())
    assert single["hook_audio_embeds"].shape[0] == n_audio == 35
    torch.testing.assert_close(single["hook_audio_embeds"], full["hook_audio_embeds"])
    torch.testing.assert_close(single["audio_encoder.hook_out"], full["audio_encoder.hook_out"])  # both clips
    torch.testing.assert_close(single["resid_post", 1], full["resid_post", 1][0])
    torch.testing.assert_close(single.audio_positions, full.audio_positions[0])
    assert [len(s) for s in single.audio_spans] == [25, 10]
    assert int(single.last_positions) == inputs["input_ids"].shape[1] - 1
    torch.testing.assert_close(single.token_times(), full.token_times()[0], equal_nan=True)


def test_batch_slice_takes_each_rows_own_audio_and_metadata(model):
    inputs = make_inputs([[100, 40], [60], [80]], text_lengths=[3, 5, 4])
    _, full = model.run_with_cache(**inputs)
    middle = full.apply_slice_to_batch_dim([1])
    # row 1 on its own: its tokens, and its clip (feature row 2, after row 0's two clips)
    _, ref = model.run_with_cache(**{k: v[1:2] if k in ("input_ids", "attention_mask") else v[2:3] for k, v in inputs.items()})
    torch.testing.assert_close(middle["hook_audio_embeds"], ref["hook_audio_embeds"])
    torch.testing.assert_close(middle["audio_encoder.hook_out"], ref["audio_encoder.hook_out"])
    torch.testing.assert_close(middle["resid_post", 1], full["resid_post", 1][1:2])
    assert middle.inputs.shape == (1, inputs["input_ids"].shape[1])
    assert [len(s) for row in middle.audio_spans for s in row] == [15] == [len(s) for s in ref.audio_spans[0]]
    torch.testing.assert_close(middle.last_positions, full.last_positions[1:2])
    torch.testing.assert_close(middle.inputs.audio["input_features"], inputs["input_features"][2:3])
    outer = full.apply_slice_to_batch_dim([0, 2])
    assert outer["hook_audio_embeds"].shape[0] == 25 + 10 + 20 and outer["audio_encoder.hook_out"].shape[0] == 3


def test_a_positions_cache_describes_its_own_positions(model):
    inputs = make_inputs([[100]])
    _, full = model.run_with_cache(**inputs)
    _, audio = model.run_with_cache(**inputs, positions="audio")
    where = full.audio_positions[0]
    assert audio.audio_positions[0].tolist() == list(range(25))
    torch.testing.assert_close(audio.positions, where)
    torch.testing.assert_close(audio["resid_pre", 1], full["resid_pre", 1][:, where])
    torch.testing.assert_close(audio["pattern", 0], full["pattern", 0][:, :, where][..., where])
    torch.testing.assert_close(audio.token_times(), full.token_times()[:, where])
    torch.testing.assert_close(audio["hook_audio_embeds"], full["hook_audio_embeds"])
    with pytest.raises(ValueError, match="does not hold the last position"):
        audio.last_positions
    _, last = model.run_with_cache(**inputs, positions="last")
    assert last.last_positions.tolist() == [0] and last["hook_audio_embeds"].shape[0] == 0
    assert last.audio_positions[0].numel() == 0
    resid = lambda name: name.endswith("hook_resid_post")  # noqa: E731
    _, tl_style = model.run_with_cache(**inputs, pos_slice=-1, names_filter=resid)
    torch.testing.assert_close(tl_style["resid_post", 1], last["resid_post", 1])
    _, first_five = model.run_with_cache(**inputs, pos_slice=(0, 5), names_filter=resid)  # TL: a tuple is slice(0, 5)
    torch.testing.assert_close(first_five["resid_post", 1], full["resid_post", 1][:, :5])
    with pytest.raises(ValueError, match="TransformerLens slices their query axis only"):
        model.run_with_cache(**inputs, pos_slice=-1)  # patterns too: TL would keep their key axis whole


def test_out_of_range_positions_fail_before_the_forward(model):
    inputs = make_inputs([[100]])
    calls = []
    model.add_hook("hook_embed", lambda x, hook: calls.append(1))
    try:
        with pytest.raises(IndexError, match="outside the input's"):
            model.run_with_cache(**inputs, positions=[1000])
        with pytest.raises(ValueError, match="selects no position"):
            model.run_with_cache(**inputs, positions=[])
    finally:
        model.reset_hooks(including_permanent=True)
    assert calls == []


def test_patching_between_runs_with_different_audio_layouts_is_refused(model):
    clean = make_inputs([[100]], text_lengths=[4], seed=1)
    shifted = make_inputs([[96]], text_lengths=[5], seed=2)  # 24 audio tokens one position later: same length
    assert clean["input_ids"].shape == shifted["input_ids"].shape
    _, clean_cache = model.run_with_cache(**clean)
    shifted_input = model.to_inputs(**shifted)
    with pytest.raises(ValueError, match="audio positions differ"):
        patching.get_act_patch_resid_pre(model, shifted_input, clean_cache, lambda logits: logits[0, -1, 0])
    shorter = model.to_inputs(**make_inputs([[60]], seed=3))
    with pytest.raises(ValueError, match="audio positions differ"):
        patching.get_act_patch_resid_pre(model, shorter, clean_cache, lambda logits: logits[0, -1, 0])
    # the same layout (other audio, same lengths) still patches
    same_layout = model.to_inputs(**dict(clean, input_features=torch.randn_like(clean["input_features"])))
    result = patching.get_act_patch_resid_pre(model, same_layout, clean_cache, lambda logits: logits[0, -1, 0])
    assert result.shape == (model.cfg.n_layers, clean["input_ids"].shape[1])


def test_threads_never_see_each_others_hooks_or_caches(model):
    a, b = make_inputs([[100]], seed=4), make_inputs([[60]], text_lengths=[7], seed=5)
    ref_a, ref_b = model.run_with_cache(**a)[1], model.run_with_cache(**b)[1]
    results, errors, fired_in_b = {}, [], []
    inside_a = threading.Event()

    def run_a():
        try:
            def slow(x, hook):
                inside_a.set()
                threading.Event().wait(0.2)
                return x

            with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", slow)]):
                results["a"] = model.run_with_cache(**a)[1]
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def run_b():
        inside_a.wait(5)
        model.add_hook("blocks.0.hook_resid_post", lambda x, hook: fired_in_b.append(x.shape[1]))
        try:
            results["b"] = model.run_with_cache(**b)[1]
        finally:
            model.reset_hooks(including_permanent=True)

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    torch.testing.assert_close(results["a"]["resid_post", 1], ref_a["resid_post", 1])
    torch.testing.assert_close(results["b"]["resid_post", 1], ref_b["resid_post", 1])
    assert set(results["a"].keys()) == set(ref_a.keys())
    assert fired_in_b == [b["input_ids"].shape[1]]  # B's hook ran once, on B's own forward
