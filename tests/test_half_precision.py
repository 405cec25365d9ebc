"""Reduced precision: where float16 / bfloat16 would go wrong by more than their rounding, the model and the
helpers stay with HF's numbers (HF's own float16 clamp in the audio encoder, means summed in float32, a cache
stored in another dtype than the model's)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_inputs
from family_harness import build_pair
from test_family_contract import SPECS, inputs_of

from hooked_audio import HookedAudioTransformer
from hooked_audio.analysis import head_ablation_hooks, label_log_probs, logit_lens


@pytest.mark.parametrize("family", ["qwen2_audio", "voxtral"])
@torch.no_grad()
def test_a_float16_encoder_outlier_is_clamped_as_hf_clamps_it(family):
    """HF's Whisper-style encoder layers clamp their output to +-(65504 - 1000) in float16. Was: not here, so an
    outlier channel (here +40000 on one fc2 bias in two layers) overflowed to inf and the logits were NaN where
    HF's stayed finite. Control: in float32 nothing is clamped and the two agree as always."""
    hf, _ = build_pair(SPECS[family])
    hf = copy.deepcopy(hf)
    tower = next(module for name, module in hf.named_modules() if name.endswith("audio_tower"))
    for layer in tower.layers[:2]:
        layer.fc2.bias[0] += 40000.0
    inputs = inputs_of(SPECS[family], "batch_padded_different_lengths")
    real = inputs["attention_mask"].bool()
    half_inputs = {k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    theirs = copy.deepcopy(hf).half()(**half_inputs).logits.float()
    ours = HookedAudioTransformer.from_hf_model(hf, dtype=torch.float16)
    logits = ours(**inputs).float()
    assert bool(torch.isfinite(theirs[real]).all()) and bool(torch.isfinite(logits[real]).all())
    assert (logits - theirs)[real].abs().max() < 5e-3
    _, cache = ours.run_with_cache(**inputs, names_filter="audio_encoder.blocks.1.hook_resid_post")
    limit = torch.tensor(65504 - 1000, dtype=torch.float16)  # the clamp (64512 once in float16), seen by the hook
    assert cache["audio_encoder.blocks.1.hook_resid_post"].abs().max() == limit
    full = HookedAudioTransformer.from_hf_model(hf)
    assert (full(**inputs) - hf(**inputs).logits)[real].abs().max() < 1e-4


@torch.no_grad()
def test_mean_ablation_of_many_positions_in_float16_is_the_float32_mean(model):
    """Was: the mean over real positions was summed in float16, so past 65504 positions (or a sum that large) it was
    inf or NaN, and every logit NaN. Checked on 70000 positions of 1.5 (the mean is 1.5), and end to end against the
    float32 model's mean-ablated logits."""
    from hooked_audio.analysis.ablation import _masked_mean

    z = torch.full((700, 100, 2, 4), 1.5, dtype=torch.float16)
    mean = _masked_mean(z, torch.ones(700, 100, dtype=torch.bool), "blocks.0.attn.hook_z")
    assert mean.dtype == torch.float16 and mean.shape == (1, 1, 2, 4) and bool((mean == 1.5).all())
    inputs = model.to_inputs(make_inputs([[100], [40]], seed=2))
    half = copy.deepcopy(model).half()
    want = model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(0, 1)], mode="mean", inputs=inputs, model=model))
    got = half.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks([(0, 1)], mode="mean", inputs=inputs, model=half))
    real = inputs.attention_mask.bool()
    assert bool(torch.isfinite(got[real]).all()) and (got.float() - want)[real].abs().max() < 5e-2


@torch.no_grad()
def test_a_cache_stored_in_float32_from_a_bfloat16_model_reads_through_the_lens(model):
    """Was: run_with_cache(cache_dtype=torch.float32) on a bf16 model, then logit_lens or label_log_probs, failed in a
    matmul of float and bfloat16. Control: the same lens on the model's own-dtype cache, to bf16 rounding."""
    half = copy.deepcopy(model).to(torch.bfloat16)
    inputs = model.to_inputs(make_inputs([[100], [40]], seed=1))
    _, wide = half.run_with_cache(inputs, cache_dtype=torch.float32)
    _, own = half.run_with_cache(inputs)
    assert (logit_lens(half, wide).log_probs - logit_lens(half, own).log_probs).abs().max() < 0.1
    labels = model.tokenizer.convert_ids_to_tokens([7, 9])
    assert (label_log_probs(half, wide, labels) - label_log_probs(half, own, labels)).abs().max() < 0.1


def test_float64_means_and_statistics_keep_float64(model):
    """Was: mean ablation summed a float64 model's head outputs in float32 (1e-6 off the float64 mean, ten times the
    float64 parity), and the listening AUC rounded its signal to float32, tying values 1e-9 apart (AUC 0.52 for
    0.84). Controls: the means and the AUC computed by hand in float64."""
    from scipy.stats import mannwhitneyu

    from hooked_audio.analysis import listening_signal_auc

    wide = copy.deepcopy(model).to(torch.float64)
    inputs = wide.to_inputs(make_inputs([[100], [60]], seed=2))
    seen = {}

    def keep(z, hook):
        seen["z"] = z.clone()
        return z

    hooks = [("blocks.1.attn.hook_z", keep)] + head_ablation_hooks([(1, 2)], "mean", inputs=inputs)
    saw = {}
    hooks.append(("blocks.1.attn.hook_z", lambda z, hook: saw.update(z=z.clone())))
    wide.run_with_hooks(inputs, fwd_hooks=hooks)
    real = inputs.attention_mask.bool()
    by_hand = seen["z"][real][:, 2].mean(0)  # [d_head], summed in float64
    assert saw["z"].dtype == torch.float64
    torch.testing.assert_close(saw["z"][real][:, 2], by_hand.expand(int(real.sum()), -1), rtol=0, atol=1e-13)
    generator = torch.Generator().manual_seed(0)
    correct = torch.arange(40) % 2 == 0
    signal = 0.3 + 1e-9 * (torch.rand(40, generator=generator, dtype=torch.float64) + correct.double())
    assert len(torch.unique(signal.float())) < 5  # float32 would tie them
    u = mannwhitneyu(signal[correct].numpy(), signal[~correct].numpy()).statistic
    assert listening_signal_auc(signal, correct, n_permutations=10).auc == pytest.approx(u / (20 * 20), abs=1e-12)
