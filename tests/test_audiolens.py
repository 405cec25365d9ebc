"""AudioLens on the tiny random model: each check would fail for a broken implementation, next to a control."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import (
    AttributeInformation, attribute_information, attribute_prompt_inputs, audio_masking_hooks, critical_layer,
    critical_layer_correlation, enrichment_hook, enrichment_sweep, information_scores, label_log_probs,
)
from hooked_audio.analysis.audiolens import label_token_ids

LABELS = ["yes", "no", "hello", "world"]


@pytest.fixture
def batch(model):
    # two rows of different lengths: left padding, so the last real position matters
    return model.to_inputs(make_inputs([[100], [60]], text_lengths=[4, 7], seed=1))


@torch.no_grad()
def test_label_log_probs_output_layer_is_the_models_restricted_log_softmax(model, batch):
    logits, cache = model.run_with_cache(batch)
    lp = label_log_probs(model, cache, LABELS)
    assert lp.shape == (model.cfg.n_layers + 1, 2, len(LABELS))
    ids = label_token_ids(model, LABELS)
    rows = torch.arange(2)
    expected = logits[rows, batch.last_positions][:, ids].float().log_softmax(-1)
    torch.testing.assert_close(lp[-1], expected, atol=1e-5, rtol=1e-5)
    # control: an earlier layer's lens is not the output (the lens really is per layer)
    assert (lp[0] - expected).abs().max() > 1e-3
    # penultimate position reads another position
    pen = label_log_probs(model, cache, LABELS, positions="penultimate")
    expected_pen = logits[rows, batch.last_positions - 1][:, ids].float().log_softmax(-1)
    torch.testing.assert_close(pen[-1], expected_pen, atol=1e-5, rtol=1e-5)
    scores = information_scores(lp, lp[-1].argmax(-1))
    assert scores[-1] == 1.0
    with pytest.raises(ValueError, match="label indices 0..3"):
        information_scores(lp, torch.tensor([0, len(LABELS)]))


def _renormalised_pattern_hooks(batch):
    """An independent implementation: zero the last query's pattern at audio keys and renormalise."""
    audio, last = batch.audio_mask, batch.last_positions

    def fix(pattern, hook):
        pattern = pattern.clone()
        for row in range(pattern.shape[0]):
            p = pattern[row, :, last[row]]
            p[:, audio[row]] = 0
            pattern[row, :, last[row]] = p / p.sum(-1, keepdim=True)
        return pattern

    return [(lambda n: n.startswith("blocks.") and n.endswith("attn.hook_pattern"), fix)]


@torch.no_grad()
def test_audio_masking_equals_audio_keys_removed_by_hand(model, batch):
    clean = model(batch)
    masked = model.run_with_hooks(batch, fwd_hooks=audio_masking_hooks(batch))
    by_hand = model.run_with_hooks(batch, fwd_hooks=_renormalised_pattern_hooks(batch))
    rows, last = torch.arange(2), batch.last_positions
    torch.testing.assert_close(masked[rows, last], by_hand[rows, last], atol=1e-4, rtol=1e-4)
    # control: the audio did matter at the last position, and other positions are untouched
    assert (masked[rows, last] - clean[rows, last]).abs().max() > 1e-3
    real = batch.attention_mask.bool().clone()
    real[rows, last] = False  # every real position but the query
    torch.testing.assert_close(masked[real], clean[real], atol=1e-5, rtol=1e-5)
    # chosen layers only: layer 1 alone differs from all layers
    one = model.run_with_hooks(batch, fwd_hooks=audio_masking_hooks(batch, layers=[1]))
    assert (one[rows, last] - masked[rows, last]).abs().max() > 1e-4


def test_critical_layer_on_a_hand_made_table():
    # 4 labels, alpha 0.2: threshold 0.3; s = [0, 0, 0.2, 0.6] -> (2*0.2 + 3*0.6) / 0.8 = 2.75
    assert critical_layer(torch.tensor([0.25, 0.3, 0.5, 0.9]), 4) == pytest.approx(2.75)
    assert math.isnan(critical_layer(torch.tensor([0.2, 0.29]), 4))
    assert critical_layer(torch.tensor([0.0, 1.0, 0.0]), 2, alpha=0.0) == pytest.approx(1.0)


