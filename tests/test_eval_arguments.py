"""Silent wrong answers in the dataset loaders and the evaluation runner: each input below used to be accepted
and scored (or resumed) wrongly; it is now refused or skipped with a reason, next to a valid control."""

from __future__ import annotations

import copy
import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch

from hooked_audio.datasets import EvalDataset, EvalItem, load_dataset
from hooked_audio.datasets.sakura import parse_options
from hooked_audio.evaluation.runner import (
    ResumeError, check_resumable, check_scoring, check_template, evaluate, model_fingerprint, prompt_template,
    render_prompt, run_config,
)
from hooked_audio.evaluation.scoring import exact_match
from hooked_audio.toy.tasks import make_probe_set


@pytest.fixture(scope="module")
def toy():
    from hooked_audio.loading import from_pretrained

    return from_pretrained("toy-qwen2-audio")


@pytest.fixture(scope="module")
def pitch(tmp_path_factory):
    """Four toy pitch clips with their answers, as a manifest and as its loaded dataset."""
    folder = tmp_path_factory.mktemp("pitch_args")
    samples = [s for s in make_probe_set(7, 4, task_names=["pitch"]) if s.hint is None]
    rows = []
    for i, sample in enumerate(samples):
        soundfile.write(folder / f"clip{i}.wav", sample.waveform, 16000)
        rows.append({"audio": str(folder / f"clip{i}.wav"), "question": sample.question, "answer": sample.answer,
                     "choices": ["low", "high"]})
    path = folder / "pitch.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"rows": rows, "path": path, "ds": load_dataset(f"manifest:{path}")}


def lines(path):
    return [json.loads(line) for line in open(path)]


def write_manifest(folder, rows, name="m.jsonl"):
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def clip(tmp_path):
    soundfile.write(tmp_path / "a.wav", np.full(8000, 0.01, dtype=np.float32), 16000)
    return "a.wav"


# --- resuming -----------------------------------------------------------------------------------------------


def test_resume_with_another_model_under_the_same_name_is_refused(toy, pitch, tmp_path):
    """Was: a run of other weights (same default model_name) resumed the file, mixing two models' results."""
    ds, out = pitch["ds"], str(tmp_path / "r.jsonl")
    evaluate(toy, ds, out, batch_size=2, progress=False, limit=2)
    other = copy.deepcopy(toy)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    assert model_fingerprint(other) != model_fingerprint(toy)
    with pytest.raises(ResumeError, match="model_fingerprint.*weights, dtype or config differ"):
        evaluate(other, ds, out, batch_size=2, progress=False)
    other = copy.deepcopy(toy)  # same weights, another computation: the decoder's norm epsilon
    other.cfg.eps = 0.5
    for norm in [other.ln_final, *(block.ln1 for block in other.blocks), *(block.ln2 for block in other.blocks)]:
        norm.eps = 0.5
    with pytest.raises(ResumeError, match="model_fingerprint.*weights, dtype or config differ"):
        evaluate(other, ds, out, batch_size=2, progress=False)
    # the command checks the other settings before the model is loaded: a config without a fingerprint passes
    assert check_resumable(out, run_config("model", ds, "restricted", "plain", 0, None))
    summary = evaluate(toy, ds, out, batch_size=2, progress=False)  # control: the same model resumes
    assert summary["complete"] and summary["this_run"]["items"] == 2
    assert json.load(open(out + ".meta.json"))["config"]["model_fingerprint"] == model_fingerprint(toy)


def test_unnamed_fwd_hooks_are_recorded_and_never_resumed(toy, pitch, tmp_path):
    """Was: fwd_hooks without hooks_spec were recorded as no hooks, so a run without them resumed the file."""
    ds, out = pitch["ds"], str(tmp_path / "h.jsonl")

    def zero_audio(value, hook):
        return value * 0

    evaluate(toy, ds, out, batch_size=2, progress=False, limit=2, fwd_hooks=[("hook_audio_embeds", zero_audio)])
    assert "hook_audio_embeds" in json.load(open(out + ".meta.json"))["config"]["hooks"]
    with pytest.raises(ResumeError, match="hooks: was"):
        evaluate(toy, ds, out, batch_size=2, progress=False)
    with pytest.raises(ResumeError, match="no hooks_spec"):
        evaluate(toy, ds, out, batch_size=2, progress=False, fwd_hooks=[("hook_audio_embeds", zero_audio)])
    named = str(tmp_path / "named.jsonl")  # control: named hooks resume
    evaluate(toy, ds, named, batch_size=2, progress=False, limit=2, fwd_hooks=[("hook_audio_embeds", zero_audio)],
             hooks_spec="zero_audio")
    summary = evaluate(toy, ds, named, batch_size=2, progress=False, fwd_hooks=[("hook_audio_embeds", zero_audio)],
                       hooks_spec="zero_audio")
    assert summary["complete"] and summary["this_run"]["items"] == 2


