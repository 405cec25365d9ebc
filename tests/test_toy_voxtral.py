"""The bundled Voxtral toy (`toy-voxtral`): loads by name offline, its hooked logits equal HF's (one clip and a
left-padded batch of two), and it listens: a tone task on fresh clips is answered well above chance, the same
prompts with silence in place of the audio are not (its event-timing shortcut test is in test_toy.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hooked_audio import HookedAudioTransformer, load_waveform
from hooked_audio.loading import BUNDLED_MODELS
from hooked_audio.toy import evaluate, tasks

NAME = "toy-voxtral"
EXAMPLES = Path(tasks.__file__).parent / "examples"
PROBE_SEED = 31  # neither the training seed (0) nor the card's evaluation seed: fresh clips


@pytest.fixture(scope="module")
def toy():
    return HookedAudioTransformer.from_pretrained(NAME)


@pytest.fixture(scope="module")
def hf():
    from transformers import VoxtralForConditionalGeneration

    return VoxtralForConditionalGeneration.from_pretrained(BUNDLED_MODELS[NAME], attn_implementation="eager").eval()


def max_logit_diff(toy, hf, batch) -> float:
    with torch.no_grad():
        return float((toy(batch) - hf(**batch).logits)[batch["attention_mask"].bool()].abs().max())


def test_loads_by_name_offline_as_a_voxtral(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = HookedAudioTransformer.from_pretrained(NAME)
    assert model.cfg.family == "voxtral"
    assert type(model.processor).__name__ == "VoxtralProcessor" and model.processor.audio_token == "[AUDIO]"
    assert model.cfg.audio_token_id == model.processor.tokenizer.convert_tokens_to_ids("[AUDIO]")
    assert model.cfg.n_layers >= 6
    card = json.loads((BUNDLED_MODELS[NAME] / "card.json").read_text())
    assert card["name"] == NAME and card["architecture"] == "VoxtralForConditionalGeneration"
    assert "/tmp" not in json.dumps(card) and "/tmp" not in (BUNDLED_MODELS[NAME] / "CARD.md").read_text()


def test_matches_hf_on_the_bundled_example_clips(toy, hf):
    examples = json.loads((EXAMPLES / "examples.json").read_text())
    samples = [tasks.Sample(e["task"], load_waveform(EXAMPLES / e["file"]), e["question"], e["answer"]) for e in examples]
    batch = evaluate.encode(toy.processor, samples)
    assert (batch["input_ids"] == toy.cfg.audio_token_id).sum(1).tolist() == [50] * len(samples)  # 4 s -> 50 tokens
    assert max_logit_diff(toy, hf, batch) <= 1e-4


def test_matches_hf_on_a_padded_batch_of_two(toy, hf):
    """A prompt with a hint next to one without: the shorter row is left-padded."""
    pitch = tasks.make_probe_set(PROBE_SEED, 1, task_names=["pitch"])
    plain = next(s for s in pitch if s.hint is None)
    hinted = next(s for s in pitch if s.hint is not None)
    batch = evaluate.encode(toy.processor, [plain, hinted])
    assert not batch["attention_mask"][0].all() and batch["attention_mask"][1].all()
    assert max_logit_diff(toy, hf, batch) <= 1e-4
    for row, sample in enumerate([plain, hinted]):  # padding changes nothing: each row alone gives the same logits
        alone = evaluate.encode(toy.processor, [sample])
        with torch.no_grad():
            torch.testing.assert_close(toy(batch)[row, -1], toy(alone)[0, -1], atol=1e-4, rtol=0)


def test_a_clip_longer_than_one_window_becomes_several_windows_of_one_run(toy, hf):
    """Voxtral cuts long audio into whole windows (mistral_common pads the last one): a 1.5-window clip through
    build_inputs is two feature rows, one run of placeholders twice a window's tokens, and HF's logits."""
    window = toy.processor.feature_extractor.n_samples
    wave = (0.1 * np.random.default_rng(0).standard_normal(window + window // 2)).astype(np.float32)
    inputs = toy.build_inputs(messages=[{"role": "user", "content": [
        {"type": "audio", "audio": wave, "sampling_rate": 16000}, {"type": "text", "text": "what ?"}]}])
    assert inputs.audio["input_features"].shape[0] == 2 and inputs.window_rows.tolist() == [0, 0]
    assert [len(span) for span in inputs.audio_spans[0]] == [2 * 50]  # 50 tokens per 4 s window
    batch = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask, **inputs.audio}
    assert max_logit_diff(toy, hf, batch) <= 1e-4


@pytest.mark.parametrize("task", ["pitch", "noise"])
def test_it_listens_and_silence_does_not_answer(toy, task):
    """Fresh audio-only clips of a tone task: accuracy's 95 % interval lies above chance; the same prompts with
    the audio replaced by silence of the same length sit near chance (a model answering from the text alone
    would score the same on both)."""
    samples = [s for s in tasks.make_probe_set(PROBE_SEED, 40, task_names=[task]) if s.hint is None]
    silent = [replace(s, waveform=np.zeros_like(s.waveform)) for s in samples]
    chance = 1 / len(tasks.TASKS_BY_NAME[task].answers)
    heard = evaluate.rate([p == s.answer for p, s in zip(evaluate.predict(lambda b: toy(b), toy.processor, samples), samples)])
    muted = evaluate.rate([p == s.answer for p, s in zip(evaluate.predict(lambda b: toy(b), toy.processor, silent), silent)])
    assert heard["ci95"][0] > chance + 0.1, heard
    assert muted["rate"] <= chance + 0.2, muted
    assert heard["rate"] - muted["rate"] >= 0.3, (heard, muted)


@torch.no_grad()
def test_build_inputs_takes_chat_messages_for_the_voxtral_processor():
    """HF's VoxtralProcessor takes no audio in ``__call__``; ``build_inputs`` does what mistral_common would, so a
    chat with a clip gives the same tokens, features and logits as the trainer's own encoding."""
    from hooked_audio import HookedAudioTransformer
    from hooked_audio.toy import evaluate, tasks

    model = HookedAudioTransformer.from_pretrained("toy-voxtral")
    sample = [s for s in tasks.make_probe_set(seed=3, n_per_task=1, task_names=["pitch"]) if s.hint is None][0]
    built = model.build_inputs(messages=[{"role": "user", "content": [
        {"type": "audio", "audio": sample.waveform, "sampling_rate": 16000}, {"type": "text", "text": sample.text}]}])
    reference = model.to_inputs(evaluate.encode(model.processor, [sample]))
    assert torch.equal(built.input_ids, reference.input_ids)
    assert torch.equal(built.audio["input_features"], reference.audio["input_features"])
    assert int(built.audio_mask.sum()) == 50  # one 4 s window, 12.5 tokens per second
    assert torch.equal(model(built), model(reference))


