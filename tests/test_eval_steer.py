"""``evaluate(steer=...)`` / ``hooked-audio eval --steer SPEC`` on the bundled toy: scale 0 changes nothing,
a steer equals the same ``steering_hook`` applied by hand (the whole-run ``fwd_hooks`` path, or per batch
for audio positions), generated answers change and equal the uncached generation with the same hooks,
resuming with another steer is refused, and bad SPECs are usage errors before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch

from hooked_audio.analysis import steering_hook
from hooked_audio.datasets import load_dataset
from hooked_audio.evaluation.runner import ResumeError, _build, evaluate, make_batches, prompt_template
from hooked_audio.evaluation.scoring import first_token_ids, restricted_choice
from hooked_audio.evaluation.steer import SteerError, Steer, parse_steer, positions_for, steering_hooks
from hooked_audio.toy.tasks import make_probe_set
from test_eval_runner import no_model_load, run_cli  # noqa: F401  (no_model_load is a fixture)

LAYER = 0
NAME = f"blocks.{LAYER}.hook_resid_post"


@pytest.fixture(scope="module")
def toy():
    from hooked_audio.loading import from_pretrained

    return from_pretrained("toy-qwen2-audio")


@pytest.fixture(scope="module")
def data(tmp_path_factory, toy):
    """Four toy pitch clips (two of each answer, two lengths) and the low-minus-high mean residual at
    the audio positions of layer 0 (the tutorial's steering direction), saved as .pt."""
    folder = tmp_path_factory.mktemp("steer")
    samples = [s for s in make_probe_set(7, 8, task_names=["pitch"]) if s.hint is None]
    picked = [s for s in samples if s.answer == "low"][:2] + [s for s in samples if s.answer == "high"][:2]
    rows = []
    for i, sample in enumerate(picked):
        wave = sample.waveform if i % 2 else sample.waveform[: len(sample.waveform) * 3 // 4]
        soundfile.write(folder / f"clip{i}.wav", wave, 16000)
        rows.append({"audio": f"clip{i}.wav", "question": sample.question, "answer": sample.answer,
                     "choices": ["low", "high"]})
    manifest = folder / "pitch.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset(f"manifest:{manifest}")
    means = {}
    with torch.no_grad():
        for answer in ("low", "high"):
            inputs = _build(toy, [item for item in ds if item.answer == answer], "{question}")
            _, cache = toy.run_with_cache(inputs, names_filter=[NAME])
            means[answer] = cache[NAME][inputs.audio_mask].mean(0)
    direction = means["low"] - means["high"]
    torch.save(direction, folder / "direction.pt")
    return {"folder": folder, "manifest": manifest, "ds": ds, "direction": direction, "pt": folder / "direction.pt"}


def lines(path):
    return [json.loads(line) for line in open(path)]


def spec(data, **keys):
    return ",".join(f"{k}={v}" for k, v in ({"layer": LAYER, "file": data["pt"]} | keys).items())


# --- the SPEC ---------------------------------------------------------------------------------------------


def test_spec_parses_every_vector_file_kind_to_the_same_vector(data):
    direction = data["direction"]
    folder = data["folder"]
    np.save(folder / "d.npy", direction.numpy())
    from safetensors.torch import save_file

    save_file({"direction": direction}, str(folder / "d.safetensors"))
    save_file({"a": direction, "b": -direction}, str(folder / "two.safetensors"))
    torch.save({"direction": direction[None]}, folder / "dict.pt")  # a [1, d_model] vector in a dict
    steer = parse_steer(f"layer=1,file={data['pt']},scale=-2.5,positions=last,hook=resid_pre")
    assert (steer.layer, steer.scale, steer.positions, steer.hook) == (1, -2.5, "last", "resid_pre")
    assert steer.hook_name == "blocks.1.hook_resid_pre"
    for path in ("d.npy", "d.safetensors", "dict.pt", "two.safetensors,key=b"):
        vector = parse_steer(f"layer=0,file={folder / path}").vector
        assert torch.equal(vector, -direction if path.endswith("key=b") else direction), path
    defaults = parse_steer(f"layer=0,file={data['pt']}")
    assert (defaults.scale, defaults.positions, defaults.hook) == (1.0, "all", "resid_post")
    assert defaults.config()["vector_sha256"] == parse_steer(f"layer=0,file={folder / 'd.npy'}").config()["vector_sha256"]


def test_positions_cover_the_prompt_and_the_generated_tokens(toy, data):
    """"audio" steers the prompt's audio, "text" its real text tokens and every generated token, "last" the
    prompt's last position and every generated token: the hooks give what masks written out by hand give, in
    generate; control: the three differ from each other."""
    inputs = _build(toy, list(data["ds"])[:2], "{question}")  # two lengths: the shorter row is left-padded
    n_prompt, direction = inputs.shape[1], data["direction"]
    assert positions_for("all", inputs, 3) is None
    generated = torch.zeros(2, n_prompt + 3, dtype=torch.bool)
    generated[:, n_prompt:] = True
    last = generated.clone()
    last[:, n_prompt - 1] = True
    text = generated.clone()
    text[:, :n_prompt] = inputs.text_mask
    assert not (text[:, :n_prompt] & inputs.audio_mask).any() and not text[0, 0]  # neither audio nor padding
    by_hand = {"audio": inputs.audio_mask, "text": text, "last": last}
    outputs = {}
    for where, mask in by_hand.items():
        steer = Steer(LAYER, direction, 2.0, where)
        outputs[where] = toy.generate(inputs, max_new_tokens=3, return_logits=True,
                                      fwd_hooks=steering_hooks([steer], inputs, 3))[1]
        expected = toy.generate(inputs, max_new_tokens=3, return_logits=True,
                                fwd_hooks=[(NAME, steering_hook(direction, 2.0, positions=mask))])[1]
        torch.testing.assert_close(outputs[where], expected, rtol=0, atol=0)
    assert (outputs["audio"] - outputs["text"]).abs().max() > 1e-3
    assert (outputs["text"] - outputs["last"]).abs().max() > 1e-3


# --- the runner -------------------------------------------------------------------------------------------


def test_scale_zero_gives_the_unsteered_results(toy, data, tmp_path):
    plain = str(tmp_path / "plain.jsonl")
    zero = str(tmp_path / "zero.jsonl")
    evaluate(toy, data["ds"], plain, batch_size=2, progress=False)
    evaluate(toy, data["ds"], zero, batch_size=2, progress=False,
             steer=[spec(data, scale=0, positions="audio"), spec(data, scale=0, positions="all")])
    assert open(zero).read() == open(plain).read()
    assert "steer" not in json.load(open(plain + ".meta.json"))["config"]
    recorded = json.load(open(zero + ".meta.json"))["config"]["steer"]
    assert [(s["positions"], s["scale"], s["layer"], s["hook"]) for s in recorded] == [
        ("audio", 0.0, 0, "resid_post"), ("all", 0.0, 0, "resid_post")]


def test_steer_equals_the_same_steering_hook_by_hand(toy, data, tmp_path):
    ds, direction = data["ds"], data["direction"]
    # positions=all: the same as a --hooks function returning steering_hook over the whole run
    steered = str(tmp_path / "all.jsonl")
    by_hooks = str(tmp_path / "hooks.jsonl")
    evaluate(toy, ds, steered, batch_size=2, progress=False, steer=spec(data, scale=0.5))
    evaluate(toy, ds, by_hooks, batch_size=2, progress=False, fwd_hooks=[(NAME, steering_hook(direction, 0.5))])
    assert open(steered).read() == open(by_hooks).read()
    plain = str(tmp_path / "plain.jsonl")
    evaluate(toy, ds, plain, batch_size=2, progress=False)
    assert [r["choice_logprobs"] for r in lines(plain)] != [r["choice_logprobs"] for r in lines(steered)]

    # positions=audio: each batch's own audio mask, by hand
    audio = str(tmp_path / "audio.jsonl")
    evaluate(toy, ds, audio, batch_size=2, progress=False, steer=spec(data, scale=1, positions="audio"))
    records = {r["id"]: r for r in lines(audio)}
    with torch.no_grad():
        for batch in make_batches(ds.items, 2):
            inputs = _build(toy, batch, prompt_template("plain"))
            logits = toy.run_with_hooks(inputs, fwd_hooks=[(NAME, steering_hook(direction, 1.0, inputs.audio_mask))])
            for row, item in enumerate(batch):
                expected = restricted_choice(logits[row, -1], first_token_ids(toy.tokenizer, item.choices), item.choices)
                assert records[item.id]["choice_logprobs"] == expected["choice_logprobs"]
                assert records[item.id]["prediction"] == expected["prediction"]
    assert [r["prediction"] for r in lines(plain)] != [r["prediction"] for r in lines(audio)]
    assert all(r["prediction"] == "low" for r in records.values())  # pushed toward "low": the high clips flip


def test_generated_answers_are_steered_and_equal_the_uncached_generation(toy, data, tmp_path):
    """positions=last: the answer position and every generated token. The runner generates with the KV
    cache; the same hooks without it give the same tokens, and the answers differ from unsteered ones."""
    ds, direction = data["ds"], data["direction"]
    plain = str(tmp_path / "plain.jsonl")
    steered = str(tmp_path / "last.jsonl")
    evaluate(toy, ds, plain, scoring="exact", max_new_tokens=3, batch_size=2, progress=False)
    # measured: the unsteered answers up to scale 1, "low" on every clip at 2, "low low low" on every clip from 6
    # (the listener it replaced: from 8)
    evaluate(toy, ds, steered, scoring="exact", max_new_tokens=3, batch_size=2, progress=False,
             steer=spec(data, scale=16, positions="last"))
    generated = {r["id"]: r["generated"] for r in lines(steered)}
    assert generated != {r["id"]: r["generated"] for r in lines(plain)}
    steer = Steer(layer=LAYER, vector=direction, scale=16.0, positions="last")
    with torch.no_grad():
        for batch in make_batches(ds.items, 2):
            inputs = _build(toy, batch, prompt_template("plain"))
            hooks = steering_hooks([steer], inputs, max_new_tokens=3)
            cached = toy.generate(inputs, max_new_tokens=3, fwd_hooks=hooks)
            uncached = toy.generate(inputs, max_new_tokens=3, fwd_hooks=hooks, use_past_kv_cache=False)
            assert torch.equal(cached, uncached)
            texts = toy.tokenizer.batch_decode(cached[:, inputs.shape[1]:], skip_special_tokens=True)
            assert [t.strip() for t in texts] == [generated[item.id] for item in batch]


def test_resume_with_another_steer_is_refused(toy, data, tmp_path):
    ds = data["ds"]
    out = str(tmp_path / "r.jsonl")
    evaluate(toy, ds, out, batch_size=2, progress=False, limit=1, steer=spec(data, scale=2, positions="audio"))
    for other, what in ((spec(data, scale=3, positions="audio"), "scale"),
                        (spec(data, scale=2, positions="text"), "positions"), (None, "steer: was")):
        with pytest.raises(ResumeError, match="steer"):
            evaluate(toy, ds, out, batch_size=2, progress=False, steer=other)
    summary = evaluate(toy, ds, out, batch_size=2, progress=False, steer=spec(data, scale=2, positions="audio"))
    assert summary["complete"] and summary["this_run"]["items"] == 2
    plain = str(tmp_path / "plain.jsonl")
    evaluate(toy, ds, plain, batch_size=2, progress=False, limit=1)
    with pytest.raises(ResumeError, match="steer"):
        evaluate(toy, ds, plain, batch_size=2, progress=False, steer=spec(data, scale=2))
    with pytest.raises(SteerError, match="out of range"):
        evaluate(toy, ds, str(tmp_path / "x.jsonl"), progress=False, steer="layer=99,file=" + str(data["pt"]))


# --- the command (run_cli and the no_model_load fixture come from test_eval_runner) ---------------------


def test_bad_specs_are_usage_errors_before_loading(data, tmp_path, no_model_load, capsys):
    folder = tmp_path
    torch.save(torch.zeros(7), folder / "narrow.pt")
    bad = torch.zeros(160)
    bad[3] = float("nan")
    torch.save(bad, folder / "nan.pt")
    torch.save(torch.zeros(2, 160), folder / "matrix.pt")
    torch.save({"a": torch.zeros(160), "b": torch.zeros(160)}, folder / "two.pt")
    (folder / "junk.pt").write_bytes(b"not a tensor")
    (folder / "d.txt").write_text("1 2 3")
    pt = data["pt"]
    cases = [
        (f"layer=0,file={pt},colour=red", "unknown key 'colour'"),
        (f"layer=0,file={pt},scale=4,scale=5", "given twice"),
        (f"file={pt}", "missing layer"),
        ("layer=0", "missing file"),
        (f"layer=zero,file={pt}", "not a whole number"),
        (f"layer=1_0,file={pt}", "layer='1_0' is not a whole number"),  # int() would read layer 10
        (f"layer=1.0,file={pt}", "not a whole number"),
        (f"layer=-1,file={pt}", ">= 0"),
        (f"layer=6,file={pt}", "layer=6 is out of range: the model has layers 0..5"),
        (f"layer=0,file={pt},scale=big", "not a number"),
        (f"layer=0,file={pt},scale=1_0", "scale='1_0' is not a number"),
        (f"layer=0,file={pt},scale=nan", "finite"),
        (f"layer=0,file={pt},positions=middle", "positions='middle' is not one of audio|text|last|all"),
        (f"layer=0,file={pt},hook=attn", "hook='attn'"),
        (f"layer=0,file={pt},audio", "is not key=value"),
        (f"layer=0,file={folder / 'none.pt'}", "no such file"),
        (f"layer=0,file={folder / 'narrow.pt'}", "has 7 entries but the model's d_model is 160"),
        (f"layer=0,file={folder / 'nan.pt'}", "1 NaN or inf entries"),
        (f"layer=0,file={folder / 'matrix.pt'}", "one vector of d_model entries, got shape (2, 160)"),
        (f"layer=0,file={folder / 'two.pt'}", "name one with key=NAME"),
        (f"layer=0,file={folder / 'two.pt'},key=c", "no tensor key='c'"),
        (f"layer=0,file={folder / 'junk.pt'}", "cannot read it"),
        (f"layer=0,file={folder / 'd.txt'}", "unknown kind '.txt'"),
    ]
    out = str(tmp_path / "r.jsonl")
    for text, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["eval", "--dataset", f"manifest:{data['manifest']}", "--out", out, "--steer", f"layer=0,file={pt}",
                     "--steer", text])
        assert exit_info.value.code == 2, text
        err = capsys.readouterr().err
        assert "--steer" in err and message in err, (text, err)


def test_cli_steer_writes_the_api_results_and_refuses_another_steer(toy, data, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    steers = [spec(data, scale=0.5, positions="audio"), spec(data, scale=1, positions="last", hook="resid_pre")]
    argv = ["eval", "--dataset", f"manifest:{data['manifest']}", "--out", str(out), "--batch-size", "2", "--no-progress"]
    assert run_cli(argv + [a for s in steers for a in ("--steer", s)]) == 0
    capsys.readouterr()
    api = str(tmp_path / "api.jsonl")
    evaluate(toy, data["ds"], api, model_name="toy-qwen2-audio", batch_size=2, progress=False, steer=steers)
    assert open(out).read() == open(api).read()
    assert json.load(open(str(out) + ".meta.json"))["config"] == json.load(open(api + ".meta.json"))["config"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(argv + ["--steer", steers[0]])  # one steer fewer
    assert exit_info.value.code == 2 and "other settings (steer" in capsys.readouterr().err


def test_help_teaches_steer(capsys):
    with pytest.raises(SystemExit):
        run_cli(["eval", "--help"])
    text = capsys.readouterr().out
    assert "--steer layer=" in text and "positions" in text and "audio|text|last|all" in text