def test_hooks_attached_to_the_model_are_recorded_and_never_resumed(toy, pitch, tmp_path):
    """Was: a hook added with add_hook before evaluate() was recorded as no hooks, so the same file resumed
    without it (or with another), mixing two computations. Control: the same model without the hook resumes
    its own file."""
    ds, out = pitch["ds"], str(tmp_path / "attached.jsonl")
    toy.add_hook("hook_audio_embeds", lambda value, hook: value * 0)
    try:
        evaluate(toy, ds, out, batch_size=2, progress=False, limit=2)
        assert json.load(open(out + ".meta.json"))["config"]["attached_hooks"] == ["hook_audio_embeds"]
        with pytest.raises(ResumeError, match="hooks attached at"):
            evaluate(toy, ds, out, batch_size=2, progress=False)
    finally:
        toy.reset_hooks(including_permanent=True)
    with pytest.raises(ResumeError, match="attached_hooks: was"):
        evaluate(toy, ds, out, batch_size=2, progress=False)
    plain = str(tmp_path / "plain.jsonl")
    evaluate(toy, ds, plain, batch_size=2, progress=False, limit=2)
    assert evaluate(toy, ds, plain, batch_size=2, progress=False)["complete"]


# --- arguments ----------------------------------------------------------------------------------------------


def test_rank_and_whole_number_arguments(toy, pitch, tmp_path):
    """Was: rank 3 of 2 wrote nothing and returned; limit=1.5 ran two batches; batch_size=True ran batches of 1."""
    ds, out = pitch["ds"], str(tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="rank 3 is not below world_size 2"):
        evaluate(toy, ds, out, progress=False, rank=3, world_size=2)
    for name, value in (("batch_size", True), ("batch_size", 2.0), ("limit", 1.5), ("max_new_tokens", True),
                        ("world_size", 0), ("rank", -1)):
        with pytest.raises(ValueError, match=f"{name} must be a whole number"):
            evaluate(toy, ds, out, progress=False, **{name: value})
    summary = evaluate(toy, ds, out, batch_size=np.int64(2), limit=2, progress=False)  # control
    assert summary["this_run"]["items"] == 2


def test_hand_built_dataset_is_checked(toy, pitch, tmp_path):
    """Was: two items with one id got the same record; an answer outside its choices was scored wrong every time."""
    items = pitch["ds"].items
    dup = EvalDataset("by-hand", [items[0], EvalItem(items[0].id, items[1].audio, "q", "low", ("low", "high"),
                                                     dict(items[1].metadata))], [], {})
    with pytest.raises(ValueError, match="used by two items; ids must be unique"):
        evaluate(toy, dup, str(tmp_path / "d.jsonl"), progress=False)
    outside = EvalDataset("by-hand", [EvalItem("x", items[0].audio, "q", "Low", ("low", "high"))], [], {})
    with pytest.raises(ValueError, match="'Low' is not among its choices"):
        evaluate(toy, outside, str(tmp_path / "o.jsonl"), progress=False)
    fine = EvalDataset("by-hand", list(items[:2]), [], {})  # control
    assert evaluate(toy, fine, str(tmp_path / "f.jsonl"), progress=False)["overall"]["n"] == 2


