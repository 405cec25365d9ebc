"""The text-reliant sibling ``toy-qwen2-audio-textual``: loads offline by name, and on clean audio a wrong
hint flips its answers far more often than the listener's, on the same prompts (the control)."""

from __future__ import annotations

import json

import pytest
import torch

from hooked_audio import HookedAudioTransformer
from hooked_audio.loading import BUNDLED_MODELS
from hooked_audio.toy import evaluate, tasks

CARD = json.loads((BUNDLED_MODELS["toy-qwen2-audio-textual"] / "card.json").read_text())
# numpy-only, heard equally well by both organisms without a hint (cards, 50 clips: 0.60 textual, 0.64 listener),
# so the flip rates differ by hint reliance, not by hearing: textual 0.67, the listener 0.12
FLIP_TASKS = ["beeps"]
FLIP_MARGIN = 0.3


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


def test_a_wrong_hint_flips_the_textual_organism_and_not_the_listener(organisms):
    samples = tasks.make_probe_set(evaluate.EVAL_SEED, 50, task_names=FLIP_TASKS)
    stats = {name: evaluate.evaluate(lambda inputs, m=m: m(inputs), m.processor, samples)["overall"]
             for name, m in organisms.items()}
    listener, textual = stats["toy-qwen2-audio"], stats["toy-qwen2-audio-textual"]
    assert abs(textual["accuracy"] - listener["accuracy"]) <= 0.15  # both hear this task alike without hints
    assert textual["flip_rate"] >= listener["flip_rate"] + FLIP_MARGIN
    assert textual["hint_effect"] > listener["hint_effect"]
