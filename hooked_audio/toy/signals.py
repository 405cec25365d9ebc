"""Seeded synthesis of raw 16 kHz mono float32 signals: espeak-ng speech, tones, beeps, coloured noise.

Everything here is a pure function of its arguments (plus a numpy Generator where randomness is wanted),
so the toy data set is reproducible from a seed. Speech comes from the Debian `espeak-ng` binary; calling
it is the slow part, so its output is cached in memory per (voice, speed, pitch, text).
"""

import functools
import io
import subprocess

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
CLIP_SECONDS = 4.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)
POSITIONS = ("beginning", "middle", "end")


@functools.lru_cache(maxsize=None)
def _speak_cached(voice: str, speed: int, pitch: int, text: str) -> np.ndarray:
    wav_bytes = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    audio, rate = soundfile.read(io.BytesIO(wav_bytes), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    return _trim_silence(audio)


def _trim_silence(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Drop espeak's leading/trailing silence so that placement and offsets mean what they say."""
    loud = np.flatnonzero(np.abs(audio) > threshold * max(np.abs(audio).max(), 1e-6))
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def speak(text: str, voice: str = "en", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Speech for `text` from espeak-ng, peak-normalised to 1; a copy, so callers may modify it."""
    audio = _speak_cached(voice, int(speed), int(pitch), text).copy()
    return audio / max(np.abs(audio).max(), 1e-6)


def tone(frequency: float, seconds: float, ramp_seconds: float = 0.01) -> np.ndarray:
    """A sine tone with short raised-cosine ramps (no clicks), peak 1."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    wave = np.sin(2 * np.pi * frequency * t).astype(np.float32)
    ramp = min(int(ramp_seconds * SAMPLE_RATE), n // 2)
    if ramp > 0:
        window = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp, dtype=np.float32))
        wave[:ramp] *= window
        wave[-ramp:] *= window[::-1]
    return wave


def beep_train(count: int, rng: np.random.Generator, frequency: float = 1000.0,
               beep_seconds: float = 0.2, gap_range: tuple[float, float] = (0.15, 0.35),
               jitter: float = 0.0) -> np.ndarray:
    """`count` beeps separated by random gaps, as one signal starting and ending with a beep.

    Each beep lasts ``beep_seconds`` times a random factor in [1 - jitter, 1 + jitter]; each gap is drawn
    from ``gap_range``. Drawing ``beep_seconds`` independently of ``count`` (as the toy tasks do) keeps the
    total beep time from giving the count away."""
    return beep_train_with_intervals(count, rng, frequency, beep_seconds, gap_range, jitter)[0]


def beep_train_with_intervals(count: int, rng: np.random.Generator, frequency: float = 1000.0,
                              beep_seconds: float = 0.2, gap_range: tuple[float, float] = (0.15, 0.35),
                              jitter: float = 0.0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``beep_train``'s signal and each beep's (start, end) sample within it (the same random draws)."""
    pieces, intervals, length = [], [], 0
    for index in range(count):
        beep = tone(frequency, beep_seconds * rng.uniform(1 - jitter, 1 + jitter))
        intervals.append((length, length + len(beep)))
        pieces.append(beep)
        length += len(beep)
        if index < count - 1:
            pieces.append(np.zeros(int(rng.uniform(*gap_range) * SAMPLE_RATE), dtype=np.float32))
            length += len(pieces[-1])
    return np.concatenate(pieces), intervals


def sweep(start_hz: float, end_hz: float, seconds: float, ramp_seconds: float = 0.01) -> np.ndarray:
    """A tone sweeping exponentially from start_hz to end_hz, with raised-cosine ramps, peak 1."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rate = np.log(end_hz / start_hz) / seconds
    phase = 2 * np.pi * start_hz * (np.exp(rate * t) - 1) / rate
    wave = np.sin(phase).astype(np.float32)
    ramp = min(int(ramp_seconds * SAMPLE_RATE), n // 2)
    if ramp > 0:
        window = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp, dtype=np.float32))
        wave[:ramp] *= window
        wave[-ramp:] *= window[::-1]
    return wave


def click_train(n_clicks: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """``n_clicks`` short broadband clicks (2 ms decaying noise) evenly spread over ``seconds``, peak 1."""
    wave = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    click_len = int(0.002 * SAMPLE_RATE)
    click = rng.standard_normal(click_len).astype(np.float32) * np.exp(-np.arange(click_len) / (click_len / 4))
    for start in np.linspace(0, len(wave) - click_len, n_clicks).astype(int):
        wave[start : start + click_len] += click
    return wave / max(np.abs(wave).max(), 1e-6)


def reverb(clip: np.ndarray, rt60: float, rng: np.random.Generator, wet: float = 0.5) -> np.ndarray:
    """Mild synthetic room reverb: the clip convolved with exponentially decaying noise (RT60 in seconds),
    mixed ``wet`` parts reverberant to 1 - wet dry, length kept."""
    n = int(rt60 * SAMPLE_RATE)
    decay = np.exp(-6.9 * np.arange(n) / n)  # -60 dB at rt60
    impulse = (rng.standard_normal(n) * decay).astype(np.float32)
    impulse /= np.sqrt((impulse**2).sum())
    wet_signal = np.fft.irfft(np.fft.rfft(clip, len(clip) + n) * np.fft.rfft(impulse, len(clip) + n))[: len(clip)]
    dry_rms, wet_rms = np.sqrt((clip**2).mean()) + 1e-8, np.sqrt((wet_signal**2).mean()) + 1e-8
    return ((1 - wet) * clip + wet * wet_signal * dry_rms / wet_rms).astype(np.float32)


def add_noise(clip: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at ``snr_db`` below the power of the clip's active (non-silent) part."""
    active = np.abs(clip) > 0.01 * max(np.abs(clip).max(), 1e-6)
    power = float((clip[active] ** 2).mean()) if active.any() else 1e-6
    noise = rng.standard_normal(len(clip)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return (clip + noise).astype(np.float32)


def coloured_noise(colour: str, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f^2 power) noise, unit standard deviation."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    frequencies = np.fft.rfftfreq(n_samples, d=1.0 / SAMPLE_RATE)
    frequencies[0] = frequencies[1]
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
    noise = np.fft.irfft(spectrum / frequencies**exponent, n=n_samples).astype(np.float32)
    return noise / max(noise.std(), 1e-8)


def place(event: np.ndarray, rng: np.random.Generator, position: str | None = None) -> np.ndarray:
    """Put `event` into a silent clip of CLIP_SAMPLES: at a random offset, or within the given third."""
    event = event[:CLIP_SAMPLES]
    room = CLIP_SAMPLES - len(event)
    if position is None:
        start = int(rng.integers(0, room + 1))
    else:
        third = CLIP_SAMPLES / 3
        low = POSITIONS.index(position) * third
        # the event's centre lies inside the chosen third, with a margin so thirds are not confused
        centre = rng.uniform(low + 0.2 * third, low + 0.8 * third)
        start = int(np.clip(centre - len(event) / 2, 0, room))
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    clip[start : start + len(event)] = event
    return clip


def place_at(events: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """A silent clip of CLIP_SAMPLES with each (event, start sample) added in."""
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    for event, start in events:
        event = event[: CLIP_SAMPLES - start]
        clip[start : start + len(event)] += event
    return clip


def finish(clip: np.ndarray, rng: np.random.Generator, noise_floor: float = 0.01) -> np.ndarray:
    """Random gain plus a small random white noise floor, clipped to [-1, 1]: the model must listen."""
    gain = rng.uniform(0.2, 0.9)
    floor = rng.uniform(0.0, noise_floor) * rng.standard_normal(len(clip)).astype(np.float32)
    return np.clip(gain * clip + floor, -1.0, 1.0).astype(np.float32)
