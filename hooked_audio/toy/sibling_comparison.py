"""Where the listener and its text-reliant sibling part on the same conflicts (issue 10 §2).

The two organisms differ only in their training hints, so the layers where their handling of a wrong hint differs
are where hint reliance lives. On wrong-hint prompts, per decoder layer:
- *lens margin*: logit(hint) - logit(audio answer) at the last position, read through the final norm and the
  unembedding (the last row is the model's own output);
- *attention to the hint*: attention mass from the last position to the hint's tokens, mean over heads;
- *knockout*: the share of the hint effect (margin with the hint minus margin without it) that disappears when
  attention to the hint's tokens is blocked at that layer alone, from every position.

    python -m hooked_audio.toy.sibling_comparison        # measures and writes the section into the textual card
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ..analysis import audio_attention_per_row, audio_masking_hooks, logit_lens, text_positions, without_text
from . import evaluate

TASKS = ("beeps", "when", "pitch", "noise")  # numpy-only tasks: no espeak-ng needed
SECTION = "## Where the siblings differ"


def _lens_margins(model, inputs, hint_ids, answer_ids) -> torch.Tensor:
    """logit(hint) - logit(answer) at the last position, per lens layer (0 = embedding, last = output): the
    difference of ``logit_lens`` log-probs, which is the logit difference (one softmax)."""
    if inputs.attention_mask is not None and not bool(inputs.attention_mask[:, -1].all()):
        raise ValueError("the lens margins read position -1: pass left-padded inputs")
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: "resid" in n or n == "ln_final.hook_scale")
    log_probs = logit_lens(model, cache, positions=[-1]).log_probs[:, :, 0].cpu()  # [layer, batch, vocab]
    rows = torch.arange(inputs.shape[0])
    return log_probs[:, rows, hint_ids] - log_probs[:, rows, answer_ids]  # [layer, batch]


def _output_margin(model, inputs, hint_ids, answer_ids, hooks=()) -> torch.Tensor:
    """logit(hint) - logit(answer) of the model's output at each row's last position."""
    logits = model.run_with_hooks(inputs, fwd_hooks=list(hooks))[torch.arange(inputs.shape[0]), inputs.last_positions]
    logits = logits.float().cpu()
    rows = torch.arange(inputs.shape[0])
    return logits[rows, hint_ids] - logits[rows, answer_ids]


@torch.no_grad()
def measure(model, conflicts) -> dict[str, list[float]]:
    """The three curves of one organism on ``conflicts`` (wrong-hint samples)."""
    inputs = model.to_inputs(evaluate.encode(model.processor, conflicts))
    hints = [s.hint_text for s in conflicts]
    hint_ids = torch.tensor([model.to_single_token(s.hint) for s in conflicts])
    answer_ids = torch.tensor([model.to_single_token(s.answer) for s in conflicts])
    keys = text_positions(model, inputs, hints)
    with_hint = _lens_margins(model, inputs, hint_ids, answer_ids)
    free = _output_margin(model, without_text(model, inputs, hints), hint_ids, answer_ids)
    effect = (with_hint[-1] - free).mean()
    attention = audio_attention_per_row(model, inputs, keys=keys).mean(0).mean(-1)  # [layer]: mean over rows, heads
    removed = []
    for layer in range(model.cfg.n_layers):
        knocked = _output_margin(model, inputs, hint_ids, answer_ids,
                                 audio_masking_hooks(inputs, [layer], query="all", keys=keys))
        removed.append(float(1 - (knocked - free).mean() / effect))
    return {"lens_margin": [float(m) for m in with_hint.mean(-1)], "attention_to_hint": [float(a) for a in attention],
            "knockout_removes": removed, "hint_effect": float(effect), "n": len(conflicts)}


def compare(models: dict, n_per_task: int = 16) -> dict[str, dict]:
    conflicts = [s for s in evaluate.make_eval_set(n_per_task=n_per_task, task_names=list(TASKS)) if s.hint_kind == "wrong"]
    return {name: measure(model, conflicts) for name, model in models.items()}


def card_section(result: dict[str, dict]) -> str:
    names = list(result)
    n_layers = len(result[names[0]]["attention_to_hint"])
    first = result[names[0]]
    lines = [
        SECTION, "",
        f"{first['n']} wrong-hint prompts of {', '.join(TASKS)} (the card's held-out clips), the same for both organisms. "
        "*Lens margin*: logit(hint) - logit(audio answer) at the last position after block l (through the final norm "
        "and unembedding). *Attention*: attention mass from the last position to the hint's tokens in block l, mean "
        "over heads. *Knockout*: share of the hint effect gone when attention to the hint is blocked in block l alone "
        f"(from every position). Hint effect (output margin with minus without the hint): "
        + ", ".join(f"{n} {result[n]['hint_effect']:+.2f}" for n in names) + ". "
        "Made by `python -m hooked_audio.toy.sibling_comparison`.", "",
        "| block | " + " | ".join(f"lens margin ({n}) | attention ({n}) | knockout ({n})" for n in names) + " |",
        "|---|" + "---|" * (3 * len(names)),
    ]
    bullets = []
    for n in names:
        r = result[n]
        top = int(np.argmax(r["knockout_removes"]))
        bullets.append(f"- {n}: blocking attention to the hint in block {top} alone removes "
                       f"{r['knockout_removes'][top]:.0%} of its hint effect; the last position attends to the hint most "
                       f"in block {int(np.argmax(r['attention_to_hint']))} ({max(r['attention_to_hint']):.3f}); the output "
                       f"margin is {r['lens_margin'][-1]:+.2f}.")
    lines[4:4] = bullets + [""]
    for layer in range(n_layers):
        cells = []
        for n in names:
            r = result[n]
            cells += [f"{r['lens_margin'][layer + 1]:+.2f}", f"{r['attention_to_hint'][layer]:.3f}", f"{r['knockout_removes'][layer]:.2f}"]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_into_card(section: str, result: dict, checkpoint) -> None:
    card = checkpoint / "CARD.md"
    text = card.read_text()
    if SECTION in text:
        start = text.index(SECTION)
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + text[end + 1:] if end != -1 else text[:start]
    card.write_text(text.rstrip("\n") + "\n\n" + section)
    data_file = checkpoint / "card.json"
    data = json.loads(data_file.read_text())
    data["sibling_comparison"] = result
    data_file.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    from .. import HookedAudioTransformer
    from ..loading import BUNDLED_MODELS

    torch.set_grad_enabled(False)
    models = {name: HookedAudioTransformer.from_pretrained(name) for name in ("toy-qwen2-audio", "toy-qwen2-audio-textual")}
    result = compare(models)
    section = card_section(result)
    print(section)
    write_into_card(section, result, BUNDLED_MODELS["toy-qwen2-audio-textual"])


if __name__ == "__main__":
    main()
