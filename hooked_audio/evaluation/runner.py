"""Evaluate a model over a whole dataset: batched, resumable, one JSON line per item.

``evaluate(model, dataset, out, ...)`` writes ``out`` (JSONL, one line per item: ``id``, ``prediction``,
``correct`` and what led to it) and ``out.meta.json`` (the run's settings). Items are sorted by clip
duration and cut into batches once, from the whole dataset (length bucketing: little padding, and the
same batches on every run, so a resumed run computes exactly what an uninterrupted one would);
``model.build_inputs`` left-pads each batch. After each batch its lines are appended, flushed and
fsynced, so an interrupted run loses at most the batch in flight and never writes an item twice.

Resuming: run again with the same ``out``. Items whose id is already in the file are skipped; a final
line cut short by the interruption is removed (with a warning). A file made with other settings (model,
dataset and its version, prompt format, scoring, max new tokens, hooks, steering) is refused, as is a
results file without its ``.meta.json``. Each line records the sha256 of its audio file, and a resumed run
refuses items already written whose clip has changed since (the manifest's own hash cannot see an audio file
replaced under the same name). The model is recorded by ``model_name`` and by
:func:`model_fingerprint` (a hash of its weights, dtype and config), so another model under the same name is refused too;
``fwd_hooks`` without a ``hooks_spec`` naming them cannot be compared, so such a run writes a new file only; so
does a run of a model with hooks already attached (``add_hook``, an open ``hooks()`` context), whose hook points
are recorded.

Steering (``steer=``, the command's ``--steer SPEC``; see :mod:`hooked_audio.evaluation.steer`): the hooks
are built for each batch from its inputs (audio and text positions differ between batches) and are active
on the scoring forward and on every generated token, after any ``fwd_hooks`` at the same hook point.

An item whose inputs cannot be built (e.g. a clip too short for one audio token) gets a line with
``error`` and ``correct: null``: it is counted in the summary as an error, not as right or wrong.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

import soundfile
import torch

from ..audio.prompting import max_audio_seconds
from ..datasets import EvalDataset, EvalItem
from ..datasets.items import sha256_of
from ..fingerprint import model_fingerprint
from .scoring import exact_match, first_token_ids, mmau_match, normalise, restricted_choice, words
from .steer import Steer, as_steers, check_steers, steer_config, steering_hooks

logger = logging.getLogger("hooked_audio.evaluation")

SCORINGS = ("restricted", "mmau", "exact")
PROMPT_FORMATS = {
    "plain": "{question}",
    "choices": "{question}\nChoices:\n{choice_lines}",
}
FORMAT_VERSION = 1
DEFAULT_MAX_NEW_TOKENS = 32


class ResumeError(ValueError):
    """The existing ``--out`` cannot be resumed with these settings."""


def default_scoring(dataset: EvalDataset) -> str:
    """MMAU: its string matching; SAKURA and manifests whose rows all have choices: restricted argmax;
    otherwise exact match on the generated text."""
    if dataset.source.get("kind") == "mmau":
        return "mmau"
    return "restricted" if all(item.choices for item in dataset.items) else "exact"


def default_prompt_format(dataset: EvalDataset) -> str:
    """MMAU's questions do not list their choices, so its default prompt adds them; SAKURA's instructions
    already do, and a manifest's question is used as written."""
    return "choices" if dataset.source.get("kind") == "mmau" else "plain"


def check_items(dataset: EvalDataset) -> None:
    """What the loaders guarantee, checked again for a dataset built by hand: unique ids (results are keyed
    and resumed by id), and closed sets of at least two distinct non-empty choices that contain the answer."""
    seen: set[str] = set()
    for item in dataset.items:
        if item.id in seen:
            raise ValueError(f"{dataset.spec}: id {item.id!r} is used by two items; ids must be unique "
                             "(results are written and resumed by id)")
        seen.add(item.id)
        if item.choices is None:
            continue
        choices = list(item.choices)
        if len(choices) < 2 or len(set(choices)) != len(choices) or not all(str(c).strip() for c in choices):
            raise ValueError(f"item {item.id!r}: choices {choices} are not at least two distinct non-empty texts")
        if item.answer not in choices:
            raise ValueError(f"item {item.id!r}: answer {item.answer!r} is not among its choices {choices}, so it "
                             "could never be scored right; fix the item (the loaders skip such rows)")


