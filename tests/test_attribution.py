"""Attribution patching: grad x delta by hand, the linear limit, and agreement with activation patching."""

import dataclasses

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import attribution_patching, attribution_vs_activation_patching, silence_like

METRIC = lambda logits: logits[:, -1, 7].sum()  # noqa: E731


@pytest.fixture(scope="module")
def clean(model):
    return model.to_inputs(make_inputs([[100]], seed=2))


def test_one_activation_by_hand(model, clean):
    corrupt = silence_like(clean)
    scores = attribution_patching(model, clean, corrupt, METRIC, names_filter=["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z"])
    _, clean_cache = model.run_with_cache(clean, names_filter="blocks.0.hook_resid_pre")
    held = {}

    def keep(x, hook):
        x.retain_grad()
        held["x"] = x
        return x

    METRIC(model.run_with_hooks(corrupt, fwd_hooks=[("blocks.0.hook_resid_pre", keep)])).backward()
    model.zero_grad(set_to_none=True)
    by_hand = ((clean_cache["blocks.0.hook_resid_pre"] - held["x"].detach()) * held["x"].grad).sum(-1)
    torch.testing.assert_close(scores["blocks.0.hook_resid_pre"], by_hand, rtol=1e-5, atol=1e-7)
    assert scores["blocks.1.attn.hook_z"].shape == (1, clean.shape[1], model.cfg.n_heads)
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind


def test_equals_activation_patching_in_the_linear_limit(model, clean):
    """A small change of the audio features: each (layer, position) cell's real patching effect equals its
    first-order estimate to within 2 % of the largest effect (a wrong sign, scale or cell would be off by the
    effect's own size). Smaller nudges hit the float32 floor: HF's RMSNorm computes in float32 even in float64."""
    features = clean.audio["input_features"]
    direction = torch.randn(features.shape, generator=torch.Generator().manual_seed(0))
    nudged = dataclasses.replace(clean, audio=dict(clean.audio, input_features=features + 0.1 * direction))
    result = attribution_vs_activation_patching(model, clean, nudged, METRIC, cells="resid_pre")
    effect, attribution = result["effect"], result["attribution"]
    assert effect.abs().max() > 1e-5  # the nudge does something, at audio and text positions alike
    assert (attribution - effect).abs().max() < 0.02 * effect.abs().max()
    assert result["rank_correlation"] > 0.99


def test_ranks_heads_like_activation_patching(model, clean):
    result = attribution_vs_activation_patching(model, clean, silence_like(clean), METRIC, cells="head")
    assert result["attribution"].shape == result["effect"].shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert result["rank_correlation"] >= 0.8
    # control: against a shuffled estimate the rank correlation collapses
    from scipy.stats import spearmanr
    shuffled = result["attribution"].flatten()[torch.randperm(result["attribution"].numel(), generator=torch.Generator().manual_seed(0))]
    assert spearmanr(shuffled.numpy(), result["effect"].flatten().numpy()).statistic < result["rank_correlation"] - 0.3


def test_refusals(model, clean):
    with pytest.raises(ValueError, match="scalar"):
        attribution_patching(model, clean, silence_like(clean), lambda logits: logits[:, -1, :3])
    with pytest.raises(ValueError, match="selects no hook"):
        attribution_patching(model, clean, silence_like(clean), METRIC, names_filter=lambda name: False)
    with pytest.raises(ValueError, match=r"lacks: \['blocks.0.hook_resid_Pre'\]"):  # a typo is not dropped
        attribution_patching(model, clean, silence_like(clean), METRIC,
                             names_filter=["blocks.0.hook_resid_pre", "blocks.0.hook_resid_Pre"])
    with pytest.raises(ValueError, match="cells"):
        attribution_vs_activation_patching(model, clean, silence_like(clean), METRIC, cells="neuron")


def test_only_encoder_points_on_a_text_only_run_are_refused_not_empty(model):
    """Was: {} (nothing ran), which reads as "no attribution". Control: a decoder point on the same run."""
    text = model.to_inputs(torch.tensor([[5, 6, 7, 8]]))
    with pytest.raises(ValueError, match="none of the 1 selected hook points ran on these inputs .* hold no audio"):
        attribution_patching(model, text, text, METRIC, names_filter=["audio_encoder.blocks.0.hook_resid_pre"])
    result = attribution_patching(model, text, text, METRIC, names_filter=["blocks.0.hook_resid_pre"])
    assert torch.equal(result["blocks.0.hook_resid_pre"], torch.zeros_like(result["blocks.0.hook_resid_pre"]))
