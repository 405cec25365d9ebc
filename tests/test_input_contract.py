"""Audio that is not what the user meant (issue 9, class 5): each case as a user would trigger it.

Every ambiguous input is refused with the fix, or corrected with a warning; every accepted form gives
exactly the inputs of its plain equivalent.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from conftest import AUDIO_TOKEN_ID, sine

from hooked_audio.audio import load_waveform
from hooked_audio.audio.prompting import min_audio_samples

QUESTION = "<|audio_bos|><|AUDIO|><|audio_eos|> what is said ?"
TWO_CLIPS = "<|audio_bos|><|AUDIO|><|audio_eos|> and <|audio_bos|><|AUDIO|><|audio_eos|> what is said ?"
PCM = [0, 12000, -12000, 3000, -32768, 32767] * 400  # 16-bit sample values, 2400 samples


def _same_inputs(a, b) -> None:
    assert torch.equal(a.input_ids, b.input_ids)
    assert a.audio.keys() == b.audio.keys()
    for key in a.audio:
        torch.testing.assert_close(a.audio[key], b.audio[key], atol=0, rtol=0)


def _user(*items, role="user"):
    return [{"role": role, "content": list(items)}]


# --- integer samples in the wrong container -------------------------------------------------------------


def test_int16_values_in_an_int64_tensor_are_refused_with_the_cast_to_use():
    samples = torch.tensor(PCM)  # torch makes int64 from a list of ints
    assert samples.dtype == torch.int64
    with pytest.raises(ValueError, match=r"int64 samples .* ambiguous.*x\.astype\(np\.int16\)"):
        load_waveform(samples, sampling_rate=16000)
    with pytest.raises(ValueError, match=r"int64.*astype\(np\.int16\)"):
        load_waveform(np.array(PCM), sampling_rate=16000)  # numpy too


def test_the_suggested_int16_cast_gives_full_scale_audio():
    y = load_waveform(np.array(PCM).astype(np.int16), sampling_rate=16000)
    np.testing.assert_allclose(y[:6], [0, 12000 / 32768, -12000 / 32768, 3000 / 32768, -1.0, 32767 / 32768])


def test_int16_values_in_int32_are_refused_but_real_int32_pcm_is_scaled_by_its_range():
    with pytest.raises(ValueError, match=r"int32 samples whose values all fit in int16.*astype\(np\.int16\)"):
        load_waveform(np.array(PCM, dtype=np.int32), sampling_rate=16000)
    y = load_waveform(np.array([2**30, -(2**31), 0], dtype=np.int32), sampling_rate=16000)
    np.testing.assert_allclose(y, [0.5, -1.0, 0.0])


def test_24_bit_values_in_int32_warn_and_are_taken_as_32_bit():
    with pytest.warns(UserWarning, match=r"within 24 bits.*x / 2\*\*23"):
        y = load_waveform(np.array([2**22, -(2**22), 0], dtype=np.int32), sampling_rate=16000)
    np.testing.assert_allclose(y, [2**22 / 2**31, -(2**22) / 2**31, 0.0])


def test_unsigned_wider_than_8_bits_is_refused_and_uint8_is_offset_binary():
    with pytest.raises(ValueError, match=r"uint16 samples .* \(only 8-bit audio is unsigned\)"):
        load_waveform(np.array([0, 128, 255], dtype=np.uint16), sampling_rate=16000)
    np.testing.assert_allclose(load_waveform(np.array([0, 128, 255], dtype=np.uint8), sampling_rate=16000),
                               [-1.0, 0.0, 127 / 128])


def test_all_zero_integers_are_silence_in_any_container():
    assert not load_waveform(torch.zeros(800, dtype=torch.int64), sampling_rate=16000).any()


def test_float_samples_holding_pcm_values_are_refused():
    with pytest.raises(ValueError, match=r"whole numbers up to 32768 look like integer PCM.*astype\(np\.int16\)"):
        load_waveform(np.array(PCM, dtype=np.float32), sampling_rate=16000)
    # a legitimate click train of -1/0/1 floats is a waveform in [-1, 1]
    clicks = np.array([0.0, 1.0, 0.0, -1.0] * 100, dtype=np.float32)
    np.testing.assert_array_equal(load_waveform(clicks, sampling_rate=16000), clicks)


def test_build_inputs_refuses_int64_pcm_before_any_feature_is_computed(model):
    with pytest.raises(ValueError, match="int64.*astype"):
        model.build_inputs(QUESTION, torch.tensor(PCM * 4), sampling_rate=16000)


def test_bool_samples_are_refused():
    with pytest.raises(TypeError, match="Unsupported sample dtype bool"):
        load_waveform(np.ones(100, dtype=bool), sampling_rate=16000)


# --- datasets-style audio dicts -------------------------------------------------------------------------


def test_a_datasets_audio_dict_carries_its_own_rate(model):
    clip = sine(440, 0.5, 22050)
    as_dict = {"array": clip, "sampling_rate": 22050, "path": None}
    np.testing.assert_array_equal(load_waveform(as_dict), load_waveform(clip, sampling_rate=22050))
    _same_inputs(model.build_inputs(QUESTION, as_dict), model.build_inputs(QUESTION, clip, sampling_rate=22050))
    with pytest.raises(ValueError, match="sampling_rate=22050 but sampling_rate=16000"):
        load_waveform(as_dict, sampling_rate=16000)
    with pytest.raises(ValueError, match='no "sampling_rate"'):
        load_waveform({"array": clip})
    with pytest.raises(TypeError, match="dict with keys"):
        load_waveform({"samples": clip})


# --- clips too short for one audio token ------------------------------------------------------------------


def test_the_shortest_clip_is_what_the_processor_needs_for_one_token(model):
    need = min_audio_samples(model)
    count = lambda n: int((model.processor(text=["<|AUDIO|>"], audio=[np.zeros(n, np.float32)], sampling_rate=16000,  # noqa: E731
                                           return_tensors="pt")["input_ids"] == AUDIO_TOKEN_ID).sum())
    assert need == 321 and count(need - 1) == 0 and count(need) == 1


def test_a_clip_too_short_for_one_audio_token_is_refused(model):
    with pytest.raises(ValueError, match=r"18\.8 ms .* too short for one audio token.*at least 20\.1 ms \(321 samples\)"):
        model.build_inputs(QUESTION, sine(440, 300 / 16000), sampling_rate=16000)
    # measured after resampling: 960 samples at 48 kHz are 320 at 16 kHz
    with pytest.raises(ValueError, match="too short for one audio token"):
        model.build_inputs(QUESTION, np.full(960, 0.1, np.float32), sampling_rate=48000)
    inputs = model.build_inputs(QUESTION, np.full(321, 0.1, np.float32), sampling_rate=16000)
    assert int(inputs.audio_mask.sum()) == 1


def test_a_short_clip_in_a_batch_is_named_by_its_index(model):
    messages = [_user({"type": "audio", "audio": sine(440, 0.5)}, {"type": "text", "text": "yes"}),
                _user({"type": "audio", "audio": np.zeros(200, np.float32)}, {"type": "text", "text": "no"})]
    with pytest.raises(ValueError, match=r"audio clip 1 is 12\.5 ms"):
        model.build_inputs(messages=messages, sampling_rate=16000)


# --- sample rates -------------------------------------------------------------------------------------------


def test_one_rate_per_clip(model):
    a, b = sine(440, 0.5, 44100), sine(300, 0.5, 16000)
    both = model.build_inputs(TWO_CLIPS, [a, b], sampling_rate=[44100, 16000])
    wave_a, wave_b = load_waveform(a, sampling_rate=44100), load_waveform(b, sampling_rate=16000)
    _same_inputs(both, model.build_inputs(TWO_CLIPS, [wave_a, wave_b], sampling_rate=16000))
    with pytest.raises(ValueError, match="list of 1 rates but there are 2 clip"):
        model.build_inputs(TWO_CLIPS, [a, b], sampling_rate=[44100])


def test_one_rate_applies_to_the_arrays_and_files_keep_their_own(model, tmp_path):
    path = tmp_path / "clip.wav"
    soundfile.write(path, sine(300, 0.5, 22050), 22050, subtype="FLOAT")
    array = sine(440, 0.5)
    mixed = model.build_inputs(TWO_CLIPS, [array, str(path)], sampling_rate=16000)
    _same_inputs(mixed, model.build_inputs(TWO_CLIPS, [array, load_waveform(path)], sampling_rate=16000))
    with pytest.raises(ValueError, match="22050 Hz but sampling_rate=16000"):  # only files: the rate must agree
        model.build_inputs(QUESTION, str(path), sampling_rate=16000)


def test_an_audio_item_may_carry_its_own_rate(model):
    clip = sine(440, 0.5, 44100)
    ours = model.build_inputs(messages=_user({"type": "audio", "audio": clip, "sampling_rate": 44100},
                                             {"type": "text", "text": "what is said ?"}))
    reference = model.build_inputs(messages=_user({"type": "audio", "audio": clip}, {"type": "text", "text": "what is said ?"}),
                                   sampling_rate=44100)
    _same_inputs(ours, reference)
    with pytest.raises(ValueError, match="sampling_rate=44100 in its item but sampling_rate=16000"):
        model.build_inputs(messages=_user({"type": "audio", "audio": clip, "sampling_rate": 44100}), sampling_rate=16000)


def test_a_torchaudio_style_pair_is_refused_with_the_fix(model):
    with pytest.raises(ValueError, match=r"\(waveform, rate\) pair.*sampling_rate=rate"):
        model.build_inputs(QUESTION, (torch.from_numpy(sine(440, 0.5)), 16000))


# --- chat content items ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["path", "url", "audio_url", "audio", "file_url"])
def test_hf_style_audio_items_all_load_the_same_clip(model, tmp_path, key):
    path = tmp_path / "clip.wav"
    soundfile.write(path, sine(440, 0.5), 16000, subtype="FLOAT")
    value = path.as_uri() if key == "file_url" else str(path)
    item = {"type": "audio", ("url" if key == "file_url" else key): value}
    ours = model.build_inputs(messages=_user(item, {"type": "text", "text": "what is said ?"}))
    reference = model.build_inputs(messages=_user({"type": "audio", "audio": sine(440, 0.5)},
                                                  {"type": "text", "text": "what is said ?"}), sampling_rate=16000)
    _same_inputs(ours, reference)


@pytest.mark.parametrize("key", ["path", "url", "audio"])
def test_every_audio_source_key_renders_under_a_template_that_looks_for_audio(model, tmp_path, key):
    """Some chat templates (Qwen2-Audio-Instruct's) find an audio item by its ``audio`` key, not its type: was, an
    item given by ``path`` or ``url`` rendered no placeholder there, refused as "0 audio placeholders"."""
    import copy

    path = tmp_path / "clip.wav"
    soundfile.write(path, sine(440, 0.5), 16000, subtype="FLOAT")
    keyed = copy.copy(model)
    keyed.processor = copy.deepcopy(model.processor)
    keyed.processor.chat_template = (
        "{% for message in messages %}{% for content in message['content'] %}{% if 'audio' in content %}"
        "<|audio_bos|><|AUDIO|><|audio_eos|>{% else %}{{ content['text'] }}{% endif %}{% endfor %}{% endfor %}")
    value = path.as_uri() if key == "url" else str(path)
    inputs = keyed.build_inputs(messages=_user({"type": "audio", key: value}, {"type": "text", "text": " what is said ?"}))
    reference = keyed.build_inputs(messages=_user({"type": "audio", "audio": sine(440, 0.5)},
                                                  {"type": "text", "text": " what is said ?"}), sampling_rate=16000)
    assert int(inputs.audio_mask.sum()) > 0
    _same_inputs(inputs, reference)


def test_remote_and_data_urls_are_refused(model):
    with pytest.raises(ValueError, match="does not download audio.*'path'"):
        model.build_inputs(messages=_user({"type": "audio", "url": "https://example.com/clip.wav"}))
    with pytest.raises(ValueError, match="data: URLs"):
        model.build_inputs(messages=_user({"type": "audio", "audio_url": "data:audio/wav;base64,AAAA"}))


def test_text_items_reach_the_tokens(model):
    inputs = model.build_inputs(messages=_user({"type": "audio", "audio": sine(440, 0.5)}, {"type": "text", "text": "hello world"}),
                                sampling_rate=16000)
    strings = model.to_str_tokens(inputs)
    assert strings[strings.index("hello") + 1] == "world"


@pytest.mark.parametrize(
    "item, match",
    [
        ({"type": "text", "content": "hello"}, r"text item without a 'text' string \(it has \['content'\]\)"),
        ({"type": "text", "text": None}, "text item without a 'text' string"),
        ({"type": "image", "url": "cat.png"}, r"has type 'image'; this library takes \('text', 'audio'\)"),
        ({"text": "hello"}, "has no 'type'"),
        ({"type": "audio"}, r"audio item that has none of \['audio', 'path', 'url', 'audio_url'\]"),
        ({"type": "audio", "path": "a.wav", "audio": np.zeros(800)}, r"has several of \['audio', 'path'\]"),
        ("hello", "content items are dicts"),
    ],
)
def test_content_items_that_would_be_dropped_or_misread_are_errors(model, item, match):
    with pytest.raises((ValueError, TypeError), match=match):
        model.build_inputs(messages=_user({"type": "audio", "audio": sine(440, 0.5)}, item), sampling_rate=16000)


def test_empty_messages_and_conversations_are_clear_errors(model):
    with pytest.raises(ValueError, match=r"messages=\[\] is empty"):
        model.build_inputs(messages=[])
    with pytest.raises(ValueError, match="conversation 1 is empty"):
        model.build_inputs(messages=[_user({"type": "text", "text": "yes"}), []])
    with pytest.raises(ValueError, match=r"message 0 has no 'role' key"):
        model.build_inputs(messages=[{"content": "hello"}])
    with pytest.raises(TypeError, match="content must be a string or a list"):
        model.build_inputs(messages=[{"role": "user", "content": None}])


def test_string_content_is_accepted(model):
    inputs = model.build_inputs(messages=[{"role": "user", "content": "hello world"}])
    assert "hello" in model.to_str_tokens(inputs) and not inputs.has_audio


# --- prompts ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, error, match",
    [
        ("", ValueError, "the prompt is empty"),
        ("   ", ValueError, "the prompt is empty"),
        ([], ValueError, r"prompt=\[\] is empty"),
        (["yes", " "], ValueError, r"prompt\[1\] is empty"),
        ([{"role": "user", "content": "yes"}], TypeError, "pass them as messages="),
        (["yes", 3], TypeError, r"prompt\[1\] is a int"),
    ],
)
def test_empty_or_mistyped_prompts_are_refused(model, prompt, error, match):
    with pytest.raises(error, match=match):
        model.build_inputs(prompt)


def test_options_that_would_be_ignored_are_errors(model):
    with pytest.raises(ValueError, match="only apply to messages="):
        model.build_inputs("hello", add_generation_prompt=False)
    with pytest.raises(ValueError, match="on_too_long='drop' is not allowed"):
        model.build_inputs("hello", on_too_long="drop")


def test_a_bad_clip_in_a_list_is_named_by_its_index(model):
    bad = np.array([0.1, np.nan] * 1000, dtype=np.float32)
    with pytest.raises(ValueError, match=r"audio clip 1: The waveform has 1000 non-finite"):
        model.build_inputs(TWO_CLIPS, [sine(440, 0.5), bad], sampling_rate=16000)


def test_the_longest_clip_follows_the_processor_as_hf_does():
    """Qwen3-Omni's processor extracts features without truncating (every 1 s chunk of any clip); was, clips were
    capped at its feature extractor's single window (30 s on the real checkpoint), refused or cut where HF takes
    them whole. Control: a processor that truncates (Qwen2-Audio's) keeps its window as the limit."""
    from types import SimpleNamespace

    from transformers import Qwen3OmniMoeProcessor

    from hooked_audio.audio.prompting import max_audio_seconds

    extractor = SimpleNamespace(n_samples=480000, sampling_rate=16000)
    untruncated = SimpleNamespace(audio_kwargs=Qwen3OmniMoeProcessor.audio_kwargs, feature_extractor=extractor)
    assert Qwen3OmniMoeProcessor.audio_kwargs["truncation"] is False  # HF's setting that this reads
    assert max_audio_seconds(untruncated) == float("inf")
    assert max_audio_seconds(SimpleNamespace(feature_extractor=extractor, tokenizer=None)) == 30.0


def test_mistral_commons_tokenizer_is_refused_with_the_way_that_works(model):
    """A real Voxtral checkpoint's tokenizer is mistral_common's, which expands clips itself and does not read the
    [AUDIO] placeholders build_inputs writes: was, refused as 'a word-level tokenizer' or as a placeholder count.
    Control: the same call with an ordinary tokenizer builds."""
    import copy

    class MistralCommonBackend:  # stands in for transformers' class of that name (mistral_common is not installed)
        pass

    messages = _user({"type": "audio", "audio": sine(440, 0.5)}, {"type": "text", "text": "what is said ?"})
    assert model.build_inputs(messages=messages, sampling_rate=16000).has_audio
    mistral = copy.copy(model)
    mistral.processor = copy.copy(model.processor)
    mistral.processor.tokenizer = MistralCommonBackend()
    with pytest.raises(NotImplementedError, match="mistral_common's tokenizer.*apply_chat_template"):
        mistral.build_inputs(messages=messages, sampling_rate=16000)
