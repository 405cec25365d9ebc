"""Dataset loaders (SAKURA, MMAU test-mini, manifests) on fixtures in their real layouts, and the scoring
functions on hand-made cases. Every bad row is either a clear error or a counted, logged skip."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import logging

import numpy as np
import pytest
import soundfile
import torch
from family_harness import word_level_tokenizer

from hooked_audio.audio.io import load_waveform
from hooked_audio.datasets import DatasetError, load_dataset, parse_spec
from hooked_audio.evaluation.scoring import (
    exact_match, first_token_ids, mmau_match, normalise, restricted_choice,
)


def write_clip(path, seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    return path


def write_garbage(path):
    path.write_bytes(b"this is not audio at all" * 10)
    return path


SAKURA_COLUMNS = ["attribute_label", "single_instruction", "single_answer", "multi_instruction", "multi_answer"]
ANIMAL_Q = "What animal makes this sound? (a) dog (b) cat (c) cow (d) sheep"
ANIMAL_MULTI_Q = "Which of these animals usually has four legs and barks? (a) dog (b) cat (c) cow (d) sheep."


def write_sakura_track(folder, rows, file_column="file"):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([file_column] + SAKURA_COLUMNS)
        writer.writerows(rows)


@pytest.fixture
def sakura_dir(tmp_path):
    """SAKURA's layout: data/Animal (column ``file``) and data/Gender (column ``file_name``), with bad rows."""
    root = tmp_path / "SAKURA"
    animal = root / "data" / "Animal"
    animal.mkdir(parents=True)
    write_clip(animal / "dog1.wav")
    write_clip(animal / "cat1.wav", rate=8000)  # another rate: kept, resampled later
    write_clip(animal / "cow1.wav")
    write_garbage(animal / "broken.wav")
    write_clip(animal / "sheep1.wav")
    write_sakura_track(animal, [
        ["dog1.wav", "dog", ANIMAL_Q, "(a) dog", ANIMAL_MULTI_Q, "(a) dog"],
        ["cat1.wav", "cat", ANIMAL_Q, " (b) Cat.", ANIMAL_MULTI_Q, " (b) cat"],  # leading space, other spelling
        ["missing.wav", "dog", ANIMAL_Q, "(a) dog", ANIMAL_MULTI_Q, "(a) dog"],  # no such file
        ["broken.wav", "cow", ANIMAL_Q, "(c) cow", ANIMAL_MULTI_Q, "(c) cow"],  # unreadable
        ["cow1.wav", "cow", ANIMAL_Q, "", ANIMAL_MULTI_Q, "(c) cow"],  # empty single answer
        ["sheep1.wav", "sheep", ANIMAL_Q, "(a) sheep", ANIMAL_MULTI_Q, "(d) sheep"],  # letter disagrees
    ])
    gender = root / "data" / "Gender"
    gender.mkdir(parents=True)
    write_clip(gender / "f1.wav")
    write_clip(gender / "m1.wav", rate=22050)
    gq = "What is the gender of the speaker? (a) male (b) female"
    write_sakura_track(gender, [
        ["f1.wav", "female", gq, "(b) female", gq, "(b) female"],
        ["m1.wav", "male", gq, "(a) male", gq, "(a) male"],
    ], file_column="file_name")
    return root


def test_sakura_reads_its_layout_and_counts_every_skip(sakura_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="hooked_audio.datasets"):
        ds = load_dataset(f"sakura:{sakura_dir}")
    assert [i.id for i in ds] == ["Animal/single/dog1.wav", "Animal/single/cat1.wav",
                                  "Gender/single/f1.wav", "Gender/single/m1.wav"]
    dog, cat = ds.items[0], ds.items[1]
    assert dog.answer == "dog" and dog.choices == ("dog", "cat", "cow", "sheep")
    assert cat.answer == "cat" and "(b) Cat." in cat.metadata["aliases"]  # stripped; the option's spelling
    assert dog.question == ANIMAL_Q and dog.audio.endswith("data/Animal/dog1.wav")
    assert dog.metadata["task"] == "Animal" and dog.metadata["sub-category"] == "single"
    assert cat.metadata["sample_rate"] == 8000 and abs(cat.duration - 0.5) < 1e-3
    summary = ds.skip_summary()
    assert summary == {"items": 4, "skipped": 4, "resampled": 2, "skipped_by_reason": {
        "missing audio": 1, "unreadable audio": 1, "malformed row": 2}}
    reasons = " | ".join(s.reason for s in ds.skipped)
    assert "missing.wav" in reasons and "broken.wav" in reasons and "empty answer" in reasons and "disagrees" in reasons
    assert all("metadata.csv:" in s.row for s in ds.skipped)
    assert sum("skipping" in r.message for r in caplog.records) == 4  # each one logged
    assert set(ds.source["sha256"]) == {"Animal", "Gender"}