def check_scoring(dataset: EvalDataset, scoring: str) -> None:
    if scoring not in SCORINGS:
        raise ValueError(f"scoring {scoring!r} is not one of {SCORINGS}")
    if scoring in ("restricted", "mmau"):
        without = [item.id for item in dataset.items if not item.choices]
        if without:
            raise ValueError(
                f"--scoring {scoring} needs choices, and {len(without)} item(s) have none (e.g. {without[:3]}); "
                "add choices to the manifest or use --scoring exact"
            )
    if scoring in ("mmau", "exact"):  # both ignore punctuation: an answer of punctuation only is never matched
        def matchable(item: EvalItem) -> bool:
            if scoring == "mmau":
                return bool(words(item.answer))
            return any(normalise(a) for a in (item.answer, *item.metadata.get("aliases", ())))

        empty = [item.id for item in dataset.items if not matchable(item)]
        if empty:
            raise ValueError(f"--scoring {scoring}: the answers of {len(empty)} item(s) (e.g. {empty[:3]}) have no "
                             "words, only punctuation, so no prediction could match them; reword them or use "
                             "--scoring restricted")


def prompt_template(prompt_format: str) -> str:
    """A named format (``plain``, ``choices``) or a template with ``{question}`` and optionally the item's choices:
    ``{choices}`` (``a, b, c``) or ``{choice_lines}`` (one ``- choice`` per line)."""
    template = PROMPT_FORMATS.get(prompt_format, prompt_format)
    if "{question}" not in template:
        raise ValueError(
            f"prompt format {prompt_format!r} is neither one of {list(PROMPT_FORMATS)} nor a template containing "
            "{question} (e.g. '{question} Answer with one word.')"
        )
    try:
        template.format(question="q", choices="c", choice_lines="- c")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"prompt format {prompt_format!r}: only {{question}}, {{choices}} and {{choice_lines}} may be "
                         f"filled in ({error})") from None
    return template


def check_template(dataset: EvalDataset, template: str) -> None:
    """A template that shows the choices needs every item to have them (it would show an empty list), and
    ``{choices}`` needs choices without commas (``a, b`` and ``c`` would read as the choices ``a``, ``b`` and ``c``)."""
    if "{choice" not in template:
        return
    without = [item.id for item in dataset.items if not item.choices]
    if without:
        raise ValueError(f"the prompt format fills in the choices, but {len(without)} item(s) have none (e.g. "
                         f"{without[:3]}), so their prompt would show an empty list; use --prompt-format plain "
                         "or add choices to those rows")
    if "{choices" in template:
        commas = [item.id for item in dataset.items if any("," in c for c in item.choices)]
        if commas:
            raise ValueError(f"the prompt format joins the choices with commas ({{choices}}), but {len(commas)} item(s) "
                             f"(e.g. {commas[:3]}) have a choice that contains one, so the prompt could not be read "
                             "back into its choices; write {choice_lines} (one choice per line) instead")


def render_prompt(item: EvalItem, template: str) -> str:
    choices = item.choices or ()
    return template.format(question=item.question, choices=", ".join(choices),
                           choice_lines="\n".join(f"- {c}" for c in choices))


def run_config(model_name: str, dataset: EvalDataset, scoring: str, prompt_format: str, max_new_tokens: int,
               hooks: str | None, steer: Sequence[Steer] = (), fingerprint: str | None = None) -> dict[str, Any]:
    """What decides the results: a resumed run must match it exactly. ``steer`` is recorded only when
    given (so files written before steering existed still resume). ``fingerprint``: :func:`model_fingerprint`
    (``evaluate`` records it; the command checks the other settings before the model is loaded)."""
    source = {k: v for k, v in dataset.source.items() if k in ("kind", "path", "sha256", "tracks", "hop")}
    config = {"format_version": FORMAT_VERSION, "model": model_name, "dataset": dataset.spec, "dataset_source": source,
              "scoring": scoring, "prompt_format": prompt_format, "prompt_template": prompt_template(prompt_format),
              "max_new_tokens": max_new_tokens, "hooks": hooks}
    if steer:
        config["steer"] = steer_config(steer)
    if fingerprint is not None:
        config["model_fingerprint"] = fingerprint
    return config


def meta_path(out: str) -> str:
    return out + ".meta.json"


