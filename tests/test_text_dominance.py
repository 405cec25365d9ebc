"""Text dominance: every number by hand on a tiny model, the text-free run built by cutting the hint, and on
the text-reliant organism against the listener (the control that differs only in hint statistics)."""

import numpy as np
import pytest
import torch
from conftest import AUDIO_TOKEN_ID, VOCAB, make_inputs, needs_espeak

from hooked_audio.analysis import text_dominance, without_text

HINT = ["answer", "yes"]


def _conflict(with_hint: bool, rows: int = 6, seed: int = 0) -> dict:
    """Rows of `<|im_start|> user <audio> [answer yes] what is said ? <|im_end|>`, clips of several lengths."""
    raw = make_inputs([[100 - 8 * r] for r in range(rows)], seed=seed)
    ids = []
    for row in raw["input_ids"]:
        audio = [t for t in row.tolist() if t == AUDIO_TOKEN_ID]
        words = ["<|im_start|>", "user", "<|audio_bos|>"]
        tail = ["<|audio_eos|>"] + (HINT if with_hint else []) + ["what", "is", "said", "?", "<|im_end|>"]
        ids.append([VOCAB[w] for w in words] + audio + [VOCAB[w] for w in tail])
    width = max(map(len, ids))
    input_ids = torch.tensor([[VOCAB["<|endoftext|>"]] * (width - len(r)) + r for r in ids])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])
    return dict(raw, input_ids=input_ids, attention_mask=mask)


@torch.no_grad()
def test_every_number_by_hand(model):
    conflict, free = model.to_inputs(_conflict(True)), model.to_inputs(_conflict(False))
    audio_answer, text_answer = ["no"] * 6, ["yes"] * 6
    result = text_dominance(model, conflict, audio_answer, text_answer, text_free=free, n_boot=200)
    yes, no = VOCAB["yes"], VOCAB["no"]
    with_text, without = model(conflict)[:, -1], model(free)[:, -1]
    diff = with_text[:, yes] - with_text[:, no]
    torch.testing.assert_close(result["logit_diff"], diff)
    torch.testing.assert_close(result["hint_effect"], diff - (without[:, yes] - without[:, no]))
    assert result["rate"] == pytest.approx(float((diff > 0).float().mean()))
    right = without[:, no] > without[:, yes]
    assert torch.equal(result["right_without_text"], right)
    if right.any():
        assert result["flip_rate"] == pytest.approx(float((diff > 0)[right].float().mean()))
    low, high = result["hint_effect_ci"]
    assert low <= result["hint_effect_mean"] <= high
    # candidates: the whole vocabulary's argmax decides instead of the pair
    vocab = text_dominance(model, conflict, audio_answer, text_answer, candidates="vocab", n_boot=200)
    assert vocab["rate"] == pytest.approx(float((with_text.argmax(-1) == yes).float().mean()))
    # by_group: each group's numbers are those of its rows alone; a tensor of labels groups by value
    labels = ["a", "a", "b", "a", "b", "b"]
    for groups in (labels, torch.tensor([0, 0, 1, 0, 1, 1])):
        by_group = text_dominance(model, conflict, audio_answer, text_answer, text_free=free, groups=groups,
                                  n_boot=200)["by_group"]
        assert len(by_group) == 2
        for key, name in zip(sorted(by_group), "ab"):
            rows = [r for r, label in enumerate(labels) if label == name]
            assert by_group[key]["rate"] == pytest.approx(float((diff[rows] > 0).float().mean()))
            assert by_group[key]["hint_effect_mean"] == pytest.approx(float(result["hint_effect"][rows].mean()))


@torch.no_grad()
def test_the_text_free_run_built_by_cutting_the_hint_is_the_prompt_without_it(model):
    conflict, free = model.to_inputs(_conflict(True)), model.to_inputs(_conflict(False))
    cut = without_text(model, conflict, ["answer yes"] * 6)
    assert torch.equal(cut.input_ids, free.input_ids) and torch.equal(cut.attention_mask, free.attention_mask)
    built = text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, hints=["answer yes"] * 6, n_boot=200)
    given = text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, text_free=free, n_boot=200)
    torch.testing.assert_close(built["hint_effect"], given["hint_effect"])
    # control: with nothing added, the hint effect is exactly zero and nothing flips
    none = text_dominance(model, free, ["no"] * 6, ["yes"] * 6, text_free=free, n_boot=200)
    assert torch.equal(none["hint_effect"], torch.zeros(6))
    assert none["n_right_without_text"] > 0 and none["flip_rate"] == 0.0


