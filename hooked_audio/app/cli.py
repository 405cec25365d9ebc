"""The ``hooked-audio`` command.

    hooked-audio demo  [--out DIR]                      the main job, on the bundled toy model
    hooked-audio ask   --audio FILE --prompt TEXT       the model's answer and its top next tokens
    hooked-audio lens  --audio FILE --prompt TEXT       logit lens across layers (PNG + JSON)
    hooked-audio heads --audio FILE --prompt TEXT       decoder heads ranked by attention to the audio
    hooked-audio eval  --dataset KIND:PATH --out FILE   a whole benchmark, batched and resumable

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


def whole_number(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        from ..indices import whole_number_from_text

        try:
            value = whole_number_from_text(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int, nonnegative_int = whole_number(1), whole_number(0)


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
    import warnings

    from ..audio.io import load_waveform

    with warnings.catch_warnings():  # what it warns of (stereo, a peak above 1) is said again when the inputs are built
        warnings.simplefilter("ignore")
        try:
            load_waveform(text)  # its content (NaN or inf samples), before any model loads
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return text


def prompt_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty; ask a question about the audio")
    return text


def out_dir(text: str) -> str:
    """A folder that is there or can be made (its nearest existing parent is a writable folder), checked before
    any model loads."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder; choose a folder for the outputs")
    parent = os.path.abspath(text)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be made: {parent!r} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be made: {parent!r} is not writable")
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


# --- eval: a whole benchmark ------------------------------------------------------------------------------


def dataset_spec(text: str) -> str:
    from ..datasets import DatasetError, parse_spec

    try:
        kind, path, _ = parse_spec(text)
    except DatasetError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"no {'folder' if kind == 'sakura' else 'file'} at {path!r}")
    return text


def results_file(text: str) -> str:
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; --out is the results file, e.g. {os.path.join(text, 'results.jsonl')}")
    return text