def summary_paths(out: str) -> tuple[str, str]:
    """``results.jsonl`` -> ``results.summary.json``, ``results.summary.png``."""
    stem = out[: -len(".jsonl")] if out.endswith(".jsonl") else out
    return stem + ".summary.json", stem + ".summary.png"


def read_results(out: str, repair: bool = False) -> list[dict]:
    """The lines of a results file. A last line cut short (an interrupted write) is dropped, and with
    ``repair=True`` removed from the file; a bad line elsewhere is an error."""
    if not os.path.exists(out):
        return []
    with open(out, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: after the last newline (empty when the file ends cleanly)
    results, good_bytes = [], 0
    for number, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError("not a result record")
        except ValueError as error:
            raise ResumeError(f"{out}:{number} is not a result line ({error}); the file is damaged, move it away") from None
        results.append(record)
        good_bytes += len(line) + 1
    if tail.strip():
        warnings.warn(f"{out}: the last line was cut short (an interrupted write); it is dropped and its item redone")
        if repair:
            with open(out, "r+b") as handle:
                handle.truncate(good_bytes)
    return results


def check_resumable(out: str, config: dict) -> bool:
    """Whether ``out`` holds results to resume; raises ``ResumeError`` when they were made with other settings
    (or without a ``.meta.json``). Writes nothing."""
    meta = meta_path(out)
    if os.path.isdir(out):
        raise ResumeError(f"{out} is a folder; --out is the results file (e.g. {os.path.join(out, 'results.jsonl')})")
    if not (os.path.exists(out) and os.path.getsize(out) > 0):
        return False
    if not os.path.exists(meta):
        raise ResumeError(f"{out} exists but {meta} does not, so its settings are unknown; choose another --out")
    with open(meta) as handle:
        stored = json.load(handle).get("config", {})
    keys = set(stored) | set(config)
    if "model_fingerprint" not in config:  # checked before the model is loaded; evaluate() checks it
        keys.discard("model_fingerprint")
    differ = {k: (stored.get(k), config.get(k)) for k in keys if stored.get(k) != config.get(k)}
    if differ:
        lines = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in sorted(differ.items()))
        why = (" (model_fingerprint: the weights, dtype or config differ from those that wrote the file, or the file "
               "predates fingerprints)" if "model_fingerprint" in differ else "")
        raise ResumeError(f"{out} was made with other settings ({lines}){why}; rerun with those or choose another --out")
    return True


def prepare_resume(out: str, config: dict) -> set[str]:
    """Ids already written to ``out`` by a run with the same ``config`` (writes the meta file if new)."""
    if check_resumable(out, config):
        ids = [r["id"] for r in read_results(out, repair=True)]
        if len(ids) != len(set(ids)):
            raise ResumeError(f"{out} has duplicate ids; the file is damaged, move it away")
        return set(ids)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(meta_path(out), "w") as handle:
        json.dump({"config": config, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, handle, indent=2)
    open(out, "w").close()
    return set()


def check_audio_unchanged(records: list[dict], items: Sequence[EvalItem], out: str) -> None:
    """Refuse to resume ``out`` when an item already written was scored on an audio file that has changed
    since (its sha256 differs from the one on its line). Lines from before hashes were recorded are warned of."""
    by_id = {item.id: item for item in items}
    changed, unchecked = [], 0
    for record in records:
        item = by_id.get(record["id"])
        if item is None:
            continue
        if "audio_sha256" not in record:
            unchecked += 1
        elif record["audio_sha256"] != _audio_sha256(item):
            changed.append(f"{item.id} ({item.audio})")
    if changed:
        raise ResumeError(f"{out}: {len(changed)} item(s) already written were scored on audio that has changed since: "
                          f"{', '.join(changed[:5])}; their results would not describe these clips. Choose another "
                          "--out, or remove those lines from the file to redo them")
    if unchecked:
        warnings.warn(f"{out}: {unchecked} line(s) predate audio hashes, so whether their clips changed cannot be "
                      "checked; they are resumed as they are")


def load_hooks(spec: str) -> Callable:
    """``module:function`` (a module on the path or a ``.py`` file) -> the function; it is called as
    ``function(model)`` and returns TransformerLens ``fwd_hooks``: a list of ``(hook name, hook function)``."""
    import importlib
    import importlib.util

    module_name, sep, function_name = spec.rpartition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"{spec!r} is not module:function (e.g. my_hooks:ablate_heads or path/to/hooks.py:steer)")
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise ValueError(f"no file {module_name!r}")
            loader_spec = importlib.util.spec_from_file_location(os.path.basename(module_name)[:-3], module_name)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r} ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no function {function_name!r}")
    return function


