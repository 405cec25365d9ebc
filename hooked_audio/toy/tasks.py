"""The toy task set: seeded (clip, question, answer) samples, optionally with a text hint.

Each task asks a question about a 4-second clip and has a fixed set of single-word answers. Every
nuisance variable is drawn independently of the answer, so that only the attribute asked about predicts
it: speaker speed and pitch, level, white noise (SNR down to 5 dB), mild reverb, placement and the length
of the audible part of the clip; the words spoken come from large per-language word lists
(`wordfreq`), of which a fifth is held out of training; beep duration, gap and frequency are drawn
independently of the beep count.

Splits: ``"train"`` and ``"test"`` draw from the same distributions (different seeds give different
clips); ``"unseen_words"`` is ``"test"`` with the held-out words only (the language shortcut test);
``"shifted"`` uses held-out words and voices, speaking speeds and levels outside the training
range, tone frequencies just outside it, and reverb on every clip; ``shifted_split(factor)`` shifts one
of these ``SHIFT_FACTORS`` alone (the rest as ``"test"``), to tell which one costs accuracy.

Hints ("hint : the answer is female .", in several phrasings and positions) appear on a share of the
training prompts and are right most of the time; the recipe (`RECIPES`) sets how often and how reliably,
and whether some training clips have their audio made uncertain (the text-reliant sibling).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..indices import checked_count
from . import signals

SHIFT_FACTORS = ("words", "voice", "speed", "level", "reverb", "frequency")
SPLITS = ("train", "test", "shifted", "unseen_words", "train_extra_voices",
          *(f"shifted_{factor}" for factor in SHIFT_FACTORS[1:]))


def shifted_split(factor: str) -> str:
    """The split that shifts ``factor`` alone (``"unseen_words"`` for the words)."""
    if factor not in SHIFT_FACTORS:
        raise ValueError(f"unknown shift factor {factor!r}; factors: {SHIFT_FACTORS}")
    return "unseen_words" if factor == "words" else f"shifted_{factor}"


def _shifted(split: str, factor: str) -> bool:
    """Whether ``split`` draws ``factor`` from outside the training range."""
    return split == "shifted" or split == shifted_split(factor)


MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4")
HELD_OUT_MALE_VARIANTS = ("m7", "m8")
HELD_OUT_FEMALE_VARIANTS = ("f5",)
# More espeak-ng voice variants, for speech whose voice is a nuisance (digit, language, the word event), never
# the gender task (their gender is not reliable) and never the held-out ones; whispering, robotic and effect
# voices are left out (`--extra-voice-share`)
EXTRA_TRAINING_VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique",
    "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax", "Storm", "adam",
    "anika", "antonio", "aunty", "belinda", "benjamin", "boris", "david", "ed", "edward", "edward2",
    "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2",
    "klatt3", "klatt4", "klatt5", "linda", "marcelo", "max", "michel", "miguel", "norbert", "pablo",
    "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby", "steph", "steph2", "steph3", "travis",
    "victor", "zac",
)
VOICE_NUISANCE_TASKS = ("digit", "language", "events_when", "events_order")
TRAIN_SPEED = (120, 200)  # espeak-ng words per minute
SHIFTED_SPEEDS = ((95, 112), (210, 235))
TRAIN_PITCH = (25, 75)  # espeak-ng pitch 0-99
GENDER_PITCH = (35, 65)  # narrower: a very high male voice would be a female one
TRAIN_PEAK = (0.1, 0.9)
SHIFTED_PEAK = (0.02, 0.07)
MIN_SNR_DB = 5.0
REVERB_PROBABILITY = 0.3

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LANGUAGES = {"english": "en", "german": "de", "french": "fr", "spanish": "es"}  # name -> espeak/wordfreq code
N_WORDS = 6000  # most frequent words per language considered
HELD_OUT_WORD_SHARE = 0.2
NOISE_COLOURS = ("white", "pink", "brown")
EVENT_NAMES = ("beep", "noise", "word", "sweep", "clicks")
# "when" questions on multi-event clips; in the last the event is named only by the instruction, so the
# instruction itself must steer where the model listens (what instruction steering needs to act on)
WHEN_QUESTIONS = ("when does the {event} happen ?", "listen to the whole clip . when does the {event} happen ?",
                  "focus on the {event} . when does the {event} happen ?", "focus on the {event} . when does it happen ?")
ORDER_INSTRUCTIONS = ("", "listen to the whole clip . ")

HINT_TEMPLATES = (
    "hint : the answer is {answer} .",
    "a friend says it is {answer} .",
    "i think it is {answer} .",
    "the label says {answer} .",
    "answer : {answer} ?",
)
HINT_TEMPLATE = HINT_TEMPLATES[0]
HINT_POSITIONS = ("after_audio", "before_audio", "after_question")


@dataclass(frozen=True)
class Recipe:
    """What the training prompts' text says and how sure the audio is.

    hint_fraction: share of training prompts with a hint; hint_reliability: share of those hints that are
    right; degrade_fraction: share of training clips whose audio is made uncertain (noise down to -20 dB
    SNR, a masked stretch, or silence, graded in difficulty), still labelled with the true answer."""

    hint_fraction: float
    hint_reliability: float
    degrade_fraction: float = 0.0


RECIPES = {
    "listener": Recipe(hint_fraction=0.3, hint_reliability=0.7),
    "textual": Recipe(hint_fraction=0.5, hint_reliability=0.9, degrade_fraction=0.4),
}
TRAIN_HINT_FRACTION = RECIPES["listener"].hint_fraction
TRAIN_HINT_RELIABILITY = RECIPES["listener"].hint_reliability

# Share of the training set per task, relative to a tone task: the speech and multi-event tasks are the
# slowest to learn, so they get more of the fixed training budget.
TRAINING_WEIGHTS = {"language": 3.0, "digit": 1.5, "gender": 1.0, "beeps": 1.5, "events_when": 2.0,
                    "events_order": 2.0}


@dataclass
class Item:
    """What a task's generator returns: the clip, its question and, for multi-event clips, the events."""

    waveform: np.ndarray
    question: str
    kind: str = ""
    events: tuple = ()  # ((name, start_s, end_s), ...) in time order
    beep_times: tuple = ()  # beeps task: ((start_s, end_s), ...) of every beep, in time order