def test_choices_prompt_needs_choices(toy, pitch, tmp_path):
    """Was: prompt format "choices" on items without choices prompted "...\\nChoices: ."."""
    free = write_manifest(tmp_path, [{k: v for k, v in r.items() if k != "choices"} for r in pitch["rows"][:2]])
    ds = load_dataset(f"manifest:{free}")
    with pytest.raises(ValueError, match=r"fills in the choices.*--prompt-format plain"):
        evaluate(toy, ds, str(tmp_path / "c.jsonl"), prompt_format="choices", max_new_tokens=2, progress=False)
    summary = evaluate(toy, ds, str(tmp_path / "p.jsonl"), prompt_format="plain", max_new_tokens=2, progress=False)
    assert summary["config"]["scoring"] == "exact" and summary["overall"]["n"] == 2  # control


def test_choices_with_commas_are_listed_one_per_line(clip, tmp_path):
    """Was: the "choices" format joined choices with ", ", so MMAU's ["a, chance", "cleft,ago"] read as four
    choices. Now it lists one per line; ``{choices}`` (comma-joined) is refused where a choice holds a comma."""
    rows = [{"audio": clip, "question": "which ?", "answer": "a, chance", "choices": ["a, chance", "cleft,ago"]}]
    commas = load_dataset(f"manifest:{write_manifest(tmp_path, rows, 'commas.jsonl')}")
    item = commas.items[0]
    assert render_prompt(item, prompt_template("choices")) == "which ?\nChoices:\n- a, chance\n- cleft,ago"
    with pytest.raises(ValueError, match=r"contains one.*\{choice_lines\}"):
        check_template(commas, prompt_template("{question} Options: {choices}."))
    plain = load_dataset(f"manifest:{write_manifest(tmp_path, [dict(rows[0], answer='low', choices=['low', 'high'])], 'p.jsonl')}")
    check_template(plain, prompt_template("{question} Options: {choices}."))  # control: no comma, no refusal
    assert render_prompt(plain.items[0], prompt_template("{question} Options: {choices}.")) == "which ? Options: low, high."


def test_resume_refuses_a_file_written_with_another_prompt_template(tmp_path):
    """A file whose prompts were rendered by another template (e.g. before "choices" listed one per line) is not
    resumed: the template is part of the run's settings."""
    out = str(tmp_path / "r.jsonl")
    ds = SimpleNamespace(spec="s", source={"kind": "mmau"}, items=[])
    config = run_config("m", ds, "mmau", "choices", 8, None)
    assert config["prompt_template"] == prompt_template("choices")
    old = {k: v for k, v in config.items() if k != "prompt_template"}
    open(out, "w").write('{"id": "a"}\n')
    json.dump({"config": old}, open(out + ".meta.json", "w"))
    with pytest.raises(ResumeError, match="prompt_template: was None"):
        check_resumable(out, config)
    json.dump({"config": config}, open(out + ".meta.json", "w"))
    assert check_resumable(out, config)  # control: the same template resumes


def test_answers_of_punctuation_only_are_refused_by_text_scorings(clip, tmp_path):
    """Was: an answer of punctuation only ("?") was scored wrong whatever the prediction (exact, mmau)."""
    dots = load_dataset(f"manifest:{write_manifest(tmp_path, [{'audio': clip, 'question': 'q', 'answer': '?', 'choices': ['?', 'no']}], 'p.jsonl')}")
    for scoring in ("exact", "mmau"):
        with pytest.raises(ValueError, match=f"--scoring {scoring}: .*only punctuation"):
            check_scoring(dots, scoring)
    check_scoring(dots, "restricted")  # restricted argmax compares the choices' tokens: fine
    plain = load_dataset(f"manifest:{write_manifest(tmp_path, [{'audio': clip, 'question': 'q', 'answer': 'low', 'choices': ['low', 'high']}], 'l.jsonl')}")
    check_scoring(plain, "mmau")  # control
    check_scoring(plain, "exact")


def test_exact_match_ignores_unicode_punctuation():
    """Was: "Dog。" and "it’s a dog" were wrong where "Dog." and "it's a dog" were right."""
    assert exact_match("Dog。", "dog") and exact_match("it’s a dog", "it's a dog") and exact_match("ｄｏｇ", "dog")
    assert exact_match("Dog.", "dog") and not exact_match("dogs。", "dog")  # control


