"""The family contract: what every supported HF family must do, checked for each family from its
``FamilySpec`` (defined in its own ``test_family_<name>.py``, next to its tiny builders and the tests of what
is special about it), as HF's ``ModelTesterMixin`` does for its models.

For every family (and each of its variants, e.g. MHA / GQA):
- logits equal HF's eager float32 forward to 1e-4 at real positions on every parity case (padded batch of
  different lengths, several clips in one prompt, mixed clip counts, audio over several windows / chunks
  where the family has them), and other audio moves them (so the audio path is what is being compared);
- text-only input matches; greedy ``generate`` gives HF's tokens;
- every hook point in ``model.hook_dict`` fires (the family's own names among them);
- the explicit attention path (taken when ``hook_pattern`` is hooked) equals SDPA, in every layer;
- audio token times follow the family's token rate and continue across a clip's windows;
- ``from_pretrained`` of a ``save_pretrained`` directory works offline;
- each real configuration in ``model_configs`` maps (``to_config``), and our model on the meta device has
  HF's parameter count (less the parts not re-implemented);
- the whitelist refuses an unhandled non-default HF config attribute, naming it.
"""

from __future__ import annotations

import os

import pytest
import torch
from hooked_audio import HookedAudioTransformer
from family_harness import (
    REQUIRED_CASES, FamilySpec, assert_every_hook_fires, assert_generate_matches_hf, assert_loads_offline,
    assert_logits_match, assert_matches_hf, assert_parity_and_audio_matters, assert_token_times_continue_across_windows,
    assert_meta_parameter_count_matches, build_pair, noise_clips,
)
from test_family_audioflamingo3 import SPEC as AUDIOFLAMINGO3
from test_family_glm_asr import SPEC as GLM_ASR
from test_family_music_flamingo import SPEC as MUSIC_FLAMINGO
from test_family_qwen2_5_omni import SPEC as QWEN2_5_OMNI
from test_family_qwen2_audio import SPEC as QWEN2_AUDIO
from test_family_qwen3_omni import SPEC as QWEN3_OMNI
from test_family_voxtral import SPEC as VOXTRAL

import hooked_audio.model_configs as model_configs
from hooked_audio.families import FAMILIES, family_for_model_type

SPECS: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in [QWEN2_AUDIO, AUDIOFLAMINGO3, MUSIC_FLAMINGO, VOXTRAL, GLM_ASR, QWEN2_5_OMNI, QWEN3_OMNI]
}
VARIANTS = [pytest.param(spec, v, id=f"{spec.name}-{v}") for spec in SPECS.values() for v in spec.variants]
CASES = [
    pytest.param(spec, v, case, id=f"{spec.name}-{v}-{case}")
    for spec in SPECS.values() for v in spec.variants for case in spec.cases
]
FAMILY = [pytest.param(spec, id=spec.name) for spec in SPECS.values()]
REAL = [pytest.param(spec, name, id=name) for spec in SPECS.values() for name in spec.real_configs]


def inputs_of(spec: FamilySpec, case: str, seed: int = 1) -> dict:
    clips = spec.cases[case]
    return spec.make_inputs(clips, text_lengths=[3, 7][: len(clips)], seed=seed)


def test_every_shipped_family_has_a_spec():
    """Every family the package ships (families registered from outside, e.g. tutorial 07's, aside)."""
    shipped = {f.name for f in FAMILIES.values() if f.config_from_hf.__module__.startswith("hooked_audio.families.")}
    assert set(SPECS) == shipped


@pytest.mark.parametrize("spec", FAMILY)
def test_spec_covers_the_required_cases(spec):
    assert set(REQUIRED_CASES) <= set(spec.cases)
    assert spec.long_audio_case is None or spec.long_audio_case in spec.cases


@pytest.mark.parametrize("spec, variant, case", CASES)
def test_logits_match_hf_and_the_audio_matters(spec, variant, case):
    hf, model = build_pair(spec, variant)
    assert model.cfg.family == spec.name
    assert_parity_and_audio_matters(hf, model, inputs_of(spec, case), factor=spec.audio_factor)


@pytest.mark.parametrize("spec, variant", VARIANTS)
def test_text_only_matches_hf(spec, variant):
    hf, model = build_pair(spec, variant)
    assert_matches_hf(model, hf, spec.make_inputs([[], []], text_lengths=[9, 5]))


