"""The methods of the two methods issues run on every supported family with a few calls, and their exact
identities hold there too (different encoders, poolings, windows and position rules)."""

from __future__ import annotations

import pytest
import torch
from family_harness import build_pair
from test_family_contract import FAMILY, inputs_of

from hooked_audio.analysis import (
    attribution_vs_activation_patching, back_patching_hooks, causal_tracing, instruction_steering_vector,
    silence_like, temporal_attention, text_dominance,
)


def _setup(spec):
    _, model = build_pair(spec)
    inputs = model.to_inputs(**inputs_of(spec, "batch_padded_different_lengths", seed=2))
    return model, inputs


@pytest.mark.parametrize("spec", FAMILY)
@torch.no_grad()
def test_back_patching_identity_and_causal_tracing_last_layer(spec):
    model, inputs = _setup(spec)
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_resid_post"))
    logits = model(inputs)
    top = model.cfg.n_layers - 1
    assert torch.equal(model.run_with_hooks(inputs, fwd_hooks=back_patching_hooks(cache, top, top)), logits)
    assert (model.run_with_hooks(inputs, fwd_hooks=back_patching_hooks(cache, top, 0)) - logits).abs().max() > 1e-5
    token = int(logits[0, -1].argmax())
    trace = causal_tracing(model, inputs, lambda out: out[:, -1, token], corrupt="silence", layers=[0, top])
    assert trace.recovery[-1] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("spec", FAMILY)
def test_attribution_ranks_heads_like_activation_patching(spec):
    model, inputs = _setup(spec)
    clean = inputs.select_rows([0])
    token = int(model(clean)[0, -1].argmax())
    result = attribution_vs_activation_patching(model, clean, silence_like(clean), lambda out: out[0, -1, token], "head")
    assert result["effect"].abs().max() > 1e-5
    assert result["rank_correlation"] >= 0.6


@pytest.mark.parametrize("spec", FAMILY)
@torch.no_grad()
def test_temporal_attention_text_dominance_and_instruction_vector(spec):
    model, inputs = _setup(spec)
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    profile, seconds = temporal_attention(cache, layers=[0])
    audio = inputs.audio_mask[0]
    last = int(inputs.last_positions[0])
    torch.testing.assert_close(profile[0, : int(audio.sum())], cache["pattern", 0][0, :, last][:, audio].sum(0))
    assert seconds[0, 0] == pytest.approx(inputs.seconds_per_token / 2)
    free = text_dominance(model, inputs, [1] * 2, [2] * 2, text_free=inputs, n_boot=100)
    assert torch.equal(free["hint_effect"], torch.zeros(2))
    other_ids = inputs.input_ids.clone()
    other_ids[inputs.text_mask & (torch.arange(inputs.shape[1]) == int(inputs.last_positions[0]) - 1)] = 1
    other = type(inputs)(**{**inputs.__dict__, "input_ids": other_ids})
    assert instruction_steering_vector(model, inputs, other, layer=0).abs().max() > 1e-6
    assert torch.equal(instruction_steering_vector(model, inputs, inputs, layer=0), torch.zeros(model.cfg.d_model))


@pytest.mark.parametrize("spec", FAMILY)
@torch.no_grad()
def test_without_audio_is_the_text_only_prompt(spec):
    """Removing the clips leaves the text tokens (these tiny models have no processor, so no marker tokens are cut)
    and runs as a text-only input: equal to the same tokens given without audio, and different from the clip run."""
    from hooked_audio.analysis import without_audio

    model, inputs = _setup(spec)
    removed = without_audio(model, inputs)
    assert not removed.has_audio and not bool(removed.audio_mask.any())
    assert [len(r) for r in removed.real_token_rows()] == [
        int(m.sum()) - int(a.sum()) for m, a in zip(inputs.attention_mask, inputs.audio_mask)]
    plain = model.to_inputs({"input_ids": removed.input_ids, "attention_mask": removed.attention_mask})
    torch.testing.assert_close(model(removed), model(plain), atol=0, rtol=0)
    assert (model(removed)[:, -1] - model(inputs)[:, -1]).abs().max() > 1e-5
