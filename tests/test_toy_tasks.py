"""The toy task generators: nuisance variables drawn independently of the answer, held-out words really
held out, and the multi-event task's stored intervals agreeing with its answers. No model needed."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import HAVE_ESPEAK, needs_espeak
from scipy.stats import kruskal

from hooked_audio.toy import signals, tasks


def test_held_out_words_are_disjoint_from_training_words_and_languages_do_not_share_words():
    lists = tasks.word_lists()
    seen = set()
    for language, (train_words, held_out) in lists.items():
        assert len(train_words) >= 1500 and len(held_out) >= 300, language
        assert not set(train_words) & set(held_out)
        assert not (set(train_words) | set(held_out)) & seen  # a word identifies its language
        seen |= set(train_words) | set(held_out)


def active_seconds(clip: np.ndarray) -> float:
    """Time the clip's 10 ms envelope is above 0.3 of its peak (what a total-duration counter would measure)."""
    frame = 160
    envelope = np.abs(clip[: len(clip) // frame * frame]).reshape(-1, frame).max(1)
    return float((envelope > 0.3 * envelope.max()).sum() * frame / signals.SAMPLE_RATE)


def test_beep_duration_is_drawn_independently_of_the_count_and_a_duration_counter_fails(monkeypatch):
    """Per-beep duration has the same distribution for every count; and a total-beep-time counter,
    calibrated on the training distribution, is wrong at some fixed beep duration (so the shortcut test in
    test_toy.py, accuracy at every fixed duration, would catch it)."""
    drawn = {}
    real_train = signals.beep_train_with_intervals

    def recording_train(count, rng, **kwargs):
        drawn.setdefault(count, []).append(kwargs["beep_seconds"])
        return real_train(count, rng, **kwargs)

    monkeypatch.setattr(tasks.signals, "beep_train_with_intervals", recording_train)
    monkeypatch.setattr(tasks, "_finish", lambda clip, rng, split, audible=None, min_snr=0: clip)  # clean clips
    rng = np.random.default_rng(0)
    totals = {count: [active_seconds(tasks.beep_clip(count, rng, "test")) for _ in range(60)] for count in range(1, 5)}
    assert kruskal(*drawn.values()).pvalue > 0.001  # same distribution of beep duration for every count
    assert all(min(drawn[c]) < 0.12 and max(drawn[c]) > 0.36 for c in drawn)
    # the best total-time counter: thresholds halfway between the per-count median totals
    centres = [np.median(totals[c]) for c in range(1, 5)]
    thresholds = [(a + b) / 2 for a, b in zip(centres, centres[1:])]

    def duration_counter(clip):
        return 1 + int(np.searchsorted(thresholds, active_seconds(clip)))

    accuracy = {}
    for seconds in (0.08, 0.24, 0.4):
        clips = [(count, tasks.beep_clip(count, rng, "test", beep_seconds=seconds)) for count in range(1, 5) for _ in range(5)]
        accuracy[seconds] = np.mean([duration_counter(clip) == count for count, clip in clips])
    assert accuracy[0.24] >= 0.8  # it works where durations are typical ...
    assert min(accuracy[0.08], accuracy[0.4]) <= 0.5  # ... and fails at the ends: the shortcut test can fail


def test_matched_beep_totals_leave_total_beep_time_uninformative():
    """The training option --matched-beep-share: redrawn beep clips have the same total beep time for every count
    (a Kruskal-Wallis test cannot tell the counts' totals apart), where the default clips' totals grow with the
    count (the control); their stored beep times are redrawn too, and share 0 changes nothing."""
    samples = [s for s in tasks.make_probe_set(4, 40, task_names=["beeps"]) if s.hint is None]
    total = lambda s: sum(end - start for start, end in s.beep_times)  # noqa: E731
    by_count = lambda ss: [[total(s) for s in ss if s.answer == a] for a in ("one", "two", "three", "four")]  # noqa: E731
    matched = tasks.with_matched_beep_totals(samples, 1.0, seed=0)
    assert kruskal(*by_count(matched)).pvalue > 0.01
    assert kruskal(*by_count(samples)).pvalue < 1e-3
    assert [len(s.beep_times) for s in matched] == [len(s.beep_times) for s in samples]  # the counts are kept
    assert all(a is b for a, b in zip(tasks.with_matched_beep_totals(samples, 0.0, seed=0), samples))


def _tone_frequency(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / signals.SAMPLE_RATE)[np.argmax(spectrum)])


def test_wide_beep_frequencies_span_the_wide_range_but_never_the_shifted_bands():
    """--wide-beep-share: the redrawn beep clips' tones (measured from the waveform) cover 200-5000 Hz, beyond the
    default 500-2500 Hz on both sides, yet none falls in a band the shifted split draws from (the control: the
    shifted split's beeps are all there); counts and mean beep durations (hence matched totals) are kept, other
    tasks' clips untouched, share 0 changes nothing."""
    samples = [s for s in tasks.make_probe_set(4, 60, task_names=["beeps", "pitch"]) if s.hint is None]
    matched = tasks.with_matched_beep_totals(samples, 1.0, seed=0)
    wide = tasks.with_wide_beep_frequencies(matched, 1.0, seed=0)
    bands = tasks.held_out_beep_bands()
    in_bands = lambda f: any(a - 5 <= f <= b + 5 for a, b in bands)  # noqa: E731  (FFT bins are 0.25 Hz)
    beeps = [(before, after) for before, after in zip(matched, wide) if before.task == "beeps"]
    heard = [_tone_frequency(after.waveform) for _, after in beeps]
    assert min(heard) < 350 and max(heard) > 3500 and not any(in_bands(f) for f in heard)
    shifted = [s for s in tasks.make_probe_set(4, 20, task_names=["beeps"], split="shifted_frequency") if s.hint is None]
    assert all(in_bands(_tone_frequency(s.waveform)) for s in shifted)
    mean_beep = lambda s: np.mean([end - start for start, end in s.beep_times])  # noqa: E731
    for before, after in beeps:
        assert len(after.beep_times) == len(before.beep_times) and after.answer == before.answer
        assert abs(mean_beep(after) - mean_beep(before)) < 0.15 * mean_beep(before) + 1e-3
    assert all(a is b for a, b in zip(matched, wide) if a.task != "beeps")
    assert all(a is b for a, b in zip(tasks.with_wide_beep_frequencies(matched, 0.0, seed=0), matched))
    with pytest.raises(ValueError, match="share"):
        tasks.with_wide_beep_frequencies(samples, -0.1, seed=0)


@needs_espeak
def test_every_extra_training_voice_is_its_own_voice():
    """espeak-ng falls back to its default voice for an unknown variant, silently: each of the extra training
    voices (--extra-voice-share) must sound different from the default, from every other extra voice, and from
    every training and held-out m/f variant (so no held-out voice is trained on under another name)."""
    standard = (tasks.MALE_VARIANTS + tasks.FEMALE_VARIANTS + tasks.HELD_OUT_MALE_VARIANTS
                + tasks.HELD_OUT_FEMALE_VARIANTS)
    assert not set(tasks.EXTRA_TRAINING_VARIANTS) & set(standard)
    speech = {v: signals.speak("seven", f"en+{v}" if v else "en", 160, 50).tobytes()
              for v in ("",) + standard + tasks.EXTRA_TRAINING_VARIANTS}
    assert len(set(speech.values())) == len(speech)


@needs_espeak
def test_extra_voices_redraw_only_the_voice_nuisance_tasks():
    """--extra-voice-share redraws a share of the digit, language and multi-event clips (same task and answer,
    a voice from the extra pool) and leaves every other clip, e.g. gender's, untouched; share 0 changes nothing."""
    names = ["digit", "language", "events_order", "gender", "pitch"]
    samples = [s for s in tasks.make_probe_set(4, 8, task_names=names) if s.hint is None]
    redrawn = tasks.with_extra_voices(samples, 1.0, seed=0)
    for before, after in zip(samples, redrawn):
        assert (before.task, before.answer) == (after.task, after.answer)
        if before.task in tasks.VOICE_NUISANCE_TASKS:
            assert not np.array_equal(before.waveform, after.waveform)
        else:
            assert after is before
    assert all(a is b for a, b in zip(tasks.with_extra_voices(samples, 0.0, seed=0), samples))
    with pytest.raises(ValueError, match="share"):
        tasks.with_extra_voices(samples, 1.5, seed=0)


def test_the_stored_beep_times_are_where_the_beeps_sound(monkeypatch):
    """Each beep-count clip records one (start_s, end_s) per beep; on the clean clip (no noise, no reverb) the
    tone sounds inside every interval and nowhere else (what the training-only beep-onset probe learns from)."""
    monkeypatch.setattr(tasks, "_finish", lambda clip, rng, split, audible=None, min_snr=0: clip)
    rng = np.random.default_rng(4)
    for count in (1, 2, 3, 4):
        for _ in range(5):
            item = tasks.make_item(tasks.TASKS_BY_NAME["beeps"], tasks.DIGIT_WORDS[count], rng, "train")
            assert len(item.beep_times) == count
            assert all(a < b <= c for (a, b), (c, _) in zip(item.beep_times, item.beep_times[1:]))
            inside = np.zeros(len(item.waveform), dtype=bool)
            for start, end in item.beep_times:
                inside[round(start * signals.SAMPLE_RATE) : round(end * signals.SAMPLE_RATE)] = True
                assert np.abs(item.waveform[round(start * signals.SAMPLE_RATE) :][:400]).max() > 0.05  # it starts there
            assert not item.waveform[~inside].any()
    # the same draws as the waveform-only generator: the recorded times describe the clips beep_clip makes
    item = tasks.beep_item(3, np.random.default_rng(9), "test")
    np.testing.assert_array_equal(item.waveform, tasks.beep_clip(3, np.random.default_rng(9), "test"))
    assert not tasks.make_item(tasks.TASKS_BY_NAME["pitch"], "low", rng).beep_times  # other tasks record none


@needs_espeak
@pytest.mark.parametrize("split", ["test", "shifted"])
def test_multi_event_answers_agree_with_the_stored_intervals(split):
    samples = [s for s in tasks.make_probe_set(3, 30, task_names=list(tasks.EVENT_TASKS), split=split) if s.hint is None]
    kinds = set()
    for sample in samples:
        names = [name for name, _, _ in sample.events]
        assert 2 <= len(names) <= 3 and len(set(names)) == len(names)
        starts_ends = [(start, end) for _, start, end in sample.events]
        assert all(a[1] <= b[0] for a, b in zip(starts_ends, starts_ends[1:]))  # time order, no overlap
        assert all(0 <= start < end <= signals.CLIP_SECONDS for start, end in starts_ends)
        kinds.add(sample.kind)
        if sample.kind == "when":
            # the event is named by the question, or only by the instruction ("focus on the X . when does it happen ?")
            asked = re.search(r"(?:when does|focus on) the (\w+)", sample.question).group(1)
            _, start, end = next(e for e in sample.events if e[0] == asked)
            third = int((start + end) / 2 // (signals.CLIP_SECONDS / 3))
            assert signals.POSITIONS[third] == sample.answer
        else:
            assert sample.answer == (names[0] if sample.kind == "first" else names[-1])
        # the clip is loud where the events are and quiet (noise only) well away from all of them
        loud = [np.abs(sample.waveform[int(s * 16000) : int(e * 16000)]).max() for _, s, e in sample.events]
        assert min(loud) > 0
    assert kinds == {"when", "first", "last"}
    instructions = {s.question.split(" ")[0] for s in samples if s.kind == "when"}
    assert {"focus", "listen", "when"} <= instructions
    assert any("when does it happen" in s.question for s in samples if s.kind == "when")


def test_every_task_varies_level_placement_and_noise():
    """Two clips of the same answer differ in level and in where the sound is; some carry noise near 5 dB SNR."""
    for task in tasks.TASKS:
        if task.needs_espeak and not HAVE_ESPEAK:
            continue
        rng = np.random.default_rng(1)
        clips = [tasks.make_item(task, task.answers[0], rng, "train").waveform for _ in range(12)]
        peaks = [np.abs(c).max() for c in clips]
        onsets = [int(np.argmax(np.abs(c) > 0.5 * np.abs(c).max())) for c in clips]
        assert max(peaks) / min(peaks) > 1.5, task.name
        assert max(onsets) - min(onsets) > 0.3 * signals.SAMPLE_RATE, task.name


def test_shifted_split_uses_held_out_words_and_voices():
    rng = np.random.default_rng(0)
    assert set(tasks._voices("shifted", True)).isdisjoint(tasks._voices("train", True))
    assert set(tasks._voices("shifted", False)).isdisjoint(tasks._voices("train", False))
    held = set(tasks.word_lists()["german"][1])
    assert all(word in held for _ in range(20) for word in tasks._phrase("german", rng, "shifted").split())
    assert all(tasks._speed(rng, "shifted") not in range(tasks.TRAIN_SPEED[0], tasks.TRAIN_SPEED[1] + 1) for _ in range(50))


def _drawn_outside_training(split: str) -> set[str]:
    """Which nuisance factors ``split`` draws outside the training range (measured from the draws themselves)."""
    rng, out = np.random.default_rng(0), set()
    held = set(tasks.word_lists()["german"][1])
    if all(word in held for _ in range(20) for word in tasks._phrase("german", rng, split).split()):
        out.add("words")
    if set(tasks._voices(split, True)).isdisjoint(tasks._voices("train", True)):
        out.add("voice")
    if all(not tasks.TRAIN_SPEED[0] <= tasks._speed(rng, split) <= tasks.TRAIN_SPEED[1] for _ in range(50)):
        out.add("speed")
    if all(not 500 <= tasks._frequency(rng, split, 500, 2500, 1.3) <= 2500 for _ in range(50)):
        out.add("frequency")
    clip = np.zeros(signals.CLIP_SAMPLES, dtype=np.float32)
    clip[1000:9000] = 1.0  # a block of constant signal: reverb smears it past its end
    finished = [tasks._finish(clip, rng, split, min_snr=29.0) for _ in range(20)]
    if all(np.abs(f).max() < tasks.TRAIN_PEAK[0] for f in finished):
        out.add("level")
    if all(np.abs(f[9000:12000]).max() > 0.2 * np.abs(f).max() for f in finished):
        out.add("reverb")
    return out


@pytest.mark.parametrize("factor", tasks.SHIFT_FACTORS)
def test_each_one_factor_shift_moves_its_factor_alone(factor):
    """``shifted_split(factor)`` draws exactly that factor outside the training range; ``"shifted"`` draws all
    of them and ``"test"`` none (the controls), so the card's one-factor table says which shift costs what."""
    assert _drawn_outside_training(tasks.shifted_split(factor)) == {factor}


def test_the_shifted_split_is_every_factor_at_once():
    assert _drawn_outside_training("shifted") == set(tasks.SHIFT_FACTORS)
    assert _drawn_outside_training("test") == set()
    with pytest.raises(ValueError, match="shift factor"):
        tasks.shifted_split("accent")


@needs_espeak
def test_the_event_order_shortcut_clips_put_each_event_where_they_say():
    """The asked event's centre lies in the answer's third, the other event's in the third returned with it,
    the events do not overlap, and "first" / "second" is the asked event's order; every cell is filled."""
    from hooked_audio.toy.shortcuts import event_order_samples

    pairs = event_order_samples(n_per_cell=3)
    third = signals.CLIP_SECONDS / 3
    cells = set()
    for sample, other_third in pairs:
        asked = sample.question.split()[3]
        (a_start, a_end), = [(s, e) for n, s, e in sample.events if n == asked]
        (o_start, o_end), = [(s, e) for n, s, e in sample.events if n != asked]
        assert signals.POSITIONS[int((a_start + a_end) / 2 // third)] == sample.answer
        assert signals.POSITIONS[int((o_start + o_end) / 2 // third)] == other_third != sample.answer
        assert a_end <= o_start or o_end <= a_start
        assert sample.kind == ("first" if a_start < o_start else "second")
        cells.add((sample.answer, other_third))
    assert len(pairs) == 18 and len(cells) == 6


@pytest.mark.parametrize("task_name, answer", [("pitch", "Low"), ("pitch", "medium"), ("noise", "blue"), ("beeps", 3)])
def test_an_answer_outside_the_task_is_refused(task_name, answer):
    """Was: ("pitch", "Low") made a high tone (the generator tests answer == "low") and ("noise", "blue") a bare
    KeyError; a typo'd split of make_probe_set a bare tuple.index error. Control: the task's own answer."""
    task = tasks.TASKS_BY_NAME[task_name]
    with pytest.raises(ValueError, match=f"not an answer of the {task_name} task"):
        tasks.make_item(task, answer, np.random.default_rng(0))
    tasks.make_item(task, task.answers[0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown split 'shift'"):
        tasks.make_probe_set(0, 2, [task_name], split="shift")
    with pytest.raises(ValueError, match="n_per_task must be a positive integer"):  # was: [] for -1
        tasks.make_probe_set(0, -1, [task_name])


def test_a_rate_of_counts_other_than_hits_is_refused():
    """Was: rate([1, 0, 2]) gave 1.0 (a count of 2 read as one trial's hit). Control: bools and 0 / 1."""
    from hooked_audio.toy.evaluate import rate

    with pytest.raises(ValueError, match="hits must be True / False per trial"):
        rate([1, 0, 2])
    assert rate([True, False, True, True])["rate"] == rate([1, 0, 1, 1])["rate"] == 0.75


@needs_espeak
def test_lineage_pairs_differ_in_the_heard_item_alone(monkeypatch):
    """The lineage measurement's pairs: the same clips (answers and random draws) voiced by en+m7 and en+m8, and
    one-word clips of the eight first-toy words against other held-out words with the same nuisance draws. A
    broken pairing (another seed, the voice not applied) would give other answers or identical waveforms."""
    from hooked_audio.toy import lineage

    spoken = []
    original = tasks.signals.speak
    monkeypatch.setattr(tasks.signals, "speak", lambda text, voice, *a: (spoken.append(voice), original(text, voice, *a))[1])
    m7, m8 = (lineage.voice_pair_samples("digit", voice, n=6) for voice in ("m7", "m8"))
    assert set(spoken) == {"en+m7", "en+m8"} and len(spoken) == 12
    assert [s.answer for s in m7] == [s.answer for s in m8]
    assert not any(np.array_equal(a.waveform, b.waveform) for a, b in zip(m7, m8))
    assert lineage.voice_pair_samples("digit", "m7", n=6)[0].waveform.tobytes() == m7[0].waveform.tobytes()
    assert {s.answer for s in lineage.voice_pair_samples("gender", "m7", n=6)} == {"male"}
    spoken.clear()
    heard, unheard = lineage.word_pair_samples(clips_per_word=1)
    assert len(heard) == len(unheard) == 8 and [s.answer for s in heard] == [s.answer for s in unheard]
    assert [voice for voice in spoken[0::2]] == spoken[1::2]  # each pair in one voice
    held = {w for language in lineage.FIRST_TOY_WORDS for w in tasks.word_lists()[language][1]}
    assert all(w in held for words in lineage.FIRST_TOY_WORDS.values() for w in words)