def hooks_record(spec: str, function: Callable) -> str:
    """What a results file records of ``--hooks MODULE:FUNCTION``: the spec and the sha256 of the module's source
    file, so that resuming after the file was edited is refused instead of mixing results of two versions."""
    import hashlib
    import inspect

    try:
        source = inspect.getsourcefile(function)
    except TypeError:  # a builtin or C function: no file to hash
        source = None
    if source is None or not os.path.isfile(source):
        return spec
    with open(source, "rb") as handle:
        return f"{spec} (source sha256 {hashlib.sha256(handle.read()).hexdigest()[:16]})"


def hooks_for(function: Callable, model, spec: str = "hooks") -> list:
    hooks = function(model)
    if not isinstance(hooks, (list, tuple)) or not all(isinstance(h, (list, tuple)) and len(h) == 2 for h in hooks):
        raise ValueError(f"{spec} returned {type(hooks).__name__}; it must return a list of (hook name, function) pairs")
    unknown = [name for name, _ in hooks if isinstance(name, str) and name not in model.hook_dict]
    if unknown:
        raise ValueError(f"{spec} names hook points the model does not have: {unknown[:5]}")
    return list(hooks)


def make_batches(items: Sequence[EvalItem], batch_size: int) -> list[list[EvalItem]]:
    """Items sorted by duration (stable: ties keep dataset order), cut into batches of ``batch_size``."""
    ordered = sorted(items, key=lambda item: item.duration)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def _messages(item: EvalItem, template: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "audio", "path": item.audio},
                                         {"type": "text", "text": render_prompt(item, template)}]}]


GROUP_KEYS = ("task", "sub-category", "difficulty")


def _audio_sha256(item: EvalItem) -> str | None:
    try:
        return sha256_of(item.audio)
    except OSError:  # unreadable now: its line records the error
        return None


def _record(item: EvalItem, scoring: str) -> dict:
    record = {"id": item.id, "answer": item.answer, "choices": list(item.choices) if item.choices else None,
              "scoring": scoring, "duration_s": item.duration, "audio_sha256": _audio_sha256(item)}
    record |= {k: item.metadata[k] for k in GROUP_KEYS if item.metadata.get(k) is not None}
    return record


INPUT_ERRORS = (ValueError, TypeError, OSError, soundfile.SoundFileError)  # what building one item's inputs raises


def _build(model, items: list[EvalItem], template: str):
    return model.build_inputs(messages=[_messages(item, template) for item in items], on_too_long="truncate")


def score_batch(model, items: list[EvalItem], inputs, scoring: str, max_new_tokens: int,
                choice_ids: dict[str, list[int]], steer: Sequence[Steer] = ()) -> list[dict]:
    """Result records for one batch whose inputs are built (run and scored together), with ``steer``'s
    hooks (built for these inputs) active on the forward and every generated token."""
    prompt_len = inputs.shape[1]
    longest = max_audio_seconds(model.processor)
    texts: list[str | None] = [None] * len(items)
    with model.hooks(fwd_hooks=steering_hooks(steer, inputs, max_new_tokens)):
        if max_new_tokens > 0:
            ids, step_logits = model.generate(inputs, max_new_tokens=max_new_tokens, return_logits=True)
            first = step_logits[:, 0]
            texts = [t.strip() for t in model.tokenizer.batch_decode(ids[:, prompt_len:], skip_special_tokens=True)]
        else:
            first = model(inputs)[:, -1]  # left padding: the last column is every row's answer position
    records = []
    for row, item in enumerate(items):
        record = _record(item, scoring)
        if item.duration > longest:
            record["truncated_to_s"] = longest  # over the encoder's window: its start was kept
        if item.id in choice_ids:
            record |= restricted_choice(first[row], choice_ids[item.id], item.choices)
            record["prediction_restricted"] = record.pop("prediction")
        record["generated"] = texts[row]
        if scoring == "restricted":
            record["prediction"] = record["prediction_restricted"]
            record["correct"] = record["prediction"] == item.answer
        elif scoring == "mmau":
            record["prediction"] = texts[row] or ""
            record["correct"] = mmau_match(record["prediction"], item.answer, item.choices)
        else:
            record["prediction"] = texts[row] or ""
            record["correct"] = exact_match(record["prediction"], item.answer, item.metadata.get("aliases", ()))
        records.append(record)
    return records


