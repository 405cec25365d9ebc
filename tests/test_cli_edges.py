"""``hooked-audio`` with bad arguments (issue 9, class 8): each is a usage error (exit code 2) that names
the argument and the reason, and where the model is not needed to tell, nothing is loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from hooked_audio.app.cli import main

CLIP = str(Path(__file__).parents[1] / "hooked_audio" / "toy" / "examples" / "pitch_low.flac")
QUESTION = "is the tone low or high ?"
_TOY = json.loads((Path(__file__).parents[1] / "hooked_audio" / "toy" / "checkpoint" / "config.json").read_text())
TOY_VOCAB = _TOY["text_config"]["vocab_size"]  # read from the bundled toy's config, so a retrained toy passes too
TOY_HEADS = _TOY["text_config"]["num_hidden_layers"] * _TOY["text_config"]["num_attention_heads"]


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the weights are loaded or the demo starts."""
    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad argument was reported")

    monkeypatch.setattr("hooked_audio.loading.from_pretrained", loaded)
    monkeypatch.setattr("hooked_audio.toy.demo.run_demo", loaded)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["ask", "--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
        (["ask", "--top-k", "-3"], "argument --top-k: must be at least 1, got -3"),
        (["ask", "--top-k", "two"], "argument --top-k: 'two' is not a whole number"),
        (["ask", "--top-k", "1_0"], "argument --top-k: '1_0' is not a whole number"),
        (["ask", "--max-new-tokens", "0"], "argument --max-new-tokens: must be at least 1, got 0"),
        (["heads", "--top-k", "0"], "argument --top-k: must be at least 1"),
        (["ask", "--top-k", str(TOY_VOCAB + 1)], f"argument --top-k: {TOY_VOCAB + 1} is more than the vocabulary \\({TOY_VOCAB} tokens\\)"),
        (["heads", "--top-k", str(TOY_HEADS + 1)], f"argument --top-k: {TOY_HEADS + 1} is more than the model's {TOY_HEADS} decoder heads"),
        (["ask", "--model", "no-such-model"], "argument --model: Cannot load 'no-such-model'"),
    ],
)
def test_bad_counts_and_models_are_usage_errors_before_loading(argv, match, capsys, no_loading):
    err = _usage_error([*argv, "--audio", CLIP, "--prompt", QUESTION], capsys)
    assert re.search(match, err), err