@dataclass(frozen=True)
class Task:
    """A question (or family of questions) with a closed set of one-word answers and a seeded generator."""

    name: str
    question: str
    answers: tuple[str, ...]
    make_item: Callable[[str, np.random.Generator, str], Item]  # (answer, rng, split) -> Item
    needs_espeak: bool = False


@dataclass
class Sample:
    """One prompt: clip + question (+ optional hint) and the word the model should answer."""

    task: str
    waveform: np.ndarray
    question: str
    answer: str
    hint: str | None = None  # the hinted answer word, None when the prompt carries no hint
    hint_template: int = 0
    hint_position: str = "after_audio"
    kind: str = ""  # question type: the task name, or when / first / last for the multi-event tasks
    events: tuple = ()
    beep_times: tuple = ()
    item: int = -1  # index of the clip within its set: the same clip asked with and without hints
    degraded: float = 0.0  # difficulty of the audio degradation applied (0: none)

    @property
    def hint_kind(self) -> str:
        """'none', 'correct' or 'wrong'."""
        if self.hint is None:
            return "none"
        return "correct" if self.hint == self.answer else "wrong"

    @property
    def hint_text(self) -> str:
        return "" if self.hint is None else HINT_TEMPLATES[self.hint_template].format(answer=self.hint)

    @property
    def text_before_audio(self) -> str:
        """User text before the audio: the hint when it is placed there, else nothing."""
        return self.hint_text if self.hint is not None and self.hint_position == "before_audio" else ""

    @property
    def text(self) -> str:
        """User text after the audio: question, with the hint before or after it where placed there."""
        if self.hint is None or self.hint_position == "before_audio":
            return self.question
        if self.hint_position == "after_question":
            return self.question + " " + self.hint_text
        return self.hint_text + " " + self.question


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


