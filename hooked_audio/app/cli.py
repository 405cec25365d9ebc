"""The ``hooked-audio`` command.

    hooked-audio demo  [--out DIR]                      the main job, on the bundled toy model
    hooked-audio ask   --audio FILE --prompt TEXT       the model's answer and its top next tokens
    hooked-audio lens  --audio FILE --prompt TEXT       logit lens across layers (PNG + JSON)
    hooked-audio heads --audio FILE --prompt TEXT       decoder heads ranked by attention to the audio

Every subcommand runs on the bundled toy model by default and on any supported checkpoint with
``--model`` (a hub id already downloaded, or a local directory saved by HF ``save_pretrained``).

Arguments are checked before any weight is loaded: a missing or unreadable audio file, an empty prompt,
a count that is not a positive whole number, an ``--out`` that is a file, a ``--model`` that cannot be
found, and counts larger than the model has (``--top-k`` above the vocabulary or the number of heads,
``--n-heads`` above half the heads, which leaves no random control) are usage errors (exit code 2, with
the reason). ``lens --target`` must be one token of the vocabulary (it is checked against the tokenizer
before the forward pass, so an unknown word is not tracked as ``<unk>``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_MODEL = "toy-qwen2-audio"


# --- argument types: each refuses a bad value with the reason (argparse exits with code 2) ----------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def audio_file(text: str) -> str:
    import soundfile

    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no audio file at {text!r}")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not an audio file")
    try:
        info = soundfile.info(text)
    except Exception as error:  # soundfile's errors name the format problem
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as audio ({str(error).strip().splitlines()[0]}); use a WAV, FLAC or OGG file"
        ) from None
    if info.frames == 0:
        raise argparse.ArgumentTypeError(f"{text!r} holds no audio (0 samples)")
    return text


def prompt_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty; ask a question about the audio")
    return text


def out_dir(text: str) -> str:
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder; choose a folder for the outputs")
    return text


# --- checks that need the model's config (read without loading the weights) -----------------------------


def _model_config(args):
    """The model's ``HookedAudioConfig`` from its config file alone, or a usage error."""
    from transformers import AutoConfig

    from ..families import family_for_model_type
    from ..loading import resolve_checkpoint

    try:
        path = resolve_checkpoint(args.model)
        hf_config = AutoConfig.from_pretrained(path)
        family = family_for_model_type(hf_config.model_type)
        return (getattr(family, "to_config", None) or family.config_from_hf)(hf_config)  # to_config checks the whitelist
    except (OSError, ValueError, KeyError, NotImplementedError) as error:
        args._error(f"argument --model: {error}")


def _check_counts(args, cfg) -> None:
    total_heads = cfg.n_layers * cfg.n_heads
    if args.command == "ask" and args.top_k > cfg.d_vocab:
        args._error(f"argument --top-k: {args.top_k} is more than the vocabulary ({cfg.d_vocab} tokens)")
    if args.command == "heads" and args.top_k > total_heads:
        args._error(
            f"argument --top-k: {args.top_k} is more than the model's {total_heads} decoder heads "
            f"({cfg.n_layers} layers x {cfg.n_heads})"
        )
    if args.command == "demo" and 2 * args.n_heads > total_heads:
        args._error(
            f"argument --n-heads: {args.n_heads} is too many: the model has {total_heads} decoder heads, and the "
            f"control ablates as many other, random heads, so at most {total_heads // 2}"
        )


def _target_id(args, model) -> int:
    """``--target`` as one vocabulary id: a vocabulary entry as written (e.g. ``Ġlow``) or a text that
    tokenizes to exactly one known token."""
    tokenizer, target = model.tokenizer, args.target
    vocab = tokenizer.get_vocab()
    if target in vocab:
        token_id = vocab[target]
    else:
        ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            args._error(
                f"argument --target: {target!r} is {len(ids)} tokens {tokenizer.convert_ids_to_tokens(ids)}, not one; "
                "pass a single token"
            )
        token_id = int(ids[0])
        if tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id and target != tokenizer.unk_token:
            args._error(
                f"argument --target: {target!r} is not in the vocabulary (it would be tracked as {tokenizer.unk_token!r}); "
                "pass a token the tokenizer knows"
            )
    if not 0 <= token_id < model.cfg.d_vocab:
        args._error(f"argument --target: {target!r} has id {token_id}, outside the model's {model.cfg.d_vocab} logits")
    return token_id


