"""generate(): sampling controls, hooks active during generation, left padding."""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    inputs = make_inputs([[100]])
    greedy = model.generate(**inputs, max_new_tokens=6, eos_token_id=[], pad_token_id=0)
    top1 = model.generate(**inputs, max_new_tokens=6, do_sample=True, top_k=1, seed=3, eos_token_id=[])
    assert torch.equal(greedy, top1)
    a = model.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=5.0, seed=1, eos_token_id=[])
    b = model.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=5.0, seed=1, eos_token_id=[])
    c = model.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=5.0, seed=2, eos_token_id=[])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hooks_steer_generation(model):
    inputs = make_inputs([[100]])
    plain = model.generate(**inputs, max_new_tokens=5, eos_token_id=[])
    target = int(plain[0, -1] + 1) % model.cfg.d_vocab
    push = model.W_U[:, target] * 50.0

    def steer(resid, hook):
        return resid + push

    steered = model.generate(**inputs, max_new_tokens=5, eos_token_id=[], fwd_hooks=[("blocks.1.hook_resid_post", steer)])
    prompt_len = inputs["input_ids"].shape[1]
    assert (steered[0, prompt_len:] == target).all() and not torch.equal(steered, plain)
    # and the hook is gone afterwards
    assert torch.equal(model.generate(**inputs, max_new_tokens=5, eos_token_id=[]), plain)


def test_right_padded_batch_is_refused(model):
    inputs = make_inputs([[100], [40]])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    shift = int((mask[1] == 0).sum())
    inputs["input_ids"] = torch.stack([ids[0], ids[1].roll(-shift)])
    inputs["attention_mask"] = torch.stack([mask[0], mask[1].roll(-shift)])
    with pytest.raises(ValueError, match="left padding"):
        model.generate(**inputs, max_new_tokens=2)
