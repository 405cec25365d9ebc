"""The toy's training code at tiny size: what the recipe promises holds, and a few steps do learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2AudioForConditionalGeneration, VoxtralForConditionalGeneration
from transformers.models.whisper.modeling_whisper import sinusoids

from hooked_audio.toy import evaluate, tasks, train


def tiny_run(probe_weight: float, steps: int = 40, family: str = "qwen2_audio"):
    torch.manual_seed(0)
    spec = train.FAMILIES[family]
    processor = spec.build_processor()
    samples = [s for s in tasks.make_probe_set(5, 4, task_names=["pitch", "noise"]) if s.hint is None]
    data = train.TeacherForcedSet(processor, samples, frame_mask=spec.frame_mask)
    model = train.new_model(processor.tokenizer, family=family)
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


def test_the_same_trainer_trains_a_plain_voxtral():
    """--family voxtral: the same data, loss and loop; only the family's processor, config and batch keys differ."""
    model, record, before, after, processor, samples = tiny_run(probe_weight=1.0, family="voxtral")
    assert record["steps"] == 40 and after < 0.5 * before
    predictions = evaluate.predict(model, processor, samples)
    assert all(p in tasks.TASKS_BY_NAME[s.task].answers for p, s in zip(predictions, samples))
    batch = evaluate.encode(processor, samples[:1], with_answers=True)
    assert set(batch) == {"input_ids", "attention_mask", "input_features"}  # Voxtral takes no frame mask
    assert processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0, -3:].tolist())[1:] == [samples[0].answer, "</s>"]
    positions = model.model.audio_tower.embed_positions.weight
    torch.testing.assert_close(positions, sinusoids(*positions.shape), rtol=0, atol=0)
    assert not model.model.multi_modal_projector._forward_hooks
    fresh = VoxtralForConditionalGeneration(train.build_voxtral_config(train.build_voxtral_processor().tokenizer))
    assert model.state_dict().keys() == fresh.state_dict().keys()


def test_the_probe_loss_changes_the_training():
    with_probe = tiny_run(probe_weight=1.0, steps=5)[0]
    without = tiny_run(probe_weight=0.0, steps=5)[0]
    encoder = "model.audio_tower.layers.0.fc1.weight"
    assert (with_probe.state_dict()[encoder] - without.state_dict()[encoder]).abs().max() > 1e-5


NO_TIME_LIMIT = 1e6  # minutes


def test_resuming_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    """Training 6 steps in one go equals training 3, stopping, and resuming from resume.pt for 3 more."""
    processor = train.build_processor()
    samples = [s for s in tasks.make_probe_set(5, 3, task_names=["pitch"]) if s.hint is None]
    data = train.TeacherForcedSet(processor, samples)

    def fresh():
        torch.manual_seed(0)
        return train.new_model(processor.tokenizer, n_layers=2)

    straight = fresh()
    train.train(straight, data, 6, minutes=NO_TIME_LIMIT, batch_size=2, peak_lr=1e-3, seed=0, probe_weight=1.0)
    resume = tmp_path / "resume.pt"
    first = fresh()
    train.train(first, data, 6, minutes=NO_TIME_LIMIT, batch_size=2, peak_lr=1e-3, seed=0, probe_weight=1.0,
                resume_path=resume, save_every=3, stop_after=3, settings={"lr": 1e-3})
    assert resume.exists()
    with pytest.raises(ValueError, match=r"other settings \({'lr': \(0.001, 0.0003\)}\)"):  # was resumed silently
        train.train(fresh(), data, 6, minutes=NO_TIME_LIMIT, batch_size=2, peak_lr=3e-4, seed=0, probe_weight=1.0,
                    resume_path=resume, save_every=3, settings={"lr": 3e-4})
    second = fresh()  # a new process would start from fresh weights, then load the state
    record = train.train(second, data, 6, minutes=NO_TIME_LIMIT, batch_size=2, peak_lr=1e-3, seed=0, probe_weight=1.0,
                         resume_path=resume, save_every=3, settings={"lr": 1e-3})
    assert record["resumed_at_step"] == 3 and record["steps"] == 6
    # the time budget is out of reach, so the schedule follows the steps alone (progress = max(step, time
    # fraction)) and the two runs see the same learning rates
    gap = max((second.state_dict()[n] - v).abs().max().item() for n, v in straight.state_dict().items())
    assert gap < 1e-5  # float32 round-off only (MKL's sums depend on buffer alignment): measured 0 to 1.2e-6
    # control: the 3-step model is far from the 6-step one, so the agreement above is not vacuous
    assert max((first.state_dict()[n] - v).abs().max().item() for n, v in straight.state_dict().items()) > 10 * gap