def _load(args):
    from ..loading import from_pretrained

    cfg = _model_config(args)
    _check_counts(args, cfg)
    return from_pretrained(args.model)


def _inputs(args, model):
    messages = [{"role": "user", "content": [{"type": "audio", "path": args.audio}, {"type": "text", "text": args.prompt}]}]
    try:
        return model.build_inputs(messages=messages, on_too_long="truncate")
    except (ValueError, TypeError, FileNotFoundError) as error:  # the audio or prompt, refused with the reason
        args._error(str(error))


def _per_position_tokens(model, inputs) -> list[str]:
    return model.to_str_tokens(inputs)  # one string per position, audio labelled by its seconds


def cmd_ask(args) -> dict:
    import torch

    model = _load(args)
    inputs = _inputs(args, model)
    if inputs.shape[1] + args.max_new_tokens > model.cfg.n_ctx:
        args._error(
            f"argument --max-new-tokens: the prompt is {inputs.shape[1]} tokens, so at most "
            f"{model.cfg.n_ctx - inputs.shape[1]} new tokens fit in the model's {model.cfg.n_ctx} positions"
        )
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
        "tokens": model.display_tokens(inputs),
    }
    print(f"answer: {answer}")
    for item in result["top_next_tokens"]:
        print(f"  {item['prob']:.3f}  {item['token']}")
    return result


def cmd_lens(args) -> dict:
    import torch

    from ..analysis.logit_lens import logit_lens
    from .plots import plot_lens_heatmap

    model = _load(args)
    target = _target_id(args, model) if args.target is not None else None
    inputs = _inputs(args, model)
    logits, cache = model.run_with_cache(inputs, names_filter=lambda n: "resid" in n or n == "ln_final.hook_scale")
    if target is None:
        target = int(logits[0, -1].argmax())
    lens = logit_lens(model, cache)
    probs = lens.target_prob(torch.tensor([target]))[:, 0].numpy()
    span = inputs.audio_spans[0][0]
    out = Path(args.out)
    png = plot_lens_heatmap(
        probs, lens.labels, _per_position_tokens(model, inputs), (span.start, span.end),
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

    model = _load(args)
    inputs = _inputs(args, model)
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern") and not n.startswith("audio"))
    scores = audio_attention_by_head(cache, model.cfg.n_layers)
    png = plot_head_scores(scores.numpy(), Path(args.out) / "heads.png", "attention from the last position to the audio")
    ranked = top_heads(scores, args.top_k)
    result = {"top_heads": [{"layer": l, "head": h, "audio_attention": round(float(scores[l, h]), 4)} for l, h in ranked],
              "plot": str(png)}
    print(json.dumps(result, indent=2))
    return result


def cmd_demo(args) -> dict:
    from ..toy.demo import run_demo

    _check_counts(args, _model_config(args))
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
            p.add_argument("--audio", required=True, type=audio_file,
                           help="audio file (any rate, mono or stereo; resampled to 16 kHz)")
            p.add_argument("--prompt", required=True, type=prompt_text, help="the question asked about the audio")
        p.set_defaults(_error=p.error)  # usage errors found after parsing still exit 2 with this usage line
        return p

    demo = add("demo", "Answer questions about bundled clips, run a logit lens, rank and ablate audio heads, "
                       "and write an HTML report with plots and a JSON of the numbers.", needs_audio=False)
    demo.add_argument("--out", type=out_dir, default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--n-heads", type=positive_int, default=6,
                      help="how many top audio heads to ablate (default 6; at most half the decoder heads)")
    demo.add_argument("--seed", type=int, default=0, help="seed for the probe set and the random control heads")
    demo.set_defaults(func=cmd_demo)

    ask = add("ask", "Print the model's answer and its most likely next tokens.")
    ask.add_argument("--top-k", type=positive_int, default=5, help="how many next tokens to list (default 5)")
    ask.add_argument("--max-new-tokens", type=positive_int, default=10, help="length of the answer (default 10)")
    ask.set_defaults(func=cmd_ask)

    lens = add("lens", "Logit lens: probability of the answer token at every layer and position.")
    lens.add_argument("--target", help="one vocabulary token to track (default: the model's own top prediction)")
    lens.add_argument("--out", type=out_dir, default="lens_out")
    lens.set_defaults(func=cmd_lens)

    heads = add("heads", "Rank decoder heads by how much the answer position attends to the audio.")
    heads.add_argument("--top-k", type=positive_int, default=5, help="how many heads to list (default 5)")
    heads.add_argument("--out", type=out_dir, default="heads_out")
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
