"""The bundled toy model organism: offline loading, HF parity, accuracy on both splits, shortcut tests,
and a real ablation effect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_espeak

from hooked_audio import HookedAudioTransformer, load_waveform
from hooked_audio.analysis import audio_attention_by_head, random_heads, top_heads
from hooked_audio.loading import BUNDLED_MODELS
from hooked_audio.toy import evaluate, shortcuts, tasks

EXAMPLES = Path(tasks.__file__).parent / "examples"
CARD = json.loads((BUNDLED_MODELS["toy-qwen2-audio"] / "card.json").read_text())
ACCURACY_MARGIN = 0.05
BEEP_MIN_ACCURACY = 0.5
LANGUAGE_MIN_ACCURACY = 0.35  # chance is 0.25; the card's 100 held-out-word clips give 0.78 [0.69, 0.85]; the margin covers another espeak-ng build or BLAS


@pytest.fixture(scope="module")
def toy():
    return HookedAudioTransformer.from_pretrained("toy-qwen2-audio")


def probe_samples(task_names, n_per_task=evaluate.EVAL_CLIPS_PER_TASK, seed=evaluate.EVAL_SEED, split="test"):
    """By default exactly the card's held-out clips of these tasks (each task has its own random stream)."""
    return tasks.make_probe_set(seed, n_per_task, task_names=task_names, split=split)


def test_toy_loads_offline_and_matches_hf(toy, monkeypatch):
    from transformers import Qwen2AudioForConditionalGeneration

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = Qwen2AudioForConditionalGeneration.from_pretrained(BUNDLED_MODELS["toy-qwen2-audio"], attn_implementation="eager")
    examples = json.loads((EXAMPLES / "examples.json").read_text())
    samples = [tasks.Sample(e["task"], load_waveform(EXAMPLES / e["file"]), e["question"], e["answer"]) for e in examples]
    batch = evaluate.encode(toy.processor, samples)
    with torch.no_grad():
        diff = (toy(batch) - hf(**batch).logits)[batch["attention_mask"].bool()].abs().max()
    assert diff <= 1e-4


@pytest.mark.parametrize("name", ["toy-qwen2-audio", "toy-qwen2-audio-textual", "toy-voxtral"])
def test_every_bundled_card_is_rendered_from_its_numbers(name):
    """CARD.md is card.json rendered (plus the textual card's sibling comparison), so no number on a card was
    typed by hand; every card carries the one-factor shift table, whose factors are the task set's."""
    from hooked_audio.toy.sibling_comparison import SECTION
    from hooked_audio.toy.train import card_markdown

    directory = BUNDLED_MODELS[name]
    card, markdown = json.loads((directory / "card.json").read_text()), (directory / "CARD.md").read_text()
    assert markdown.split("\n" + SECTION)[0] == card_markdown(card)
    assert list(card["results"]["shift_factors"]) == list(tasks.SHIFT_FACTORS)
    assert "| task | in distribution | words | voice |" in markdown


@pytest.mark.parametrize("name", ["toy-qwen2-audio", "toy-qwen2-audio-textual", "toy-voxtral"])
def test_every_bundled_card_says_which_target_it_misses_and_why(name):
    """Issue 10's targets are checked from the card's own numbers; each miss carries a note (none unexplained),
    and a note for a target the numbers meet would be a stale one."""
    from hooked_audio.toy.targets import missed_targets

    card = json.loads((BUNDLED_MODELS[name] / "card.json").read_text())
    assert sorted(card.get("target_notes", {})) == sorted(missed_targets(card))
    assert "## Targets (issue 10)" in (BUNDLED_MODELS[name] / "CARD.md").read_text()


def test_targets_follow_the_numbers_not_the_notes():
    import copy

    from hooked_audio.toy.targets import IN_DISTRIBUTION, SHIFTED, missed_targets, target_lines

    card = copy.deepcopy(CARD)
    for split in ("test", "shifted"):
        for task in card["tasks"]:
            card["results"][split][task["name"]]["accuracy"] = 1.0
    assert missed_targets(card) == [] and "Every target is met." in target_lines(card)
    card["results"]["shifted"]["beeps"]["accuracy"] = SHIFTED - 0.01
    card["results"]["test"]["pitch"]["accuracy"] = IN_DISTRIBUTION  # the floor itself is met
    card["target_notes"] = {}
    assert missed_targets(card) == ["beeps"]
    assert "- **beeps**: not yet explained." in target_lines(card)
    textual = json.loads((BUNDLED_MODELS["toy-qwen2-audio-textual"] / "card.json").read_text())
    for task in textual["tasks"]:
        textual["results"]["test"][task["name"]]["flip_rate"] = 0.8  # above the band: dominated, not reliant
    assert missed_targets(textual) == ["flip_rate"]


