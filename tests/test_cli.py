"""The ``hooked-audio`` subcommands on the bundled toy model."""

from __future__ import annotations

import json
from pathlib import Path

from hooked_audio.app.cli import main

CLIP = str(Path(__file__).parents[1] / "hooked_audio" / "toy" / "examples" / "pitch_low.flac")
QUESTION = "is the tone low or high ?"


def test_ask_answers_and_ranks_next_tokens(capsys):
    main(["ask", "--audio", CLIP, "--prompt", QUESTION, "--top-k", "3"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "answer: low"
    probs = [float(line.split()[0]) for line in out.splitlines()[1:4]]
    assert probs == sorted(probs, reverse=True) and probs[0] > 0.5


def test_lens_and_heads_write_plots_and_json(tmp_path, capsys):
    main(["lens", "--audio", CLIP, "--prompt", QUESTION, "--out", str(tmp_path)])
    lens = json.loads(capsys.readouterr().out)
    assert lens["target"] == "low" and lens["layers"][-1] == "final_post"
    assert lens["prob_at_last_position"][-1] > 0.5 and (tmp_path / "lens.png").stat().st_size > 10_000
    main(["heads", "--audio", CLIP, "--prompt", QUESTION, "--out", str(tmp_path), "--top-k", "2"])
    heads = json.loads(capsys.readouterr().out)
    scores = [h["audio_attention"] for h in heads["top_heads"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert (tmp_path / "heads.png").exists()
