"""The toy's training code at tiny size: what the recipe promises holds, and a few steps do learn."""

from __future__ import annotations

import torch
from transformers import Qwen2AudioForConditionalGeneration
from transformers.models.whisper.modeling_whisper import sinusoids

from hooked_audio.toy import evaluate, tasks, train


def tiny_run(probe_weight: float, steps: int = 40):
    torch.manual_seed(0)
    processor = train.build_processor()
    samples = [s for s in tasks.make_probe_set(5, 4, task_names=["pitch", "noise"]) if s.hint is None]
    data = train.TeacherForcedSet(processor, samples)
    model = train.new_model(processor.tokenizer)
    everything = data.batch(torch.arange(len(data)))
    with torch.no_grad():
        before = train.answer_loss(model, everything).item()
    record = train.train(model, data, steps, minutes=5, batch_size=8, peak_lr=1e-3, seed=0, probe_weight=probe_weight)
    with torch.no_grad():
        after = train.answer_loss(model, everything).item()
    return model, record, before, after, processor, samples


def test_training_learns_and_leaves_a_plain_qwen2_audio():
    model, record, before, after, processor, samples = tiny_run(probe_weight=1.0)
    assert record["steps"] == 40
    assert after < 0.5 * before  # 8 clips, 40 steps: the answers are being fitted
    # the loss sits on the answer slot: right after the prompt the model now says one of the task's answers
    predictions = evaluate.predict(model, processor, samples)
    assert all(p in tasks.TASKS_BY_NAME[s.task].answers for p, s in zip(predictions, samples))
    positions = model.model.audio_tower.embed_positions.weight
    assert not positions.requires_grad
    torch.testing.assert_close(positions, sinusoids(*positions.shape), rtol=0, atol=0)  # frozen, Whisper's
    assert not model.model.multi_modal_projector._forward_hooks  # the training-only probe is gone
    fresh = Qwen2AudioForConditionalGeneration(train.build_config(train.build_processor().tokenizer))
    assert model.state_dict().keys() == fresh.state_dict().keys()


def test_the_probe_loss_changes_the_training():
    with_probe = tiny_run(probe_weight=1.0, steps=5)[0]
    without = tiny_run(probe_weight=0.0, steps=5)[0]
    encoder = "model.audio_tower.layers.0.fc1.weight"
    assert (with_probe.state_dict()[encoder] - without.state_dict()[encoder]).abs().max() > 1e-5
