"""The text-reliant sibling ``toy-qwen2-audio-textual``: loads offline by name, and on clean audio a wrong
hint flips its answers far more often than the listener's, on the same prompts (the control)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import needs_espeak

from hooked_audio import HookedAudioTransformer
from hooked_audio.loading import BUNDLED_MODELS
from hooked_audio.toy import evaluate, tasks

CARD = json.loads((BUNDLED_MODELS["toy-qwen2-audio-textual"] / "card.json").read_text())
# "when does the X happen ?", heard about equally well by both organisms without a hint (cards: 0.82 textual on 50
# clips, 0.92 listener on 100; 0.82 vs 0.94 on the 50 clips here), so the flip rates differ by hint reliance, not by
# hearing: textual 0.49, the listener 0.07 (cards; 0.49 vs 0.11 on the 50 clips here). "What happens first / last ?"
# differs about as much (0.31 vs 0.00), beep counting less (0.35 vs 0.12). The listener it replaced: 0.92 heard
# (0.92 here), flip rate 0.10 (0.20 here), first / last 0.01, beeps 0.14.
FLIP_TASKS = ["events_when"]
FLIP_MARGIN = 0.2


@pytest.fixture(scope="module")
def organisms():
    return {name: HookedAudioTransformer.from_pretrained(name) for name in ("toy-qwen2-audio", "toy-qwen2-audio-textual")}


def test_textual_loads_offline_and_matches_hf(organisms, monkeypatch):
    from transformers import Qwen2AudioForConditionalGeneration

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = organisms["toy-qwen2-audio-textual"]
    hf = Qwen2AudioForConditionalGeneration.from_pretrained(BUNDLED_MODELS["toy-qwen2-audio-textual"], attn_implementation="eager")
    batch = evaluate.encode(model.processor, tasks.make_probe_set(4, 2, task_names=["pitch", "when"]))
    with torch.no_grad():
        diff = (model(batch) - hf(**batch).logits)[batch["attention_mask"].bool()].abs().max()
    assert diff <= 1e-4


@needs_espeak
def test_a_wrong_hint_flips_the_textual_organism_and_not_the_listener(organisms):
    samples = tasks.make_probe_set(evaluate.EVAL_SEED, 50, task_names=FLIP_TASKS)
    stats = {name: evaluate.evaluate(lambda inputs, m=m: m(inputs), m.processor, samples)["overall"]
             for name, m in organisms.items()}
    listener, textual = stats["toy-qwen2-audio"], stats["toy-qwen2-audio-textual"]
    assert abs(textual["accuracy"] - listener["accuracy"]) <= 0.15  # both hear this task alike without hints
    assert textual["flip_rate"] >= listener["flip_rate"] + FLIP_MARGIN
    assert textual["hint_effect"] > listener["hint_effect"]


def test_the_siblings_part_where_the_hint_is_read(organisms):
    """On the same conflicts the textual sibling's hint effect is far larger than the listener's, and blocking
    attention to the hint's tokens in block 0 alone removes most of it, while the same knockout in any later block
    removes almost nothing (the control: the same hook elsewhere). On the card's 64 conflicts (the card's section,
    reproduced): +1.60 vs +0.52 (the listener it replaced: +0.50); block 0 removes 0.95, blocks 1-5 at most 0.01.
    (Half of them, 32, gave +1.28 vs +0.64: 0.003 under the 2x bound, too few conflicts to decide it.)"""
    from hooked_audio.toy.sibling_comparison import compare

    result = compare(organisms, n_per_task=16)
    listener, textual = result["toy-qwen2-audio"], result["toy-qwen2-audio-textual"]
    assert textual["hint_effect"] > 2 * listener["hint_effect"]
    assert textual["knockout_removes"][0] > 0.7 and max(textual["knockout_removes"][1:]) < 0.15
    # and the audio answer leads the hint by less at its output (-4.74 vs -10.89; the listener it replaced: -10.30)
    assert textual["lens_margin"][-1] > listener["lens_margin"][-1]
