"""The toy task set: seeded (clip, question, answer) samples, optionally with a text hint.

Each task asks one fixed question about a 4-second clip and has a fixed set of single-word answers.
Random gain, noise floor and placement mean the answer can only come from listening. A fraction of
training samples carries a text hint ("hint : the answer is female .") that is right most of the time
and wrong otherwise, so the trained model partly trusts text and *text dominance* can be measured.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import signals

ENGLISH_MALE_VOICES = tuple(f"en+m{i}" for i in range(1, 8))
ENGLISH_FEMALE_VOICES = tuple(f"en+f{i}" for i in range(1, 6))
SPEEDS = (130, 160, 190)
PITCHES = (35, 50, 65)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GENDER_TEXTS = DIGIT_WORDS + ("hello", "good morning", "thank you", "the cat sat on the mat")
LANGUAGE_TEXTS = {
    "english": ("hello", "water", "house", "friend", "good morning", "thank you", "good night",
                "one two three", "the weather is nice today"),
    "german": ("hallo", "wasser", "haus", "freund", "guten morgen", "danke schön", "gute nacht",
               "eins zwei drei", "das wetter ist heute schön"),
    "french": ("bonjour", "eau", "maison", "ami", "bonne matinée", "merci beaucoup", "bonne nuit",
               "un deux trois", "il fait beau aujourd'hui"),
    "spanish": ("hola", "agua", "casa", "amigo", "buenos días", "muchas gracias", "buenas noches",
                "uno dos tres", "hace buen tiempo hoy"),
}
LANGUAGE_VOICES = {"english": "en", "german": "de", "french": "fr", "spanish": "es"}
LANGUAGE_VARIANTS = ("m1", "m3", "m5", "f1", "f2", "f4")
NOISE_COLOURS = ("white", "pink", "brown")

HINT_TEMPLATE = "hint : the answer is {answer} ."
TRAIN_HINT_FRACTION = 0.3
TRAIN_HINT_RELIABILITY = 0.7
# Share of the training set per task, relative to a tone task. The tone tasks reach 1.00 with 1500 clips
# each while language stays at 0.83-0.91 (two runs), so language gets the most.
TRAINING_WEIGHTS = {"language": 2.5, "digit": 1.5, "gender": 1.5}


@dataclass(frozen=True)
class Task:
    """A question with a closed set of one-word answers and a seeded clip generator."""

    name: str
    question: str
    answers: tuple[str, ...]
    make_clip: Callable[[str, np.random.Generator], np.ndarray]  # (answer, rng) -> 16 kHz clip


@dataclass
class Sample:
    """One prompt: clip + question (+ optional hint) and the word the model should answer."""

    task: str
    waveform: np.ndarray
    question: str
    answer: str
    hint: str | None = None  # the hinted answer word, None when the prompt carries no hint

    @property
    def hint_kind(self) -> str:
        """'none', 'correct' or 'wrong'."""
        if self.hint is None:
            return "none"
        return "correct" if self.hint == self.answer else "wrong"

    @property
    def text(self) -> str:
        """User text after the audio: the hint sentence (if any) then the question."""
        if self.hint is None:
            return self.question
        return HINT_TEMPLATE.format(answer=self.hint) + " " + self.question


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _spoken(text: str, voice: str, rng: np.random.Generator) -> np.ndarray:
    speech = signals.speak(text, voice, _pick(rng, SPEEDS), _pick(rng, PITCHES))
    return signals.finish(signals.place(speech, rng), rng)


def _digit_clip(answer: str, rng: np.random.Generator) -> np.ndarray:
    return _spoken(answer, _pick(rng, ENGLISH_MALE_VOICES + ENGLISH_FEMALE_VOICES), rng)


def _gender_clip(answer: str, rng: np.random.Generator) -> np.ndarray:
    voices = ENGLISH_MALE_VOICES if answer == "male" else ENGLISH_FEMALE_VOICES
    return _spoken(_pick(rng, GENDER_TEXTS), _pick(rng, voices), rng)


def _language_clip(answer: str, rng: np.random.Generator) -> np.ndarray:
    voice = f"{LANGUAGE_VOICES[answer]}+{_pick(rng, LANGUAGE_VARIANTS)}"
    return _spoken(_pick(rng, LANGUAGE_TEXTS[answer]), voice, rng)


def _pitch_clip(answer: str, rng: np.random.Generator) -> np.ndarray:
    frequency = rng.uniform(120, 350) if answer == "low" else rng.uniform(900, 2500)
    return signals.finish(signals.place(signals.tone(frequency, rng.uniform(0.3, 1.5)), rng), rng)


def _beeps_clip(answer: str, rng: np.random.Generator) -> np.ndarray:
    count = DIGIT_WORDS.index(answer)
    beeps = signals.beep_train(count, rng, frequency=rng.uniform(600, 2000))
    return signals.finish(signals.place(beeps, rng), rng)


def _noise_clip(answer: str, rng: np.random.Generator) -> np.ndarray:
    seconds = rng.uniform(1.5, signals.CLIP_SECONDS)
    noise = 0.25 * signals.coloured_noise(answer, int(seconds * signals.SAMPLE_RATE), rng)
    return signals.finish(signals.place(noise, rng), rng)


def _when_clip(answer: str, rng: np.random.Generator) -> np.ndarray:
    beep = signals.tone(rng.uniform(500, 2000), rng.uniform(0.4, 0.7))
    background_level = rng.choice([0.0, rng.uniform(0.01, 0.06)])  # quiet or noisy background
    return signals.finish(signals.place(beep, rng, position=answer), rng, noise_floor=0.01 + background_level)


TASKS: tuple[Task, ...] = (
    Task("digit", "which digit is spoken ?", DIGIT_WORDS, _digit_clip),
    Task("gender", "is the speaker male or female ?", ("male", "female"), _gender_clip),
    Task("language", "which language is spoken ?", tuple(LANGUAGE_TEXTS), _language_clip),
    Task("pitch", "is the tone low or high ?", ("low", "high"), _pitch_clip),
    Task("beeps", "how many beeps are there ?", ("one", "two", "three", "four"), _beeps_clip),
    Task("noise", "what colour is the noise ?", NOISE_COLOURS, _noise_clip),
    Task("when", "when does the beep happen ?", signals.POSITIONS, _when_clip),
)
TASKS_BY_NAME = {task.name: task for task in TASKS}
SPEECH_TASKS = ("digit", "gender", "language")  # synthesized with espeak-ng; the others with numpy only


def vocabulary_words() -> list[str]:
    """Every word a prompt or answer can contain, in a fixed order (for the word-level tokenizer)."""
    words: list[str] = []
    texts = [HINT_TEMPLATE.format(answer="")]
    for task in TASKS:
        texts += [task.question, *task.answers]
    for text in texts:
        words += [word for word in text.split() if word not in words]
    return words


def _task_rng(seed: int, task: Task) -> np.random.Generator:
    """One stream per (seed, task), so adding or resizing a task leaves the other tasks' data alone."""
    return np.random.default_rng([seed, TASKS.index(task)])


