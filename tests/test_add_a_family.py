"""The family added outside the package in ``tutorials/07_add_a_family.py`` (an Ultravox-shaped model) meets the
parity standard on its transformers-built reference, every hook fires, and registration refuses clashes.

The tutorial is run in this process (``runpy``) so that its classes, family and input builders can be used;
the family registry and the grad mode it changes are restored afterwards.
"""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import pytest
import torch

from hooked_audio import HookedAudioTransformer
from hooked_audio.encoders import ENCODERS, register_encoder
from hooked_audio.encoders.voxtral import VoxtralEncoder
from hooked_audio.encoders.whisper import WhisperEncoder
from hooked_audio.families import FAMILIES, family_for_model_type, register_family

TUTORIAL = Path(__file__).parents[1] / "tutorials" / "07_add_a_family.py"
TOL = 1e-4  # max abs logit difference, float32 (design brief, section 6)

CASES = {
    "one_full_window_clip": [[128]],
    "batch_padded_different_lengths": [[128], [45]],
    "several_clips_in_a_row_and_across_rows": [[100, 37], [128, 64]],
    "shortest_clip_one_token": [[16], [90]],
    "text_only_row_next_to_audio": [[], [77]],
}


@pytest.fixture(scope="module")
def tutorial():
    families, encoders, grad = dict(FAMILIES), dict(ENCODERS), torch.is_grad_enabled()
    try:
        yield runpy.run_path(str(TUTORIAL))
    finally:
        FAMILIES.clear(), FAMILIES.update(families)
        ENCODERS.clear(), ENCODERS.update(encoders)
        torch.set_grad_enabled(grad)


@pytest.fixture(scope="module")
def pair(tutorial):
    reference = tutorial["make_reference"](seed=5)
    return reference, HookedAudioTransformer.from_hf_model(reference)


def max_diff(ours, theirs, inputs) -> float:
    return (ours - theirs)[inputs["attention_mask"].bool()].abs().max().item()


def test_the_family_is_found_by_model_type(tutorial, pair):
    _, model = pair
    assert family_for_model_type("ultravox_tutorial") is tutorial["ULTRAVOX"]
    assert (model.cfg.family, model.cfg.audio.encoder, model.cfg.audio.frames_per_token) == ("ultravox_tutorial", "voxtral", 8)
    assert isinstance(model.projector, tutorial["SwiGLUProjector"])


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_the_reference(tutorial, pair, case):
    reference, model = pair
    inputs = tutorial["make_inputs"](CASES[case], seed=2)
    with torch.no_grad():
        ours, theirs = model(**inputs), reference(**inputs).logits
        assert max_diff(ours, theirs, inputs) <= TOL
        other = dict(inputs, input_features=torch.randn_like(inputs["input_features"]))
        assert max_diff(model(**other), ours, inputs) > 100 * TOL, "the audio barely moves the logits"


def test_text_only_matches_the_reference(tutorial, pair):
    reference, model = pair
    inputs = tutorial["make_inputs"]([[], []], seed=3)
    assert "input_features" not in inputs
    with torch.no_grad():
        assert max_diff(model(**inputs), reference(**inputs).logits, inputs) <= TOL


def test_every_hook_fires(tutorial, pair):
    _, model = pair
    fired: set[str] = set()
    with torch.no_grad():
        model.run_with_hooks(
            **tutorial["make_inputs"]([[100, 37], [128]]),
            fwd_hooks=[(lambda name: True, lambda x, hook: fired.add(hook.name))],
        )
    assert set(model.hook_dict) - fired == set()
    assert {"projector.hook_gate", "projector.ln_pre.hook_normalized", "audio_encoder.hook_pooled"} <= fired


def test_register_family_refuses_a_clash_of_model_types(tutorial):
    ultravox = tutorial["ULTRAVOX"]
    before = dict(FAMILIES)
    with pytest.raises(ValueError, match="already loaded by the 'ultravox_tutorial' family"):
        register_family(dataclasses.replace(ultravox, name="ultravox_copy"))
    with pytest.raises(ValueError, match="already loaded by the 'qwen2_audio' family"):
        register_family(dataclasses.replace(ultravox, name="ultravox_copy", hf_model_types=("qwen2_audio",)))
    assert FAMILIES == before


