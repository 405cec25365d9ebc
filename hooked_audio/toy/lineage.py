"""What the first bundled toy's training left in its descendants: held-out items it heard against held-out items
no toy ever heard, everything else paired.

Every bundled toy descends from the first one, trained before the held-out lists existed, on the voice en+m7 (now
held out) and on eight language words (now held out). Two paired comparisons measure what survives:

- ``voice_pair_samples``: the same clips (one seed, the same random draws) voiced by en+m7, heard by the first
  toy, and by en+m8, never heard by any toy, per speech task (gender: male clips only).
- ``word_pair_samples``: one-word language clips of the eight first-toy words against other held-out words of the
  same language, each pair with the same voice, speed, placement and noise.

A gap alone does not prove a leak (one voice or word can be harder than another): the control is a toy trained
from scratch with the same recipe, whose gap shows how hard each item is without that history. ``main`` adds the
result to a card (``results.lineage``)::

    python -m hooked_audio.toy.lineage hooked_audio/toy/checkpoint --control CONTROL_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest
from transformers import AutoProcessor

from . import tasks
from .evaluate import predict, rate

FIRST_TOY_VOICE, UNHEARD_VOICE = "m7", "m8"
FIRST_TOY_WORDS = {"german": ("eins", "heute", "wasser"), "french": ("bonjour", "bonne", "maison"),
                   "spanish": ("buenas", "hoy")}
VOICE_TASKS = ("digit", "gender", "language", "events_order")
SEED = 777


def _paired(heard: list[bool], unheard: list[bool]) -> dict:
    """Both accuracies, the discordant pairs and McNemar's exact p (two-sided binomial test on them)."""
    a, b = np.array(heard), np.array(unheard)
    only_heard, only_unheard = int((a & ~b).sum()), int((~a & b).sum())
    p = binomtest(only_heard, only_heard + only_unheard).pvalue if only_heard + only_unheard else 1.0
    return {"heard": rate(a.tolist()), "unheard": rate(b.tolist()), "only_heard_right": only_heard,
            "only_unheard_right": only_unheard, "mcnemar_p": float(p)}


def voice_pair_samples(task_name: str, voice: str, n: int = 100, seed: int = SEED) -> list[tasks.Sample]:
    """``n`` audio-only clips of ``task_name`` with every held-out voice replaced by ``voice`` (same seed: the
    same clips in another voice); gender keeps its male clips only."""
    task = tasks.TASKS_BY_NAME[task_name]
    rng = np.random.default_rng([seed, tasks.TASKS.index(task)])
    with tasks.only_voice(voice):
        items = tasks._items(task, rng, n, tasks.shifted_split("voice"))
    samples = [tasks._sample(task, item, answer, i) for i, (item, answer) in enumerate(items)]
    return [s for s in samples if task_name != "gender" or s.answer == "male"]


def word_pair_samples(clips_per_word: int = 10, seed: int = SEED) -> tuple[list[tasks.Sample], list[tasks.Sample]]:
    """One-word language clips: each first-toy word ``clips_per_word`` times, and as many other held-out words of
    its language, clip ``k`` of a word and of its control sharing one random stream (voice, speed, noise, ...)."""
    task, lists = tasks.TASKS_BY_NAME["language"], tasks.word_lists()
    control_rng = np.random.default_rng(seed)
    heard, unheard = [], []
    for l_index, (language, words) in enumerate(FIRST_TOY_WORDS.items()):
        others = [w for w in lists[language][1] if w not in words]
        for w_index, word in enumerate(words):
            controls = [others[i] for i in control_rng.choice(len(others), clips_per_word, replace=False)]
            for k, control in enumerate(controls):
                for spoken, out in ((word, heard), (control, unheard)):
                    rng = np.random.default_rng([seed, l_index, w_index, k])
                    speech = tasks._speak(spoken, tasks.LANGUAGES[language], tasks._any_voice(rng, "test"), rng, "test")
                    item = tasks.Item(tasks._place(speech, rng, "test"), task.question, task.name)
                    out.append(tasks._sample(task, item, language, len(out)))
    return heard, unheard


def measure(model, processor, n: int = 100, seed: int = SEED) -> dict:
    """``voice``: per task, first-toy voice vs unheard voice; ``words``: first-toy words vs other held-out words."""
    def hits(samples):
        return [p == s.answer for p, s in zip(predict(model, processor, samples), samples)]

    voice = {name: _paired(hits(voice_pair_samples(name, FIRST_TOY_VOICE, n, seed)),
                           hits(voice_pair_samples(name, UNHEARD_VOICE, n, seed))) for name in VOICE_TASKS}
    heard, unheard = word_pair_samples(max(1, n // 10), seed)
    return {"voice": voice, "words": _paired(hits(heard), hits(unheard)), "n": n, "seed": seed}


def main() -> None:
    from .train import load_toy, write_card_markdown

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="toy checkpoint directories (card.json, CARD.md)")
    parser.add_argument("--control", type=Path, help="a toy trained from scratch with the same recipe: measured "
                        "too and stored on each card as the control")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with torch.no_grad():
        control = None
        if args.control is not None:
            control = measure(load_toy(args.control).eval(), AutoProcessor.from_pretrained(args.control))
            control_card = json.loads((args.control / "card.json").read_text())
            control["command"] = control_card["command"].replace(str(args.control), "CONTROL_DIR")  # not a local path
            control["accuracy_in_distribution"] = control_card["results"]["test"]["overall"]["accuracy"]
        for checkpoint in args.checkpoints:
            card = json.loads((checkpoint / "card.json").read_text())
            result = measure(load_toy(checkpoint).eval(), AutoProcessor.from_pretrained(checkpoint))
            card["results"]["lineage"] = {**result, "control": control}
            (checkpoint / "card.json").write_text(json.dumps(card, indent=2) + "\n")
            write_card_markdown(checkpoint, card)
            print(checkpoint, json.dumps(card["results"]["lineage"]["voice"], indent=None)[:400])


if __name__ == "__main__":
    main()


def card_lines(result: dict) -> list[str]:
    """CARD.md sentences for ``results.lineage``: each gap, with the from-scratch control's where measured."""
    control = result.get("control")

    def gap(entry: dict, of_control: dict | None) -> str:
        text = f"{entry['heard']['rate']:.2f} vs {entry['unheard']['rate']:.2f} (p {entry['mcnemar_p']:.2g})"
        if of_control is not None:
            text += f"; from scratch {of_control['heard']['rate']:.2f} vs {of_control['unheard']['rate']:.2f}"
        return text

    voices = "; ".join(f"{name} {gap(entry, control and control['voice'][name])}"
                       for name, entry in result["voice"].items())
    lines = [f"Measured (`python -m hooked_audio.toy.lineage CHECKPOINT_DIR --control CONTROL_DIR`, {result['n']} paired clips per task): the same clips voiced"
             f" by en+{FIRST_TOY_VOICE} (heard by the first toy) vs en+{UNHEARD_VOICE} (never heard by any toy): {voices}."
             f" The eight first-toy words vs other held-out words: {gap(result['words'], control and control['words'])}."]
    if control is not None:
        lines.append(f"The from-scratch control (`{control['command']}`, not bundled; in distribution"
                     f" {control['accuracy_in_distribution']:.2f} overall) never heard either voice or word: where it"
                     " shows the same gap, the gap is the item's difficulty, not the lineage; where it is near chance"
                     " on both, it cannot tell.")
    return lines
