"""Logits equal HF's eager Qwen2-Audio (float32, max abs diff <= 1e-4) on tiny random models."""

from __future__ import annotations

import pytest
import torch
from conftest import AUDIO_TOKEN_ID, VOCAB, make_hf_model, make_inputs, make_processor

from hooked_audio import HookedAudioTransformer

TOL = 1e-4

CASES = {
    "one_clip": [[100]],
    "batch_padded_different_lengths": [[100], [37]],
    "two_clips_in_one_prompt": [[100, 52]],
    "batch_mixed_clip_counts": [[64, 100], [24]],
}


def max_diff_at_real_positions(ours, theirs, attention_mask):
    return (ours - theirs)[attention_mask.bool()].abs().max().item()


@pytest.fixture(scope="module", params=[4, 2], ids=["mha", "gqa"])
def pair(request):
    hf = make_hf_model(n_kv_heads=request.param, seed=request.param)
    return hf, HookedAudioTransformer.from_hf_model(hf)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_hf(pair, case):
    hf, model = pair
    inputs = make_inputs(CASES[case], text_lengths=[3, 7][: len(CASES[case])], seed=1)
    with torch.no_grad():
        theirs = hf(**inputs).logits
        ours = model(**inputs)
    assert max_diff_at_real_positions(ours, theirs, inputs["attention_mask"]) <= TOL
    # The audio must matter, or this comparison would not test the audio path at all.
    other = dict(inputs, input_features=torch.randn_like(inputs["input_features"]))
    with torch.no_grad():
        moved = (model(**other) - ours)[inputs["attention_mask"].bool()].abs().max().item()
    assert moved > 100 * TOL


def test_text_only_matches_hf(pair):
    hf, model = pair
    inputs = make_inputs([[], []], text_lengths=[9, 5])
    with torch.no_grad():
        diff = max_diff_at_real_positions(model(**inputs), hf(**inputs).logits, inputs["attention_mask"])
    assert diff <= TOL


def test_explicit_attention_path_matches_sdpa(pair):
    _, model = pair
    inputs = make_inputs([[100], [40]], seed=3)
    with torch.no_grad():
        fast = model(**inputs)
        seen = []
        explicit = model.run_with_hooks(
            **inputs, fwd_hooks=[(lambda n: n.endswith("hook_pattern"), lambda x, hook: seen.append(hook.name))]
        )
    assert len(seen) == model.cfg.n_layers + model.cfg.audio.n_layers  # every layer took the explicit path
    assert max_diff_at_real_positions(fast, explicit, inputs["attention_mask"]) <= TOL


def test_greedy_generation_matches_hf(pair):
    hf, model = pair
    inputs = make_inputs([[100], [60]], seed=4)
    eos = VOCAB["<|im_end|>"]
    with torch.no_grad():
        theirs = hf.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=0)
    ours = model.generate(**inputs, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(ours, theirs)


def test_processor_inputs_match_hf():
    """End to end from waveforms: the HF processor's output gives the same logits in both models."""
    import numpy as np

    hf = make_hf_model(seed=7)
    processor = make_processor()
    model = HookedAudioTransformer.from_hf_model(hf, processor=processor)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000).astype(np.float32) * 0.1, rng.standard_normal(5000).astype(np.float32) * 0.1]
    prompts = ["hello <|audio_bos|><|AUDIO|><|audio_eos|> what is said ?", "<|audio_bos|><|AUDIO|><|audio_eos|> yes"]
    processor.tokenizer.padding_side = "left"
    batch = processor(text=prompts, audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)
    assert int((batch["input_ids"] == AUDIO_TOKEN_ID).sum()) == 25 + 8
    with torch.no_grad():
        theirs = hf(**batch).logits
        ours = model(batch)
    assert max_diff_at_real_positions(ours, theirs, batch["attention_mask"]) <= TOL
