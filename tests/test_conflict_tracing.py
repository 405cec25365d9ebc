"""Conflict-tracing helpers: the probe on data with a known answer, span similarity and residuals by hand."""

import pytest
import torch
from conftest import make_inputs

from hooked_audio.analysis import LinearProbe, last_position_resid, span_cosine_by_layer


def test_probe_reads_a_planted_direction_and_not_shuffled_labels():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 20, generator=gen)
    y = (x[:, :3] * torch.tensor([2.0, 1.5, 1.0])).argmax(-1)  # three classes, linearly separable
    fit, held = slice(0, 200), slice(200, 300)
    assert LinearProbe().fit(x[fit], y[fit]).accuracy(x[held], y[held]) > 0.8
    shuffled = y[fit][torch.randperm(200, generator=gen)]
    chance = torch.bincount(y[held]).max().item() / 100
    assert LinearProbe().fit(x[fit], shuffled).accuracy(x[held], y[held]) < chance + 0.15
    with pytest.raises(ValueError, match="two classes"):
        LinearProbe().fit(x[:10], torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="fit the probe"):
        LinearProbe().predict(x)


@torch.no_grad()
def test_span_cosine_and_last_position_residuals_by_hand(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], seed=3))
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: "resid" in n)
    resid = last_position_resid(cache)
    assert resid.shape == (model.cfg.n_layers + 1, 2, model.cfg.d_model)
    last = inputs.last_positions
    torch.testing.assert_close(resid[-1, 1], cache["blocks.1.hook_resid_post"][1, last[1]])
    torch.testing.assert_close(resid[0, 0], cache["blocks.0.hook_resid_pre"][0, last[0]])
    cosine = span_cosine_by_layer(cache)
    h = cache["blocks.0.hook_resid_post"][1]
    audio, text = inputs.audio_mask[1], inputs.text_mask[1]
    by_hand = torch.nn.functional.cosine_similarity(h[audio].mean(0), h[text].mean(0), dim=0)
    torch.testing.assert_close(cosine[1, 1], by_hand)
    _, partial = model.run_with_cache(inputs, names_filter="blocks.0.hook_resid_post")
    with pytest.raises(ValueError, match="lacks"):
        span_cosine_by_layer(partial)