def test_refusals(model):
    conflict = model.to_inputs(_conflict(True))
    with pytest.raises(ValueError, match="not a conflict"):
        text_dominance(model, conflict, ["yes"] * 6, ["yes"] * 6)
    with pytest.raises(ValueError, match="one answer per row"):
        text_dominance(model, conflict, ["no"] * 5, ["yes"] * 6)
    with pytest.raises(ValueError, match="does not contain"):
        without_text(model, conflict, ["hello world"] * 6)
    with pytest.raises(ValueError, match="2 times"):  # a text that occurs twice: which to cut is ambiguous
        twice = dict(_conflict(True), input_ids=_conflict(True)["input_ids"].clone())
        twice["input_ids"][:, -2] = VOCAB["yes"]  # "yes" now in the hint and at the end
        without_text(model, twice, ["yes"] * 6)
    with pytest.raises(ValueError, match="share first tokens"):
        text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, candidates=["yes", "no", "no"])
    with pytest.raises(ValueError, match="outside the candidates"):
        text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, candidates=["yes", "one"])


@pytest.fixture(scope="module")
def conflict_set():
    """Wrong-hint prompts of the two tasks the siblings hear alike and the textual one reads hints on most (beep
    count, and "when does the X happen ?" on multi-event clips; cards: audio-only 0.74 / 0.82 textual, 0.85 / 0.92
    listener, the listener it replaced 0.80 / 0.92) and their hints."""
    from hooked_audio.toy import evaluate

    samples = evaluate.make_eval_set(n_per_task=20, task_names=["beeps", "events_when"])
    return [s for s in samples if s.hint_kind == "wrong"]


@needs_espeak
@torch.no_grad()
def test_the_textual_organism_is_dominated_by_the_text_and_the_listener_much_less(conflict_set):
    """Measured on these 40 conflicts: flip rate 0.28 textual vs 0.06 listener, hint effect +3.10 vs +0.93 (the
    listener it replaced: 0.06, +1.45); the
    textual sibling's text answer wins 0.40 of each task's conflicts (the
    tone-only set used before, beeps and single-beep timing, does not separate the current siblings: flip rate 0.125
    vs 0.054, the listener it replaced 0.028)."""
    from hooked_audio import HookedAudioTransformer
    from hooked_audio.toy import evaluate

    flips = {}
    for name in ("toy-qwen2-audio-textual", "toy-qwen2-audio"):
        model = HookedAudioTransformer.from_pretrained(name)
        inputs = evaluate.encode(model.processor, conflict_set)
        result = text_dominance(
            model, inputs, [s.answer for s in conflict_set], [s.hint for s in conflict_set],
            hints=[s.hint_text for s in conflict_set], candidates="vocab", groups=[s.task for s in conflict_set],
            n_boot=500)
        flips[name] = result
    textual, listener = flips["toy-qwen2-audio-textual"], flips["toy-qwen2-audio"]
    assert max(g["rate"] for g in textual["by_group"].values()) >= 0.2
    assert textual["flip_rate"] > listener["flip_rate"] + 0.1
    assert textual["hint_effect_mean"] > listener["hint_effect_mean"] + 1.0


