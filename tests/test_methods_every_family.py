"""The methods of the two methods issues run on every supported family with a few calls, and their exact
identities hold there too (different encoders, poolings, windows, position rules, norms and unembeddings)."""

from __future__ import annotations

import pytest
import torch
from family_harness import build_pair, word_level_tokenizer
from test_audiolens import _renormalised_pattern_hooks
from test_family_contract import FAMILY, inputs_of

from hooked_audio.analysis import (
    attribution_vs_activation_patching, audio_attention_per_row, audio_masking_hooks, audio_silence_steering_hooks,
    back_patching_hooks, causal_tracing, enrichment_hook, head_ablation_hooks, instruction_steering_vector,
    label_log_probs, same_prompt_donors, silence_direction, silence_like, temporal_attention, text_dominance,
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
    with pytest.raises(ValueError, match="same prompts"):  # the same prompts under both names: a zero vector
        instruction_steering_vector(model, inputs, inputs, layer=0)


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


@pytest.mark.parametrize("spec", FAMILY)
@torch.no_grad()
def test_label_lens_audio_masking_and_enrichment(spec):
    """AudioLens on every family: the output row of the label lens is the model's own restricted log-softmax
    (the family's final norm and unembedding), masking the audio from the last position equals an independent
    renormalised-pattern implementation, and enrichment adds lam * h[src] at the last real position."""
    model, inputs = _setup(spec)
    model.tokenizer = word_level_tokenizer({f"w{i}": i for i in range(model.cfg.d_vocab)}, "w0", "w1")
    rows, last = torch.arange(inputs.shape[0]), inputs.last_positions
    logits, cache = model.run_with_cache(inputs)
    lp = label_log_probs(model, cache, ["w5", "w6", "w7"])
    torch.testing.assert_close(lp[-1], logits[rows, last][:, [5, 6, 7]].float().log_softmax(-1), atol=1e-5, rtol=1e-5)
    assert (lp[0] - lp[-1]).abs().max() > 1e-3  # control: the lens is per layer

    masked = model.run_with_hooks(inputs, fwd_hooks=audio_masking_hooks(inputs))
    by_hand = model.run_with_hooks(inputs, fwd_hooks=_renormalised_pattern_hooks(inputs))
    torch.testing.assert_close(masked[rows, last], by_hand[rows, last], atol=1e-4, rtol=1e-4)
    assert (masked[rows, last] - logits[rows, last]).abs().max() > 1e-4  # control: the audio mattered there

    top, seen = model.cfg.n_layers - 1, {}
    record = [(f"blocks.{top}.hook_resid_post", lambda r, hook: seen.setdefault("h", r.clone()))]
    model.run_with_hooks(inputs, fwd_hooks=enrichment_hook(0, 5, 0.5, n_layers=model.cfg.n_layers, inputs=inputs) + record)
    expected = cache["resid_post", top][rows, last] + 0.5 * cache["resid_post", 0][rows, last]
    torch.testing.assert_close(seen["h"][rows, last], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", FAMILY)
@torch.no_grad()
def test_listening_attention_silence_steering_and_encoder_heads(spec):
    """Glazer et al. on every family: per-head audio attention is the pattern's mass on the audio keys at the last
    real position; audio-silence steering adds beta * (h - h_silence) at the last layer; encoder heads ablate
    (and resampling a head from its own row changes nothing)."""
    model, inputs = _setup(spec)
    rows, last = torch.arange(inputs.shape[0]), inputs.last_positions
    logits, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern") or n.endswith("resid_post"))
    attention = audio_attention_per_row(model, inputs)
    for row in rows.tolist():
        by_hand = cache["pattern", 1][row, :, int(last[row])][:, inputs.audio_mask[row]].sum(-1)
        torch.testing.assert_close(attention[row, 1], by_hand, atol=1e-6, rtol=1e-5)

    top, seen = model.cfg.n_layers - 1, {}
    heads = [(0, 0), (top, 1)]
    s = silence_direction(model, inputs, heads)
    silent = silence_like(inputs)
    _, quiet = model.run_with_cache(silent, names_filter=lambda n: n.endswith("resid_post"))
    quiet_last = silent.last_positions
    mean_diff = sum(cache["resid_post", l][rows, last] - quiet["resid_post", l][rows, quiet_last] for l in (0, top)) / 2
    torch.testing.assert_close(s, mean_diff, atol=1e-5, rtol=1e-5)
    record = [(f"blocks.{top}.hook_resid_post", lambda r, hook: seen.setdefault("h", r.clone()))]
    model.run_with_hooks(inputs, fwd_hooks=audio_silence_steering_hooks(model, inputs, heads, beta=2.0) + record)
    torch.testing.assert_close(seen["h"][rows, last], cache["resid_post", top][rows, last] + 2.0 * s, atol=1e-5, rtol=1e-5)

    encoder = model.cfg.audio
    zeroed = model.run_with_hooks(inputs, fwd_hooks=head_ablation_hooks(
        [(encoder.n_layers - 1, h) for h in range(encoder.n_heads)], "zero", "audio_encoder.", model=model))
    assert (zeroed[rows, last] - logits[rows, last]).abs().max() > 1e-5
    # resample: one prompt in both rows, each with its own clip of the same length (random features)
    clip = spec.cases["batch_padded_different_lengths"][0]
    twin = model.to_inputs(**spec.make_inputs([clip, clip], text_lengths=[3, 3], seed=2))
    twin = twin.with_token_rows([twin.real_token_rows()[0]] * 2, pad_id=0)
    donors, z = same_prompt_donors(twin), {}
    record_z = [(f"blocks.{top}.attn.hook_z", lambda t, hook: z.setdefault(len(z), t.clone()))]
    model.run_with_hooks(twin, fwd_hooks=record_z)
    model.run_with_hooks(twin, fwd_hooks=head_ablation_hooks([(top, 1)], "resample", donors=donors, model=model) + record_z)
    assert donors.tolist() == [1, 0] and (z[0][0] - z[0][1]).abs().max() > 1e-4  # the two rows heard different clips
    torch.testing.assert_close(z[1][:, :, 1], z[0].flip(0)[:, :, 1], atol=0, rtol=0)  # head 1 from the other row
    torch.testing.assert_close(z[1][:, :, 0], z[0][:, :, 0], atol=0, rtol=0)  # control: head 0 untouched


@pytest.mark.parametrize("spec", FAMILY)
@torch.no_grad()
def test_encoder_head_mean_and_resample_ablation_read_the_encoders_own_rows(spec):
    """The encoder's blocks run on windows (Qwen-Omni: a clip's attention windows), not batch rows. Mean ablation
    averages the frames ``encoder_real_frames`` marks (padding given unmistakable values must not move it), and
    resampling gives each of a row's windows the window in the same place of the donor row's clip."""
    _, model = build_pair(spec)
    name = "audio_encoder.blocks.0.attn.hook_z"
    inputs = model.to_inputs(**inputs_of(spec, "batch_padded_different_lengths", seed=2))
    real = model.encoder_real_frames(inputs)

    def mark_padding(t, hook):
        t = t.clone()
        t[~real] = 100.0
        return t

    seen = {}
    capture = (name, lambda t, hook: seen.__setitem__("z", t.clone()))
    model.run_with_hooks(inputs, fwd_hooks=[(name, mark_padding), capture])
    marked = seen["z"]
    model.run_with_hooks(inputs, fwd_hooks=[(name, mark_padding), *head_ablation_hooks(
        [(0, 1)], "mean", "audio_encoder.", inputs=inputs, model=model), capture])
    expected = marked[real][:, 1].mean(0)
    torch.testing.assert_close(seen["z"][:, :, 1], expected.expand_as(seen["z"][:, :, 1]), atol=1e-5, rtol=1e-5)

    clip = spec.cases["batch_padded_different_lengths"][0]
    twin = model.to_inputs(**spec.make_inputs([clip, clip], text_lengths=[3, 3], seed=2))
    twin = twin.with_token_rows([twin.real_token_rows()[0]] * 2, pad_id=0)
    model.run_with_hooks(twin, fwd_hooks=[capture])
    clean = seen["z"]
    half = clean.shape[0] // 2  # row 0's windows, then row 1's
    model.run_with_hooks(twin, fwd_hooks=[*head_ablation_hooks(
        [(0, 1)], "resample", "audio_encoder.", same_prompt_donors(twin), inputs=twin, model=model), capture])
    swapped = torch.cat([clean[half:], clean[:half]])
    torch.testing.assert_close(seen["z"][:, :, 1], swapped[:, :, 1], atol=0, rtol=0)
    torch.testing.assert_close(seen["z"][:, :, 0], clean[:, :, 0], atol=0, rtol=0)  # control: head 0 untouched
    assert (clean[:half, :, 1] - clean[half:, :, 1]).abs().max() > 1e-4  # the two rows' clips differ