def run_batch(model, items: list[EvalItem], template: str, scoring: str, max_new_tokens: int,
              choice_ids: dict[str, list[int]], steer: Sequence[Steer] = (), strict: bool = False) -> list[dict]:
    """Records for a batch, in its order. An item whose inputs cannot be built (its audio or prompt is refused)
    gets an error line (``strict``: raises, naming it); the others run together. Errors of the model itself are
    raised, not recorded."""
    try:
        good, bad, inputs = items, {}, _build(model, items, template)
    except INPUT_ERRORS:
        good, bad = [], {}
        for item in items:
            try:
                _build(model, [item], template)
                good.append(item)
            except INPUT_ERRORS as error:
                if strict:
                    raise ValueError(f"item {item.id}: {type(error).__name__}: {error} (the dataset was loaded strict, "
                                     "which refuses every bad row; fix or drop it, or leave out --strict)") from error
                logger.warning("item %s: %s", item.id, error)
                bad[item.id] = _record(item, scoring) | {"prediction": None, "correct": None,
                                                         "error": f"{type(error).__name__}: {error}"}
        inputs = _build(model, good, template) if good else None
    scored = ({r["id"]: r for r in score_batch(model, good, inputs, scoring, max_new_tokens, choice_ids, steer)}
              if good else {})
    return [scored.get(item.id) or bad[item.id] for item in items]


def _check_whole(name: str, value, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}" + (" (or None)" if optional else "")
                         + f", got {value!r}")