def test_sakura_one_track_and_multi_hop(sakura_dir):
    gender = load_dataset(f"sakura:{sakura_dir}:Gender")
    assert [i.metadata["task"] for i in gender] == ["Gender", "Gender"]
    multi = load_dataset(f"sakura:{sakura_dir}:Animal:multi")
    ids = [i.id for i in multi]
    assert "Animal/multi/cow1.wav" in ids and "Animal/multi/sheep1.wav" in ids  # their multi answers are fine
    assert multi.items[0].question == ANIMAL_MULTI_Q
    assert load_dataset(f"sakura:{sakura_dir / 'data' / 'Gender'}").source["tracks"] == ["Gender"]  # a track's folder


def test_sakura_errors(sakura_dir, tmp_path):
    with pytest.raises(DatasetError, match="strict"):
        load_dataset(f"sakura:{sakura_dir}", strict=True)
    with pytest.raises(DatasetError, match="no .*Emotion"):
        load_dataset(f"sakura:{sakura_dir}:Emotion")
    with pytest.raises(DatasetError, match="no track"):
        load_dataset(f"sakura:{tmp_path / 'SAKURA' / 'data' / 'Animal' / '..' / '..' / '..'}")
    bad = tmp_path / "bad" / "Animal"
    bad.mkdir(parents=True)
    (bad / "metadata.csv").write_text("file,attribute_label,single_instruction\nx.wav,dog,q\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_dataset(f"sakura:{tmp_path / 'bad'}")
    with pytest.raises(DatasetError, match="not a SAKURA track"):
        parse_spec(f"sakura:{sakura_dir}:Animals")


def mmau_record(i, **changes):
    record = {"id": f"m{i}", "audio_id": f"./test-mini-audios/{i}.wav", "question": "What is heard?",
              "choices": ["a dog barking", "a cat meowing", "rain", "a car horn"], "answer": "a dog barking",
              "dataset": "esc", "task": "sound", "split": "test-mini", "category": "Sound Identification",
              "sub-category": "animals", "difficulty": "easy"}
    record.update(changes)
    return record


@pytest.fixture
def mmau_file(tmp_path):
    audio = tmp_path / "mmau" / "test-mini-audios"
    audio.mkdir(parents=True)
    for i in range(5):
        write_clip(audio / f"{i}.wav", rate=44100 if i == 1 else 16000)
    write_garbage(audio / "5.wav")
    records = [
        mmau_record(0),
        mmau_record(1, category=["Sound Identification"], task="music", difficulty="hard"),  # one-element list
        mmau_record(2, answer="a horse"),  # not among the choices
        mmau_record(3, audio_id="./test-mini-audios/nothere.wav"),
        {k: v for k, v in mmau_record(4).items() if k != "question"},
        mmau_record(5),  # unreadable clip
        mmau_record(6, choices="a dog barking"),  # not a list
    ]
    path = tmp_path / "mmau" / "mmau-test-mini.json"
    path.write_text(json.dumps(records))
    return path


def test_mmau_reads_its_layout_and_counts_every_skip(mmau_file):
    ds = load_dataset(f"mmau:{mmau_file}")
    assert [i.id for i in ds] == ["m0", "m1"]
    m0, m1 = ds.items
    assert m0.choices[0] == "a dog barking" and m0.answer == "a dog barking"
    assert m1.metadata["category"] == "Sound Identification" and m1.metadata["task"] == "music"
    assert m0.metadata["sub-category"] == "animals" and m0.metadata["difficulty"] == "easy"
    assert m0.audio == str(mmau_file.parent / "test-mini-audios" / "0.wav")
    assert ds.source["sha256"] == hashlib.sha256(mmau_file.read_bytes()).hexdigest()  # which version was read
    assert ds.source["n_records"] == 7
    assert ds.skip_summary()["skipped_by_reason"] == {"malformed row": 3, "missing audio": 1, "unreadable audio": 1}
    assert ds.skip_summary()["resampled"] == 1
    assert any("not among the choices" in s.reason for s in ds.skipped)


def test_mmau_errors(tmp_path, mmau_file):
    (tmp_path / "obj.json").write_text(json.dumps({"id": 1}))
    with pytest.raises(DatasetError, match="not the list"):
        load_dataset(f"mmau:{tmp_path / 'obj.json'}")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(f"mmau:{tmp_path / 'bad.json'}")
    with pytest.raises(DatasetError, match="no JSON file"):
        load_dataset(f"mmau:{tmp_path / 'none.json'}")
    dup = mmau_file.parent / "dup.json"
    dup.write_text(json.dumps([mmau_record(0), mmau_record(1, id="m0")]))
    with pytest.raises(DatasetError, match="unique"):
        load_dataset(f"mmau:{dup}")


def test_manifest_jsonl(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.wav")
    absolute = write_clip(tmp_path / "b.wav", rate=48000)
    write_garbage(clips / "c.wav")
    lines = [
        json.dumps({"audio": "clips/a.wav", "question": "low or high ?", "answer": "low", "choices": ["low", "high"],
                    "task": "pitch"}),
        json.dumps({"audio": str(absolute), "question": "what ?", "answer": "tone", "id": "custom"}),
        "{not json",
        json.dumps({"audio": "clips/c.wav", "question": "q", "answer": "a"}),
        json.dumps({"audio": "clips/a.wav", "question": "q"}),  # no answer
        json.dumps(["a", "list"]),
        "",
        json.dumps({"audio": "clips/a.wav", "question": "q", "answer": "x", "choices": ["y", "z"]}),
        json.dumps({"audio": "clips/a.wav", "question": "q", "answer": "low", "id": None}),  # null: the row number
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset(f"manifest:{path}")
    assert [i.id for i in ds] == ["0", "custom", "7"]  # default id: the record number (a null id too; was "None")
    assert ds.items[0].choices == ("low", "high") and ds.items[0].metadata["task"] == "pitch"
    assert ds.items[1].choices is None and ds.items[1].audio == str(absolute)
    assert ds.skip_summary()["skipped"] == 5
    assert ds.skip_summary()["skipped_by_reason"] == {"malformed row": 4, "unreadable audio": 1}
    assert any(s.row == "m.jsonl:3" and "not JSON" in s.reason for s in ds.skipped)
    # the 48 kHz clip is resampled to 16 kHz when loaded
    assert load_waveform(ds.items[1].audio).shape == (8000,)


def test_manifest_csv_and_errors(tmp_path):
    write_clip(tmp_path / "a.wav")
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "question", "answer", "choices", "difficulty"])
        writer.writerow(["a.wav", "low or high ?", "high", '["low", "high"]', "easy"])
        writer.writerow(["a.wav", "q", "high", "low|high", "easy"])  # choices not JSON
        writer.writerow(["a.wav", "q", "no choices", "", "hard"])
        writer.writerow(["a.wav", "q"])  # short row
    ds = load_dataset(f"manifest:{path}")
    assert [i.id for i in ds] == ["0", "2"] and ds.items[0].choices == ("low", "high")
    assert ds.items[0].metadata["difficulty"] == "easy"
    assert len(ds.skipped) == 2 and "not a JSON list" in ds.skipped[0].reason
    (tmp_path / "cols.csv").write_text("path,question,answer\na.wav,q,a\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_dataset(f"manifest:{tmp_path / 'cols.csv'}")
    (tmp_path / "m.txt").write_text("")
    with pytest.raises(DatasetError, match="neither"):
        load_dataset(f"manifest:{tmp_path / 'm.txt'}")
    (tmp_path / "allbad.jsonl").write_text(json.dumps({"audio": "none.wav", "question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DatasetError, match="no usable items"):
        load_dataset(f"manifest:{tmp_path / 'allbad.jsonl'}")
    for spec in ("clips.jsonl", "csv:m.csv", "manifest:"):
        with pytest.raises(DatasetError, match="KIND:PATH"):
            parse_spec(spec)


# --- scoring ----------------------------------------------------------------------------------------------


def test_exact_match_normalises_case_space_punctuation():
    assert exact_match("  Dog. ", "dog")
    assert exact_match("A  dog!", "a dog")
    assert not exact_match("a dog barking", "a dog")
    assert exact_match("(a) dog", "dog", aliases=["(a) dog", "a"])
    assert not exact_match("", "dog") and normalise("Hello,  World!") == "hello world"


def test_mmau_match():
    choices = ["a man speaking", "a woman speaking", "a dog barking", "silence"]
    assert mmau_match("The sound is a man speaking.", "a man speaking", choices)
    assert not mmau_match("a woman speaking", "a man speaking", choices)  # 'woman' is a wrong choice's word
    assert not mmau_match("a man or a woman speaking", "a man speaking", choices)
    assert not mmau_match("a man", "a man speaking", choices)  # 'speaking' missing
    assert mmau_match("Speaking: a MAN", "a man speaking", choices)  # order and case do not matter
    assert not mmau_match("", "silence", choices)
    assert mmau_match("silence", "silence", choices)


def tiny_tokenizer():
    vocab = {w: i for i, w in enumerate("<unk> <eos> low high dog dogs cat the a".split())}
    tokenizer = word_level_tokenizer(vocab, "<unk>", "<eos>")
    tokenizer.unk_token = "<unk>"
    return tokenizer


def test_first_token_ids_and_restricted_choice():
    tok = tiny_tokenizer()
    ids = first_token_ids(tok, ["low", "high"])
    assert ids == [2, 3]
    with pytest.raises(ValueError, match="share first tokens"):
        first_token_ids(tok, ["the dog", "the cat"])
    with pytest.raises(ValueError, match="unknown token"):
        first_token_ids(tok, ["low", "zebra"])
    logits = torch.full((9,), -5.0)
    logits[3], logits[2], logits[0] = 2.0, 1.0, 10.0  # <unk> is highest overall, but outside the choices
    result = restricted_choice(logits, ids, ["low", "high"])
    assert result["prediction"] == "high"
    assert result["choice_logprobs"]["high"] > result["choice_logprobs"]["low"]
    assert abs(sum(result["choice_probs_restricted"].values()) - 1) < 1e-4
    assert abs(result["choice_probs_restricted"]["high"] - torch.sigmoid(torch.tensor(1.0)).item()) < 1e-4


def test_sakura_options_keep_abbreviations_and_drop_what_follows_the_last():
    """An option's text runs to the end of its sentence, and a full stop after an abbreviation ends none: the
    parser once cut "Mr. Smith" to "Mr" (and then skipped the row, its answer "disagreeing" with the option)."""
    from hooked_audio.datasets.sakura import parse_options

    assert parse_options("Who is speaking? (a) Mr. Smith (b) Mrs. Jones") == [("a", "Mr. Smith"), ("b", "Mrs. Jones")]
    assert parse_options("What? (a) U.S. English (b) U.K. English") == [("a", "U.S. English"), ("b", "U.K. English")]
    assert parse_options("Which? (a) e.g. a dog (b) a cat") == [("a", "e.g. a dog"), ("b", "a cat")]
    assert parse_options("Is the speaker (a) male or (b) female?") == [("a", "male"), ("b", "female")]
    # control: the instruction after the last option is still cut, and "no" is an answer, not an abbreviation
    assert parse_options("Which animal? (a) dog (b) cow. Answer with the letter.") == [("a", "dog"), ("b", "cow")]
    assert parse_options("Is it loud? (a) yes (b) no. Answer with the letter.") == [("a", "yes"), ("b", "no")]
    assert parse_options("Which? (a) 2.5 s (b) 3.5 s") == [("a", "2.5 s"), ("b", "3.5 s")]


DIRTY = "It’s so dirty! Please clean it as quick as possible."
EMOTION_MULTI_Q = (f"What would the speaker most likely say? (a) I feel so sad today. (b) {DIRTY} "
                   "(c) How dare they treat me so unfairly like this! (d) This is terrifying.")


def test_sakura_reads_clips_in_the_tracks_audio_folder_and_options_of_several_sentences(tmp_path):
    """SAKURA keeps a track's clips in ``<track>/audio/`` (its data/README.md); the loader once looked only next
    to metadata.csv and skipped every row as "missing audio". And an option of two sentences (Emotion's multi-hop
    "It's so dirty! Please clean it ...") was cut at its first "!", so the rows answering it were skipped as
    "disagreeing" with their instruction, only disgust items, which biased the group."""
    track = tmp_path / "SAKURA" / "data" / "Emotion"
    (track / "audio").mkdir(parents=True)
    for name in ("d1.wav", "a1.wav", "t1.wav"):
        write_clip(track / "audio" / name)
    last_dirty = "What would the speaker say? (a) I feel so sad today. (b) This is terrifying. (c) " + DIRTY
    write_sakura_track(track, [
        ["d1.wav", "disgust", "Emotion? (a) angry (b) disgust", "(b) disgust", EMOTION_MULTI_Q, f"(b) {DIRTY}"],
        ["a1.wav", "angry", "Emotion? (a) angry (b) disgust", "(a) angry", EMOTION_MULTI_Q,
         "(c) How dare they treat me so unfairly like this!"],
        ["t1.wav", "disgust", "Emotion? (a) angry (b) disgust", "(b) disgust", last_dirty, f"(c) {DIRTY}"],
    ])
    single = load_dataset(f"sakura:{tmp_path / 'SAKURA'}")
    assert len(single) == 3 and not single.skipped
    assert single.items[0].audio == str(track / "audio" / "d1.wav")
    multi = load_dataset(f"sakura:{tmp_path / 'SAKURA'}:Emotion:multi")
    assert not multi.skipped and len(multi) == 3
    full = DIRTY.rstrip(".")
    d1, a1, t1 = multi.items
    assert d1.answer == full and d1.choices[1] == full  # the option in full, not "It’s so dirty"
    assert a1.answer == "How dare they treat me so unfairly like this" and a1.choices[1] == full  # a distractor too
    assert t1.answer == full and t1.choices[-1] == full  # the last option, answered in full
    # control: what follows the last option is still not part of it
    from hooked_audio.datasets.sakura import parse_options

    assert parse_options("Which? (a) It is dirty! Clean it. (b) cat. Answer with the letter.") == [
        ("a", "It is dirty! Clean it"), ("b", "cat")]


def test_mmau_keeps_lettered_answers_repeated_wrong_choices_and_case(tmp_path):
    """Published test-mini records the loader once skipped as malformed, though their gold is unambiguous:
    an answer written with its letter ("(B) C major"), a repeated wrong choice, an answer in another case."""
    audio = tmp_path / "test-mini-audios"
    audio.mkdir()
    for i in range(6):
        write_clip(audio / f"{i}.wav")
    keys = ["Bb minor", "C major", "Ab major", "Eb major"]
    records = [
        mmau_record(0, choices=keys, answer="(B) C major"),
        mmau_record(1, choices=["two", "three", "three", "one"], answer="one"),
        mmau_record(2, choices=["Man", "Woman"], answer="man"),
        mmau_record(3, choices=keys, answer="(A) C major"),  # control: the letter and the text disagree
        mmau_record(4, choices=["Dog", "dog."], answer="dog"),  # control: two choices fold to the answer
        mmau_record(5, choices=keys, answer="C major"),  # control: as written
    ]
    path = tmp_path / "mmau.json"
    path.write_text(json.dumps(records))
    ds = load_dataset(f"mmau:{path}")
    by_id = {item.id: item for item in ds}
    assert sorted(by_id) == ["m0", "m1", "m2", "m5"]
    assert by_id["m0"].answer == "C major" and by_id["m0"].metadata["aliases"] == ["(B) C major"]
    assert by_id["m1"].choices == ("two", "three", "one") and by_id["m1"].metadata["repeated_choices"] == 1
    assert by_id["m2"].answer == "Man" and by_id["m2"].metadata["aliases"] == ["man"]
    assert by_id["m5"].answer == "C major" and "aliases" not in by_id["m5"].metadata
    reasons = {s.row: s.reason for s in ds.skipped}
    assert "not among the choices" in reasons["mmau.json[3]"] and "repeated choices" in reasons["mmau.json[4]"]


def test_manifest_byte_order_mark_repeated_keys_and_a_single_object(tmp_path):
    """A BOM is not part of row 1 (it used to make row 1 'not JSON'); a key given twice in one record is refused,
    not resolved to the last value; a .json file holding one object says so."""
    write_clip(tmp_path / "a.wav")
    row = {"audio": "a.wav", "question": "q", "answer": "low", "choices": ["low", "high"]}
    bom = tmp_path / "bom.jsonl"
    bom.write_text("\ufeff" + json.dumps(row) + "\n" + json.dumps(row | {"id": "2"}) + "\n", encoding="utf-8")
    assert [item.answer for item in load_dataset(f"manifest:{bom}").items] == ["low", "low"]  # both rows kept
    twice = tmp_path / "twice.jsonl"
    twice.write_text(json.dumps(row) + "\n" + '{"audio": "a.wav", "question": "q", "answer": "low", "answer": "high"}\n')
    dataset = load_dataset(f"manifest:{twice}")
    assert len(dataset.items) == 1 and "appear twice" in dataset.skipped[0].reason
    single = tmp_path / "one.json"
    single.write_text(json.dumps(row))
    with pytest.raises(DatasetError, match="one JSON object, not a list"):
        load_dataset(f"manifest:{single}")


def test_an_empty_optional_csv_cell_is_no_value():
    """An empty `task` cell once became the task "", a summary group of its own; it is now left ungrouped, as a
    JSON row without the key (the control: a filled cell keeps its value)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        write_clip(os.path.join(folder, "a.wav"))
        with open(os.path.join(folder, "m.csv"), "w", newline="") as handle:
            handle.write("audio,question,answer,task\na.wav,q,low,\na.wav,q,high,pitch\n")
        items = load_dataset(f"manifest:{os.path.join(folder, 'm.csv')}").items
    assert "task" not in items[0].metadata and items[1].metadata["task"] == "pitch"