def test_target_table_never_shows_a_miss_at_the_floor_and_names_every_tied_shift():
    """Was: 18/19 = 0.947 printed "0.95 (not met)" beside the 0.95 floor, and of two factors tied as the
    costliest shift only the first was named."""
    import copy

    from hooked_audio.toy.targets import IN_DISTRIBUTION, target_lines

    card = copy.deepcopy(CARD)
    card["results"]["test"]["pitch"]["accuracy"] = 18 / 19
    card["results"]["test"]["digit"]["accuracy"] = IN_DISTRIBUTION  # control: the floor itself, two decimals
    factors = card["results"]["shift_factors"]
    for name in factors:
        factors[name]["gender"]["accuracy"] = 0.99
    factors["words"]["gender"]["accuracy"] = factors["level"]["gender"]["accuracy"] = 0.9
    table = "\n".join(target_lines(card))
    assert "| pitch | 0.947 (not met) |" in table and "| digit | 0.95 (met) |" in table
    gender = next(line for line in table.splitlines() if line.startswith("| gender |"))
    assert gender.endswith("| words / level (0.90) |")


@pytest.mark.parametrize(
    "task",
    [t.name for t in tasks.TASKS if not t.needs_espeak]
    + [pytest.param(t.name, marks=needs_espeak)
       for t in tasks.TASKS if t.needs_espeak],
)
def test_accuracy_on_both_splits_stays_near_the_card(toy, task):
    for split in ("test", "shifted"):
        samples = [s for s in probe_samples([task], split=split) if s.hint is None]
        stats = evaluate.evaluate(lambda inputs: toy(inputs), toy.processor, samples)
        assert stats[task]["accuracy"] >= CARD["results"][split][task]["accuracy"] - ACCURACY_MARGIN, split


@pytest.mark.parametrize("name", [
    # card: 0.75 / 0.93 / 0.88 / 0.88 / 0.82 from 0.08 to 0.4 s (spread 0.175), a single 0.4 s beep answered one 1.00;
    # the listener it replaced: 0.65 / 0.90 / 0.82 / 0.75 / 0.80 (spread 0.25, the bound), 1.00; an earlier one failed
    # it (0.40 at 0.08 s, 0.85 at 0.24 s)
    "toy-qwen2-audio",
    "toy-voxtral",  # card: 0.75 / 0.93 / 0.93 / 0.90 / 0.88 from 0.08 to 0.4 s, a single 0.4 s beep answered one 1.00 (the one it replaced: ... / 0.82)
])
def test_beep_count_does_not_follow_beep_duration(toy, name):
    """Shortcut test: the beep count at fixed beep durations from 0.08 to 0.4 s (gaps, frequency, placement,
    noise still random). A total-beep-time counter is right near one duration and wrong at the ends
    (test_toy_tasks.py shows it on the clips themselves); the toy must be right at every duration, and a
    single long beep must still be "one" (the previous toy answered "two" at 0.4 s)."""
    model = toy if name == "toy-qwen2-audio" else HookedAudioTransformer.from_pretrained(name)
    result = shortcuts.beep_duration(lambda inputs: model(inputs), model.processor)
    accuracies = {d: v["accuracy"]["rate"] for d, v in result.items()}
    assert min(accuracies.values()) >= BEEP_MIN_ACCURACY, accuracies
    assert max(accuracies.values()) - min(accuracies.values()) <= 0.25 + 1e-9, accuracies  # rates are k / 40
    assert result["0.4"]["single_beep_answered_one"]["rate"] >= 0.8