@pytest.mark.parametrize(
    "n_heads, match",
    [("0", "argument --n-heads: must be at least 1, got 0"),
     (str(TOY_HEADS // 2 + 1),
      f"argument --n-heads: {TOY_HEADS // 2 + 1} is too many: the model has {TOY_HEADS} decoder heads.*at most {TOY_HEADS // 2}")],
)
def test_demo_n_heads_must_leave_room_for_the_random_control(n_heads, match, capsys, no_loading, tmp_path):
    err = _usage_error(["demo", "--n-heads", n_heads, "--out", str(tmp_path)], capsys)
    assert re.search(match, err), err


def test_missing_unreadable_and_empty_audio_files(tmp_path, capsys, no_loading):
    err = _usage_error(["ask", "--audio", str(tmp_path / "nope.wav"), "--prompt", QUESTION], capsys)
    assert "argument --audio: no audio file at" in err and "nope.wav" in err
    assert "is a folder" in _usage_error(["ask", "--audio", str(tmp_path), "--prompt", QUESTION], capsys)
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    assert "argument --audio: cannot read" in _usage_error(["ask", "--audio", str(text), "--prompt", QUESTION], capsys)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    assert "holds no audio (0 samples)" in _usage_error(["ask", "--audio", str(empty), "--prompt", QUESTION], capsys)


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_a_usage_error(prompt, capsys, no_loading):
    err = _usage_error(["ask", "--audio", CLIP, "--prompt", prompt], capsys)
    assert "argument --prompt: the prompt is empty" in err


def test_out_that_is_a_file_is_a_usage_error(tmp_path, capsys, no_loading):
    path = tmp_path / "result.json"
    path.write_text("{}")
    for command in ("lens", "heads"):
        err = _usage_error([command, "--audio", CLIP, "--prompt", QUESTION, "--out", str(path)], capsys)
        assert "argument --out:" in err and "is not a folder" in err
        # was: a folder under the file passed, and the command failed after loading the model
        err = _usage_error([command, "--audio", CLIP, "--prompt", QUESTION, "--out", str(path / "sub")], capsys)
        assert "argument --out:" in err and "is a file, not a folder" in err


def test_a_negative_seed_is_a_usage_error(capsys, no_loading):
    """Was: demo --seed -1 ran two sections, then numpy refused the seed with a traceback."""
    err = _usage_error(["demo", "--seed", "-1"], capsys)
    assert "argument --seed:" in err


def test_lens_target_outside_the_vocabulary_is_refused_not_tracked_as_unk(tmp_path, capsys):
    err = _usage_error(["lens", "--audio", CLIP, "--prompt", QUESTION, "--target", "loud", "--out", str(tmp_path)], capsys)
    assert "argument --target: 'loud' is not in the vocabulary (it would be tracked as '<unk>')" in err
    err = _usage_error(["lens", "--audio", CLIP, "--prompt", QUESTION, "--target", "low high", "--out", str(tmp_path)], capsys)
    assert "argument --target: 'low high' is 2 tokens ['low', 'high'], not one" in err
    assert not (tmp_path / "lens.png").exists()  # refused before the forward pass and the plot


def test_lens_target_in_the_vocabulary_is_tracked(tmp_path, capsys):
    main(["lens", "--audio", CLIP, "--prompt", QUESTION, "--target", "high", "--out", str(tmp_path)])
    result = json.loads(capsys.readouterr().out)
    assert result["target"] == "high" and result["prob_at_last_position"][-1] < 0.5  # the clip is low


def test_audio_too_short_for_one_token_is_a_usage_error(tmp_path, capsys):
    short = tmp_path / "click.wav"
    soundfile.write(short, np.full(160, 0.1, np.float32), 16000)  # 10 ms
    err = _usage_error(["ask", "--audio", str(short), "--prompt", QUESTION], capsys)
    assert "too short for one audio token" in err


def test_max_new_tokens_beyond_the_context_is_a_usage_error(capsys):
    err = _usage_error(["ask", "--audio", CLIP, "--prompt", QUESTION, "--max-new-tokens", "100000"], capsys)
    assert re.search(r"argument --max-new-tokens: the prompt is \d+ tokens, so at most \d+ new", err)


def test_an_audio_file_with_nan_samples_is_a_usage_error_before_loading(tmp_path, capsys, no_loading):
    """Was: the model loaded first, then build_inputs refused the clip. Control: a clean file of the same format is
    accepted as an argument (the loading stub then stops the run)."""
    import numpy as np
    import soundfile

    bad = tmp_path / "nan.wav"
    wave = np.zeros(16000, np.float32)
    wave[100] = np.nan
    soundfile.write(bad, wave, 16000, subtype="FLOAT")
    err = _usage_error(["ask", "--audio", str(bad), "--prompt", QUESTION], capsys)
    assert "argument --audio:" in err and "non-finite samples" in err
    good = tmp_path / "clean.wav"
    soundfile.write(good, np.zeros(16000, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AssertionError, match="loaded before"):
        main(["ask", "--audio", str(good), "--prompt", QUESTION])


@pytest.mark.parametrize("argv, option", [
    (["ask", "--audio", CLIP, "--audio", CLIP, "--prompt", QUESTION], "--audio"),
    (["lens", "--audio", CLIP, "--prompt", QUESTION, "--prompt", "how many beeps are there ?"], "--prompt"),
    (["eval", "--dataset", "manifest:{a}", "--dataset", "manifest:{b}", "--out", "{out}"], "--dataset"),
    (["eval", "--dataset", "manifest:{a}", "--out", "{out}", "--hooks", "{hooks}:f", "--hooks", "{hooks}:f"], "--hooks"),
])
def test_an_option_that_takes_one_value_given_twice_is_a_usage_error(argv, option, capsys, no_loading, tmp_path):
    """Was: argparse kept the last value without a word (two --hooks ran the second alone and recorded it alone; two
    --audio answered about the second clip). Control: --steer, which stacks, still takes several (test_eval_steer)."""
    files = {"a": tmp_path / "a.jsonl", "b": tmp_path / "b.jsonl", "hooks": tmp_path / "hooks.py", "out": tmp_path / "r.jsonl"}
    for name in ("a", "b"):
        files[name].write_text(json.dumps({"id": "1", "audio": CLIP, "question": QUESTION, "answer": "low"}) + "\n")
    files["hooks"].write_text("def f(model):\n    return []\n")
    err = _usage_error([arg.format(**files) for arg in argv], capsys)
    assert f"{option} was given twice, but it takes one value" in err, err
