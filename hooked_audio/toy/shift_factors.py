"""Add the one-factor-at-a-time shifted accuracy to toy checkpoints' cards.

The shifted split moves every nuisance factor outside the training range at once (held-out words and voices,
speaking speed, level, reverb, tone frequency), so its accuracy alone cannot say which shift a task fails on.
``evaluate.evaluate_shift_factors`` shifts each factor alone; new training runs put the table on the card,
and this command adds it to a card made before (``card.json`` gains ``results.shift_factors``, ``CARD.md`` is
re-rendered from it, keeping a sibling-comparison section)::

    python -m hooked_audio.toy.shift_factors hooked_audio/toy/checkpoint hooked_audio/toy/checkpoint_textual
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoProcessor

from .evaluate import EVAL_CLIPS_PER_TASK, evaluate_shift_factors
from .train import load_toy, write_card_markdown


def add_to_card(checkpoint: Path) -> dict:
    """Measure the checkpoint on every one-factor shift (the card's eval seed and size) and write it into its card."""
    card_file = checkpoint / "card.json"
    card = json.loads(card_file.read_text())
    model, processor = load_toy(checkpoint).eval(), AutoProcessor.from_pretrained(checkpoint)
    with torch.no_grad():
        card["results"]["shift_factors"] = evaluate_shift_factors(
            model, processor, card["eval"]["seed"], card["eval"].get("clips_per_task", EVAL_CLIPS_PER_TASK))
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    write_card_markdown(checkpoint, card)
    return card["results"]["shift_factors"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="toy checkpoint directories (card.json, CARD.md)")
    args = parser.parse_args()
    for checkpoint in args.checkpoints:
        factors = add_to_card(checkpoint)
        print(checkpoint, {factor: round(result["overall"]["accuracy"], 3) for factor, result in factors.items()})


if __name__ == "__main__":
    main()
