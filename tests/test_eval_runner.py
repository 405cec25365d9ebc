"""The evaluation runner on the bundled toy model: plausible accuracy on toy clips with known answers,
resuming after an interruption gives exactly the uninterrupted results, settings are checked, and the
command's usage errors come before the model loads."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile
import torch

from hooked_audio.datasets import load_dataset
from hooked_audio.evaluation.runner import ResumeError, evaluate, read_results
from hooked_audio.toy.tasks import make_probe_set

N_CLIPS = 6


@pytest.fixture(scope="module")
def toy():
    from hooked_audio.loading import from_pretrained

    return from_pretrained("toy-qwen2-audio")


@pytest.fixture(scope="module")
def pitch_manifest(tmp_path_factory):
    """Toy pitch clips (no hint) with their known answers, one at 22.05 kHz, and clips of two lengths so
    that length bucketing reorders them."""
    import soxr

    folder = tmp_path_factory.mktemp("pitch")
    samples = [s for s in make_probe_set(7, N_CLIPS, task_names=["pitch"]) if s.hint is None]
    rows = []
    for i, sample in enumerate(samples):
        wave, rate = sample.waveform, 16000
        if i % 2:
            wave = wave[: len(wave) * 3 // 4]  # a shorter clip
        if i == 1:
            wave, rate = soxr.resample(wave, 16000, 22050), 22050
        soundfile.write(folder / f"clip{i}.wav", wave, rate)
        rows.append({"audio": f"clip{i}.wav", "question": sample.question, "answer": sample.answer,
                     "choices": ["low", "high"], "task": sample.task, "difficulty": "short" if i % 2 else "long"})
    path = folder / "pitch.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lines(path):
    return [json.loads(line) for line in open(path)]


def test_restricted_accuracy_and_records(toy, pitch_manifest, tmp_path):
    ds = load_dataset(f"manifest:{pitch_manifest}")
    out = str(tmp_path / "r.jsonl")
    summary = evaluate(toy, ds, out, model_name="toy-qwen2-audio", batch_size=4, progress=False)
    records = lines(out)
    assert sorted(r["id"] for r in records) == sorted(i.id for i in ds)
    assert summary["overall"]["accuracy"] >= 0.8  # the toy hears pitch almost perfectly
    assert set(summary["by"]) == {"task", "difficulty"} and summary["complete"]
    first = records[0]
    assert set(first["choice_logprobs"]) == {"low", "high"} and first["prediction"] in ("low", "high")
    assert first["correct"] == (first["prediction"] == first["answer"])
    durations = [r["duration_s"] for r in records]
    assert durations == sorted(durations)  # length-bucketed
    meta = json.load(open(out + ".meta.json"))["config"]
    assert meta["scoring"] == "restricted" and meta["dataset_source"]["sha256"]


def test_generated_answers_scored_by_exact_and_mmau(toy, pitch_manifest, tmp_path):
    ds = load_dataset(f"manifest:{pitch_manifest}")
    exact = evaluate(toy, ds, str(tmp_path / "e.jsonl"), scoring="exact", max_new_tokens=3, batch_size=6, progress=False)
    records = lines(tmp_path / "e.jsonl")
    assert all(r["generated"] in ("low", "high") for r in records)
    assert exact["overall"]["accuracy"] >= 0.8
    mmau = evaluate(toy, ds, str(tmp_path / "m.jsonl"), scoring="mmau", max_new_tokens=3, batch_size=6, progress=False)
    assert mmau["overall"]["correct"] == exact["overall"]["correct"]


def test_interrupted_run_resumes_to_the_uninterrupted_result(toy, pitch_manifest, tmp_path):
    ds = load_dataset(f"manifest:{pitch_manifest}")
    full = str(tmp_path / "full.jsonl")
    evaluate(toy, ds, full, batch_size=2, progress=False)

    class Killed(Exception):
        pass

    def kill_after_first(index, records):
        if index == 0:
            raise Killed

    out = str(tmp_path / "resumed.jsonl")
    with pytest.raises(Killed):
        evaluate(toy, ds, out, batch_size=2, progress=False, after_batch=kill_after_first)
    assert len(lines(out)) == 2  # the first batch was written before the "kill"
    with open(out, "a") as handle:  # and the kill cut a line of the next batch in half
        handle.write('{"id": "3", "predic')
    with pytest.warns(UserWarning, match="cut short"):
        summary = evaluate(toy, ds, out, batch_size=2, progress=False, limit=2)  # one more batch, then stop
    assert not summary["complete"] and len(lines(out)) == 4
    summary = evaluate(toy, ds, out, batch_size=2, progress=False)
    assert summary["complete"] and summary["this_run"]["items"] == 2
    a, b = lines(full), lines(out)
    assert [r["id"] for r in a] == [r["id"] for r in b] and len({r["id"] for r in b}) == len(b)
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    assert [r["choice_logprobs"] for r in a] == [r["choice_logprobs"] for r in b]  # same batches, same numbers
    assert evaluate(toy, ds, out, batch_size=2, progress=False)["this_run"]["items"] == 0  # nothing left


def test_resume_refuses_other_settings_and_unknown_files(toy, pitch_manifest, tmp_path):
    ds = load_dataset(f"manifest:{pitch_manifest}")
    out = str(tmp_path / "r.jsonl")
    evaluate(toy, ds, out, batch_size=6, progress=False, limit=1)
    with pytest.raises(ResumeError, match="scoring: was 'restricted', now 'exact'"):
        evaluate(toy, ds, out, scoring="exact", max_new_tokens=2, progress=False)
    with pytest.raises(ResumeError, match="prompt_format"):
        evaluate(toy, ds, out, prompt_format="{question} ?", progress=False)
    os.remove(out + ".meta.json")
    with pytest.raises(ResumeError, match="settings are unknown"):
        evaluate(toy, ds, out, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "0"}\nnot json\n{"id": "1"}\n')
    with pytest.raises(ResumeError, match="damaged"):
        read_results(str(bad))


def test_resume_refuses_items_whose_audio_file_changed(toy, pitch_manifest, tmp_path):
    """The manifest's hash is unchanged when a clip is replaced under the same name; the results of that
    clip would then describe another sound. Control: the same resume with the clip restored goes on."""
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(pitch_manifest.parent, folder)
    ds = load_dataset(f"manifest:{folder / pitch_manifest.name}")
    out = str(tmp_path / "r.jsonl")
    evaluate(toy, ds, out, batch_size=2, progress=False, limit=2)
    first = lines(out)[0]
    clip = next(item.audio for item in ds if item.id == first["id"])
    original = open(clip, "rb").read()
    wave, rate = soundfile.read(clip)
    soundfile.write(clip, wave[::-1].copy(), rate)  # another sound, same name, same length
    with pytest.raises(ResumeError, match=f"changed since: {first['id']} "):
        evaluate(toy, ds, out, batch_size=2, progress=False)
    open(clip, "wb").write(original)
    assert evaluate(toy, ds, out, batch_size=2, progress=False)["complete"]
    legacy = [{k: v for k, v in r.items() if k != "audio_sha256"} for r in lines(out)]
    with open(out, "w") as handle:  # lines written before audio hashes existed
        handle.write("".join(json.dumps(r) + "\n" for r in legacy))
    with pytest.warns(UserWarning, match="predate audio hashes"):
        evaluate(toy, ds, out, batch_size=2, progress=False)


def test_hooks_are_active_and_bad_clips_are_counted_errors(toy, pitch_manifest, tmp_path):
    folder = pitch_manifest.parent
    soundfile.write(folder / "tiny.wav", np.zeros(40, dtype=np.float32), 16000)  # too short for one audio token
    rows = [json.loads(line) for line in open(pitch_manifest)][:2]
    rows.append({"audio": "tiny.wav", "question": "is the tone low or high ?", "answer": "low", "choices": ["low", "high"]})
    manifest = folder / "with_tiny.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset(f"manifest:{manifest}")
    calls = []

    def zero_audio(value, hook):
        calls.append(value.shape)
        return value * 0

    out = str(tmp_path / "h.jsonl")
    summary = evaluate(toy, ds, out, batch_size=3, progress=False, fwd_hooks=[("hook_audio_embeds", zero_audio)],
                       hooks_spec="test:zero_audio")
    assert calls  # the hook ran on the runner's forward passes
    errors = [r for r in lines(out) if r.get("error")]
    assert len(errors) == 1 and errors[0]["id"] == "2" and errors[0]["correct"] is None
    assert summary["errors"] == 1 and summary["overall"]["n"] == 2
    plain = [r for r in lines(out) if not r.get("error")]
    assert all(np.isfinite(list(r["choice_logprobs"].values())).all() for r in plain)
    # strict: the same clip, found bad only when its inputs are built, refuses the run instead of counting an error
    with pytest.raises(ValueError, match="item 2: .*too short for one audio token.*loaded strict"):
        evaluate(toy, load_dataset(f"manifest:{manifest}", strict=True), str(tmp_path / "s.jsonl"), batch_size=3,
                 progress=False)


# --- the command ------------------------------------------------------------------------------------------


def run_cli(argv):
    from hooked_audio.app.cli import main

    return main(argv)


@pytest.fixture
def no_model_load(monkeypatch):
    """Usage errors must come before the weights load: loading them fails the test."""
    import hooked_audio.loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the usage error")

    monkeypatch.setattr(hooked_audio.loading, "from_pretrained", refuse)


def test_cli_usage_errors_exit_2_before_loading(pitch_manifest, tmp_path, no_model_load, capsys):
    no_choices = tmp_path / "free.jsonl"
    row = json.loads(open(pitch_manifest).readline())
    row["audio"] = str(pitch_manifest.parent / row["audio"])
    del row["choices"]
    no_choices.write_text(json.dumps(row) + "\n")
    hooks_file = tmp_path / "my_hooks.py"
    hooks_file.write_text("def fine(model):\n    return []\n")
    out = str(tmp_path / "r.jsonl")
    cases = [
        (["--dataset", "csv:x.csv"], "KIND:PATH"),
        (["--dataset", f"manifest:{tmp_path / 'none.jsonl'}"], "no file"),
        (["--dataset", f"manifest:{no_choices}", "--scoring", "restricted"], "needs choices"),
        (["--dataset", f"manifest:{pitch_manifest}", "--prompt-format", "nothing to fill"], "{question}"),
        (["--dataset", f"manifest:{pitch_manifest}", "--scoring", "exact", "--max-new-tokens", "0"], "at least 1"),
        (["--dataset", f"manifest:{pitch_manifest}", "--hooks", f"{hooks_file}:missing"], "no function"),
        (["--dataset", f"manifest:{pitch_manifest}", "--hooks", "no_such_module_xyz:f"], "cannot import"),
        (["--dataset", f"manifest:{pitch_manifest}", "--batch-size", "0"], "at least 1"),
        (["--dataset", f"manifest:{pitch_manifest}", "--model", str(tmp_path / "nomodel")], "--model"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["eval", "--out", out, *extra])
        assert exit_info.value.code == 2, extra
        assert message in capsys.readouterr().err, extra
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["eval", "--out", str(tmp_path), "--dataset", f"manifest:{pitch_manifest}"])
    assert exit_info.value.code == 2 and "is a folder" in capsys.readouterr().err
    # a results file made with other settings: refused before loading too
    (tmp_path / "r.jsonl").write_text('{"id": "0"}\n')
    (tmp_path / "r.jsonl.meta.json").write_text(json.dumps({"config": {"scoring": "exact"}}))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["eval", "--out", out, "--dataset", f"manifest:{pitch_manifest}"])
    assert exit_info.value.code == 2 and "other settings" in capsys.readouterr().err


def test_cli_eval_writes_results_summary_and_plot(pitch_manifest, tmp_path, capsys):
    manifest = tmp_path / "with_missing.jsonl"
    rows = [json.loads(line) for line in open(pitch_manifest)]
    for row in rows:
        row["audio"] = str(pitch_manifest.parent / row["audio"])
    rows.append(dict(rows[0], audio=str(tmp_path / "gone.wav")))
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results.jsonl"
    argv = ["eval", "--dataset", f"manifest:{manifest}", "--out", str(out), "--batch-size", "3", "--no-progress"]
    assert run_cli(argv + ["--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert "partial: 3 of 6" in text and "items/s" in text
    assert "1 rows skipped {'missing audio': 1}" in text and "gone.wav" in text
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "resumed" in text and "overall" in text and "difficulty short" in text
    assert len(lines(out)) == N_CLIPS
    summary = json.load(open(tmp_path / "results.summary.json"))
    assert summary["overall"]["n"] == N_CLIPS and summary["complete"]
    assert summary["overall"]["ci95"] is not None
    assert [r["row"] for r in summary["dataset"]["skipped_rows"]] == ["with_missing.jsonl:7"]
    assert (tmp_path / "results.summary.png").stat().st_size > 1000


def test_cli_help_teaches_every_dataset_kind(capsys):
    with pytest.raises(SystemExit):
        run_cli(["eval", "--help"])
    text = capsys.readouterr().out
    for example in ("--dataset sakura:", "--dataset mmau:", "--dataset manifest:", "--scoring", "Resuming"):
        assert example in text


# --- data-parallel sharding ---------------------------------------------------------------------------------


def test_sharded_ranks_merge_into_the_one_process_file(toy, pitch_manifest, tmp_path, monkeypatch):
    """The sharding logic in one process (no process group: the barriers are no-ops): rank 1 then rank 0
    write their rank files, rank 0 merges them; and rank files left by an interrupted run are folded in by
    the next single-process run."""
    from hooked_audio.evaluation.distributed import rank_files

    ds = load_dataset(f"manifest:{pitch_manifest}")
    single = str(tmp_path / "single.jsonl")
    evaluate(toy, ds, single, batch_size=2, progress=False)
    sharded = str(tmp_path / "sharded.jsonl")
    assert evaluate(toy, ds, sharded, batch_size=2, progress=False, rank=1, world_size=2)["rank"] == 1
    assert rank_files(sharded) == [sharded + ".rank1.jsonl"] and len(lines(sharded + ".rank1.jsonl")) == 2
    summary = evaluate(toy, ds, sharded, batch_size=2, progress=False, rank=0, world_size=2)
    assert summary["complete"] and not rank_files(sharded)
    assert open(sharded).read() == open(single).read()

    left = str(tmp_path / "left.jsonl")
    evaluate(toy, ds, left, batch_size=2, progress=False, rank=1, world_size=2)  # then "interrupted"
    summary = evaluate(toy, ds, left, batch_size=2, progress=False)  # one process finishes the job
    assert summary["this_run"]["items"] == 4 and not rank_files(left)
    assert open(left).read() == open(single).read()

    # interrupted with 3 processes (ranks 1 and 2 done), resumed with 2 and another batch size: was, each rank redid
    # the items in the other ranks' leftover files and the merge refused the duplicates as damage. The two ranks
    # run in threads here, meeting at a real barrier (as torchrun's processes do)
    import threading

    from hooked_audio.evaluation import distributed

    changed = str(tmp_path / "changed.jsonl")
    for rank in (1, 2):
        evaluate(toy, ds, changed, batch_size=1, progress=False, rank=rank, world_size=3)
    assert len(rank_files(changed)) == 2
    meeting, summaries = threading.Barrier(2, timeout=120), {}
    monkeypatch.setattr(distributed, "barrier", meeting.wait)

    def run(rank):
        summaries[rank] = evaluate(toy, ds, changed, batch_size=2, progress=False, rank=rank, world_size=2)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = summaries[0]
    assert summary["complete"] and not rank_files(changed)
    assert [r["id"] for r in lines(changed)] == [r["id"] for r in lines(single)]
    assert [r["prediction"] for r in lines(changed)] == [r["prediction"] for r in lines(single)]


def test_torchrun_two_processes_write_the_same_file_as_one(toy, pitch_manifest, tmp_path):
    """``torchrun --nproc_per_node 2 ... eval --steer`` (gloo on CPU) writes the file one process writes, steering
    included (each rank builds the steering hooks of its own batches)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    direction = tmp_path / "direction.pt"
    torch.save(torch.randn(toy.cfg.d_model, generator=torch.Generator().manual_seed(0)), direction)
    steer = f"layer=1,file={direction},scale=2,positions=audio"
    args = ["eval", "--dataset", f"manifest:{pitch_manifest}", "--batch-size", "2", "--no-progress", "--steer", steer]
    env = dict(os.environ, OMP_NUM_THREADS="1", HOOKED_AUDIO_SHAPE_CHECKS="0")
    two = str(tmp_path / "two.jsonl")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), "-m", "hooked_audio.app.cli", *args, "--out", two],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0's share of 2 processes" in done.stdout and done.stdout.count("overall") == 1
    one = str(tmp_path / "one.jsonl")
    evaluate(toy, load_dataset(f"manifest:{pitch_manifest}"), one, model_name="toy-qwen2-audio", batch_size=2,
             progress=False, steer=steer)
    assert open(two).read() == open(one).read()
    plain = str(tmp_path / "plain.jsonl")
    evaluate(toy, load_dataset(f"manifest:{pitch_manifest}"), plain, model_name="toy-qwen2-audio", batch_size=2,
             progress=False)
    assert open(plain).read() != open(one).read()  # control: the steering changed the scores
    assert json.load(open(two + ".meta.json"))["config"] == json.load(open(one + ".meta.json"))["config"]
    assert not [p for p in os.listdir(tmp_path) if ".rank" in p]