def _clips(task: Task, rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, str]]:
    """n (clip, answer) pairs with answers balanced across the answer set."""
    answers = [task.answers[i % len(task.answers)] for i in range(n)]
    rng.shuffle(answers)
    return [(task.make_clip(answer, rng), answer) for answer in answers]


def _wrong_answer(task: Task, answer: str, rng: np.random.Generator) -> str:
    return _pick(rng, [other for other in task.answers if other != answer])


def make_training_set(seed: int, n_per_task: int) -> list[Sample]:
    """Training samples; TRAIN_HINT_FRACTION carry a hint that is right TRAIN_HINT_RELIABILITY of the time.

    Task ``t`` gets ``round(n_per_task * TRAINING_WEIGHTS.get(t, 1))`` clips, so that the speech tasks, which
    the toy learns slowest, get more of the fixed training budget."""
    samples = []
    for task in TASKS:
        rng = _task_rng(seed, task)
        for waveform, answer in _clips(task, rng, round(n_per_task * TRAINING_WEIGHTS.get(task.name, 1.0))):
            hint = None
            if rng.random() < TRAIN_HINT_FRACTION:
                hint = answer if rng.random() < TRAIN_HINT_RELIABILITY else _wrong_answer(task, answer, rng)
            samples.append(Sample(task.name, waveform, task.question, answer, hint))
    return samples


def make_probe_set(seed: int, n_per_task: int, task_names: list[str] | None = None) -> list[Sample]:
    """Held-out probes: each clip three times, with no hint, with the right hint and with a wrong hint.

    ``task_names`` restricts the set (each task has its own random stream, so a task's clips do not
    depend on which other tasks are included); the speech tasks need Debian's espeak-ng."""
    unknown = set(task_names or ()) - set(TASKS_BY_NAME)
    if unknown:
        raise ValueError(f"unknown toy tasks {sorted(unknown)}; tasks: {list(TASKS_BY_NAME)}")
    samples = []
    for task in TASKS:
        if task_names is not None and task.name not in task_names:
            continue
        rng = _task_rng(seed, task)
        for waveform, answer in _clips(task, rng, n_per_task):
            for hint in (None, answer, _wrong_answer(task, answer, rng)):
                samples.append(Sample(task.name, waveform, task.question, answer, hint))
    return samples