@torch.no_grad()
def test_enrichment_adds_the_source_residual_at_the_last_position(model, batch):
    _, cache = model.run_with_cache(batch)
    rows, last = torch.arange(2), batch.last_positions
    seen = {}
    hooks = enrichment_hook(0, k=5, lam=0.5, n_layers=model.cfg.n_layers, inputs=batch)
    assert hooks[-1][0] == f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"  # clipped to the depth
    record = [(hooks[-1][0], lambda r, hook: seen.setdefault("h", r.clone()))]
    model.run_with_hooks(batch, fwd_hooks=hooks + record)
    h0, h1 = cache["resid_post", 0], cache["resid_post", model.cfg.n_layers - 1]
    torch.testing.assert_close(seen["h"][rows, last], h1[rows, last] + 0.5 * h0[rows, last], atol=1e-5, rtol=1e-5)
    # control: every other position unchanged
    keep = torch.ones_like(batch.audio_mask)
    keep[rows, last] = False
    torch.testing.assert_close(seen["h"][keep], h1[keep])


@torch.no_grad()
def test_enrichment_with_a_source_layer_per_row_equals_each_rows_own_hook(model, batch):
    seen = {}
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    record = [(last, lambda r, hook: seen.__setitem__(len(seen), r.clone()))]
    for source in (0, 1):
        model.run_with_hooks(batch, fwd_hooks=enrichment_hook(source, 5, 0.7, n_layers=2, inputs=batch) + record)
    model.run_with_hooks(batch, fwd_hooks=enrichment_hook(torch.tensor([1, 0]), 5, 0.7, n_layers=2, inputs=batch) + record)
    torch.testing.assert_close(seen[2][0], seen[1][0])  # row 0 enriched from layer 1 (into itself: x 1.7)
    torch.testing.assert_close(seen[2][1], seen[0][1])  # row 1 from layer 0
    assert (seen[0] - seen[1]).abs().max() > 1e-3  # control: the two source layers differ
    with pytest.raises(ValueError, match="one row per source layer"):
        enrichment_hook(torch.tensor([0, 1, 0]), 5, 1.0, n_layers=2, inputs=batch)


@torch.no_grad()
def test_attribute_information_is_batch_independent_and_its_output_layer_is_accuracy(model, batch):
    answers = torch.tensor([0, 2])
    info = attribute_information(model, batch, LABELS, answers)
    one_by_one = attribute_information(model, batch, LABELS, answers, batch_size=1)
    torch.testing.assert_close(info.log_probs, one_by_one.log_probs, atol=1e-5, rtol=1e-5)
    _, cache = model.run_with_cache(batch)
    torch.testing.assert_close(info.log_probs_penultimate, label_log_probs(model, cache, LABELS, "penultimate"))
    ids = label_token_ids(model, LABELS)
    accuracy = (model(batch)[torch.arange(2), batch.last_positions][:, ids].argmax(-1) == answers).float().mean()
    assert info.scores()[-1] == accuracy == info.accuracy
    split = info.scores(rows="correct") if info.correct.any() else info.scores(rows="wrong")
    assert split[-1] in (0.0, 1.0)


def _group(counts: list[int], n: int = 4) -> AttributeInformation:
    """Two labels, answers all 0; at layer l the first counts[l] rows have the true label on top."""
    lp = torch.zeros(len(counts), n, 2)
    for layer, count in enumerate(counts):
        lp[layer, :, 1] = 1.0
        lp[layer, :count] = torch.tensor([1.0, 0.0])
    return AttributeInformation(["a", "b"], lp.log_softmax(-1), lp.log_softmax(-1), torch.zeros(n, dtype=torch.long))


def test_critical_layer_correlation_on_hand_made_groups():
    # alpha 0.2, 2 labels: threshold 0.6. early: s = [0, .4, .4, .4] -> layer 2, accuracy 1.0; mid: s = [0, 0, .15, .15]
    # -> 2.5, accuracy 0.75; late: s = [0, 0, 0, .4] -> 3, accuracy 1.0; never: undefined
    groups = {"early": _group([2, 4, 4, 4]), "mid": _group([2, 2, 3, 3]), "late": _group([0, 2, 2, 4]), "never": _group([2, 2, 2, 2])}
    result = critical_layer_correlation(groups)
    assert result["points"] == {"early": (pytest.approx(2.0), 1.0), "mid": (pytest.approx(2.5), 0.75),
                                "late": (pytest.approx(3.0), 1.0), "never": (pytest.approx(math.nan, nan_ok=True), 0.5)}
    assert result["undefined"] == ["never"]
    assert result["r"] == pytest.approx(0.0, abs=1e-12) and result["n"] == 3  # V-shaped: no linear trend
    assert critical_layer_correlation({**groups, "worse": _group([2, 2, 2, 3])})["r"] < 0  # later and worse: negative
    with pytest.raises(ValueError, match="at least 3 groups"):
        critical_layer_correlation({"early": groups["early"], "never": groups["never"]})
    from hooked_audio.app.method_plots import plot_critical_layer_vs_accuracy

    ax = plot_critical_layer_vs_accuracy(result).axes[0]
    points = sorted(tuple(np.round(c.get_offsets()[0], 6)) for c in ax.collections)
    assert points == [(2.0, 1.0), (2.5, 0.75), (3.0, 1.0)] and "r = 0.00" in ax.get_title()  # "never" left out