def evaluate(
    model,
    dataset: EvalDataset,
    out: str,
    *,
    model_name: str = "model",
    scoring: str | None = None,
    prompt_format: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    fwd_hooks: Sequence = (),
    hooks_spec: str | None = None,
    steer: Sequence[Steer | str] | Steer | str | None = None,
    limit: int | None = None,
    progress: bool = True,
    after_batch: Callable[[int, list[dict]], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict:
    """Evaluate ``dataset`` into ``out`` (resuming it) and return the summary of every item written.

    ``scoring`` defaults to :func:`default_scoring`, ``prompt_format`` to :func:`default_prompt_format`,
    ``max_new_tokens`` to 0 for restricted scoring (one forward pass; choice log-probs only) and 32
    otherwise. ``fwd_hooks`` stay active for every forward and generated token. ``steer``: SPEC strings
(``"layer=1,file=d.pt,scale=4,positions=audio"``) or :class:`~hooked_audio.evaluation.steer.Steer`
objects, stacked; their hooks are built per batch and recorded in the settings. ``limit``: stop after this many new items (whole batches; rerun to go on).
    ``after_batch(index, records)`` runs after each batch is written (tests use it to interrupt a run).
    ``rank``/``world_size`` (under torchrun, with the process group joined): this process evaluates the
    batches ``i % world_size == rank`` into its rank file, and rank 0 merges them into ``out`` and returns
    the summary (see :mod:`hooked_audio.evaluation.distributed`); other ranks return ``{"rank": r, ...}``."""
    _check_whole("batch_size", batch_size, 1)
    _check_whole("max_new_tokens", max_new_tokens, 0, optional=True)
    _check_whole("limit", limit, 0, optional=True)
    _check_whole("world_size", world_size, 1)
    _check_whole("rank", rank, 0)
    if rank >= world_size:
        raise ValueError(f"rank {rank} is not below world_size {world_size}: ranks are 0 .. world_size - 1")
    check_items(dataset)
    scoring = scoring or default_scoring(dataset)
    prompt_format = prompt_format or default_prompt_format(dataset)
    check_scoring(dataset, scoring)
    template = prompt_template(prompt_format)
    check_template(dataset, template)
    if max_new_tokens is None:
        max_new_tokens = 0 if scoring == "restricted" else DEFAULT_MAX_NEW_TOKENS
    if scoring != "restricted" and max_new_tokens < 1:
        raise ValueError(f"--scoring {scoring} scores generated text: --max-new-tokens must be at least 1")
    fwd_hooks = list(fwd_hooks)
    unnamed_hooks = bool(fwd_hooks) and hooks_spec is None
    if unnamed_hooks:  # recorded by hook point only: their functions cannot be compared on a resume
        hooks_spec = f"unnamed fwd_hooks at {sorted({str(name) for name, _ in fwd_hooks})}"
    steer = as_steers(steer)
    check_steers(steer, model.cfg.n_layers, model.cfg.d_model)
    missing = [s.hook_name for s in steer if s.hook_name not in model.hook_dict]
    if missing:
        raise ValueError(f"steering names hook points the model does not have: {missing}")
    config = run_config(model_name, dataset, scoring, prompt_format, max_new_tokens, hooks_spec, steer,
                        model_fingerprint(model))
    if unnamed_hooks and check_resumable(out, config):
        raise ResumeError(f"{out} holds results of a run with fwd_hooks but no hooks_spec, so whether these hooks are "
                          "the same cannot be checked; pass hooks_spec='a name for the hooks' (it is recorded), or "
                          "choose another out")
    attached = model.attached_hook_names()  # add_hook, or an open hooks() context around this call
    if attached:
        config["attached_hooks"] = attached
        if check_resumable(out, config):
            raise ResumeError(f"{out} holds results of a model with hooks attached at {attached[:3]}, whose functions "
                              "cannot be compared; pass them as fwd_hooks with a hooks_spec, or choose another out")

    choice_ids: dict[str, list[int]] = {}
    if scoring == "restricted":
        problems = []
        for item in dataset.items:
            try:
                choice_ids[item.id] = first_token_ids(model.tokenizer, item.choices)
            except ValueError as error:
                problems.append(f"{item.id}: {error}")
        if problems:
            raise ValueError(f"{len(problems)} item(s) cannot be scored by restricted argmax: " + " | ".join(problems[:3]))

    from . import distributed

    merged = False
    if world_size == 1:
        done = prepare_resume(out, config)
        if distributed.rank_files(out):  # left by an interrupted torchrun run: fold them in first
            merged = distributed.merge(out, dataset.items, config) > 0
            done = {r["id"] for r in read_results(out)}
        write_to = out
    else:
        if rank == 0:
            prepare_resume(out, config)
            # rank files left by an interrupted run, whatever its number of processes or batches: folded into out
            # first, so that every rank skips their items (each would otherwise redo those not in its own file)
            distributed.merge(out, dataset.items, config)
        distributed.barrier()
        write_to = distributed.rank_path(out, rank)
        done = {r["id"] for r in read_results(out)} | prepare_resume(write_to, config)
    check_audio_unchanged(read_results(out) + (read_results(write_to) if write_to != out else []), dataset.items, out)
    batches = [b for i, b in enumerate(make_batches(dataset.items, batch_size)) if i % world_size == rank]
    todo = [[item for item in batch if item.id not in done] for batch in batches]
    todo = [batch for batch in todo if batch]
    n_todo = sum(len(b) for b in todo)
    if done:
        logger.info("%s: %d items already done, %d to go", out, len(done), n_todo)

    from tqdm.auto import tqdm

    bar = tqdm(total=n_todo, unit="item", desc=f"eval {dataset.spec}", disable=not progress, dynamic_ncols=True)
    written, started = 0, time.perf_counter()
    with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks), open(write_to, "a", encoding="utf-8") as handle:
        for index, batch in enumerate(todo):
            if limit is not None and written >= limit:
                break
            records = run_batch(model, batch, template, scoring, max_new_tokens, choice_ids, steer, dataset.strict)
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(records)
            bar.update(len(records))
            if after_batch is not None:
                after_batch(index, records)
    bar.close()
    elapsed = time.perf_counter() - started
    this_run = {"items": written, "seconds": round(elapsed, 2), "items_per_s": round(written / elapsed, 2) if elapsed else None}
    if world_size > 1:
        distributed.barrier()  # every rank's file is complete
        if rank != 0:
            return {"rank": rank, "this_run": this_run}
        distributed.merge(out, dataset.items, config)
        this_run["processes"] = world_size  # items and items/s: rank 0's share
    elif merged:  # rank files were folded in before this run's batches: put the lines back in one process's order
        distributed.write_in_order(out, read_results(out), dataset.items)
    from .summary import summarise

    results = [r for r in read_results(out) if r["id"] in {item.id for item in dataset.items}]
    summary = summarise(results)
    summary |= {"config": config, "dataset": dataset.skip_summary() | {
                    "skipped_rows": [{"row": skip.row, "reason": skip.reason} for skip in dataset.skipped]}, "complete": len(results) == len(dataset.items),
                "this_run": this_run}
    return summary