def test_exact_match_keeps_what_makes_a_number_and_non_punctuation_symbols():
    """Was: every ASCII punctuation character was stripped, so "-5" matched "5", "C++" matched "C" and "$5"
    matched "5", while the Unicode minus "−5" did not match "-5". Controls: punctuation around words still goes."""
    from hooked_audio.evaluation.scoring import mmau_match

    for wrong, answer in (("5", "-5"), ("-5", "5"), ("C", "C++"), ("5", "$5"), ("3", "<3"), ("3.5", "35"), ("50", "50%")):
        assert not exact_match(wrong, answer), (wrong, answer)
    assert exact_match("−5", "-5") and exact_match("+5", "+5") and exact_match("3.5 s", "3.5 s")
    assert exact_match("`dog`", "dog") and exact_match("well-known", "well known") and exact_match("Dog!", "dog")
    # mmau_match reads words after the same Unicode normalisation (was: full-width or decomposed letters missed)
    assert mmau_match("ｄｏｇ", "dog", ["dog", "cat"]) and mmau_match("cafe\u0301", "café", ["café", "tea"])
    assert not mmau_match("cat", "dog", ["dog", "cat"])


# --- loaders ------------------------------------------------------------------------------------------------


def test_manifest_choices_and_aliases_are_checked(clip, tmp_path):
    """Was: an empty choice, choices differing only in case or punctuation, and ``"aliases": "doggy"`` (each
    letter an alias: the prediction "d" was right) were accepted; a non-text id became "True" / "[1]"."""
    base = {"audio": clip, "question": "q", "answer": "low"}
    rows = [
        dict(base, choices=["", "low"]),
        dict(base, choices=["Low", "low"]),
        dict(base, choices=["low", "low."]),
        dict(base, answer="dog", aliases="doggy"),
        dict(base, id=True),
        dict(base, id=[1]),
        dict(base, choices=["low", "high"], id=12),  # control
        dict(base, answer="dog", aliases=["doggy"]),  # control
    ]
    ds = load_dataset(f"manifest:{write_manifest(tmp_path, rows)}")
    assert [(i.id, i.choices) for i in ds] == [("12", ("low", "high")), ("7", None)]
    reasons = [s.reason for s in ds.skipped]
    assert len(reasons) == 6
    assert "an empty choice" in reasons[0]
    assert "differ only in case, spacing or punctuation" in reasons[1] and "differ only" in reasons[2]
    assert "aliases must be a list" in reasons[3]
    assert "id is not a text or whole number" in reasons[4] and "id is not a text" in reasons[5]
    alias_item = [i for i in ds if i.answer == "dog"][0]
    assert exact_match("doggy", "dog", alias_item.metadata["aliases"])
    assert not exact_match("d", "dog", alias_item.metadata["aliases"])


def test_csv_list_cells_are_json_lists(clip, tmp_path):
    """Was: a CSV ``aliases`` cell "doggy" made every letter an alias, and a ``choices`` cell "null" dropped the
    choices (the row became an open question)."""
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "question", "answer", "choices", "aliases"])
        writer.writerow([clip, "q", "dog", "", "doggy"])
        writer.writerow([clip, "q", "dog", "null", ""])
        writer.writerow([clip, "q", "dog", '["dog", "cat"]', '["doggy", "puppy"]'])  # control
    ds = load_dataset(f"manifest:{path}")
    assert [i.id for i in ds] == ["2"] and ds.items[0].metadata["aliases"] == ["doggy", "puppy"]
    assert ds.items[0].choices == ("dog", "cat") and exact_match("puppy", "dog", ds.items[0].metadata["aliases"])
    assert [s.row for s in ds.skipped] == ["m.csv:2", "m.csv:3"]
    assert all("is not a JSON list" in s.reason for s in ds.skipped)


def test_json_manifest_holding_one_list(clip, tmp_path):
    """Was: a pretty-printed JSON list in a .json manifest kept its last record only (the others: "not JSON")."""
    rows = [{"audio": clip, "question": "q", "answer": "a", "id": f"r{i}"} for i in range(3)]
    path = tmp_path / "list.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    ds = load_dataset(f"manifest:{path}")
    assert [i.id for i in ds] == ["r0", "r1", "r2"] and not ds.skipped
    lines_json = tmp_path / "lines.json"  # control: JSON lines under a .json name still read
    lines_json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [i.id for i in load_dataset(f"manifest:{lines_json}")] == ["r0", "r1", "r2"]


