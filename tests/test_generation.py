"""generate(): the KV-cached path against HF and against the full-sequence path, sampling controls,
hooks active during generation (what they see on cached steps), stop tokens, left padding, arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB, build_tiny_hf_model, make_hf_model, make_inputs, make_processor, tiny_hf_config

from hooked_audio import HookedAudioTransformer
from hooked_audio.analysis import steering_hook
from hooked_audio.generation import position_offset

EOS = VOCAB["<|im_end|>"]


def both_modes(model, inputs, **kwargs):
    """(tokens, logits) with and without the KV cache."""
    cached = model.generate(**inputs, return_logits=True, use_past_kv_cache=True, **kwargs)
    full = model.generate(**inputs, return_logits=True, use_past_kv_cache=False, **kwargs)
    return cached, full


def assert_modes_agree(cached, full, tol: float = 1e-5) -> None:
    (tokens_c, logits_c), (tokens_f, logits_f) = cached, full
    assert torch.equal(tokens_c, tokens_f)
    assert logits_c.shape == logits_f.shape
    assert (logits_c - logits_f).abs().max().item() <= tol


# --- parity with HF ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "clips, text_lengths",
    [([[100, 60], [40]], [3, 9]), ([[], []], [3, 8])],  # several clips per prompt, padded; text only, padded
    ids=["audio", "text-only"],
)
def test_cached_greedy_matches_hf_generate(model, hf_model, clips, text_lengths):
    inputs = make_inputs(clips, text_lengths=text_lengths, seed=5)
    assert not inputs["attention_mask"].all()  # the batch is left-padded
    with torch.no_grad():
        theirs = hf_model.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=EOS, pad_token_id=0)
    ours = model.generate(**inputs, max_new_tokens=12, eos_token_id=EOS, pad_token_id=0)
    assert torch.equal(ours, theirs)


# --- cached == uncached --------------------------------------------------------------------------
@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "explicit-pattern"])
def test_cached_and_uncached_agree_on_a_padded_batch(model, explicit):
    inputs = make_inputs([[100], [40, 60]], text_lengths=[6, 2], seed=1)
    patterns = []
    hooks = [("blocks.1.attn.hook_pattern", lambda x, hook: patterns.append(tuple(x.shape)))] if explicit else []
    cached, full = both_modes(model, inputs, max_new_tokens=10, eos_token_id=[], fwd_hooks=hooks)
    assert_modes_agree(cached, full)
    assert cached[1].shape == (2, 10, model.cfg.d_vocab)
    if explicit:  # cached steps: one query over every key so far
        n_prompt, n_heads = inputs["input_ids"].shape[1], model.cfg.n_heads
        cached_patterns = patterns[:10]
        assert cached_patterns[0] == (2, n_heads, n_prompt, n_prompt)
        assert cached_patterns[1:] == [(2, n_heads, 1, n_prompt + i) for i in range(1, 10)]


def test_stop_tokens_pad_finished_rows_in_both_modes(model):
    inputs = make_inputs([[100], [40]], seed=2)
    plain = model.generate(**inputs, max_new_tokens=6, eos_token_id=[])
    n_prompt = inputs["input_ids"].shape[1]
    stop = int(plain[0, n_prompt + 1])  # row 0's second new token
    cached, full = both_modes(model, inputs, max_new_tokens=6, eos_token_id=[stop], pad_token_id=0)
    assert_modes_agree(cached, full)
    tokens = cached[0]
    first = int((tokens[0, n_prompt:] == stop).nonzero()[0])
    assert (tokens[0, n_prompt + first + 1:] == 0).all()  # padded after its stop token


def test_finished_rows_are_padded_with_the_generation_configs_pad_id_as_hf_does():
    """HF's generate pads finished rows with ``generation_config.pad_token_id`` (not the text config's): the
    hooked model takes its default stop and pad ids from there too, so its tokens equal HF's."""
    hf = make_hf_model()
    inputs = make_inputs([[100], [40]], seed=2)
    with torch.no_grad():
        plain = hf.generate(**inputs, max_new_tokens=6, do_sample=False, eos_token_id=[], pad_token_id=0)
    n_prompt = inputs["input_ids"].shape[1]
    stop, pad = int(plain[0, n_prompt + 1]), 7
    assert hf.config.text_config.pad_token_id != pad
    hf.generation_config.eos_token_id, hf.generation_config.pad_token_id = stop, pad
    with torch.no_grad():
        theirs = hf.generate(**inputs, max_new_tokens=6, do_sample=False)
    ours = HookedAudioTransformer.from_hf_model(hf, processor=make_processor()).generate(**inputs, max_new_tokens=6)
    assert torch.equal(ours, theirs) and (ours == pad).any()
    # a generation config without a pad id: HF pads with its first stop token, not the text config's pad id
    hf.generation_config.pad_token_id = None
    with torch.no_grad():
        theirs = hf.generate(**inputs, max_new_tokens=6, do_sample=False)
    ours = HookedAudioTransformer.from_hf_model(hf, processor=make_processor()).generate(**inputs, max_new_tokens=6)
    assert torch.equal(ours, theirs) and int(ours[0, -1]) == stop != hf.config.text_config.pad_token_id


