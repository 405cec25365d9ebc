"""run_with_cache(cache_dtype=...) and activations streamed to safetensors shards (activation_store)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from conftest import AUDIO_TOKEN_ID, make_inputs
from safetensors import safe_open

from hooked_audio.activation_store import META_KEYS, ActivationStore, stream_activations
from hooked_audio.hook_points import to_cache

RESID, Z = "blocks.0.hook_resid_post", "blocks.1.attn.hook_z"


def batches():
    """Left-padded batches with different clip lengths and counts, and a text-only one."""
    return [
        make_inputs([[100], [60]], [4, 7], seed=1),
        make_inputs([[]], [5], seed=4),
        make_inputs([[80, 40], [100], [30]], [3, 5, 2], seed=2),
    ]


def expected_positions(inputs: dict, rule: str) -> list[list[int]]:
    """Per row, the positions a rule selects, computed from the raw ids and mask."""
    out = []
    for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()):
        real = [p for p, m in enumerate(mask) if m]
        audio = [p for p in real if ids[p] == AUDIO_TOKEN_ID]
        out.append({"all": real, "audio": audio, "text": [p for p in real if p not in audio], "last": real[-1:]}[rule])
    return out


@pytest.fixture(scope="module")
def store(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    return stream_activations(model, batches(), [RESID, "hook_audio_embeds", Z], out, positions="audio",
                              dtype=torch.float16, shard_size_mb=0.01)


# --- cache dtype -----------------------------------------------------------------------------------
def test_cache_dtype_equals_float32_cache_cast(model):
    inputs = make_inputs([[100], [60]], [4, 7], seed=1)
    names = [RESID, Z, "hook_audio_embeds", "audio_encoder.blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern"]
    _, full = model.run_with_cache(inputs, names_filter=names)
    _, half = model.run_with_cache(inputs, names_filter=names, cache_dtype=torch.bfloat16)
    assert set(full.keys()) == set(half.keys()) == set(names)
    for name in names:
        assert full[name].dtype == torch.float32 and half[name].dtype == torch.bfloat16
        assert torch.equal(half[name], full[name].to(torch.bfloat16)), name
    _, last = model.run_with_cache(inputs, names_filter=[RESID], cache_dtype=torch.float16, positions="last")
    assert torch.equal(last[RESID], full[RESID][:, -1:].to(torch.float16))


def test_cache_dtype_grads_and_non_floating(model):
    inputs = make_inputs([[100]], seed=1)
    _, cache = model.run_with_cache(inputs, names_filter=[RESID], cache_dtype=torch.bfloat16, incl_bwd=True,
                                    return_type="loss")
    assert cache[RESID].dtype == cache[RESID + "_grad"].dtype == torch.bfloat16
    ints = torch.arange(6).reshape(2, 3)
    assert to_cache(ints, None, torch.bfloat16).dtype == torch.long  # non-floating tensors are left alone
    assert to_cache(torch.ones(2), "cpu", torch.float16).dtype == torch.float16
    for bad in (torch.int64, torch.bool):
        with pytest.raises(TypeError, match="cache_dtype must be a floating torch dtype"):
            model.run_with_cache(inputs, names_filter=[RESID], cache_dtype=bad)


def test_a_cache_dtype_that_cannot_hold_a_value_is_refused_not_inf(model):
    """Was: a residual value above float16's 65504 (a "massive activation") was cached as inf without a word, and
    the lens then read 71 % NaN. Controls: bfloat16 holds it, and float16 caches the attention scores, whose masked
    entries (float32's minimum) become -inf by design."""
    inputs = make_inputs([[100]], seed=1)

    def massive(x, hook):
        x = x.clone()
        x[..., 0] = 7e4
        return x

    hooks = [("blocks.0.hook_resid_post", massive)]
    with model.hooks(fwd_hooks=hooks), pytest.raises(ValueError, match=r"blocks.0.hook_resid_post holds values up to 7e\+04, which torch.float16 cannot hold"):
        model.run_with_cache(inputs, names_filter=[RESID], cache_dtype=torch.float16)
    with model.hooks(fwd_hooks=hooks):
        _, wide = model.run_with_cache(inputs, names_filter=[RESID], cache_dtype=torch.bfloat16)
    assert bool(torch.isfinite(wide[RESID]).all())
    _, scores = model.run_with_cache(inputs, names_filter=["blocks.0.attn.hook_attn_scores"], cache_dtype=torch.float16)
    assert bool(torch.isinf(scores["blocks.0.attn.hook_attn_scores"]).any())


# --- streaming ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["audio", "last", "text", "all"])
def test_streamed_rows_and_metadata_equal_run_with_cache(model, tmp_path, rule):
    names = [RESID, Z] + (["hook_audio_embeds"] if rule == "audio" else [])
    store = stream_activations(model, batches(), names, tmp_path / rule, positions=rule, dtype=torch.bfloat16,
                               shard_size_mb=0.0006 if rule == "last" else 0.005)  # ~2 rows / ~17 rows a shard
    assert len(store.shards) >= 3 and store.names == names
    want = {name: [] for name in names}
    meta = {key: [] for key in META_KEYS}
    item = 0
    for batch in batches():
        inputs = model.to_inputs(batch)
        _, cache = model.run_with_cache(inputs, names_filter=names)  # float32, cast here
        times = inputs.token_times()
        chosen = expected_positions(batch, rule)
        audio_row = 0  # hook_audio_embeds: the audio tokens of all rows, row-major
        for row, row_positions in enumerate(chosen):
            ids = batch["input_ids"][row].tolist()
            starts = [p for p in range(len(ids)) if ids[p] == AUDIO_TOKEN_ID and (p == 0 or ids[p - 1] != AUDIO_TOKEN_ID)]
            for p in row_positions:
                is_audio = ids[p] == AUDIO_TOKEN_ID
                meta["clip_in_row"].append(sum(start <= p for start in starts) - 1 if is_audio else -1)
                want[RESID].append(cache[RESID][row, p])
                want[Z].append(cache[Z][row, p])
                meta["item"].append(item + row)
                meta["position"].append(p)
                meta["is_audio"].append(int(batch["input_ids"][row, p]) == AUDIO_TOKEN_ID)
                meta["start_s"].append(float(times[row, p, 0]))
                meta["end_s"].append(float(times[row, p, 1]))
            n = len(row_positions)
            if rule == "audio" and n:
                want["hook_audio_embeds"].extend(cache["hook_audio_embeds"][audio_row : audio_row + n])
                audio_row += n
        item += inputs.shape[0]
    assert len(store) == len(meta["item"]) > 0
    for name in names:
        expected = torch.stack(want[name]).to(torch.bfloat16)
        assert store.shape(name) == tuple(expected.shape) and store.dtype(name) == torch.bfloat16
        assert torch.equal(store.load(name), expected), name
    got = store.metadata()
    assert got["item"].tolist() == meta["item"] and got["position"].tolist() == meta["position"]
    assert got["is_audio"].tolist() == meta["is_audio"] and got["clip_in_row"].tolist() == meta["clip_in_row"]
    if rule in ("audio", "all"):
        assert 1 in meta["clip_in_row"]  # a row with two clips is told apart
    for key in ("start_s", "end_s"):
        assert torch.allclose(got[key], torch.tensor(meta[key]), equal_nan=True, atol=0, rtol=0)
        assert bool(got[key][~got["is_audio"]].isnan().all()) and not bool(got[key][got["is_audio"]].isnan().any())
    if rule == "last":
        assert got["item"].tolist() == list(range(6))  # one row per item, the text-only one included
    if rule == "audio":
        assert sorted(set(got["item"].tolist())) == [0, 1, 3, 4, 5]  # item 2 (text only) has no audio token


def test_stream_rows_equal_float16_run_with_cache(model, store):
    """The stored values are exactly what run_with_cache(cache_dtype=float16) caches."""
    rows = []
    for batch in batches():
        inputs = model.to_inputs(batch)
        _, cache = model.run_with_cache(inputs, names_filter=[RESID], cache_dtype=torch.float16)
        rows.append(cache[RESID][inputs.audio_mask])
    assert torch.equal(store.load(RESID), torch.cat(rows))


def test_shards_partition_the_rows(store):
    index = json.loads((store.out_dir / "index.json").read_text())
    assert index["complete"] and index["n_items"] == 6 and index["n_batches"] == 3
    assert index["positions"] == "audio" and index["dtype"] == "float16" and index["hooked_audio_version"]
    assert index["model"]["n_layers"] == 2 and index["activations"][Z]["shape"] == [len(store), 4, 16]
    shards = index["shards"]
    assert len(shards) >= 3 and shards[0]["start"] == 0 and shards[-1]["stop"] == len(store)
    assert all(a["stop"] == b["start"] for a, b in zip(shards, shards[1:]))
    parts = []
    for shard in shards:
        with safe_open(store.out_dir / shard["file"], framework="pt") as f:
            assert set(f.keys()) == {f"act.{n}" for n in store.names} | {f"meta.{k}" for k in META_KEYS}
            x = f.get_tensor(f"act.{RESID}")
            assert len(x) == shard["stop"] - shard["start"] == len(f.get_tensor("meta.item"))
            parts.append(x)
    full = store.load(RESID)
    assert torch.equal(torch.cat(parts), full)
    # ranges across shard boundaries, and the lazy view
    b = shards[1]["start"]
    assert torch.equal(store.load(RESID, b - 3, b + 2), full[b - 3 : b + 2])
    view = store[RESID]
    assert len(view) == len(store) and view.shape == full.shape and view.dtype == torch.float16
    assert torch.equal(view[b - 1 : b + 1], full[b - 1 : b + 1]) and torch.equal(view[-1], full[-1])
    assert torch.equal(view[::5], full[::5])
    pick = torch.tensor([len(full) - 1, 0, b, b - 1, 3])
    assert torch.equal(view[pick], full[pick])
    assert store.load(RESID, 5, 5).shape == (0, full.shape[1])
    meta = store.metadata(b - 2, b + 2)
    assert torch.equal(meta["position"], store.metadata()["position"][b - 2 : b + 2])


@pytest.mark.parametrize("shuffle,buffer_shards", [(False, 1), (True, 1), (True, 2)])
def test_iter_batches_covers_every_row_once(store, shuffle, buffer_shards):
    full = store.load(Z)
    out = list(store.iter_batches(Z, 10, shuffle=shuffle, seed=3, buffer_shards=buffer_shards, with_index=True))
    index = torch.cat([i for _, i in out])
    assert all(len(x) == 10 for x, _ in out[:-1]) and 0 < len(out[-1][0]) <= 10
    assert sorted(index.tolist()) == list(range(len(store)))
    assert torch.equal(torch.cat([x for x, _ in out]), full[index])
    assert (index.tolist() != list(range(len(store)))) == shuffle
    again = torch.cat([i for _, i in store.iter_batches(Z, 10, shuffle=shuffle, seed=3, buffer_shards=buffer_shards,
                                                         with_index=True)])
    assert torch.equal(again, index)  # seeded
    dropped = list(store.iter_batches(Z, 10, shuffle=shuffle, drop_last=True))
    assert all(len(x) == 10 for x in dropped) and len(dropped) == len(store) // 10


# --- refusals and reruns -----------------------------------------------------------------------------
def test_refusals(model, store, tmp_path):
    one = batches()[:1]
    with pytest.raises(KeyError, match="hook_resid_pots"):
        stream_activations(model, one, ["blocks.0.hook_resid_pots"], tmp_path / "a")
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.hook_pattern.*attention pattern"):
        stream_activations(model, one, [RESID, "blocks.0.attn.hook_pattern"], tmp_path / "a")
    with pytest.raises(ValueError, match=r"audio_encoder\.blocks\.0\.hook_resid_post.*encoder window"):
        stream_activations(model, one, ["audio_encoder.blocks.0.hook_resid_post"], tmp_path / "a")
    with pytest.raises(ValueError, match="hook_audio_embeds.*positions='audio'"):
        stream_activations(model, one, ["hook_audio_embeds"], tmp_path / "a", positions="last")
    with pytest.raises(ValueError, match="positions must be one of"):
        stream_activations(model, one, [RESID], tmp_path / "a", positions="middle")
    with pytest.raises(TypeError, match="floating"):
        stream_activations(model, one, [RESID], tmp_path / "a", dtype=torch.int8)
    with pytest.raises(ValueError, match="no token"):
        stream_activations(model, [make_inputs([[]], [5])], [RESID], tmp_path / "a")
    assert not (tmp_path / "a" / "index.json").exists()
    with pytest.raises(FileExistsError, match="not empty"):
        stream_activations(model, one, [RESID], store.out_dir)
    with pytest.raises(KeyError, match="not in this store"):
        store["blocks.1.hook_resid_post"]
    with pytest.raises(FileNotFoundError):
        ActivationStore(tmp_path)


def test_overwrite_resume_and_single_batch(model, tmp_path):
    out = tmp_path / "s"
    first = stream_activations(model, make_inputs([[100]], seed=1), RESID, out, positions="last", dtype=None)
    assert len(first) == 1 and first.dtype(RESID) == torch.float32
    same = make_inputs([[100]], seed=1)
    resumed = stream_activations(model, same, [RESID], out, positions="last", dtype=None, resume=True)  # finished: kept
    assert len(resumed) == 1 and torch.equal(resumed.load(RESID), first.load(RESID))
    # was: a finished store was returned for any batches, so a store of other inputs passed for these
    with pytest.raises(ValueError, match="batch 0 differs"):
        stream_activations(model, make_inputs([[100]], seed=2), [RESID], out, positions="last", dtype=None, resume=True)
    with pytest.raises(ValueError, match="2 batches were given, but the finished store .* was made of 1"):
        stream_activations(model, [same, same], [RESID], out, positions="last", dtype=None, resume=True)
    with pytest.raises(FileExistsError, match="differs in names"):
        stream_activations(model, same, [Z], out, positions="last", dtype=None, resume=True)
    with pytest.raises(FileExistsError, match="differs in dtype"):  # was: dtype=float16 kept a float32 store
        stream_activations(model, same, [RESID], out, positions="last", resume=True)
    other = copy.deepcopy(model)  # same config and name, other weights (a fine-tune): was resumed as the same model
    with torch.no_grad():
        other.blocks[0].mlp.gate.weight.mul_(0.5)
    with pytest.raises(FileExistsError, match="differs in model"):
        stream_activations(other, same, [RESID], out, positions="last", dtype=None, resume=True)
    (out / "notes.txt").write_text("kept")
    again = stream_activations(model, batches(), [RESID], out, positions="last", overwrite=True)
    assert len(again) == 6 and again.dtype(RESID) == torch.float16 and (out / "notes.txt").exists()
    # an interrupted run leaves an incomplete index that the loader refuses by default
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore(out)
    assert len(ActivationStore(out, allow_incomplete=True)) == 6


def test_toy_model_real_audio(tmp_path):
    from hooked_audio import HookedAudioTransformer
    from hooked_audio.toy import evaluate, tasks

    toy = HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
    samples = tasks.make_probe_set(0, 1, task_names=["pitch", "beeps"])[:2]
    samples[1] = dataclasses.replace(samples[1], waveform=samples[1].waveform[: 16000 * 2])  # a 2 s clip
    batch = evaluate.encode(toy.processor, samples)
    name = "blocks.1.hook_resid_post"
    store = stream_activations(toy, [batch], [name], tmp_path / "toy", dtype=torch.bfloat16, shard_size_mb=0.02)
    inputs = toy.to_inputs(batch)
    _, cache = toy.run_with_cache(inputs, names_filter=[name], cache_dtype=torch.bfloat16)
    assert len(store.shards) > 1 and torch.equal(store.load(name), cache[name][inputs.audio_mask])
    meta = store.metadata()
    for item, seconds in [(0, len(samples[0].waveform) / 16000), (1, 2.0)]:
        ends = meta["end_s"][meta["item"] == item]
        assert ends.max().item() == pytest.approx(seconds, abs=1e-5)
        assert torch.equal(meta["position"][meta["item"] == item], inputs.audio_positions[item])
    assert store.index["model"]["model_name"] == toy.cfg.model_name


def test_an_interrupted_run_resumes_where_it_stopped(model, tmp_path):
    """Stop a run after 3 of 6 batches (shards smaller than a batch's rows, so one runs past the last batch whose
    rows were written), resume it with the same batches: every row and its metadata equal an uninterrupted run's."""
    all_batches = [make_inputs([[100], [60]], text_lengths=[3 + s, 5], seed=s) for s in range(6)]
    names, size = [RESID, Z], 0.004
    whole = stream_activations(model, all_batches, names, tmp_path / "whole", positions="all", shard_size_mb=size)

    def stops_after(n):
        for i, batch in enumerate(all_batches):
            if i == n:
                raise KeyboardInterrupt
            yield batch

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        stream_activations(model, stops_after(3), names, out, positions="all", shard_size_mb=size)
    cut = json.loads((out / "index.json").read_text())
    point = cut["resume_point"]["n_rows"]
    assert not cut["complete"] and 0 < point and any(s["start"] < point < s["stop"] for s in cut["shards"])
    with pytest.raises(ValueError, match="batch 1 differs"):
        stream_activations(model, [all_batches[0], all_batches[4]] + all_batches[2:], names, out, positions="all",
                           shard_size_mb=size, resume=True)
    resumed = stream_activations(model, all_batches, names, out, positions="all", shard_size_mb=size, resume=True)
    assert len(resumed) == len(whole)
    for name in names:
        assert torch.equal(resumed.load(name), whole.load(name))
    for key, values in whole.metadata().items():
        assert torch.allclose(resumed.metadata()[key].double(), values.double(), equal_nan=True, rtol=0, atol=0)
    assert sorted(p.name for p in out.glob("shard_*")) == [s["file"] for s in resumed.shards]  # no stale shard left
    # control: without resume=True the interrupted folder is refused
    with pytest.raises(FileExistsError):
        stream_activations(model, all_batches, names, out, positions="all", shard_size_mb=size)


def test_values_float16_cannot_hold_are_refused(model, tmp_path):
    """Was: a residual stream beyond float16's 65504 was stored as inf, silently. Control: bfloat16 holds it."""
    loud = copy.deepcopy(model)
    with torch.no_grad():
        loud.embed.weight.mul_(1e6)
    inputs = make_inputs([[100]], [4], seed=1)
    with pytest.raises(ValueError, match="blocks.0.hook_resid_post holds values up to .* which torch.float16 cannot hold"):
        stream_activations(loud, inputs, [RESID], tmp_path / "f16", positions="text")
    kept = stream_activations(loud, inputs, [RESID], tmp_path / "bf16", positions="text", dtype=torch.bfloat16)
    assert bool(torch.isfinite(kept.load(RESID)).all()) and kept.load(RESID).float().abs().max() > 65504


def test_resume_refuses_a_model_with_hooks_attached(model, tmp_path):
    """Was: hooks added between an interruption and the resume wrote steered rows after unsteered ones in one
    store. The hook points attached are recorded; control: the same resume without the hook goes on."""
    all_batches = [make_inputs([[60]], [3 + s], seed=s) for s in range(3)]

    def stops_after_first():
        yield all_batches[0]
        raise KeyboardInterrupt

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        stream_activations(model, stops_after_first(), [RESID], out, positions="all", shard_size_mb=0.001)
    model.add_hook(RESID, lambda x, hook: x + 100.0)
    try:
        with pytest.raises(FileExistsError, match="differs in attached_hooks"):
            stream_activations(model, all_batches, [RESID], out, positions="all", shard_size_mb=0.001, resume=True)
    finally:
        model.reset_hooks(including_permanent=True)
    resumed = stream_activations(model, all_batches, [RESID], out, positions="all", shard_size_mb=0.001, resume=True)
    assert resumed.index["attached_hooks"] == [] and len(resumed) == sum(int(b["attention_mask"].sum()) for b in all_batches)