@pytest.mark.parametrize("spec, variant", VARIANTS)
def test_greedy_generation_matches_hf(spec, variant):
    hf, model = build_pair(spec, variant)
    inputs = inputs_of(spec, spec.long_audio_case or "batch_padded_different_lengths", seed=4)
    assert_generate_matches_hf(hf, model, inputs, eos_token_id=spec.eos_token_id, pad_token_id=spec.pad_token_id)


@pytest.mark.parametrize("spec, variant", VARIANTS)
def test_every_hook_point_fires(spec, variant):
    _, model = build_pair(spec, variant)
    fired = assert_every_hook_fires(model, inputs_of(spec, "batch_mixed_clip_counts", seed=0))
    assert spec.expected_hooks <= fired
    assert not spec.absent_hooks & set(model.hook_dict)


@pytest.mark.parametrize("spec, variant", VARIANTS)
def test_explicit_attention_path_matches_sdpa(spec, variant):
    _, model = build_pair(spec, variant)
    inputs = inputs_of(spec, "batch_mixed_clip_counts", seed=3)
    seen = []
    with torch.no_grad():
        fast = model(**inputs)
        explicit = model.run_with_hooks(
            **inputs, fwd_hooks=[(lambda n: n.endswith("hook_pattern"), lambda x, hook: seen.append(hook.name))]
        )
    assert len(seen) == model.cfg.n_layers + model.cfg.audio.n_layers  # every layer took the explicit path
    assert_logits_match(fast, explicit, inputs["attention_mask"])