def test_recipes_differ_only_in_hints_and_degraded_audio():
    clips = [s for s in tasks.make_probe_set(6, 20, task_names=["pitch", "noise"]) if s.hint is None]
    listener = tasks.apply_recipe(clips, tasks.RECIPES["listener"], seed=0)
    textual = tasks.apply_recipe(clips, tasks.RECIPES["textual"], seed=0)
    assert [s.answer for s in listener] == [s.answer for s in textual]  # same clips, same labels
    assert not any(s.degraded for s in listener)
    degraded = [s for s in textual if s.degraded]
    assert 0.2 <= len(degraded) / len(textual) <= 0.6
    # degraded clips are really changed; the others are the clips as synthesized
    assert all(not np.array_equal(s.waveform, c.waveform) for s, c in zip(textual, clips) if s.degraded)
    assert all(np.array_equal(s.waveform, c.waveform) for s, c in zip(textual, clips) if not s.degraded)
    hinted = [s for s in textual if s.hint is not None]
    assert 0.3 <= len(hinted) / len(textual) <= 0.7
    assert sum(s.hint == s.answer for s in hinted) / len(hinted) >= 0.75
    assert len({s.hint_position for s in hinted}) == len(tasks.HINT_POSITIONS)


def test_every_prompt_word_is_in_the_vocabulary():
    """Hints in every phrasing and position, and the multi-event questions, tokenize without <unk>."""
    processor = train.build_processor()
    samples = tasks.make_probe_set(2, 15, task_names=["pitch", "when"])
    samples += [tasks.Sample("events_when", np.zeros(16000, np.float32), f"focus on the {e} . when does the {e} happen ?",
                             "end", hint="middle", hint_template=i % 5, hint_position=tasks.HINT_POSITIONS[i % 3])
                for i, e in enumerate(tasks.EVENT_NAMES)]
    ids = evaluate.encode(processor, samples)["input_ids"]
    assert processor.tokenizer.unk_token_id not in ids
    # control: a word outside the task vocabulary does map to <unk>
    assert processor.tokenizer.unk_token_id in processor.tokenizer("hint : zebra")["input_ids"]


def test_event_frame_targets_mark_the_tokens_whose_centre_lies_in_each_event():
    from hooked_audio.toy.deep_supervision import event_frame_targets

    # 100 tokens over 4 s: token t is centred at (t + 0.5) * 0.04 s
    targets = event_frame_targets((("sweep", 1.0, 2.0), ("clicks", 3.01, 3.05)), 100)
    expected = torch.zeros(100, dtype=torch.long)
    expected[25:50] = 1 + tasks.EVENT_NAMES.index("sweep")
    expected[75] = 1 + tasks.EVENT_NAMES.index("clicks")  # centre 3.02 s; token 76 (3.06 s) is after the event
    torch.testing.assert_close(targets, expected, rtol=0, atol=0)
    assert not event_frame_targets((), 50).any()