@torch.no_grad()
def test_enrichment_sweep_at_lambda_zero_is_the_unhooked_accuracy(model):
    probe = model.to_inputs(make_inputs([[100], [60], [80], [90]], seed=11))
    test = model.to_inputs(make_inputs([[70], [100], [50]], seed=12))
    answers_probe, answers_test = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 3])
    info = attribute_information(model, probe, LABELS, answers_probe)
    if info.correct.all():
        answers_probe = (answers_probe + 1) % 4
        info = attribute_information(model, probe, LABELS, answers_probe)
    sweep = enrichment_sweep(model, probe, answers_probe, test, answers_test, LABELS, lams=(0.0, 4.0), n_seeds=3)
    assert sweep.source_layer == int(info.scores(rows="wrong")[1:2].argmax()) == 0 and sweep.target_layer == 1
    plain = attribute_information(model, test, LABELS, answers_test).accuracy
    assert sweep.chosen[0] == sweep.random_mean[0] == plain and sweep.random_std[0] == 0
    # was: a test split holding probing clips was accepted, though the layer would then be tested where it was chosen
    with pytest.raises(ValueError, match=r"test rows \[0, 1, 2, 3\] hold clips of the probing split"):
        enrichment_sweep(model, probe, answers_probe, probe, answers_probe, LABELS, lams=(0.0,), n_seeds=1)


def test_prompt_formats_render_the_checkpoints_template_with_the_prefill_open(model):
    clip = np.zeros(16000, np.float32) + 0.01
    head = "<|im_start|>user \n<|audio_bos|><|AUDIO|><|audio_eos|>"
    tail = "<|im_end|> \n<|im_start|>assistant \nthe answer is"
    expected = {"P1": head + tail, "P2": head + "what is said ?" + tail, "P3": head + "what is said ? yes no" + tail}
    for fmt, text in expected.items():
        got = attribute_prompt_inputs(model, [clip, clip[:8000]], fmt, "the answer is", question="what is said ?",
                                      options=["yes", "no"], options_template="{question} {options}", join=" ",
                                      sampling_rate=16000)
        by_hand = model.build_inputs([text, text], [clip, clip[:8000]], sampling_rate=16000)
        assert torch.equal(got.input_ids, by_hand.input_ids) and torch.equal(got.attention_mask, by_hand.attention_mask)
        assert model.to_str_tokens(got.input_ids[0])[-1] == "is"  # no end-of-turn after the prefill
    with pytest.raises(ValueError, match="pass question="):
        attribute_prompt_inputs(model, [clip], "P2", "the answer is", sampling_rate=16000)
    with pytest.raises(ValueError, match="pass options="):
        attribute_prompt_inputs(model, [clip], "P3", "the answer is", question="what is said ?", sampling_rate=16000)


# --- on the bundled toy organism ------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    from hooked_audio import HookedAudioTransformer

    return HookedAudioTransformer.from_pretrained("toy-qwen2-audio")


def test_a_label_the_tokenizer_does_not_know_is_refused(toy):
    """The toy's word-level tokenizer maps an unknown word to <unk>: scoring it would score every unknown word."""
    with pytest.raises(ValueError, match="unknown token"):
        label_token_ids(toy, ["male", "femalle"])
    assert len(label_token_ids(toy, ["male", "female"])) == 2  # control: known words pass