def test_an_unhandled_attribute_is_refused(tutorial):
    with pytest.raises(NotImplementedError, match="projector_ln_mid=True"):
        HookedAudioTransformer.from_hf_model(tutorial["make_reference"](projector_ln_mid=True))
    with pytest.raises(NotImplementedError, match="multiple of stack_factor"):
        HookedAudioTransformer.from_hf_model(tutorial["make_reference"](stack_factor=6))


class MaskedVoxtralEncoder(VoxtralEncoder):
    frame_mask = WhisperEncoder.frame_mask  # hide keys past each clip's end, as Qwen2-Audio's encoder does


def test_a_frame_masking_encoder_would_not_match(tutorial, pair):
    """HF's WhisperEncoder does not mask padded frames, which is why the family uses the Voxtral encoder: the
    same encoder with Qwen2-Audio's key padding mask misses the reference on padded clips (so the parity cases
    above do test the padding)."""
    reference, model = pair
    register_encoder("masked_voxtral", MaskedVoxtralEncoder)
    cfg = dataclasses.replace(model.cfg, audio=dataclasses.replace(model.cfg.audio, encoder="masked_voxtral"))
    masked = HookedAudioTransformer(cfg)
    masked.load_state_dict(model.state_dict())
    inputs = tutorial["make_inputs"]([[128], [45]], seed=2)
    with torch.no_grad():
        assert max_diff(masked.eval()(**inputs), reference(**inputs).logits, inputs) > 100 * TOL


def test_projector_activations_go_with_their_row_when_the_cache_is_sliced(tutorial, pair):
    _, model = pair
    inputs = tutorial["make_inputs"]([[100, 37], [128]])  # windows 0 and 1 are row 0's, window 2 is row 1's
    with torch.no_grad():
        _, cache = model.run_with_cache(**inputs)
    row_1 = cache.apply_slice_to_batch_dim(slice(1, 2))
    torch.testing.assert_close(row_1["audio_encoder.hook_out"], cache["audio_encoder.hook_out"][2:])
    torch.testing.assert_close(row_1["projector.hook_gate"], cache["projector.hook_gate"][2:])
    with torch.no_grad():
        _, last = model.run_with_cache(**inputs, positions="last")
    torch.testing.assert_close(last["projector.hook_gate"], cache["projector.hook_gate"])  # audio side: kept whole


def test_greedy_generation_matches_the_reference(tutorial, pair):
    """The reference has no ``generate``: greedy decoding by hand (full forward each step) is the reference."""
    reference, model = pair
    inputs = tutorial["make_inputs"]([[128], [45]], seed=4)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        for _ in range(6):
            next_token = reference(**dict(inputs, input_ids=ids, attention_mask=mask)).logits[:, -1].argmax(-1)
            assert not (next_token == tutorial["AUDIO"]).any(), "pick another seed: the reference would splice there"
            ids, mask = torch.cat([ids, next_token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        ours = model.generate(**inputs, max_new_tokens=6, eos_token_id=[])
    assert torch.equal(ours, ids)


def test_from_pretrained_loads_the_outside_family_from_a_directory(tutorial, pair, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference, _ = pair
    reference.save_pretrained(tmp_path)
    loaded = HookedAudioTransformer.from_pretrained(str(tmp_path))
    inputs = tutorial["make_inputs"]([[128], [45]])
    with torch.no_grad():
        assert max_diff(loaded(**inputs), reference(**inputs).logits, inputs) <= TOL


def test_a_shipped_family_is_not_replaced_by_accident(tutorial):
    shipped = FAMILIES["qwen2_audio"]
    with pytest.raises(ValueError, match="ships"):
        register_family(dataclasses.replace(tutorial["ULTRAVOX"], name="qwen2_audio", hf_model_types=("x",)))
    assert FAMILIES["qwen2_audio"] is shipped