@torch.no_grad()
def test_fwd_hooks_intervene_on_the_conflict_run_only(model):
    conflict, free = model.to_inputs(_conflict(True)), model.to_inputs(_conflict(False))
    push = torch.zeros(model.cfg.d_model)
    push[0] = 3.0
    hook = ("blocks.1.hook_resid_post", lambda x, hook: x + push)
    yes, no = VOCAB["yes"], VOCAB["no"]
    plain = text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, text_free=free, n_boot=100)
    for hooks in ([hook], lambda chunk: [hook]):  # a list, or hooks built per batch of rows
        hooked = text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, text_free=free, n_boot=100, fwd_hooks=hooks,
                                batch_size=4)
        by_hand = model.run_with_hooks(conflict, fwd_hooks=[hook])[:, -1]
        torch.testing.assert_close(hooked["logit_diff"], by_hand[:, yes] - by_hand[:, no])
        assert torch.equal(hooked["right_without_text"], plain["right_without_text"])  # the reference is unhooked
        torch.testing.assert_close(hooked["hint_effect"] - plain["hint_effect"], hooked["logit_diff"] - plain["logit_diff"])


def test_text_positions_mark_what_without_text_cuts(model):
    from hooked_audio.analysis import text_positions, without_text

    inputs = model.to_inputs(make_inputs([[100], [60]], text_lengths=[4, 7], seed=9))
    rows = inputs.real_token_rows()
    texts = [model.tokenizer.decode(rows[0][1:3]), model.tokenizer.decode(rows[1][-2:])]
    mask = text_positions(model, inputs, texts)
    cut = without_text(model, inputs, texts).real_token_rows()
    for r in range(2):
        real = inputs.attention_mask[r].bool()
        assert inputs.input_ids[r][real & ~mask[r]].tolist() == cut[r]
        assert int(mask[r].sum()) == len(rows[r]) - len(cut[r]) == 2


@torch.no_grad()
def test_rate_intervals_are_wilson_and_rows_sharing_a_clip_are_warned_of(model):
    """Was: the rates' intervals were percentile bootstraps, [0, 0] when no row's text won (they under-cover near
    0 and 1), a one-row mean's interval was that value, and the same clip under several hints counted as
    independent rows without a word. Now the rates' intervals are scipy's Wilson intervals, a one-row mean has
    none, and repeated clips are warned of. Control: six different clips raise no warning."""
    import warnings

    from scipy.stats import binomtest

    conflict, free = model.to_inputs(_conflict(True)), model.to_inputs(_conflict(False))
    audio_answer, text_answer = ["no"] * 6, ["yes"] * 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # six clips, each once
        result = text_dominance(model, conflict, audio_answer, text_answer, text_free=free, n_boot=200)
    wins = int(result["text_wins"].sum())
    ci = binomtest(wins, 6).proportion_ci(confidence_level=0.95, method="wilson")
    assert result["rate_ci"] == pytest.approx((ci.low, ci.high))
    assert result["rate_ci"][1] > result["rate_ci"][0]  # never zero-width, even at 0 or 6 of 6
    one = text_dominance(model, conflict[:1], audio_answer[:1], text_answer[:1], n_boot=200)
    assert np.isnan(one["logit_diff_ci"]).all() and not np.isnan(one["rate_ci"]).any()
    raw = _conflict(True)  # rows 0 and 1 given the same clip: row 0's features, its length and its tokens
    rows = [0, 0, 1]
    twice = {k: v[rows] for k, v in raw.items()}
    with pytest.warns(UserWarning, match=r"rows \[\[0, 1\]\] hold the same clips"):
        text_dominance(model, twice, audio_answer[:3], text_answer[:3], n_boot=200)


@torch.no_grad()
def test_a_text_free_run_of_other_prompts_is_warned(model):
    """Was: text_free was checked for its clips only, so text-free prompts with another question over the same
    clips were taken, and the hint effect compared two prompts (-0.87 for +1.17 on the toy). Control: the rows
    themselves without the hint, without a warning."""
    import warnings
    from dataclasses import replace

    conflict, free = model.to_inputs(_conflict(True)), model.to_inputs(_conflict(False))
    other = free.input_ids.clone()
    other[:, -2] = VOCAB["is"]  # another question: "what is said is <|im_end|>"
    with pytest.warns(UserWarning, match=r"text_free rows \[0, 1, 2, 3, 4, 5\] are not their rows with the conflicting text cut out"):
        text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, text_free=replace(free, input_ids=other), n_boot=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text_dominance(model, conflict, ["no"] * 6, ["yes"] * 6, text_free=free, n_boot=50)