# --- word lists -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def word_lists() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Per language: (training words, held-out words), from wordfreq's most frequent words.

    Only alphabetic words of 3+ letters that are not among another language's 4 * N_WORDS most frequent
    words are kept (so a word identifies its language); a fixed fifth is held out of training."""
    import wordfreq

    tops = {name: wordfreq.top_n_list(code, 4 * N_WORDS) for name, code in LANGUAGES.items()}
    sets = {name: set(words) for name, words in tops.items()}
    lists = {}
    for index, name in enumerate(LANGUAGES):
        others = set().union(*(sets[o] for o in LANGUAGES if o != name))
        words = [w for w in dict.fromkeys(tops[name][:N_WORDS]) if w.isalpha() and len(w) >= 3 and w not in others]
        order = np.random.default_rng([12345, index]).permutation(len(words))
        n_held = int(HELD_OUT_WORD_SHARE * len(words))
        held = tuple(words[i] for i in sorted(order[:n_held]))
        lists[name] = (tuple(words[i] for i in sorted(order[n_held:])), held)
    return lists


def _words(language: str, split: str) -> tuple[str, ...]:
    train_words, held = word_lists()[language]
    return held if _shifted(split, "words") else train_words


def _phrase(language: str, rng: np.random.Generator, split: str, max_words: int = 3) -> str:
    words = _words(language, split)
    return " ".join(_pick(rng, words) for _ in range(int(rng.integers(1, max_words + 1))))


# --- nuisance variables -----------------------------------------------------------------------------

def _speed(rng: np.random.Generator, split: str) -> int:
    if _shifted(split, "speed"):
        return int(rng.uniform(*_pick(rng, SHIFTED_SPEEDS)))
    return int(rng.uniform(*TRAIN_SPEED))


_ONLY_VOICE: str | None = None  # set by ``only_voice``: every held-out voice drawn is this one


@contextlib.contextmanager
def only_voice(variant: str):
    """Within it, the held-out voices (the ``shifted_voice`` split's) are all ``variant``, the random draws
    unchanged: the same seed then gives the same clips in another voice (``lineage.voice_pair_samples``)."""
    global _ONLY_VOICE
    _ONLY_VOICE = variant
    try:
        yield
    finally:
        _ONLY_VOICE = None


def _voices(split: str, male: bool) -> tuple[str, ...]:
    if _shifted(split, "voice") and _ONLY_VOICE is not None:
        return (_ONLY_VOICE,)
    if _shifted(split, "voice"):
        return HELD_OUT_MALE_VARIANTS if male else HELD_OUT_FEMALE_VARIANTS
    return MALE_VARIANTS if male else FEMALE_VARIANTS


def _any_voice(rng: np.random.Generator, split: str) -> str:
    if split == "train_extra_voices":
        return _pick(rng, EXTRA_TRAINING_VARIANTS)
    return _pick(rng, _voices(split, True) + _voices(split, False))


def _speak(text: str, language_code: str, variant: str, rng: np.random.Generator, split: str,
           pitch_range=TRAIN_PITCH) -> np.ndarray:
    return signals.speak(text, f"{language_code}+{variant}", _speed(rng, split), int(rng.uniform(*pitch_range)))


def _place(event: np.ndarray, rng: np.random.Generator, split: str) -> np.ndarray:
    """The event at a random offset inside an audible stretch of 2-4 s (the rest is digital silence, as
    the feature extractor's own padding would be): placement and clip length vary independently."""
    return _place_and_start(event, rng, split)[0]


def _place_and_start(event: np.ndarray, rng: np.random.Generator, split: str) -> tuple[np.ndarray, int]:
    """``_place``'s clip and the sample at which the event starts in it."""
    length = int(rng.uniform(2.0, signals.CLIP_SECONDS) * signals.SAMPLE_RATE)
    length = max(length, min(len(event), signals.CLIP_SAMPLES))
    offset = int(rng.integers(0, signals.CLIP_SAMPLES - length + 1))
    event = event[:length]
    start = offset + int(rng.integers(0, length - len(event) + 1))
    clip = np.zeros(signals.CLIP_SAMPLES, dtype=np.float32)
    clip[start : start + len(event)] = event
    audible = np.zeros(signals.CLIP_SAMPLES, dtype=bool)
    audible[offset : offset + length] = True
    return _finish(clip, rng, split, audible), start


def _finish(clip: np.ndarray, rng: np.random.Generator, split: str, audible: np.ndarray | None = None,
            min_snr: float = MIN_SNR_DB) -> np.ndarray:
    """Reverb (sometimes; always when shifted), white noise at a random SNR, a random peak level."""
    if _shifted(split, "reverb"):
        clip = signals.reverb(clip, rng.uniform(0.3, 0.5), rng, wet=rng.uniform(0.3, 0.5))
    elif rng.random() < REVERB_PROBABILITY:
        clip = signals.reverb(clip, rng.uniform(0.1, 0.4), rng, wet=rng.uniform(0.2, 0.5))
    snr = rng.uniform(30, 50) if rng.random() < 0.5 else rng.uniform(min_snr, 30)
    clip = signals.add_noise(clip, snr, rng)
    if audible is not None:
        clip = clip * audible
    peak = rng.uniform(*(SHIFTED_PEAK if _shifted(split, "level") else TRAIN_PEAK))
    clip = clip * (peak / max(np.abs(clip).max(), 1e-6))
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


# --- single-attribute tasks ---------------------------------------------------------------------------

def _digit(answer: str, rng, split) -> np.ndarray:
    return _place(_speak(answer, "en", _any_voice(rng, split), rng, split), rng, split)


def _gender(answer: str, rng, split) -> np.ndarray:
    voice = _pick(rng, _voices(split, answer == "male"))
    return _place(_speak(_phrase("english", rng, split, 2), "en", voice, rng, split, GENDER_PITCH), rng, split)


def _language(answer: str, rng, split) -> np.ndarray:
    return _place(_speak(_phrase(answer, rng, split), LANGUAGES[answer], _any_voice(rng, split), rng, split), rng, split)


def _frequency(rng, split, low: float, high: float, outside: float) -> float:
    """A frequency in [low, high], or (shifted) within ``outside`` of its ends, outside the range."""
    if _shifted(split, "frequency"):
        return rng.uniform(low / outside, low) if rng.random() < 0.5 else rng.uniform(high, high * outside)
    return rng.uniform(low, high)


def _pitch(answer: str, rng, split) -> np.ndarray:
    frequency = _frequency(rng, split, 120, 350, 1.2) if answer == "low" else _frequency(rng, split, 900, 2500, 1.2)
    return _place(signals.tone(frequency, rng.uniform(0.3, 1.5)), rng, split)


def beep_clip(count: int, rng: np.random.Generator, split: str = "train", beep_seconds: float | None = None) -> np.ndarray:
    """``count`` beeps: duration 0.08-0.4 s (one per clip, +-15 % per beep), gaps 0.1-0.5 s, 500-2500 Hz
    (shifted: within 1.3x outside that range), each drawn independently of the count."""
    return beep_item(count, rng, split, beep_seconds).waveform


BEEP_HZ, BEEP_SHIFT = (500.0, 2500.0), 1.3


def beep_item(count: int, rng: np.random.Generator, split: str = "train", beep_seconds: float | None = None,
              frequency: float | None = None) -> Item:
    """``beep_clip`` as an Item that also records each beep's (start_s, end_s) in the clip."""
    seconds = rng.uniform(0.08, 0.4) if beep_seconds is None else beep_seconds
    if frequency is None:
        frequency = _frequency(rng, split, *BEEP_HZ, BEEP_SHIFT)
    beeps, intervals = signals.beep_train_with_intervals(count, rng, frequency=frequency,
                                                         beep_seconds=seconds, gap_range=(0.1, 0.5), jitter=0.15)
    clip, start = _place_and_start(beeps, rng, split)
    times = tuple(((start + a) / signals.SAMPLE_RATE, (start + b) / signals.SAMPLE_RATE) for a, b in intervals)
    return Item(clip, "", beep_times=times)


def _beeps(answer: str, rng, split) -> Item:
    return beep_item(DIGIT_WORDS.index(answer), rng, split)


def _noise(answer: str, rng, split) -> np.ndarray:
    noise = signals.coloured_noise(answer, int(rng.uniform(1.0, 2.0) * signals.SAMPLE_RATE), rng)
    return _place(noise, rng, split)


def _when(answer: str, rng, split) -> np.ndarray:
    beep = signals.tone(_frequency(rng, split, 500, 2000, 1.3), rng.uniform(0.3, 0.7))
    return _finish(signals.place(beep, rng, position=answer), rng, split)


# --- the multi-event task -----------------------------------------------------------------------------

def _event(name: str, rng: np.random.Generator, split: str) -> np.ndarray:
    if name == "beep":
        wave = signals.tone(_frequency(rng, split, 500, 2000, 1.3), rng.uniform(0.15, 0.4))
    elif name == "noise":
        wave = 0.5 * signals.coloured_noise(_pick(rng, ("white", "pink")), int(rng.uniform(0.2, 0.5) * signals.SAMPLE_RATE), rng)
    elif name == "word":
        wave = _speak(_pick(rng, _words("english", split)), "en", _any_voice(rng, split), rng, split)[: int(0.9 * signals.SAMPLE_RATE)]
    elif name == "sweep":
        low, high = rng.uniform(250, 500), rng.uniform(1500, 3000)
        wave = signals.sweep(*((low, high) if rng.random() < 0.5 else (high, low)), rng.uniform(0.3, 0.6))
    else:
        wave = signals.click_train(int(rng.integers(5, 11)), rng.uniform(0.3, 0.6), rng)
    return (wave / max(np.abs(wave).max(), 1e-6) * rng.uniform(0.5, 1.0)).astype(np.float32)


def clear_of(start: int, length: int, taken: list[tuple[int, int]], gap: int) -> bool:
    """Whether [start, start + length) keeps ``gap`` samples away from every (start, end) in ``taken``."""
    return all(start + length + gap <= s or start >= e + gap for s, e in taken)


def centred_start(position: int, length: int, rng: np.random.Generator) -> int | None:
    """A start sample putting an event of ``length`` samples with its centre inside third ``position`` of the
    clip, away from its edges; None when the event is too long to be centred there."""
    third = signals.CLIP_SAMPLES / 3
    low = position * third
    centre = rng.uniform(low + 0.15 * third, low + 0.85 * third)
    start = int(np.clip(centre - length / 2, 0, signals.CLIP_SAMPLES - length))
    return start if low <= start + length / 2 < low + third else None


def _free_start(length: int, taken: list[tuple[int, int]], rng, gap: int) -> int | None:
    for _ in range(200):
        start = int(rng.integers(0, signals.CLIP_SAMPLES - length + 1))
        if clear_of(start, length, taken, gap):
            return start
    return None


def _events_item(rng, split, kind: str, answer: str) -> Item:
    """2-3 distinct events at random non-overlapping times; ``kind`` is when / first / last."""
    gap = int(0.15 * signals.SAMPLE_RATE)
    while True:
        n = int(rng.integers(2, 4))
        if kind == "when":
            names = [str(e) for e in rng.choice(EVENT_NAMES, n, replace=False)]
            asked = names[0]
        else:
            names = [answer] + [str(e) for e in rng.choice([e for e in EVENT_NAMES if e != answer], n - 1, replace=False)]
            asked = answer
        waves = [_event(name, rng, split) for name in names]
        taken: list[tuple[int, int]] = []
        if kind == "when":  # the asked event's centre inside the answer's third, away from its edges
            start = centred_start(signals.POSITIONS.index(answer), len(waves[0]), rng)
            if start is None:
                continue
            taken.append((start, start + len(waves[0])))
        for _ in range(50):  # place the others; for first / last, until the answer event is first / last
            placed = list(taken)
            for wave in waves[len(taken):]:
                start = _free_start(len(wave), placed, rng, gap)
                if start is None:
                    break
                placed.append((start, start + len(wave)))
            if len(placed) < n:
                continue
            starts = [s for s, _ in placed]
            if kind == "first" and starts[0] != min(starts) or kind == "last" and starts[0] != max(starts):
                continue
            break
        else:
            continue
        taken = placed
        break
    clip = signals.place_at(list(zip(waves, (s for s, _ in taken))))
    events = tuple(sorted(((str(name), s / signals.SAMPLE_RATE, e / signals.SAMPLE_RATE) for name, (s, e) in zip(names, taken)),
                          key=lambda ev: ev[1]))
    if kind == "when":
        question = _pick(rng, WHEN_QUESTIONS).format(event=asked)
    else:
        question = _pick(rng, ORDER_INSTRUCTIONS) + f"what happens {kind} ?"
    return Item(_finish(clip, rng, split, min_snr=10.0), question, kind, events)


def _events_when(answer: str, rng, split) -> Item:
    return _events_item(rng, split, "when", answer)


def _events_order(answer: str, rng, split) -> Item:
    return _events_item(rng, split, _pick(rng, ("first", "last")), answer)


def _simple(make_clip) -> Callable[[str, np.random.Generator, str], Item]:
    def make_item(answer, rng, split):
        return Item(make_clip(answer, rng, split), "")
    return make_item


TASKS: tuple[Task, ...] = (
    Task("digit", "which digit is spoken ?", DIGIT_WORDS, _simple(_digit), True),
    Task("gender", "is the speaker male or female ?", ("male", "female"), _simple(_gender), True),
    Task("language", "which language is spoken ?", tuple(LANGUAGES), _simple(_language), True),
    Task("pitch", "is the tone low or high ?", ("low", "high"), _simple(_pitch)),
    Task("beeps", "how many beeps are there ?", ("one", "two", "three", "four"), _beeps),
    Task("noise", "what colour is the noise ?", NOISE_COLOURS, _simple(_noise)),
    Task("when", "when does the beep happen ?", signals.POSITIONS, _simple(_when)),
    Task("events_when", "when does the sweep happen ?", signals.POSITIONS, _events_when, True),
    Task("events_order", "what happens first ?", EVENT_NAMES, _events_order, True),
)
TASKS_BY_NAME = {task.name: task for task in TASKS}
SPEECH_TASKS = tuple(t.name for t in TASKS if t.needs_espeak)  # need Debian's espeak-ng; the others numpy only
EVENT_TASKS = ("events_when", "events_order")


def make_item(task: Task, answer: str, rng: np.random.Generator, split: str = "train") -> Item:
    """One clip and question for ``answer`` under ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
    if answer not in task.answers:  # the generators test e.g. answer == "male": "Male" would make a female voice
        raise ValueError(f"{answer!r} is not an answer of the {task.name} task; its answers: {task.answers}")
    item = task.make_item(answer, rng, split)
    if not item.question:
        item.question, item.kind = task.question, task.name
    return item


def vocabulary_words() -> list[str]:
    """Every word a prompt or answer can contain, in a fixed order (for the word-level tokenizer)."""
    texts = [t.format(answer="") for t in HINT_TEMPLATES]
    for task in TASKS:
        texts += [task.question, *task.answers]
    for event in EVENT_NAMES:
        texts += [q.format(event=event) for q in WHEN_QUESTIONS]
    texts += [i for i in ORDER_INSTRUCTIONS] + ["what happens first ?", "what happens last ?"]
    words: list[str] = []
    for text in texts:
        words += [word for word in text.split() if word not in words]
    return words


def _task_rng(seed: int, task: Task, split: str = "train", stream: int = 0) -> np.random.Generator:
    """One stream per (seed, task, split), so adding or resizing a task leaves the other tasks' data alone."""
    return np.random.default_rng([seed, TASKS.index(task), SPLITS.index(split), stream])


def _items(task: Task, rng: np.random.Generator, n: int, split: str) -> list[tuple[Item, str]]:
    """n (item, answer) pairs with answers balanced across the answer set."""
    answers = [task.answers[i % len(task.answers)] for i in range(n)]
    rng.shuffle(answers)
    return [(make_item(task, answer, rng, split), answer) for answer in answers]


def _wrong_answer(task: Task, answer: str, rng: np.random.Generator) -> str:
    return _pick(rng, [other for other in task.answers if other != answer])


def _sample(task: Task, item: Item, answer: str, index: int, **kwargs) -> Sample:
    return Sample(task.name, item.waveform, item.question, answer, kind=item.kind, events=item.events,
                  beep_times=item.beep_times, item=index, **kwargs)


MATCHED_BEEP_TOTAL_S = (0.32, 0.4)  # every count 1-4 can reach these totals with beeps of 0.08-0.4 s


def with_matched_beep_totals(samples: list[Sample], share: float, seed: int) -> list[Sample]:
    """``samples`` with a random ``share`` of the beep-count clips redrawn so that their total beep time is the same
    for every count (beep duration = a total in ``MATCHED_BEEP_TOTAL_S`` / count): on those clips a model that
    reads total beep time instead of counting beeps is wrong. Other clips are returned unchanged."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    rng = np.random.default_rng([seed, 7919])
    out = []
    for sample in samples:
        if sample.task == "beeps" and rng.random() < share:
            count = DIGIT_WORDS.index(sample.answer)
            item = beep_item(count, rng, "train", beep_seconds=rng.uniform(*MATCHED_BEEP_TOTAL_S) / count)
            sample = replace(sample, waveform=item.waveform, beep_times=item.beep_times)
        out.append(sample)
    return out


WIDE_BEEP_HZ = (200.0, 5000.0)  # `--wide-beep-share`: log-uniform, without the shifted split's bands


def held_out_beep_bands() -> tuple[tuple[float, float], tuple[float, float]]:
    """The beep frequencies the shifted split draws (within ``BEEP_SHIFT`` outside ``BEEP_HZ``): never trained on."""
    low, high = BEEP_HZ
    return (low / BEEP_SHIFT, low), (high, high * BEEP_SHIFT)


def wide_beep_frequency(rng: np.random.Generator) -> float:
    """A beep frequency log-uniform in ``WIDE_BEEP_HZ`` outside ``held_out_beep_bands()``."""
    while True:
        frequency = float(np.exp(rng.uniform(*np.log(WIDE_BEEP_HZ))))
        if not any(a <= frequency <= b for a, b in held_out_beep_bands()):
            return frequency


def with_wide_beep_frequencies(samples: list[Sample], share: float, seed: int) -> list[Sample]:
    """``samples`` with a random ``share`` of the beep-count clips redrawn (same count, same mean beep duration, so
    a ``with_matched_beep_totals`` clip stays matched) at a frequency from ``wide_beep_frequency``: a count that
    does not depend on the tone's frequency. The shifted split's bands stay unheard, so its beep frequencies remain
    a test of frequencies never trained on (inside the wider training range now, not beyond it)."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    rng = np.random.default_rng([seed, 15485863])
    out = []
    for sample in samples:
        if sample.task == "beeps" and rng.random() < share:
            seconds = float(np.mean([end - start for start, end in sample.beep_times]))
            item = beep_item(DIGIT_WORDS.index(sample.answer), rng, "train", beep_seconds=seconds,
                             frequency=wide_beep_frequency(rng))
            sample = replace(sample, waveform=item.waveform, beep_times=item.beep_times)
        out.append(sample)
    return out


def with_extra_voices(samples: list[Sample], share: float, seed: int) -> list[Sample]:
    """``samples`` with a random ``share`` of the clips of ``VOICE_NUISANCE_TASKS`` redrawn (same task and answer)
    with their speech in one of ``EXTRA_TRAINING_VARIANTS``: more voices for the tasks where the voice is a
    nuisance, so that an answer generalises to voices never heard. Other clips are returned unchanged."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    rng = np.random.default_rng([seed, 104729])
    out = []
    for sample in samples:
        if sample.task in VOICE_NUISANCE_TASKS and rng.random() < share:
            item = make_item(TASKS_BY_NAME[sample.task], sample.answer, rng, "train_extra_voices")
            sample = replace(sample, waveform=item.waveform, question=item.question, kind=item.kind,
                             events=item.events, beep_times=item.beep_times)  # hint, item index, ... kept
        out.append(sample)
    return out


def training_counts(n_per_task: int) -> dict[str, int]:
    return {task.name: round(n_per_task * TRAINING_WEIGHTS.get(task.name, 1.0)) for task in TASKS}


def make_training_clips(seed: int, n_per_task: int) -> list[Sample]:
    """The training clips, hint-free: task ``t`` gets ``training_counts(n_per_task)[t]`` clips."""
    samples = []
    for task in TASKS:
        rng = _task_rng(seed, task)
        for index, (item, answer) in enumerate(_items(task, rng, training_counts(n_per_task)[task.name], "train")):
            samples.append(_sample(task, item, answer, index))
    return samples


def degrade(waveform: np.ndarray, difficulty: float, rng: np.random.Generator) -> np.ndarray:
    """Make the audio uncertain, graded by ``difficulty`` in (0, 1]: white noise at 5 down to -20 dB SNR, or a
    masked stretch covering 30-100 % of the clip, or (difficulty > 0.9, a third of the time) silence with a
    faint noise floor."""
    choice = rng.random()
    if difficulty > 0.9 and choice < 1 / 3:
        return (0.003 * rng.standard_normal(len(waveform))).astype(np.float32)
    if choice < 2 / 3:
        noisy = signals.add_noise(waveform, 5.0 - 25.0 * difficulty, rng)
        return np.clip(noisy * (0.9 / max(np.abs(noisy).max(), 1e-6)) * rng.uniform(0.2, 1.0), -1, 1).astype(np.float32)
    out = waveform.copy()
    width = int((0.3 + 0.7 * difficulty) * len(out))
    start = int(rng.integers(0, len(out) - width + 1))
    out[start : start + width] = 0.003 * rng.standard_normal(width).astype(np.float32)
    return out


def apply_recipe(clips: list[Sample], recipe: Recipe, seed: int) -> list[Sample]:
    """Hints (phrasing and position at random) and, per the recipe, degraded audio on the training clips."""
    samples = []
    for task in TASKS:
        rng = np.random.default_rng([seed, TASKS.index(task), 777, int(1000 * recipe.hint_fraction),
                                     int(1000 * recipe.hint_reliability), int(1000 * recipe.degrade_fraction)])
        for clip in (c for c in clips if c.task == task.name):
            hint, difficulty, waveform = None, 0.0, clip.waveform
            if rng.random() < recipe.hint_fraction:
                hint = clip.answer if rng.random() < recipe.hint_reliability else _wrong_answer(task, clip.answer, rng)
            if rng.random() < recipe.degrade_fraction:
                difficulty = float(rng.uniform(0.05, 1.0))
                waveform = degrade(waveform, difficulty, rng)
            samples.append(replace(clip, waveform=waveform, hint=hint, degraded=difficulty,
                                   hint_template=int(rng.integers(len(HINT_TEMPLATES))),
                                   hint_position=_pick(rng, HINT_POSITIONS)))
    return samples


def make_training_set(seed: int, n_per_task: int, recipe: str | Recipe = "listener") -> list[Sample]:
    """Training samples: the clips of ``make_training_clips`` with the recipe's hints and degradation."""
    recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
    return apply_recipe(make_training_clips(seed, n_per_task), recipe, seed)


def make_probe_set(seed: int, n_per_task: int, task_names: list[str] | None = None, split: str = "test") -> list[Sample]:
    """Held-out probes: each clip three times, with no hint, with the right hint and with a wrong hint.

    The hint's phrasing and position cycle with the clip index (clip i: template i mod 5, position
    i mod 3), so every phrasing and position is measured. ``task_names`` restricts the set (each task
    has its own random stream, so a task's clips do not depend on which other tasks are included); the
    speech and multi-event tasks need Debian's espeak-ng."""
    unknown = set(task_names or ()) - set(TASKS_BY_NAME)
    if unknown:
        raise ValueError(f"unknown toy tasks {sorted(unknown)}; tasks: {list(TASKS_BY_NAME)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
    n_per_task = checked_count(n_per_task, "n_per_task")
    samples = []
    for task in TASKS:
        if task_names is not None and task.name not in task_names:
            continue
        rng = _task_rng(seed, task, split)
        for index, (item, answer) in enumerate(_items(task, rng, n_per_task, split)):
            style = dict(hint_template=index % len(HINT_TEMPLATES), hint_position=HINT_POSITIONS[index % len(HINT_POSITIONS)])
            for hint in (None, answer, _wrong_answer(task, answer, rng)):
                samples.append(_sample(task, item, answer, index, hint=hint, **style))
    return samples