def test_mmau_record_fields_must_be_text(clip, tmp_path):
    """Was: ``"question": null`` became the question "None", and ``"id": null`` the id "None"."""
    record = {"id": "m0", "audio_id": clip, "question": "which ?", "choices": ["a b", "c d"], "answer": "a b"}
    path = tmp_path / "mmau.json"
    path.write_text(json.dumps([dict(record, question=None), dict(record, id=None), dict(record, id=True), record]))
    ds = load_dataset(f"mmau:{path}")
    assert [i.id for i in ds] == ["m0"] and ds.items[0].question == "which ?"
    reasons = [s.reason for s in ds.skipped]
    assert "question is not text (None)" in reasons[0]
    assert "id is not a text or whole number (None)" in reasons[1] and "(True)" in reasons[2]


def test_sakura_options_are_the_lettered_run(tmp_path):
    """Was: "speaker(s)? (a) male (b) female" gave the choices ['?', 'male', 'female']."""
    assert parse_options("What is the gender of the speaker(s)? (a) male (b) female") == [("a", "male"), ("b", "female")]
    assert parse_options("What animal? (a) dog (b) cat (c) bird. Answer with (a), (b) or (c).") == [
        ("a", "dog"), ("b", "cat"), ("c", "bird")]
    assert parse_options("What? (a) dog (c) cat") == []
    track = tmp_path / "data" / "Gender"
    track.mkdir(parents=True)
    soundfile.write(track / "x.wav", np.full(8000, 0.01, dtype=np.float32), 16000)
    with open(track / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "attribute_label", "single_instruction", "single_answer", "multi_instruction",
                         "multi_answer"])
        writer.writerow(["x.wav", "male", "The speaker(s)? (a) male (b) female", "(a) male", "q (a) x (b) y", "(a) x"])
        writer.writerow(["y.wav", "male", "What? (a) male (c) female", "(a) male", "q (a) x (b) y", "(a) x"])
    ds = load_dataset(f"sakura:{tmp_path}")
    assert [(i.id, i.choices, i.answer) for i in ds] == [("Gender/single/x.wav", ("male", "female"), "male")]
    assert "not lettered (a), (b), ... in order" in ds.skipped[0].reason


def test_a_group_whose_items_all_failed_is_listed_with_its_errors():
    """Was: a task none of whose items could be run vanished from the per-task table (errors were counted
    overall only). Control: a group with results has them, and its own error count."""
    from hooked_audio.evaluation.summary import format_table, summarise

    results = [{"id": "1", "task": "pitch", "correct": True}, {"id": "2", "task": "pitch", "correct": False},
               {"id": "3", "task": "pitch", "correct": None, "error": "too short"},
               {"id": "4", "task": "loudness", "correct": None, "error": "too short"},
               {"id": "5", "task": "loudness", "correct": None, "error": "too short"}]
    summary = summarise(results)
    by_task = summary["by"]["task"]
    assert by_task["loudness"]["accuracy"] is None and by_task["loudness"]["n"] == 0 and by_task["loudness"]["errors"] == 2
    assert by_task["pitch"]["accuracy"] == 0.5 and by_task["pitch"]["n"] == 2 and by_task["pitch"]["errors"] == 1
    assert summary["errors"] == 3 and summary["overall"]["n"] == 2
    assert "(2 not run)" in format_table(summary)


def test_accuracy_intervals_are_wilson_intervals():
    """Was: percentile-bootstrap intervals, [1, 1] for 5 of 5 right and too narrow near 0 and 1 (coverage 0.77 at a
    rate of 0.05 on 30 items). Control: scipy's Wilson interval, and a rate of 0.5 gets a wide, non-degenerate one."""
    from scipy.stats import binomtest

    from hooked_audio.evaluation.summary import accuracy

    for hits in ([True] * 5, [True] * 9 + [False], [True, False] * 15, [False] * 29 + [True], [True]):
        ci = binomtest(sum(hits), len(hits)).proportion_ci(confidence_level=0.95, method="wilson")
        assert accuracy(hits)["ci95"] == [round(ci.low, 4), round(ci.high, 4)]
    assert accuracy([True] * 5)["ci95"][0] < 0.6 and accuracy([])["ci95"] is None