# --- hooks ---------------------------------------------------------------------------------------
def test_hooks_on_cached_steps_see_the_new_position_and_its_absolute_index(model):
    inputs = make_inputs([[100]])
    n_prompt = inputs["input_ids"].shape[1]
    seen = {True: [], False: []}
    for cached in (True, False):
        record = lambda x, hook, cached=cached: seen[cached].append((x.shape[1], position_offset()))  # noqa: E731
        model.generate(**inputs, max_new_tokens=4, eos_token_id=[], use_past_kv_cache=cached,
                       fwd_hooks=[("blocks.0.hook_resid_pre", record), ("blocks.0.attn.hook_rot_k", record)])
    assert seen[True][::2] == [(n_prompt, 0)] + [(1, n_prompt + i) for i in range(3)]
    assert seen[True][1::2] == seen[True][::2]  # rot_k: the new position's key only, not the cached ones
    assert seen[False][::2] == [(n_prompt + i, 0) for i in range(4)]
    assert position_offset() == 0  # outside a forward


def test_steering_gives_the_same_tokens_with_and_without_the_cache(model):
    inputs = make_inputs([[100], [40]], seed=3)
    n_prompt = inputs["input_ids"].shape[1]
    plain, plain_logits = model.generate(**inputs, max_new_tokens=6, eos_token_id=[], return_logits=True)
    direction = model.W_U[:, int(plain[0, -1] + 1) % model.cfg.d_vocab]
    last_prompt_position = torch.zeros(1, n_prompt, dtype=torch.bool)
    last_prompt_position[0, -1] = True
    text = model.to_inputs(**inputs).text_mask  # starts True: a cached step must not read its column 0
    assert bool(text[0, 0])
    # [-1]: the newest token, which with the cache keeps each generated token steered in its keys and values; was,
    # without the cache only the newest column of each re-run was steered (other tokens); [-2]: counted back from
    # the prompt's end during generate (was: from each re-run's end without the cache, a moving column)
    for positions in (None, last_prompt_position, text, [n_prompt - 1], [-1], [-2]):
        hooks = [(f"blocks.{layer}.hook_resid_post", steering_hook(direction, 8.0, positions)) for layer in (0, 1)]
        cached, full = both_modes(model, inputs, max_new_tokens=6, eos_token_id=[], fwd_hooks=hooks)
        assert_modes_agree(cached, full, tol=1e-4)
        if positions == [-2]:  # one prompt column: it moves the logits, not necessarily the answer
            assert (cached[1] - plain_logits).abs().max() > 1e-2
        else:
            assert not torch.equal(cached[0], plain)  # the steering changed the answer


def test_answer_position_hooks_give_the_same_tokens_with_and_without_the_cache(model):
    """Hooks that act on "the answer positions" (audio masking from the last position, enrichment, audio-silence
    steering) act on the prompt's last position and every generated token; without the cache each step re-runs
    all of them, so they are hooked again there (the masking once hooked the final position only, so the prompt's
    last position lost its masking after the first step: logits 0.34 off the cached run's)."""
    from hooked_audio.analysis import audio_masking_hooks, audio_silence_steering_hooks, enrichment_hook

    inputs = make_inputs([[100], [40]], seed=3)
    batch = model.to_inputs(**inputs)
    settings = dict(max_new_tokens=6, eos_token_id=[])
    plain = model.generate(**inputs, return_logits=True, **settings)[1]
    for hooks in (audio_masking_hooks(batch), audio_masking_hooks(batch, layers=[1]),
                  audio_silence_steering_hooks(model, batch, [(0, 0), (1, 1)], 4.0, min_relative_norm=0.0)):
        cached, full = both_modes(model, inputs, fwd_hooks=hooks, **settings)
        assert_modes_agree(cached, full, tol=1e-4)
        assert (cached[1][:, 1:] - plain[:, 1:]).abs().max() > 1e-2  # the hooks act on the generated steps too


def test_enrichment_into_a_middle_block_is_the_same_with_and_without_the_cache():
    """``enrichment_hook`` adds h[source][last] at a block whose output later blocks read (on a 3-block model):
    without the cache every step re-runs the prompt's last position, which must be enriched again."""
    from transformers import Qwen2AudioForConditionalGeneration

    from hooked_audio.analysis import enrichment_hook

    config = tiny_hf_config()
    config.text_config.num_hidden_layers = 3
    config.text_config.layer_types = ["full_attention"] * 3
    hf = build_tiny_hf_model(Qwen2AudioForConditionalGeneration, config, 0,
                             louder={"model.multi_modal_projector.linear.weight": 20})
    deeper = HookedAudioTransformer.from_hf_model(hf, processor=make_processor())
    inputs = make_inputs([[100], [40]], seed=3)
    settings = dict(max_new_tokens=6, eos_token_id=[])
    plain = deeper.generate(**inputs, return_logits=True, **settings)[1]
    hooks = enrichment_hook(0, k=1, lam=4.0, n_layers=3, inputs=deeper.to_inputs(**inputs))  # into block 1
    cached, full = both_modes(deeper, inputs, fwd_hooks=hooks, **settings)
    assert_modes_agree(cached, full, tol=1e-4)
    assert (cached[1][:, 1:] - plain[:, 1:]).abs().max() > 1e-2


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


