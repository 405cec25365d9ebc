"""Counterfactual audio (silence, matched noise, removed) and audio attention from every generated token: exact
checks on the tiny random model, each against a value computed another way."""

import numpy as np
import pytest
import torch
from conftest import AUDIO_TOKEN_ID, VOCAB, make_inputs, sine

from hooked_audio.analysis import (
    audio_attention_per_row, generated_queries, matched_noise, silence_direction, silence_like, without_audio,
)


@torch.no_grad()
def test_without_audio_equals_the_prompt_built_without_the_clips(model):
    inputs = model.to_inputs(make_inputs([[100, 60], [80]], text_lengths=[3, 5], seed=4))
    removed = without_audio(model, inputs)
    markers = {AUDIO_TOKEN_ID, VOCAB["<|audio_bos|>"], VOCAB["<|audio_eos|>"]}
    by_hand = [[t for t in row if t not in markers] for row in inputs.real_token_rows()]
    assert removed.real_token_rows() == by_hand and not removed.has_audio
    expected = model.to_inputs({"input_ids": removed.input_ids, "attention_mask": removed.attention_mask})
    torch.testing.assert_close(model(removed), model(expected), atol=0, rtol=0)
    # left padding is kept, so the last position is still the answer position of every row
    assert bool(removed.attention_mask[:, -1].all())
    # control: markers=[] keeps the <|audio_bos|> / <|audio_eos|> tokens
    kept = without_audio(model, inputs, markers=[])
    assert [len(r) for r in kept.real_token_rows()] == [len(r) + 2 * n for r, n in zip(by_hand, (2, 1))]
    with pytest.raises(ValueError, match="not a token"):
        without_audio(model, inputs, markers=["<|not_a_token|>"])
    with pytest.raises(ValueError, match="no audio to remove"):
        without_audio(model, removed)


def test_matched_noise_has_each_clips_length_and_rms_and_is_seeded():
    clips = [sine(300, 0.5), 0.1 * sine(900, 1.2), np.zeros(800, np.float32)]
    noise = matched_noise(clips, seed=3)
    for clip, n in zip(clips, noise[:2]):
        assert n.shape == clip.shape and n.dtype == np.float32
        assert np.sqrt(np.mean(n.astype(np.float64) ** 2)) == pytest.approx(np.sqrt(np.mean(clip.astype(np.float64) ** 2)), rel=1e-5)
        assert abs(np.corrcoef(n, clip)[0, 1]) < 0.1  # noise, not the clip
    assert not noise[2].any()  # a silent clip stays silent
    assert all(np.array_equal(a, b) for a, b in zip(noise, matched_noise(clips, seed=3)))
    assert not np.array_equal(noise[0], matched_noise(clips, seed=4)[0])
    with pytest.raises(ValueError, match="mono"):
        matched_noise([np.zeros((2, 100), np.float32)])


@torch.no_grad()
def test_matched_noise_keeps_the_token_layout(model):
    prompt = "<|im_start|>user \n<|audio_bos|><|AUDIO|><|audio_eos|>what is said ?<|im_end|> \n<|im_start|>assistant \n"
    clips = [0.2 * sine(440, 0.8)]
    real = model.build_inputs(prompt, clips, sampling_rate=16000)
    noisy = model.build_inputs(prompt, matched_noise(clips), sampling_rate=16000)
    assert torch.equal(real.input_ids, noisy.input_ids)
    assert torch.equal(real.audio["feature_attention_mask"], noisy.audio["feature_attention_mask"])
    assert not torch.allclose(real.audio["input_features"], noisy.audio["input_features"])


@torch.no_grad()
def test_silence_direction_against_any_reference(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], seed=5))
    heads = [(0, 1), (1, 2)]
    torch.testing.assert_close(silence_direction(model, inputs, heads), silence_direction(model, inputs, heads, silence_like(inputs)))
    assert silence_direction(model, inputs, heads, inputs).abs().max() == 0  # the input against itself
    removed = without_audio(model, inputs)
    _, cache = model.run_with_cache(inputs, names_filter=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    _, ref = model.run_with_cache(removed, names_filter=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    by_hand = torch.stack([cache[f"blocks.{l}.hook_resid_post"][:, -1] - ref[f"blocks.{l}.hook_resid_post"][:, -1] for l in (0, 1)]).mean(0)
    torch.testing.assert_close(silence_direction(model, inputs, heads, removed), by_hand)


@torch.no_grad()
def test_audio_attention_from_every_generated_token_equals_each_steps_last_position(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], text_lengths=[3, 5], seed=6))
    tokens = model.generate(inputs, max_new_tokens=4, eos_token_id=[])
    stop = int(tokens[1, inputs.shape[1] + 1])  # row 1 "stops" at its second new token
    extended, query = generated_queries(inputs, tokens, [stop])
    n = inputs.shape[1]
    stops_early = [int(tokens[r, n:].tolist().index(stop)) if stop in tokens[r, n:].tolist() else 4 for r in range(2)]
    for row in range(2):
        expected = torch.zeros(extended.shape[1], dtype=torch.bool)
        expected[n - 1 : n - 1 + min(stops_early[row] + 1, 4)] = True
        assert torch.equal(query[row], expected)
    got = audio_attention_per_row(model, extended, query)
    # each query position sees only its prefix: its attention equals the last position's of the prefix run
    for row in range(2):
        steps = [audio_attention_per_row(model, generated_prefix(extended, p + 1))[row] for p in torch.nonzero(query[row]).flatten().tolist()]
        torch.testing.assert_close(got[row], torch.stack(steps).mean(0), atol=1e-6, rtol=1e-5)
    # control: the mean over generated tokens differs from the last prompt position alone
    assert (got - audio_attention_per_row(model, inputs)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="generate's output"):
        generated_queries(inputs, inputs.input_ids, [stop])
    with pytest.raises(ValueError, match="query mask is"):
        audio_attention_per_row(model, inputs, query[:, :3])


def generated_prefix(inputs, length):
    from dataclasses import replace

    return replace(inputs, input_ids=inputs.input_ids[:, :length], attention_mask=inputs.attention_mask[:, :length])


@torch.no_grad()
def test_attention_to_chosen_keys_equals_the_audio_default_on_the_audio_mask(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], text_lengths=[3, 5], seed=6))
    torch.testing.assert_close(audio_attention_per_row(model, inputs, keys=inputs.audio_mask), audio_attention_per_row(model, inputs))
    hint = torch.zeros_like(inputs.audio_mask)
    column = inputs.attention_mask.long().argmax(-1) + 1  # each row's second real token: text before every query
    hint[torch.arange(2), column] = True
    assert not (hint & inputs.audio_mask).any()
    _, cache = model.run_with_cache(inputs, names_filter="blocks.1.attn.hook_pattern")
    by_hand = cache["pattern", 1][torch.arange(2), :, inputs.last_positions][torch.arange(2), :, column]
    torch.testing.assert_close(audio_attention_per_row(model, inputs, keys=hint)[:, 1], by_hand)