@pytest.mark.parametrize("spec", FAMILY)
def test_audio_token_times_follow_the_token_rate(spec):
    _, model = build_pair(spec)
    expected = spec.token_times
    built, span = assert_token_times_continue_across_windows(
        model, spec.make_inputs(expected.clips), n_tokens=expected.n_tokens,
        tokens_per_window=expected.tokens_per_window, window_seconds=expected.window_seconds,
        seconds_per_token=spec.seconds_per_token,
    )
    times = built.token_times()[0, span.start : span.end]
    torch.testing.assert_close(times[:, 1] - times[:, 0], torch.full((len(span),), spec.seconds_per_token))
    for k in (0, len(span) // 2, len(span) - 1):  # and back from a time to its token
        assert built.time_to_position(0, times[k, 0].item() + spec.seconds_per_token / 2) == span.start + k


# Voxtral's processor takes no audio (mistral_common expands it); with the tiny spec's word-level tokenizer the
# expanded placeholders are one unknown word, so build_inputs cannot be compared with a processor call there.
@pytest.mark.parametrize("spec", [f for f in FAMILY if f.values[0].make_processor and f.values[0].name != "voxtral"],
                         ids=lambda s: s.name)
def test_build_inputs_of_one_short_clip_equals_the_processors_own_call(spec):
    """A clip shorter than a window, alone in its batch: the features padded as the processor pads them by default
    (to the window), not to the batch's longest clip, and HF's logits. A ``padding=True`` reaching the feature
    extractor once cut them short, which changed GLM-ASR's logits by 9e-3 and broke Audio Flamingo 3."""
    hf, _ = build_pair(spec)
    processor = spec.make_processor()
    model, token = HookedAudioTransformer.from_hf_model(hf, processor=processor), processor.audio_token
    clip = noise_clips(7, [8000])
    built = model.build_inputs([f"hello {token} yes"], clip, sampling_rate=16000)
    direct = processor(text=[f"hello {token} yes"], audio=clip, sampling_rate=16000, return_tensors="pt")
    assert torch.equal(built.input_ids, direct["input_ids"])
    for key, value in built.audio.items():
        torch.testing.assert_close(value, direct[key], rtol=0, atol=0)
    with torch.no_grad():
        assert_logits_match(model(built), hf(**direct).logits, built.attention_mask)


@pytest.mark.parametrize("spec", FAMILY)
def test_from_pretrained_loads_a_saved_directory_offline(spec, tmp_path, monkeypatch):
    hf, _ = build_pair(spec)
    processor = spec.make_processor() if spec.make_processor else None
    inputs = inputs_of(spec, "batch_mixed_clip_counts", seed=5)
    assert_loads_offline(tmp_path, monkeypatch, hf, inputs, spec.name, saved_processor=processor)


@pytest.mark.parametrize("spec, name", REAL)
def test_real_configuration_maps_and_matches_hf_parameter_count(spec, name):
    hf_config = model_configs.hf_config(name)
    family = family_for_model_type(hf_config.model_type)
    assert family.name == spec.name and family.hf_class_name == spec.hf_class.__name__
    cfg = family.to_config(hf_config)
    assert cfg.family == spec.name
    assert cfg.seconds_per_audio_token == pytest.approx(spec.seconds_per_token)
    n_ours, _ = assert_meta_parameter_count_matches(
        cfg, spec.hf_class, family.config_root(hf_config), spec.not_reimplemented
    )
    assert n_ours == spec.real_configs[name]


@pytest.mark.parametrize("spec", FAMILY)
def test_whitelist_refuses_an_unhandled_attribute(spec):
    """The spec's real-world option, and a made-up attribute on every handled config part, are refused by
    ``to_config`` with an error naming them."""
    name = next(iter(spec.real_configs))
    family = family_for_model_type(model_configs.hf_config(name).model_type)
    part_name, attribute, value = spec.unhandled
    cases = [(part_name, attribute, value)] + [
        (where, "made_up_option", 7) for where, handled in family.handled.items() if handled is not None
    ]
    for where, attribute, value in cases:
        hf_config = model_configs.hf_config(name)
        root = family.config_root(hf_config)
        setattr(getattr(root, where) if where else root, attribute, value)
        with pytest.raises(NotImplementedError, match=attribute):
            family.to_config(hf_config)
    family.to_config(model_configs.hf_config(name))  # untouched, it maps



TOKENLESS_CLIPS = [  # (family, a batch with a clip of one mel frame, the same with a clip of one token's frames)
    ("qwen2_audio", [[50], [1]], [[50], [3]]),
    ("audioflamingo3", [[[50]], [[1]]], [[[50]], [[3]]]),
    ("musicflamingo", [[[1]]], [[[3]]]),
    ("glm_asr", [[[200]], [[5], [200]]], [[[200]], [[8], [200]]]),
    ("qwen2_5_omni", [[20], [1]], [[20], [3]]),
]


@pytest.mark.parametrize("name, tokenless, control", TOKENLESS_CLIPS, ids=[c[0] for c in TOKENLESS_CLIPS])
def test_a_clip_too_short_for_one_audio_token_is_refused(name, tokenless, control):
    """Was: its window (HF's processor makes one for a 10 ms clip) yielded no placeholder, the forward ran on the
    text alone and window_rows credited the window to the clip before, in another row (Music Flamingo: a bare
    IndexError). Control: a clip just long enough for one token runs and matches HF. On GLM-ASR the tokenless
    clip follows a full window, where it cannot be told from a long clip's tail: warned, not refused."""
    spec = SPECS[name]
    hf, model = build_pair(spec)
    inputs = spec.make_inputs(tokenless, text_lengths=[3] * len(tokenless), seed=1)
    if name == "glm_asr":
        with pytest.warns(UserWarning, match="yields no audio token after a full window"):
            model(**inputs)
        inputs = spec.make_inputs(tokenless[1:], text_lengths=[3], seed=1)  # the short clip first in its batch
    with pytest.raises(ValueError, match="too few for one audio token"):
        model(**inputs)
    assert_matches_hf(model, hf, spec.make_inputs(control, text_lengths=[3] * len(control), seed=1))


def test_shapes_are_checked_at_run_time():
    """``conftest.py`` installs jaxtyping's import hook: an argument of the wrong shape fails at the call (and
    with ``HOOKED_AUDIO_SHAPE_CHECKS=0`` it really is off: the same call then runs)."""
    from jaxtyping import TypeCheckError

    from hooked_audio.components.positions import decoder_position_ids

    wrong = ("index", torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    if os.environ.get("HOOKED_AUDIO_SHAPE_CHECKS", "1") == "0":
        assert decoder_position_ids(*wrong).shape == (2, 3)
        return
    with pytest.raises(TypeCheckError):
        decoder_position_ids(*wrong)