# --- sampling ------------------------------------------------------------------------------------
def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    inputs = make_inputs([[100]])
    greedy = model.generate(**inputs, max_new_tokens=6, eos_token_id=[], pad_token_id=0)
    top1 = model.generate(**inputs, max_new_tokens=6, do_sample=True, top_k=1, seed=3, eos_token_id=[])
    assert torch.equal(greedy, top1)
    a = model.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=5.0, seed=1, eos_token_id=[])
    b = model.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=5.0, seed=1, eos_token_id=[])
    c = model.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=5.0, seed=2, eos_token_id=[])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampling_defaults_are_hfs_and_the_checkpoints():
    """Was: top_k left out sampled from the whole vocabulary, and a checkpoint's generation config's sampling
    settings were ignored; HF samples with top_k 50 unless told, and with the checkpoint's settings. Seeded
    sampling is compared through the same seeded generator on both sides (HF draws with torch.multinomial on the
    global generator)."""
    hf = make_hf_model()
    inputs = make_inputs([[100], [40]], seed=2)
    model = HookedAudioTransformer.from_hf_model(hf, processor=make_processor())

    def hf_sampled(**settings):
        torch.manual_seed(5)
        with torch.no_grad():
            return hf.generate(**inputs, max_new_tokens=8, do_sample=True, eos_token_id=[], pad_token_id=0, **settings)

    def ours_sampled(**settings):
        torch.manual_seed(5)
        return model.generate(**inputs, max_new_tokens=8, do_sample=True, eos_token_id=[], **settings)

    assert torch.equal(ours_sampled(temperature=2.0), hf_sampled(temperature=2.0))  # top_k 50 on both sides
    assert not torch.equal(ours_sampled(temperature=2.0, top_k=0), ours_sampled(temperature=2.0))  # 50 of 64 tokens
    hf.generation_config.top_k, hf.generation_config.temperature = 3, 1.5  # the checkpoint's settings
    model = HookedAudioTransformer.from_hf_model(hf, processor=make_processor())
    assert torch.equal(ours_sampled(), hf_sampled())
    assert torch.equal(ours_sampled(), ours_sampled(top_k=3, temperature=1.5))


def test_seeded_sampling_is_the_same_with_and_without_the_cache(model):
    inputs = make_inputs([[100], [40]], seed=6)
    settings = dict(max_new_tokens=10, do_sample=True, temperature=3.0, top_k=30, top_p=0.95, seed=11, eos_token_id=[])
    cached, full = both_modes(model, inputs, **settings)
    assert_modes_agree(cached, full)
    assert torch.equal(model.generate(**inputs, **settings), cached[0])  # reproducible


# --- inputs and arguments ------------------------------------------------------------------------
def test_zero_new_tokens_returns_the_prompt(model):
    inputs = make_inputs([[100]])
    tokens, logits = model.generate(**inputs, max_new_tokens=0, return_logits=True)
    assert torch.equal(tokens, inputs["input_ids"]) and logits.shape == (1, 0, model.cfg.d_vocab)


def test_right_padded_batch_is_refused(model):
    inputs = make_inputs([[100], [40]])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    shift = int((mask[1] == 0).sum())
    inputs["input_ids"] = torch.stack([ids[0], ids[1].roll(-shift)])
    inputs["attention_mask"] = torch.stack([mask[0], mask[1].roll(-shift)])
    with pytest.raises(ValueError, match="left padding"):
        model.generate(**inputs, max_new_tokens=2)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=2.5), "max_new_tokens"),
        (dict(do_sample=True, temperature=0.0), "temperature"),
        (dict(do_sample=True, top_k=-1), "top_k"),
        (dict(do_sample=True, top_p=0.0), "top_p"),
        (dict(do_sample=True, top_p=1.5), "top_p"),
    ],
)
def test_bad_arguments_are_refused(model, arguments, message):
    with pytest.raises(ValueError, match=message):
        model.generate(**make_inputs([[100]]), **arguments)


def test_mean_ablation_refuses_a_cached_step_and_works_uncached(model):
    from hooked_audio.analysis import head_ablation_hooks

    inputs = make_inputs([[100]], seed=6)
    hooks = head_ablation_hooks([(1, 0), (1, 2)], mode="mean")
    with pytest.raises(ValueError, match="use_past_kv_cache=False"):
        model.generate(**inputs, max_new_tokens=3, eos_token_id=[], fwd_hooks=hooks)
    tokens = model.generate(**inputs, max_new_tokens=3, eos_token_id=[], fwd_hooks=hooks, use_past_kv_cache=False)
    assert tokens.shape[1] == inputs["input_ids"].shape[1] + 3
