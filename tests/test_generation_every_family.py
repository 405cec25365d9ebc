"""Greedy ``generate`` for every family, with the KV cache and without it, token for token against HF's
``generate(do_sample=False)`` and against an argmax loop over HF's full forwards (no cache at all): one clip,
left-padded batches of different lengths, several clips in one prompt, text only; stop tokens; what a hook
on a cached step sees; a generated token that happens to be the audio placeholder; and the argument
combinations that would silently do something else than asked.

Each family's tiny HF model, its inputs and its cases come from its ``FamilySpec`` (``test_family_*.py``),
built once per session by ``build_pair``. The step logits are compared too: a wrong rotary position or
mask on a cached step moves them far more than ``TOL`` even where the argmax survives.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from family_harness import TOL, FamilySpec, build_pair
from test_family_contract import SPECS

from hooked_audio import HookedAudioTransformer
from hooked_audio.audio.inputs import AudioTextInput
from hooked_audio.generation import position_offset

N_NEW = 5


def one_clip_case(spec: FamilySpec) -> str:
    """The family's case of one row holding one clip (for the Omni families a clip over several chunks)."""
    return next(name for name, clips in spec.cases.items() if len(clips) == 1 and len(clips[0]) == 1)


def inputs_for(spec: FamilySpec, clips_per_row: list, seed: int = 4) -> dict:
    """Rows of different text lengths (so a batch is left-padded), the family's clips in each."""
    return spec.make_inputs(clips_per_row, text_lengths=[3, 7, 5][: len(clips_per_row)] if len(clips_per_row) > 1
                            else [5], seed=seed)


