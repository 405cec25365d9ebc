"""Causal tracing of audio-text fusion and attribution patching on the bundled listener toy, each effect next
to the control a broken implementation would not tell apart from it (issue 12 §2-3; tutorial 06)."""

import pytest
import torch
from scipy.stats import spearmanr

from hooked_audio.analysis import (
    attribution_vs_activation_patching, back_patching_hooks, causal_tracing, position_groups, silence_like,
)

TASKS = ["pitch", "noise", "when"]
ATTRIBUTE_WORD = {"pitch": "tone", "noise": "noise", "when": "beep"}  # the word in the question naming what is asked


@pytest.fixture(scope="module")
def toy():
    from hooked_audio import HookedAudioTransformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the toy is tiny: one thread is fastest on a shared CPU
    yield HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
    torch.set_num_threads(threads)


def _probe(seed, n):
    from hooked_audio.toy import tasks

    return [s for s in tasks.make_probe_set(seed=seed, n_per_task=n, task_names=TASKS) if s.hint is None]


@pytest.fixture(scope="module")
def setup(toy):
    """6 prompts (2 per task), their logit-difference metric, and for each a clip of the same task with
    another answer (same prompt, so the same layout)."""
    from hooked_audio.toy import evaluate, tasks

    samples, pool = _probe(101, 2), _probe(201, 8)
    encode = lambda ss: toy.to_inputs(evaluate.encode(toy.processor, ss))  # noqa: E731
    clean = encode(samples)
    mismatched = encode([next(d for d in pool if d.task == s.task and d.answer != s.answer) for s in samples])
    assert torch.equal(mismatched.input_ids, clean.input_ids)
    rows, last = torch.arange(len(samples)), clean.last_positions.cpu()
    true = torch.tensor([toy.to_single_token(s.answer) for s in samples])
    others = torch.zeros(len(samples), toy.cfg.d_vocab, dtype=torch.bool)
    for i, s in enumerate(samples):
        others[i, [toy.to_single_token(a) for a in tasks.TASKS_BY_NAME[s.task].answers if a != s.answer]] = True

    def metric(logits):  # true answer's logit minus the best other label's, at the last position, row mean
        at_last = logits[rows, last]
        return (at_last[rows, true] - at_last.masked_fill(~others, -1e9).max(-1).values).mean()

    attribute = torch.stack([clean.input_ids[i].cpu() == toy.to_single_token(ATTRIBUTE_WORD[s.task])
                             for i, s in enumerate(samples)]) & clean.text_mask.cpu()
    return clean, mismatched, metric, position_groups(clean, attribute)


@pytest.fixture(scope="module")
def group_trace(toy, setup):
    clean, _, metric, groups = setup
    return causal_tracing(toy, clean, metric, corrupt="silence", by="position_group", groups=groups)


def test_a_middle_layer_restores_the_answer_from_the_true_clip_not_from_a_mismatched_one(toy, setup):
    """Restoring every text position of layer 3 brings the clean answer back (measured RR 0.88; the listener it
    replaced: 0.92) only when the states come from the prompt's own clip; from a clip with another answer they push
    toward that answer instead (measured RR -0.98; before: -0.90). A trace that restored the wrong run, the wrong positions or nothing would
    not separate the two."""
    clean, mismatched, metric, _ = setup
    trace = causal_tracing(toy, clean, metric, corrupt="silence", layers=[3])
    assert trace.clean - trace.corrupt > 5  # measured 11.44 -> -0.91 (before: 11.12 -> -1.05): silence destroys the answer
    with torch.no_grad():
        _, cache = toy.run_with_cache(mismatched, names_filter="blocks.3.hook_resid_post")
        hooks = back_patching_hooks(cache, 3, 3, positions="text")
        wrong = float(metric(toy.run_with_hooks(silence_like(clean), fwd_hooks=hooks)))
    wrong_rr = (wrong - trace.corrupt) / (trace.clean - trace.corrupt)
    assert float(trace.recovery[0]) > 0.75
    assert wrong_rr < 0 and float(trace.recovery[0]) - wrong_rr > 1.4


def test_the_answer_builds_up_at_the_last_position_over_the_layers(group_trace):
    """By position group (silence): the last position carries it, gathered over several blocks (measured RR
    0.00 / 0.27 / 0.51 / 0.87 / 0.95 / 1.00, the smallest rise 0.047), first above 0.5 at layer 2, by 0.005 (the
    listener it replaced: 0.00 / 0.44 / 0.70 / 0.90 / 0.95 / 1.00, also layer 2; earlier ones: layer 2, layer 1); the
    early prompt, before the audio, is exactly 0 at every layer (causal attention: its clean and corrupted states
    are the same), and the last layer at the last position is exactly 1."""
    rr = dict(zip(group_trace.groups, group_trace.recovery.T))
    assert group_trace.groups == ["early", "attribute", "late", "last"]
    assert abs(float(rr["last"][0])) < 0.1 and bool((rr["last"].diff() > 0.03).all())  # rises at every layer
    assert group_trace.first_layer_above(0.5, group="last") == 2
    assert torch.equal(rr["early"], torch.zeros_like(rr["early"]))
    assert float(rr["last"][-1]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.xfail(strict=True, reason=(
    "measured on the bundled listener toy (pitch/noise/when, 6 prompts, silence): no text position other than "
    "the last carries the answer at any layer: max |RR| 0.031 on the question's attribute word and 0.031 on "
    "the rest of the question (the listener it replaced: 0.008 and 0.023; earlier ones: <= 0.010 and <= 0.040); "
    "the last position reads the "
    "audio span itself"))
def test_the_question_tokens_carry_the_audio_answer_at_some_layer(group_trace):
    """The ROME picture: the tokens naming the attribute (or the rest of the question) hold the audio's
    answer at some layer for the last position to read."""
    rr = dict(zip(group_trace.groups, group_trace.recovery.T))
    assert float(rr["attribute"].max()) > 0.2 or float(rr["late"].max()) > 0.2


def test_attribution_ranks_heads_like_activation_patching(toy, setup):
    """Per head (silence): Spearman between the gradient estimate and TL's activation-patching sweep, measured
    0.92 here (the listener it replaced: 0.96); the same estimate with its cells shuffled: mean 0.01 over 20
    shuffles. The head the gradient ranks first is one of the two that patching ranks first (measured: block 3's
    head 0, effect 2.60 of the 12.3 gap, patching's second after block 1's head 0 at 2.82; the listener it
    replaced: block 3's head 1, 2.14 of 12.2, patching's second after block 1's head 0 at 2.31)."""
    clean, _, metric, _ = setup
    result = attribution_vs_activation_patching(toy, clean, silence_like(clean), metric, cells="head")
    attribution, effect = result["attribution"].flatten(), result["effect"].flatten()
    shuffled = [spearmanr(attribution[torch.randperm(len(attribution), generator=torch.Generator().manual_seed(k))],
                          effect).statistic for k in range(20)]
    assert result["rank_correlation"] >= 0.75
    assert sum(shuffled) / len(shuffled) < result["rank_correlation"] - 0.5
    assert int(attribution.argmax()) in set(effect.topk(2).indices.tolist())