@needs_espeak
@pytest.mark.parametrize("name", [
    "toy-qwen2-audio",  # card: X first 0.93, X second 0.95, the other event's third 0.03 (the listener it replaced: 0.87 / 0.93 / 0.06)
    "toy-voxtral",  # card: X first 0.93, X second 0.93, the other event's third 0.04 (the one it replaced: 0.87 / 0.93 / 0.06)
])
def test_event_timing_follows_the_asked_event_not_the_other_one(toy, name):
    """Shortcut test: "when does the X happen ?" on two-event clips, X's order (first or second) varied alone. A
    model that finds X is right in both orders and rarely answers the other event's third; one that reports where
    an event is (the first, the last, the loudest) is right in one order and answers the other event's third."""
    model = toy if name == "toy-qwen2-audio" else HookedAudioTransformer.from_pretrained(name)
    result = shortcuts.event_order(lambda inputs: model(inputs), model.processor)
    first, second = result["first"]["rate"], result["second"]["rate"]
    assert min(first, second) >= 0.7 and abs(first - second) <= 0.2, result
    assert result["answered_the_other_events_third"]["rate"] <= 0.2, result


@needs_espeak
def test_language_holds_on_words_never_heard_in_training(toy):
    """Shortcut test: language on held-out words (never synthesized for training) is about as good as on
    training words, and far above chance (0.25); the previous toy fell to 0.39 on unseen words."""
    result = shortcuts.language_words(lambda inputs: toy(inputs), toy.processor)
    held_out, seen = result["held_out_words"]["rate"], result["training_words"]["rate"]
    assert held_out >= seen - 0.1
    assert held_out >= LANGUAGE_MIN_ACCURACY


def test_pitch_does_not_follow_tone_duration(toy):
    result = shortcuts.tone_duration(lambda inputs: toy(inputs), toy.processor)
    assert min(v["rate"] for v in result.values()) >= 0.9, result


@needs_espeak
def test_text_dominance_where_the_audio_is_hard_and_not_where_it_is_easy(toy):
    """Language and beep counting (heard at 0.76 and 0.84 on these clips) follow a wrong hint at times and flip
    answers they had right; pitch and noise colour, heard at 1.00, ignore hints. The same code on both: only the
    task differs. Measured on the hard pair: dominance 0.25, flip rate 0.19, accuracy 0.80 audio only, 0.91 with
    a right hint, 0.68 with a wrong one (the listener it replaced: 0.19, 0.115, 0.78, 0.88, 0.68). (The listener is
    trained to rely on the audio; the textual sibling is the organism for strong dominance.)"""
    def stats(task_names):
        return evaluate.evaluate(lambda inputs: toy(inputs), toy.processor, probe_samples(task_names, n_per_task=50))["overall"]

    hard = stats(["language", "beeps"])
    assert hard["text_dominance_rate"] >= 0.15 and hard["flip_rate"] >= 0.1, hard
    assert hard["accuracy_wrong_hint"] < hard["accuracy"] and hard["accuracy_correct_hint"] >= hard["accuracy_wrong_hint"] + 0.1
    easy = stats(["pitch", "noise"])
    assert easy["text_dominance_rate"] <= 0.03 and easy["flip_rate"] <= 0.03, easy


def test_resampling_top_audio_heads_hurts_more_than_random_heads(toy):
    """Rank heads by attention from the answer position to the audio; give the top 8 (of 24) another clip's
    output (resample ablation) and compare with 8 random other heads (measured: 0.92 clean, 0.70 top, 0.86-0.89
    random; the listener it replaced: 0.91, 0.70, 0.84-0.89). Most heads of this toy attend to the audio (mass
    0.53-0.93 in blocks 1-5) and carry it redundantly: the top 6 alone separate less from random ones (0.81 vs
    0.91-0.92; the listener it replaced: 0.81 vs 0.89-0.92). A broken ranking, ablation or donor
    choice would not separate them."""
    from hooked_audio.toy.demo import ablated_accuracy, accuracy

    samples = [s for s in probe_samples(["pitch", "beeps", "noise", "when"], n_per_task=16, seed=1) if s.hint is None]
    batch = toy.to_inputs(evaluate.encode(toy.processor, samples))
    _, cache = toy.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_pattern") and not n.startswith("audio"))
    best = top_heads(audio_attention_by_head(cache, toy.cfg.n_layers), 8)

    clean = accuracy(toy, toy.processor, samples)["overall"]
    top = ablated_accuracy(toy, toy.processor, samples, best, "resample")["overall"]
    random = [ablated_accuracy(toy, toy.processor, samples, random_heads(toy.cfg.n_layers, toy.cfg.n_heads, 8, best, seed),
                               "resample")["overall"] for seed in range(4)]
    assert clean >= 0.85
    assert top < min(random)
    assert np.mean(random) - top > 0.1