def hf_greedy(hf, inputs: dict, spec: FamilySpec, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's greedy tokens and raw step logits ``[batch, new, vocab]``."""
    settings = dict(max_new_tokens=N_NEW, eos_token_id=spec.eos_token_id, pad_token_id=spec.pad_token_id)
    with torch.no_grad():
        out = hf.generate(**inputs, do_sample=False, return_dict_in_generate=True, output_logits=True,
                          **{**settings, **kwargs})
    return out.sequences, torch.stack(out.logits, dim=1)


def ours(model, inputs: dict, spec: FamilySpec, cached: bool, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    settings = dict(max_new_tokens=N_NEW, eos_token_id=spec.eos_token_id, pad_token_id=spec.pad_token_id)
    return model.generate(**inputs, return_logits=True, use_past_kv_cache=cached, **{**settings, **kwargs})


def assert_same_as_hf(mine: tuple[torch.Tensor, torch.Tensor], theirs: tuple[torch.Tensor, torch.Tensor]) -> None:
    (tokens, logits), (hf_tokens, hf_logits) = mine, theirs
    assert torch.equal(tokens, hf_tokens), f"ours {tokens[:, -N_NEW:].tolist()} != HF {hf_tokens[:, -N_NEW:].tolist()}"
    diff = (logits - hf_logits).abs().max().item()
    assert diff <= TOL, f"step logits differ from HF's by {diff:.3g}"


FAMILY = [pytest.param(spec, id=name) for name, spec in SPECS.items()]
KINDS = ["one_clip", "batch_padded_different_lengths", "two_clips_in_one_prompt", "batch_mixed_clip_counts",
         "text_only_batch", "text_only_one_row"]
CASES = [pytest.param(spec, kind, id=f"{name}-{kind}") for name, spec in SPECS.items() for kind in KINDS]


def clips_of(spec: FamilySpec, kind: str) -> list:
    if kind == "one_clip":
        return spec.cases[one_clip_case(spec)]
    return {"text_only_batch": [[], []], "text_only_one_row": [[]]}.get(kind) or spec.cases[kind]


# --- token for token against HF ------------------------------------------------------------------
@pytest.mark.parametrize("spec, kind", CASES)
def test_greedy_generation_matches_hf_with_and_without_the_kv_cache(spec, kind):
    hf, model = build_pair(spec)
    inputs = inputs_for(spec, clips_of(spec, kind))
    if len(inputs["input_ids"]) > 1:
        assert not inputs["attention_mask"].all()  # the batch really is left-padded
    theirs = hf_greedy(hf, inputs, spec)
    assert_same_as_hf(ours(model, inputs, spec, cached=True), theirs)
    assert_same_as_hf(ours(model, inputs, spec, cached=False), theirs)


@pytest.mark.parametrize("spec", FAMILY)
def test_greedy_generation_matches_an_argmax_loop_over_hf_full_forwards(spec):
    """No cache anywhere on HF's side: each step re-runs HF's forward over the whole padded sequence, with the
    positions HF's ``generate`` uses (real tokens before each position). The Omni families' HF forward
    numbers positions that way itself (MRoPE from the attention mask); the others take ``position_ids``."""
    hf, model = build_pair(spec)
    inputs = inputs_for(spec, spec.cases["batch_mixed_clip_counts"], seed=7)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        for _ in range(N_NEW):
            kwargs = dict(inputs, input_ids=ids, attention_mask=mask)
            if model.cfg.audio_inputs.position_ids != "real_tokens":
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            ids = torch.cat([ids, hf(**kwargs).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    for cached in (True, False):
        mine = model.generate(**inputs, max_new_tokens=N_NEW, eos_token_id=[], use_past_kv_cache=cached)
        assert torch.equal(mine, ids)


@pytest.mark.parametrize("spec", FAMILY)
def test_explicit_attention_on_cached_steps_matches_hf(spec):
    """Hooking every decoder ``hook_pattern`` takes the explicit path: one query over every key so far, the
    padding masked by the cache's mask."""
    hf, model = build_pair(spec)
    inputs = inputs_for(spec, spec.cases["batch_mixed_clip_counts"], seed=3)
    n_prompt, shapes = inputs["input_ids"].shape[1], []

    def record(pattern, hook):
        if hook.name.startswith("blocks.0."):
            shapes.append(tuple(pattern.shape[2:]))

    hook = (lambda name: name.startswith("blocks.") and name.endswith("attn.hook_pattern"), record)
    assert_same_as_hf(ours(model, inputs, spec, cached=True, fwd_hooks=[hook]), hf_greedy(hf, inputs, spec))
    assert shapes == [(n_prompt, n_prompt)] + [(1, n_prompt + i) for i in range(1, N_NEW)]


# --- stop tokens ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", FAMILY)
def test_stop_tokens_end_rows_as_hf_does(spec):
    """One stop token (row 0's second answer token: row 0 stops there, padded after it, while a row that has not
    stopped goes on), then two (every row stops: generation ends early), in both modes."""
    hf, model = build_pair(spec)
    inputs = inputs_for(spec, spec.cases["batch_padded_different_lengths"])
    n_prompt = inputs["input_ids"].shape[1]
    free = model.generate(**inputs, max_new_tokens=N_NEW, eos_token_id=[])
    first_stop, second_stop = int(free[0, n_prompt + 1]), int(free[1, n_prompt + 2])
    for stops in ([first_stop], [first_stop, second_stop]):
        theirs = hf_greedy(hf, inputs, spec, eos_token_id=stops)
        for cached in (True, False):
            mine = ours(model, inputs, spec, cached, eos_token_id=stops)
            assert_same_as_hf(mine, theirs)
        tokens = mine[0]
        stopped_at = int(torch.isin(tokens[0, n_prompt:], torch.tensor(stops)).nonzero()[0])
        assert stopped_at <= 1 and (tokens[0, n_prompt + stopped_at + 1:] == spec.pad_token_id).all()
    assert tokens.shape[1] <= n_prompt + 3  # both rows stopped by their third token


# --- hooks on cached steps -----------------------------------------------------------------------
@pytest.mark.parametrize("spec", FAMILY)
def test_a_hook_on_a_cached_step_sees_its_absolute_position(spec):
    """On a cached step a hook sees the one new position, and ``position_offset()`` is its column: the
    residual there equals the uncached run's residual at that column (at real positions)."""
    _, model = build_pair(spec)
    inputs = inputs_for(spec, spec.cases["batch_padded_different_lengths"], seed=2)
    n_prompt = inputs["input_ids"].shape[1]
    seen = {True: [], False: []}
    for cached in (True, False):
        record = lambda x, hook, cached=cached: seen[cached].append((position_offset(), x.clone()))  # noqa: E731
        model.generate(**inputs, max_new_tokens=4, eos_token_id=[], use_past_kv_cache=cached,
                       fwd_hooks=[("blocks.1.hook_resid_pre", record)])
    assert [(offset, x.shape[1]) for offset, x in seen[True]] == [(0, n_prompt)] + [(n_prompt + i, 1) for i in range(3)]
    assert [offset for offset, _ in seen[False]] == [0] * 4
    full = seen[False][-1][1]  # the last uncached step: every column but the last new token's
    real = torch.cat([inputs["attention_mask"], torch.ones(len(full), 3, dtype=torch.long)], dim=1).bool()
    for offset, x in seen[True]:
        columns = slice(offset, offset + x.shape[1])  # padding columns carry no meaning
        torch.testing.assert_close(x[real[:, columns]], full[:, columns][real[:, columns]], rtol=0, atol=TOL)


# --- a generated token that is the audio placeholder ---------------------------------------------
@pytest.mark.parametrize("spec", FAMILY)
def test_a_generated_audio_placeholder_is_read_as_text_as_hf_does(spec):
    """The audio token's output row is made to win where the model's first answer token would: the new
    placeholder is embedded as text (no audio spliced there) in both modes, as HF's cached ``generate`` does."""
    hf = spec.make_hf_model(**spec.variants[spec.default_variant])
    inputs = inputs_for(spec, spec.cases["batch_padded_different_lengths"])
    n_prompt = inputs["input_ids"].shape[1]
    before = HookedAudioTransformer.from_hf_model(hf)
    first = int(before.generate(**inputs, max_new_tokens=1, eos_token_id=[])[0, -1])
    audio_id = before.cfg.audio_token_id
    with torch.no_grad():
        head = hf.get_output_embeddings().weight
        head[audio_id] = 3 * head[first] + 0.01
    model = HookedAudioTransformer.from_hf_model(hf)
    theirs = hf_greedy(hf, inputs, spec, eos_token_id=[])
    assert (theirs[0][:, n_prompt:] == audio_id).any()  # the placeholder is generated
    for cached in (True, False):
        assert_same_as_hf(ours(model, inputs, spec, cached, eos_token_id=[]), theirs)


# --- arguments that would silently do something else ---------------------------------------------
REFUSED = [
    (dict(temperature=0.5), ValueError,
     r"temperature=0.5: sampling settings, which greedy decoding \(do_sample=False\) would ignore: pass do_sample"),
    (dict(top_k=3), ValueError,
     r"top_k=3: sampling settings.*pass do_sample=True to sample with them, or leave them out"),
    (dict(top_p=0.9, temperature=2.0), ValueError, r"temperature=2.0, top_p=0.9: sampling settings"),
    (dict(do_sample="False"), TypeError, r"do_sample must be True or False, got 'False'"),
    (dict(use_past_kv_cache=None), TypeError, r"use_past_kv_cache must be True or False, got None"),
    (dict(return_logits=1), TypeError, r"return_logits must be True or False, got 1"),
    (dict(pad_token_id=-1), ValueError, r"pad_token_id must be a token id in 0\.\.63 .*got -1"),
    (dict(pad_token_id=2.5), ValueError, r"pad_token_id must be a token id in 0\.\.63 .*got 2\.5"),
    (dict(pad_token_id=64), ValueError, r"pad_token_id must be a token id in 0\.\.63"),
    (dict(eos_token_id=[2, 151645]), ValueError,
     r"eos_token_id \[151645\] is outside the vocabulary \(0\.\.63\): it could never be generated"),
    (dict(use_cache=False), TypeError, r"does not take HF's use_cache=: pass use_past_kv_cache= instead"),
    (dict(max_length=40), TypeError, r"does not take HF's max_length=: pass max_new_tokens="),
    (dict(output_logits=True), TypeError, r"does not take HF's output_logits=: pass return_logits=True"),
    (dict(num_beams=2), TypeError, r"does not take HF's num_beams=: only greedy decoding and sampling"),
    (dict(repetition_penalty=1.2), TypeError, r"does not take HF's repetition_penalty="),
    (dict(stop_at_eos=False), TypeError, r"does not take TransformerLens's stop_at_eos=: .*pass eos_token_id=\[\]"),
    (dict(return_type="tokens"), TypeError, r"does not take TransformerLens's return_type=: it returns token ids"),
    (dict(verbose=False), TypeError, r"does not take TransformerLens's verbose="),
    (dict(fwd_hooks=("blocks.0.hook_resid_post", lambda x, hook: x)), TypeError, r"wrap one pair in a list"),
    (dict(fwd_hooks={"blocks.0.hook_resid_post": lambda x, hook: x}), TypeError,
     r"fwd_hooks must be a list of \(name, hook\) pairs"),
]


@pytest.mark.parametrize(
    "arguments, error, message",
    [pytest.param(*case, id="-".join(f"{k}={v!r}" if isinstance(v, (int, float, str, list, type(None))) else
                                      f"{k}={type(v).__name__}" for k, v in case[0].items())) for case in REFUSED],
)
def test_arguments_that_would_be_ignored_or_misread_are_refused(arguments, error, message):
    _, model = build_pair(SPECS["qwen2_audio"])
    inputs = inputs_for(SPECS["qwen2_audio"], [[100], [40]])
    with pytest.raises(error, match=message):
        model.generate(**inputs, **{"max_new_tokens": 2, **arguments})


def test_given_position_ids_are_refused_not_ignored():
    """generate numbers positions itself: position ids passed in (as keywords or on an ``AudioTextInput``) would
    be dropped, so they are refused; without them the same call runs."""
    spec = SPECS["qwen2_5_omni"]
    _, model = build_pair(spec)
    inputs = inputs_for(spec, spec.cases["batch_padded_different_lengths"])
    shifted = torch.arange(inputs["input_ids"].shape[1]).expand_as(inputs["input_ids"]) + 100
    message = "generate numbers the positions itself .* leave position_ids out"
    with pytest.raises(ValueError, match=message):
        model.generate(**inputs, position_ids=shifted, max_new_tokens=2)
    built = model.to_inputs(**inputs)
    assert isinstance(built, AudioTextInput) and built.position_ids is None
    with pytest.raises(ValueError, match=message):
        model.generate(replace(built, position_ids=shifted), max_new_tokens=2)
    plain = model.generate(built, max_new_tokens=2, eos_token_id=[])
    assert torch.equal(plain, model.generate(**inputs, max_new_tokens=2, eos_token_id=[]))


def test_sampling_settings_still_work_when_sampling():
    """The refusals above leave sampling alone: top_k=1 sampling is greedy, and temperature 1.0 (its default) is
    accepted with greedy decoding."""
    _, model = build_pair(SPECS["voxtral"])
    inputs = inputs_for(SPECS["voxtral"], [[200], [37]])
    greedy = model.generate(**inputs, max_new_tokens=4, eos_token_id=[], temperature=1.0, top_k=None, top_p=None)
    sampled = model.generate(**inputs, max_new_tokens=4, eos_token_id=[], do_sample=True, top_k=1, temperature=0.7,
                             top_p=0.5, seed=0)
    assert torch.equal(greedy, sampled)