@torch.no_grad()
@pytest.mark.parametrize("task", ["pitch", "noise"])
def test_toy_information_at_output_is_accuracy_and_masking_drops_to_chance(toy, task):
    from hooked_audio.toy import evaluate, tasks

    labels = list(tasks.TASKS_BY_NAME[task].answers)
    samples = [s for s in tasks.make_probe_set(seed=5, n_per_task=16, task_names=[task]) if s.hint is None]
    batch = toy.to_inputs(evaluate.encode(toy.processor, samples))
    answers = torch.tensor([labels.index(s.answer) for s in samples])
    logits, cache = toy.run_with_cache(batch, names_filter=lambda n: "resid" in n or n == "ln_final.hook_scale")
    scores = information_scores(label_log_probs(toy, cache, labels), answers)
    rows, ids = torch.arange(len(samples)), label_token_ids(toy, labels)
    accuracy = (logits[rows, batch.last_positions][:, ids].argmax(-1) == answers).float().mean()
    assert scores[-1] == accuracy and accuracy >= 0.9
    assert scores[0] <= 1 / len(labels) + 0.1  # the embedding knows nothing of the clip
    masked = toy.run_with_hooks(batch, fwd_hooks=audio_masking_hooks(batch, query="all"))
    masked_accuracy = (masked[rows, batch.last_positions][:, ids].argmax(-1) == answers).float().mean()
    assert masked_accuracy <= 1 / len(labels) + 0.2
    # control: on a text-only prompt (no audio keys) the same hooks change nothing
    text = toy.to_inputs(toy.to_tokens([evaluate.render_prompt(toy.processor, samples[0]).replace("<|AUDIO|>", "")]))
    torch.testing.assert_close(toy.run_with_hooks(text, fwd_hooks=audio_masking_hooks(text, query="all")), toy(text))


@torch.no_grad()
def test_knocking_out_attention_to_some_keys_makes_their_tokens_invisible(model, batch):
    """With attention to a span blocked from every query at every layer, changing the span's tokens changes
    nothing at the other positions (they cannot see it); without the knockout it does (the control)."""
    keys = torch.zeros(batch.shape, dtype=torch.bool)
    keys[:, -2] = True  # the text token before the last position, in both rows: only the last position sees it
    assert not (keys & batch.audio_mask.cpu()).any()
    other = batch.input_ids.clone()
    other[keys] = (other[keys] + 1) % 6 + 6  # other words
    changed = replace(batch, input_ids=other)
    hooks = audio_masking_hooks(batch, query="all", keys=keys)
    a, b = model.run_with_hooks(batch, fwd_hooks=hooks), model.run_with_hooks(changed, fwd_hooks=hooks)
    seen = ~keys & batch.attention_mask.cpu().bool()  # padding rows attend to nothing real and are left out
    torch.testing.assert_close(a[seen], b[seen], atol=1e-5, rtol=1e-5)
    assert (model(batch)[:, -1] - model(changed)[:, -1]).abs().max() > 1e-3


def test_keys_that_mark_padding_or_leave_a_query_no_key_are_refused(model, batch):
    """Was: a keys mask built for the other padding side (it marks padding) blocked other tokens than meant, and
    blocking every key a query may see spread its attention over future tokens and padding (1/n each). Controls:
    the audio, and one blocked token per row that leaves every query a key, run."""
    from hooked_audio.analysis import audio_attention_per_row

    real = batch.attention_mask.cpu().bool()
    assert not real.all()
    on_padding = batch.audio_mask.cpu() | ~real
    with pytest.raises(ValueError, match=r"the keys mask marks padding positions in rows \[1\]"):
        audio_masking_hooks(batch, keys=on_padding)
    with pytest.raises(ValueError, match=r"the keys mask marks padding positions in rows \[1\]"):
        audio_attention_per_row(model, batch, keys=on_padding)
    with pytest.raises(ValueError, match=r"blocks every key that a query of rows \[0, 1\] may attend to"):
        audio_masking_hooks(batch, query="last", keys=real)
    first = real & (real.cumsum(-1) == 1)  # each row's first real token: the only key its own query sees
    with pytest.raises(ValueError, match=r"blocks every key that a query of rows \[0, 1\] may attend to \(query='all'\)"):
        audio_masking_hooks(batch, query="all", keys=first)
    blocked_first = model.run_with_hooks(batch, fwd_hooks=audio_masking_hooks(batch, query="last", keys=first))
    assert (blocked_first - model(batch)).abs().max() > 1e-4  # the last query sees the other tokens
    model.run_with_hooks(batch, fwd_hooks=audio_masking_hooks(batch, query="all"))