KILLER_HOOKS = '''
import os, signal

calls = [0]


def killer(model):
    """No change to the model; with KILL_AT_FORWARD=n set, SIGKILL this process at its n-th forward pass."""
    def hook(value, hook):
        calls[0] += 1
        if calls[0] == int(os.environ.get("KILL_AT_FORWARD", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
    return [("hook_audio_embeds", hook)]
'''


def test_sigkill_mid_run_then_resume_equals_uninterrupted(pitch_manifest, tmp_path, capsys):
    """A real kill: the command is SIGKILLed during its third batch; rerunning it finishes the job, and the
    file equals an uninterrupted run's, line for line."""
    import signal
    import subprocess
    import sys

    hooks = tmp_path / "killer.py"
    hooks.write_text(KILLER_HOOKS)
    args = ["eval", "--dataset", f"manifest:{pitch_manifest}", "--batch-size", "2", "--no-progress",
            "--hooks", f"{hooks}:killer"]
    out = str(tmp_path / "killed.jsonl")
    env = dict(os.environ, KILL_AT_FORWARD="3", OMP_NUM_THREADS="1", HOOKED_AUDIO_SHAPE_CHECKS="0")
    done = subprocess.run([sys.executable, "-m", "hooked_audio.app.cli", *args, "--out", out], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert len(lines(out)) == 4  # two batches written before the kill, nothing of the third
    assert run_cli(args + ["--out", out]) == 0
    assert "resumed" in capsys.readouterr().out
    full = str(tmp_path / "full.jsonl")
    assert run_cli(args + ["--out", full]) == 0
    assert open(out).read() == open(full).read()


def test_sakura_and_mmau_layouts_run_end_to_end(toy, pitch_manifest, tmp_path):
    """The toy's pitch clips laid out as a SAKURA track and as MMAU test-mini, each run with its defaults."""
    import csv
    import shutil

    rows = [json.loads(line) for line in open(pitch_manifest)]
    track = tmp_path / "SAKURA" / "data" / "Animal"
    (tmp_path / "mmau" / "test-mini-audios").mkdir(parents=True)
    track.mkdir(parents=True)
    letters = {"low": "(a) low", "high": " (b) high"}
    with open(track / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "attribute_label", "single_instruction", "single_answer", "multi_instruction", "multi_answer"])
        for row in rows:
            shutil.copy(pitch_manifest.parent / row["audio"], track / row["audio"])
            shutil.copy(pitch_manifest.parent / row["audio"], tmp_path / "mmau" / "test-mini-audios" / row["audio"])
            q = row["question"] + " (a) low (b) high"
            writer.writerow([row["audio"], row["answer"], q, letters[row["answer"]], q, letters[row["answer"]]])
    records = [{"id": f"u{i}", "audio_id": f"./test-mini-audios/{r['audio']}", "question": r["question"],
                "choices": ["low", "high"], "answer": r["answer"], "dataset": "toy", "task": "sound",
                "split": "test-mini", "category": ["Pitch"], "sub-category": "tone", "difficulty": r["difficulty"]}
               for i, r in enumerate(rows)]
    (tmp_path / "mmau" / "test-mini.json").write_text(json.dumps(records))

    sakura = evaluate(toy, load_dataset(f"sakura:{tmp_path / 'SAKURA'}"), str(tmp_path / "s.jsonl"), progress=False)
    assert sakura["config"]["scoring"] == "restricted" and sakura["overall"]["accuracy"] >= 0.8
    assert set(sakura["by"]["task"]) == {"Animal"} and set(sakura["by"]["sub-category"]) == {"single"}

    mmau = evaluate(toy, load_dataset(f"mmau:{tmp_path / 'mmau' / 'test-mini.json'}"), str(tmp_path / "m.jsonl"),
                    max_new_tokens=3, progress=False)
    assert mmau["config"]["scoring"] == "mmau" and mmau["config"]["prompt_format"] == "choices"
    assert mmau["config"]["dataset_source"]["sha256"]
    assert set(mmau["by"]) == {"task", "sub-category", "difficulty"} and mmau["overall"]["n"] == len(rows)
    assert all(r["generated"] is not None for r in lines(tmp_path / "m.jsonl"))


def test_the_hooks_record_changes_when_the_hooks_file_is_edited(tmp_path):
    """Resuming compares the recorded hooks: a spec alone would let an edited hooks file resume into the same
    results, mixing two interventions under one accuracy."""
    from hooked_audio.evaluation.runner import hooks_record, load_hooks

    path = tmp_path / "hk.py"
    path.write_text("SCALE = 1.0\n\ndef fn(model):\n    return []\n")
    spec = f"{path}:fn"
    first = hooks_record(spec, load_hooks(spec))
    assert first.startswith(spec) and hooks_record(spec, load_hooks(spec)) == first  # control: same file, same record
    path.write_text("SCALE = 0.0\n\ndef fn(model):\n    return []\n")
    assert hooks_record(spec, load_hooks(spec)) != first
