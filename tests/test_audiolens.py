"""AudioLens on the tiny random model: each check would fail for a broken implementation, next to a control."""

import math

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import (
    audio_masking_hooks, critical_layer, enrichment_hook, information_scores, label_log_probs,
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


# --- on the bundled toy organism ------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    from hooked_audio import HookedAudioTransformer

    return HookedAudioTransformer.from_pretrained("toy-qwen2-audio")


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