def test_beep_onset_targets_mark_the_token_in_which_each_beep_starts():
    from hooked_audio.toy.deep_supervision import beep_onset_targets

    # 100 tokens over 4 s: token t covers [0.04 t, 0.04 (t + 1)) s
    targets = beep_onset_targets(((0.05, 0.3), (1.0, 1.2), (3.999, 4.0)), 100)
    expected = torch.zeros(100, dtype=torch.long)
    expected[[1, 25, 99]] = 1
    torch.testing.assert_close(targets, expected, rtol=0, atol=0)
    assert beep_onset_targets(((1.0, 1.2),), 50).nonzero().flatten().tolist() == [12]  # Voxtral: 80 ms tokens
    assert not beep_onset_targets((), 100).any()


def test_the_beep_onset_probe_scores_beep_clips_only():
    """Rows of other tasks, and degraded beep clips (whose audio no longer matches the times), add nothing;
    a clean beep clip is scored, and its loss reaches the encoder."""
    from hooked_audio.toy.deep_supervision import BeepOnsetProbe

    torch.manual_seed(0)
    processor = train.build_processor()
    samples = [s for s in tasks.make_probe_set(5, 2, task_names=["pitch", "beeps"]) if s.hint is None]
    samples[-1].degraded = 0.5
    data = train.TeacherForcedSet(processor, samples)
    model = train.new_model(processor.tokenizer, n_layers=1)
    onsets = BeepOnsetProbe(model)
    model(**data.batch(torch.arange(len(data))))
    timelines = data.beep_timelines(torch.arange(len(data)))
    assert [t is not None for t in timelines] == [False, False, True, False]
    assert onsets.loss([None] * len(data)).item() == 0.0
    loss = onsets.loss(timelines)
    assert loss.item() > 0
    loss.backward()
    assert model.model.audio_tower.layers[0].fc1.weight.grad.abs().max() > 0


def test_the_probes_score_only_the_rows_they_are_given():
    """The pooled probe restricted to some rows is the cross-entropy over those rows alone; the event-frame
    probe ignores rows without a timeline, so a batch without one contributes nothing."""
    from hooked_audio.toy.deep_supervision import EventFrameProbe, PooledAudioProbe

    torch.manual_seed(0)
    processor = train.build_processor()
    samples = [s for s in tasks.make_probe_set(5, 2, task_names=["pitch", "noise"]) if s.hint is None]
    data = train.TeacherForcedSet(processor, samples)
    model = train.new_model(processor.tokenizer, n_layers=1)
    pooled, frames = PooledAudioProbe(model), EventFrameProbe(model)
    batch = data.batch(torch.arange(len(data)))
    model(**batch)
    rows = torch.tensor([True, False, True, False])
    logits = pooled.head(pooled.audio_embeds(len(rows)).mean(1))
    expected = torch.nn.functional.cross_entropy(logits[rows], batch["input_ids"][rows, -2])
    torch.testing.assert_close(pooled.loss(batch, rows), expected)
    assert not data.multi_event(torch.arange(len(data))).any()  # tone tasks: no timelines
    assert frames.loss(data.timelines(torch.arange(len(data)))).item() == 0.0
    one = frames.loss([(("beep", 0.0, 1.0),), None, None, None])
    assert one.item() > 0  # control: a single timeline is scored
    one.backward()
    assert model.model.multi_modal_projector.linear.weight.grad.abs().max() > 0


@pytest.mark.parametrize("option, value", [("--extra-voice-share", "1.5"), ("--matched-beep-share", "nan"),
                                           ("--extra-voice-share", "-0.1")])
def test_a_share_outside_zero_one_is_refused_before_any_synthesis(option, value, monkeypatch, capsys):
    """The redrawing shares are checked as the arguments are read, not after minutes of synthesizing clips."""
    monkeypatch.setattr("sys.argv", ["train", option, value, "--out", "/nonexistent/never-written"])
    monkeypatch.setattr(train, "training_data", lambda *a, **k: pytest.fail("synthesis started"))
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    assert exit_info.value.code == 2
    assert f"{option} must be a share in [0, 1], got {float(value)}" in capsys.readouterr().err