def test_demo_writes_report_plots_and_true_numbers(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hooked_audio.app.cli", "demo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = (tmp_path / "report.html").read_text()
    numbers = json.loads((tmp_path / "results.json").read_text())
    assert "data:image/png;base64," in report and "<script" not in report and "src=\"http" not in report
    assert len(list((tmp_path / "plots").glob("*.png"))) >= 5
    assert {"examples", "logit_lens", "heads", "ablation", "text_dominance"} <= set(numbers)
    # The report's clean accuracy is the HF model's accuracy on the same probe questions.
    from transformers import Qwen2AudioForConditionalGeneration

    from hooked_audio.toy.demo import PROBE_CLIPS_PER_TASK, probe_tasks

    hf = Qwen2AudioForConditionalGeneration.from_pretrained(BUNDLED_MODELS["toy-qwen2-audio"])
    probe = [s for s in tasks.make_probe_set(0, PROBE_CLIPS_PER_TASK, task_names=probe_tasks()) if s.hint is None]
    processor = HookedAudioTransformer.from_pretrained("toy-qwen2-audio").processor
    predictions = evaluate.predict(hf, processor, probe)
    expected = np.mean([p == s.answer for p, s in zip(predictions, probe)])
    assert numbers["ablation"]["clean"]["overall"] == pytest.approx(expected)
    assert numbers["ablation"]["n_random_draws"] >= 3


def test_joined_probe_sets_pair_each_hint_with_its_own_clip(toy):
    """Was: a wrong-hint prompt was paired with "its clip asked without a hint" by (task, item), and ``item``
    restarts in every probe set, so joining two sets paired the first set's hints with the second's clips (flip
    rate over the wrong items, hint effect off by a factor of three). Joined, the statistics must be the two
    sets' pooled ones. Also: the hooked model itself is accepted (was: read as an HF model, crashing on .logits)."""
    a, b = (tasks.make_probe_set(seed, 12, task_names=["pitch", "when"]) for seed in (1, 2))
    alone = [evaluate.evaluate(toy, toy.processor, s)["overall"] for s in (a, b)]
    joined = evaluate.evaluate(lambda inputs: toy(inputs), toy.processor, a + b)["overall"]
    for name in ("accuracy_wrong_hint", "flip_rate"):
        n = [s["intervals"][name]["n"] for s in alone]
        assert joined["intervals"][name]["n"] == sum(n)
        pooled = sum(s["intervals"][name]["rate"] * k for s, k in zip(alone, n)) / sum(n)
        assert joined[name] == pytest.approx(pooled, abs=1e-3)
    n = [s["intervals"]["accuracy_wrong_hint"]["n"] for s in alone]  # every wrong-hint prompt has its clip
    pooled_effect = sum(s["hint_effect"] * k for s, k in zip(alone, n)) / sum(n)
    assert joined["hint_effect"] == pytest.approx(pooled_effect, abs=2e-3)


@pytest.mark.xfail(strict=True, reason=(
    "measured on the bundled listener (shortcuts.noise_band: 60 noise clips, 20 per colour): as they are 1.00 for "
    "every colour; high-passed at 50 Hz brown 0.85, at 100 Hz brown 0.60, at 200 Hz brown 0.05 (and pink 0.00), "
    "while pink and white hold 1.00 up to 100 Hz (toy-voxtral: brown 0.95 / 0.75 / 0.00). The task's brown clips "
    "are brown below 100 Hz only: their white "
    "noise floor is set against the clip's total power, nearly all of it under 20 Hz, so from 100 Hz up they are "
    "pink-to-white (spectral slope median -1.2 against brown's -2). The toy names brown from the rumble; fixing it "
    "needs the generator's floor set per band and the organism retrained (issue 10)"))
def test_noise_colour_is_heard_above_the_rumble(toy):
    """Shortcut test: a brown noise stays brown without its lowest frequencies. Control: pink, whose colour sits
    higher, is kept at the same cutoff, so the filter itself does not make colour unreadable."""
    result = shortcuts.noise_band(lambda inputs: toy(inputs), toy.processor)
    assert min(v["rate"] for v in result["0"].values()) >= 0.95, result
    assert result["100"]["pink"]["rate"] >= 0.9, result  # the control
    assert result["100"]["brown"]["rate"] >= 0.8, result