def hooks_function(text: str):
    from ..evaluation.runner import load_hooks

    try:
        return text, load_hooks(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def steer_spec(text: str):
    from ..evaluation.steer import SteerError, parse_steer

    try:
        return parse_steer(text)
    except SteerError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_eval(args) -> dict:
    import logging

    from ..datasets import DatasetError, load_dataset
    from ..evaluation.runner import (
        DEFAULT_MAX_NEW_TOKENS, ResumeError, check_resumable, check_scoring, check_template, default_prompt_format,
        default_scoring, evaluate, hooks_for, hooks_record, prompt_template, run_config,
    )
    from ..evaluation.steer import SteerError, check_steers
    from ..evaluation.summary import format_table, write_summary

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        dataset = load_dataset(args.dataset, strict=args.strict)
    except DatasetError as error:
        args._error(f"argument --dataset: {error}")
    counts = dataset.skip_summary()
    say = print if os.environ.get("RANK", "0") == "0" else (lambda *a, **k: None)  # under torchrun rank 0 reports
    say(f"{args.dataset}: {counts['items']} items" + (f", {counts['skipped']} rows skipped {counts['skipped_by_reason']}"
                                                        if counts["skipped"] else "")
          + (f", {counts['resampled']} clips resampled to 16 kHz" if counts["resampled"] else ""))
    for skip in dataset.skipped[:5]:
        say(f"  skipped {skip.row}: {skip.reason}")
    if len(dataset.skipped) > 5:
        say(f"  ... and {len(dataset.skipped) - 5} more (all listed in the summary's dataset.skipped_rows)")
    scoring = args.scoring or default_scoring(dataset)
    args.prompt_format = args.prompt_format or default_prompt_format(dataset)
    max_new_tokens = args.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = 0 if scoring == "restricted" else DEFAULT_MAX_NEW_TOKENS
    try:
        check_scoring(dataset, scoring)
        check_template(dataset, prompt_template(args.prompt_format))
    except ValueError as error:
        args._error(str(error))
    if scoring != "restricted" and max_new_tokens < 1:
        args._error(f"argument --max-new-tokens: --scoring {scoring} scores generated text, so at least 1")
    hooks_spec, hooks_fn = args.hooks if args.hooks else (None, None)
    hooks_spec = hooks_record(hooks_spec, hooks_fn) if hooks_fn else None
    steer = args.steer or []
    cfg = _model_config(args)
    try:
        check_steers(steer, cfg.n_layers, cfg.d_model)
    except SteerError as error:
        args._error(f"argument --steer: {error}")
    config = run_config(args.model, dataset, scoring, args.prompt_format, max_new_tokens, hooks_spec, steer)
    try:
        resuming = check_resumable(args.out, config)
    except ResumeError as error:
        args._error(f"argument --out: {error}")
    if max_new_tokens >= cfg.n_ctx:
        args._error(f"argument --max-new-tokens: {max_new_tokens} leaves no room for the prompt in {cfg.n_ctx} positions")
    from ..loading import from_pretrained

    from ..evaluation import distributed

    model = from_pretrained(args.model)
    rank, world_size = distributed.world()  # (0, 1) unless started by torchrun
    if world_size > 1:
        distributed.init(str(model.device))
    try:
        fwd_hooks = hooks_for(hooks_fn, model, hooks_spec) if hooks_fn else []
        summary = evaluate(model, dataset, args.out, model_name=args.model, scoring=scoring,
                           prompt_format=args.prompt_format, max_new_tokens=max_new_tokens, batch_size=args.batch_size,
                           fwd_hooks=fwd_hooks, hooks_spec=hooks_spec, steer=steer, limit=args.limit,
                           progress=not args.no_progress and rank == 0, rank=rank, world_size=world_size)
    except (ValueError, ResumeError) as error:
        args._error(str(error))
    finally:
        distributed.finish()
    if rank != 0:
        return summary
    run = summary["this_run"]
    say(f"{'resumed' if resuming else 'wrote'} {args.out}: {run['items']} new items in {run['seconds']} s"
          + (f" ({run['items_per_s']} items/s)" if run["items_per_s"] else "")
          + (f", rank 0's share of {run['processes']} processes" if run.get("processes") else ""))
    if not summary["complete"]:
        n_done = summary["overall"]["n"] + summary["errors"]
        say(f"partial: {n_done} of {len(dataset)} items done; rerun the same command to go on")
    say(format_table(summary))
    json_path, png_path = write_summary(summary, args.out)
    say(f"summary: {json_path}\nplot:    {png_path}")
    return summary


EVAL_HELP = """\
Evaluate a model over a whole benchmark, one JSON line per item in --out.

Datasets (--dataset KIND:PATH):
  sakura:DIR             SAKURA: every track under DIR ({Animal,Emotion,Gender,Language}/metadata.csv,
                         or DIR/data/...); sakura:DIR:Gender for one track, sakura:DIR:Gender:multi for
                         its multi-hop questions. Default scoring: restricted.
  mmau:FILE.json         MMAU test-mini (the JSON list; clips relative to its folder). Default: mmau.
  manifest:FILE          JSONL or CSV rows with audio, question, answer, optional choices (a JSON list)
                         and id (default: the row number). Default: restricted when every row has choices,
                         else exact.
Rows that cannot be used (empty fields, an answer outside its choices, a missing or unreadable clip)
are skipped, logged and counted (--strict refuses them instead); other sample rates are resampled.

Scoring (--scoring):
  restricted   argmax of the answer-position logits over the first token of each choice (AudioLens);
               choices must start with different tokens. One forward pass (no generation by default).
  mmau         MMAU's string match on the generated text: every word of the answer, no word of a wrong choice.
  exact        the generated text equals the answer (case, spaces and punctuation ignored).

Steering (--steer SPEC, repeatable: the directions stack), e.g.
  --steer layer=12,file=direction.pt,scale=4,positions=audio
  adds scale * direction to blocks.12.hook_resid_post on the scoring forward and every generated token.
  layer      decoder layer 0..n_layers-1 (required)
  file       a vector of d_model entries: .pt/.pth/.bin (torch.save), .safetensors or .npy (required)
  scale      default 1 (negative pushes the other way)
  positions  audio: the clip's audio tokens | text: the prompt's text tokens and every generated token |
             last: each row's last prompt position (the answer position) and every generated token |
             all: every position (default)
  hook       resid_post (default), resid_pre or resid_mid;  key: the tensor's name in a file of several
  Checked before the model loads (unknown keys, missing file, NaN, width != d_model, layer out of range).

Resuming: rerun the same command; items already in --out are skipped (its settings are kept in
--out.meta.json and a different model, dataset version, scoring, prompt format, --max-new-tokens,
--hooks or --steer is refused). Each batch is written as soon as it is done, so Ctrl-C loses at most one batch.
At the end: an accuracy table per task / sub-category / difficulty with 95% Wilson intervals, written
to results.summary.json, and a bar plot results.summary.png beside --out.
"""

EVAL_EXAMPLES = """\
Examples:
  hooked-audio eval --model Qwen/Qwen2-Audio-7B-Instruct --dataset sakura:/data/SAKURA --out sakura.jsonl
  hooked-audio eval --model Qwen/Qwen2-Audio-7B-Instruct --dataset sakura:/data/SAKURA:Gender:multi \\
      --prompt-format '{question} Answer with the option text only.' --out gender_multi.jsonl
  hooked-audio eval --model Qwen/Qwen2-Audio-7B-Instruct --dataset mmau:/data/mmau/mmau-test-mini.json \\
      --max-new-tokens 64 --batch-size 4 --out mmau.jsonl
  hooked-audio eval --dataset manifest:toy_clips.jsonl --out toy.jsonl          (the bundled toy model)
  hooked-audio eval --dataset manifest:clips.csv --scoring exact --hooks my_hooks.py:ablate --out ablated.jsonl
  hooked-audio eval --dataset manifest:clips.jsonl --steer layer=1,file=low_minus_high.pt,scale=4,positions=audio \\
      --out steered.jsonl
  torchrun --nproc_per_node 2 $(which hooked-audio) eval --dataset manifest:clips.jsonl --out r.jsonl
      (same --out as one process; where hooked-audio is a shell shim, e.g. pyenv, use
       torchrun --nproc_per_node 2 -m hooked_audio.app.cli eval ...)
A --hooks function is called as function(model) and returns fwd_hooks: [(hook name, hook function), ...],
active on every forward pass and generated token (with --steer too, the steering is added after them).
"""


# what to do instead of repeating an option that takes one value
_ONE_VALUE_HINTS = {
    "--hooks": "return every hook from one function",
    "--audio": "these commands take one clip; for several, build the inputs in Python (model.build_inputs(messages=...))",
    "--prompt": "these commands ask one question",
    "--dataset": "run one eval per dataset, each with its own --out",
}


class _StoreOnce(argparse._StoreAction):
    """argparse's store, refusing an option given twice (argparse keeps the last value without a word)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_options", set())
        if self.dest in given:
            hint = _ONE_VALUE_HINTS.get(option_string, "give it once")
            parser.error(f"{option_string} was given twice, but it takes one value (the last would replace the "
                         f"first): {hint}")
        given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser (and, through ``add_subparsers``, its subcommands' parsers) whose single-valued options
    refuse to be repeated."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        parsed.__dict__.pop("_given_options", None)
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hooked-audio",
        description="Look inside audio-language models: every residual stream, head and audio token is hookable.",
        epilog="Examples:\n  hooked-audio demo --out demo_out\n"
        "  hooked-audio ask --audio clip.wav --prompt 'is the speaker male or female ?'\n"
        "  hooked-audio heads --audio clip.wav --prompt 'how many beeps ?' --out heads_out\n"
        "  hooked-audio eval --dataset manifest:clips.jsonl --out results.jsonl   (see hooked-audio eval --help)",
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
    demo.add_argument("--n-heads", type=positive_int, default=8,
                      help="how many top audio heads to ablate (default 8, a third of the toy's; at most half the decoder heads)")
    demo.add_argument("--seed", type=nonnegative_int, default=0, help="seed for the probe set and the random control heads")
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

    ev = sub.add_parser("eval", help="Evaluate a whole benchmark (SAKURA, MMAU, a manifest): batched, resumable.",
                        description=EVAL_HELP, epilog=EVAL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local HF directory (default: {DEFAULT_MODEL}, bundled)")
    ev.add_argument("--dataset", required=True, type=dataset_spec, metavar="KIND:PATH",
                    help="sakura:DIR[:Track][:multi], mmau:FILE.json or manifest:FILE.jsonl|.csv")
    ev.add_argument("--out", required=True, type=results_file, help="results file (JSONL); rerun with it to resume")
    ev.add_argument("--scoring", choices=("restricted", "mmau", "exact"),
                    help="how an answer is scored (default: by dataset, see above)")
    ev.add_argument("--prompt-format",
                    help="'plain' (the question as written; default for SAKURA, whose instructions list the options, and "
                         "manifests), 'choices' (the question, then 'Choices:' and one '- choice' per line; default for MMAU), "
                         "or a template with {question} and optionally {choices} ('a, b, c') or {choice_lines}")
    ev.add_argument("--max-new-tokens", type=nonnegative_int,
                    help="tokens generated per item (default: 0 for restricted scoring, 32 otherwise)")
    ev.add_argument("--batch-size", type=positive_int, default=8, help="items per forward pass (default 8)")
    ev.add_argument("--hooks", type=hooks_function, metavar="MODULE:FUNCTION",
                    help="function(model) -> fwd_hooks, active for the whole run (a module or path/to/file.py)")
    ev.add_argument("--steer", type=steer_spec, action="append", metavar="SPEC",
                    help="add a direction to the residual stream, e.g. layer=12,file=direction.pt,scale=4,positions=audio "
                         "(positions audio|text|last|all; see above); repeat to stack")
    ev.add_argument("--limit", type=positive_int, help="stop after about this many new items (whole batches); rerun to go on")
    ev.add_argument("--strict", action="store_true", help="refuse the dataset if any row is bad instead of skipping it")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval, _error=ev.error)
    return parser


def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    with torch.no_grad():  # every subcommand only reads the model
        args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