@torch.no_grad()
def test_without_audio_cuts_voxtrals_begin_audio_marker_and_keeps_the_instruction_end(toy):
    from hooked_audio.analysis import without_audio

    model = toy
    samples = [s for s in tasks.make_probe_set(1, 1, task_names=["pitch"]) if s.hint is None][:1]
    inputs = model.to_inputs(evaluate.encode(model.processor, samples))
    tokens = model.to_str_tokens(inputs.input_ids[0])
    removed = model.to_str_tokens(without_audio(model, inputs).input_ids[0])
    assert "[BEGIN_AUDIO]" in tokens and "[BEGIN_AUDIO]" not in removed
    assert removed == [t for t in tokens if t != "[BEGIN_AUDIO]" and not t.startswith("<audio")]
    assert removed[-1] == "[/INST]"



def test_a_prefill_the_template_cut_elsewhere_is_refused(toy):
    """HF cuts a continued assistant turn at the prefill's last occurrence; a prefill "s" also occurs in Mistral's
    end-of-turn "</s>", so the row ended on a piece of that token, not on the prefill (was: returned as it was).
    Control: a prefill that does not occur there ends its row."""
    clip = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)

    def messages(prefill):
        return [{"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": "which digit is spoken ?"}]},
                {"role": "assistant", "content": prefill}]

    with pytest.raises(ValueError, match="row 0 does not end on its prefill 's'"):
        toy.build_inputs(messages=messages("s"), sampling_rate=16000, continue_final_message=True)
    inputs = toy.build_inputs(messages=messages("the answer is"), sampling_rate=16000, continue_final_message=True)
    assert toy.to_str_tokens(inputs)[-1] == "is"
