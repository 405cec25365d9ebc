"""The ``hooked-audio`` command.

    hooked-audio demo  [--out DIR]                      the main job, on the bundled toy model
    hooked-audio ask   --audio FILE --prompt TEXT       the model's answer and its top next tokens
    hooked-audio lens  --audio FILE --prompt TEXT       logit lens across layers (PNG + JSON)
    hooked-audio heads --audio FILE --prompt TEXT       decoder heads ranked by attention to the audio

Every subcommand runs on the bundled toy model by default and on any supported checkpoint with
``--model`` (a hub id already downloaded, or a local directory saved by HF ``save_pretrained``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL = "toy-qwen2-audio"


def _load(model_name: str):
    from ..loading import from_pretrained

    return from_pretrained(model_name)


def _inputs(model, audio: str, prompt: str):
    messages = [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": prompt}]}]
    return model.build_inputs(messages=messages, on_too_long="truncate")


def cmd_ask(args) -> dict:
    import torch

    model = _load(args.model)
    inputs = _inputs(model, args.audio, args.prompt)
    logits = model(inputs)[0, -1].float()
    top = torch.topk(logits.softmax(-1), args.top_k)
    generated = model.generate(inputs, max_new_tokens=args.max_new_tokens)[0, inputs.shape[1]:]
    answer = model.tokenizer.decode(generated, skip_special_tokens=True).strip()
    result = {
        "answer": answer,
        "top_next_tokens": [
            {"token": model.tokenizer.convert_ids_to_tokens(int(i)), "prob": round(float(p), 4)}
            for p, i in zip(top.values, top.indices)
        ],
        "tokens": model.to_str_tokens(inputs),
    }
    print(f"answer: {answer}")
    for item in result["top_next_tokens"]:
        print(f"  {item['prob']:.3f}  {item['token']}")
    return result


def cmd_lens(args) -> dict:
    import torch

    from ..analysis.logit_lens import logit_lens
    from .plots import plot_lens_heatmap

    model = _load(args.model)
    inputs = _inputs(model, args.audio, args.prompt)
    logits, cache = model.run_with_cache(inputs, names_filter=lambda n: "resid" in n or n == "ln_final.hook_scale")
    target = model.to_single_token(args.target) if args.target else int(logits[0, -1].argmax())
    lens = logit_lens(model, cache)
    probs = lens.target_prob(torch.tensor([target]))[:, 0].numpy()
    span = inputs.audio_spans[0][0]
    out = Path(args.out)
    png = plot_lens_heatmap(
        probs, lens.labels, model.to_str_tokens(inputs, collapse_audio=False), (span.start, span.end),
        model.cfg.seconds_per_audio_token, out / "lens.png",
        f"logit lens: P({model.tokenizer.convert_ids_to_tokens(target)}) by layer and position",
    )
    result = {"target": model.tokenizer.convert_ids_to_tokens(target), "layers": lens.labels,
              "prob_at_last_position": [round(float(p), 4) for p in probs[:, -1]], "plot": str(png)}
    print(json.dumps(result, indent=2))
    return result


def cmd_heads(args) -> dict:
    from ..analysis.heads import audio_attention_by_head, top_heads
    from .plots import plot_head_scores

    model = _load(args.model)
    inputs = _inputs(model, args.audio, args.prompt)
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern") and not n.startswith("audio"))
    scores = audio_attention_by_head(cache, model.cfg.n_layers)
    png = plot_head_scores(scores.numpy(), Path(args.out) / "heads.png", "attention from the last position to the audio")
    ranked = top_heads(scores, min(args.top_k, scores.numel()))
    result = {"top_heads": [{"layer": l, "head": h, "audio_attention": round(float(scores[l, h]), 4)} for l, h in ranked],
              "plot": str(png)}
    print(json.dumps(result, indent=2))
    return result


def cmd_demo(args) -> dict:
    from ..toy.demo import run_demo

    return run_demo(model_name=args.model, out_dir=Path(args.out), n_heads=args.n_heads, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hooked-audio",
        description="Look inside audio-language models: every residual stream, head and audio token is hookable.",
        epilog="Examples:\n  hooked-audio demo --out demo_out\n"
        "  hooked-audio ask --audio clip.wav --prompt 'is the speaker male or female ?'\n"
        "  hooked-audio heads --audio clip.wav --prompt 'how many beeps ?' --out heads_out",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, needs_audio: bool = True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local HF directory (default: {DEFAULT_MODEL}, bundled)")
        if needs_audio:
            p.add_argument("--audio", required=True, help="audio file (any rate, mono or stereo; resampled to 16 kHz)")
            p.add_argument("--prompt", required=True, help="the question asked about the audio")
        return p

    demo = add("demo", "Answer questions about bundled clips, run a logit lens, rank and ablate audio heads, "
                       "and write an HTML report with plots and a JSON of the numbers.", needs_audio=False)
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--n-heads", type=int, default=6, help="how many top audio heads to ablate (default 6)")
    demo.add_argument("--seed", type=int, default=0, help="seed for the probe set and the random control heads")
    demo.set_defaults(func=cmd_demo)

    ask = add("ask", "Print the model's answer and its most likely next tokens.")
    ask.add_argument("--top-k", type=int, default=5)
    ask.add_argument("--max-new-tokens", type=int, default=10)
    ask.set_defaults(func=cmd_ask)

    lens = add("lens", "Logit lens: probability of the answer token at every layer and position.")
    lens.add_argument("--target", help="token to track (default: the model's own top prediction)")
    lens.add_argument("--out", default="lens_out")
    lens.set_defaults(func=cmd_lens)

    heads = add("heads", "Rank decoder heads by how much the answer position attends to the audio.")
    heads.add_argument("--top-k", type=int, default=5)
    heads.add_argument("--out", default="heads_out")
    heads.set_defaults(func=cmd_heads)
    return parser


def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    with torch.no_grad():  # every subcommand only reads the model
        args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
