"""Shared scaffolding for the family tests: ``FamilySpec`` (what a family supplies to the contract suite in
``test_family_contract.py``), tiny HF models, left-padded batches, and the checks every family runs (logits
match HF, the audio moves the logits, every hook fires, greedy generation, offline loading, real-size
parameter counts on the meta device).

A plain module, not a conftest: the family test files import from it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from jaxtyping import Float, Int
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PretrainedConfig, PreTrainedTokenizerFast, WhisperFeatureExtractor

import hooked_audio.model_configs as model_configs
from hooked_audio import HookedAudioTransformer
from hooked_audio.config import HookedAudioConfig
from hooked_audio.families import family_for_model_type
from hooked_audio.families.base import ModelFamily
from hooked_audio.audio.inputs import AudioSpan, AudioTextInput

TOL = 1e-4  # max abs logit difference from HF's eager float32 forward (design brief, section 6)
PADDING_VALUE = -0.8  # what the Whisper feature extractor's padding looks like in log-mel features


# --- what a family supplies to the contract suite ----------------------------------------------------
# Parity cases every family has (clips in the family's own notation, see its ``make_inputs``); a family whose
# clips can span several windows or chunks also names that case in ``FamilySpec.long_audio_case``.
REQUIRED_CASES = ("batch_padded_different_lengths", "two_clips_in_one_prompt", "batch_mixed_clip_counts")


@dataclass(frozen=True)
class TokenTimes:
    """One row holding one clip (``clips``, the family's notation) of ``n_tokens`` audio tokens, in windows of
    ``tokens_per_window`` tokens that start every ``window_seconds`` (a family without windows: one window)."""

    clips: list
    n_tokens: int
    tokens_per_window: int
    window_seconds: float


@dataclass(frozen=True)
class FamilySpec:
    """A family's tester for ``test_family_contract.py`` (as HF's ``ModelTesterMixin`` testers are).

    ``make_hf_model(**variants[v])`` builds a tiny eager HF model (random norms and biases, loud audio path);
    ``make_inputs(clips_per_row, text_lengths=None, seed=0)`` builds that model's forward keyword inputs,
    left-padded, ``[[]]``-style rows meaning text only."""

    name: str  # the family's registry name (= ``cfg.family``)
    hf_class: type  # HF's model class (the thinker for Omni models)
    make_hf_model: Callable[..., torch.nn.Module]
    variants: Mapping[str, Mapping[str, Any]]  # id -> make_hf_model kwargs (seed included); first = default
    make_inputs: Callable[..., dict]
    cases: Mapping[str, list]  # parity cases: id -> clips per row; REQUIRED_CASES at least
    long_audio_case: str | None  # the case with a clip over several windows / chunks (None: one window only)
    eos_token_id: int
    pad_token_id: int
    seconds_per_token: float  # ``cfg.seconds_per_audio_token``
    token_times: TokenTimes
    real_configs: Mapping[str, int]  # model_configs name -> our parameter count on the meta device
    unhandled: tuple[str, str, Any]  # (config part, attribute, non-default value) the whitelist must refuse
    audio_factor: float = 100  # the audio must move the logits by more than this x TOL
    expected_hooks: frozenset[str] = frozenset()  # family-specific names that must be in hook_dict
    absent_hooks: frozenset[str] = frozenset()  # names this family must not have
    make_processor: Callable[[], Any] | None = None  # saved next to the checkpoint in the offline check
    not_reimplemented: Callable[[torch.nn.Module], int] = field(default=lambda hf: 0)  # HF params left out

    @property
    def default_variant(self) -> str:
        return next(iter(self.variants))


_PAIRS: dict[tuple[str, str], tuple[torch.nn.Module, HookedAudioTransformer]] = {}


def build_pair(spec: FamilySpec, variant: str | None = None) -> tuple[torch.nn.Module, HookedAudioTransformer]:
    """``(hf_model, our model)`` of a spec's variant, built once per test session and shared by the contract
    suite and the family's own tests (no test modifies them)."""
    key = (spec.name, variant or spec.default_variant)
    if key not in _PAIRS:
        hf = spec.make_hf_model(**spec.variants[key[1]])
        _PAIRS[key] = hf, HookedAudioTransformer.from_hf_model(hf)
    return _PAIRS[key]


# --- tiny HF models ------------------------------------------------------------------------------
def randomize_norms_and_biases(model: torch.nn.Module, seed: int) -> None:
    """HF initialises norm weights to 1 and biases to 0, which would hide a mis-mapped norm or bias."""
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=gen))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))


def build_tiny_hf_model(
    model_class: type, config: PretrainedConfig, seed: int, louder: dict[str, float]
) -> torch.nn.Module:
    """An eager, eval-mode HF model with random norms and biases. ``louder`` scales parameters (by name):
    random init leaves the audio path tiny next to the text path, and a broken splice could hide there."""
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = model_class(config).eval()
    randomize_norms_and_biases(model, seed)
    with torch.no_grad():
        for name, scale in louder.items():
            model.get_parameter(name).mul_(scale)
    return model


def word_level_tokenizer(
    vocab: dict[str, int], unk_token: str, eos_token: str, special_tokens: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over ``vocab`` that pads with ``unk_token`` (id 0 in every test vocab)."""
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=unk_token, eos_token=eos_token)
    if special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    return tokenizer


def tiny_feature_extractor(n_mels: int, chunk_length: int) -> WhisperFeatureExtractor:
    """Whisper features with ``n_mels`` bins over windows of ``chunk_length`` seconds (100 frames a second)."""
    return WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=16000, hop_length=160, chunk_length=chunk_length, n_fft=400
    )


# --- inputs --------------------------------------------------------------------------------------
def n_audio_tokens(mel_frames: int) -> int:
    """Tokens of a Whisper stem (stride 2) followed by average pooling of frame pairs."""
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def random_words(gen: torch.Generator, n: int, low: int, high: int) -> list[int]:
    """``n`` token ids drawn from ``low..high-1``."""
    return [int(t) for t in torch.randint(low, high, (n,), generator=gen)]


def left_padded(
    rows: list[list[int]], pad_id: int = 0
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """``input_ids`` and ``attention_mask`` of rows of different lengths, padded on the left (as generation needs)."""
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, width - len(row):] = torch.tensor(row)
        attention_mask[r, width - len(row):] = 1
    return input_ids, attention_mask


def padded_features(
    real_frames: list[int], n_mels: int, n_frames: int, gen: torch.Generator
) -> tuple[Float[torch.Tensor, "clip mel frame"], Int[torch.Tensor, "clip frame"]]:
    """Random features with ``real_frames[i]`` real frames in row i, padding after them, and their frame mask."""
    features = torch.randn(len(real_frames), n_mels, n_frames, generator=gen)
    mask = torch.zeros(len(real_frames), n_frames, dtype=torch.long)
    for i, mel in enumerate(real_frames):
        mask[i, :mel] = 1
        features[i, :, mel:] = PADDING_VALUE
    return features, mask


def noise_clips(seed: int, n_samples: Sequence[int]) -> list[np.ndarray]:
    """Quiet white-noise waveforms at 16 kHz, one per length, for the tests that go through a processor."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in n_samples]


def first_windows(inputs: dict, n: int) -> dict:
    """``inputs`` with only the first ``n`` feature rows (and their frame mask): fewer windows than placeholders."""
    feature_keys = ("input_features", "input_features_mask", "feature_attention_mask")
    return {key: value[:n] if key in feature_keys else value for key, value in inputs.items()}


# --- parity checks -------------------------------------------------------------------------------
def max_diff(
    ours: Float[torch.Tensor, "batch pos vocab"],
    theirs: Float[torch.Tensor, "batch pos vocab"],
    attention_mask: Int[torch.Tensor, "batch pos"],
) -> float:
    """Largest absolute difference at real (unpadded) positions: padded positions carry no meaning."""
    return (ours - theirs)[attention_mask.bool()].abs().max().item()


def assert_logits_match(
    ours: Float[torch.Tensor, "batch pos vocab"],
    theirs: Float[torch.Tensor, "batch pos vocab"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    tol: float = TOL,
) -> None:
    diff = max_diff(ours, theirs, attention_mask)
    assert diff <= tol, f"max abs logit difference {diff:.3g} at real positions exceeds {tol:g}"


def assert_matches_hf(model: HookedAudioTransformer, hf: torch.nn.Module, inputs: dict, tol: float = TOL) -> None:
    """Our logits equal HF's eager forward on the same keyword inputs."""
    with torch.no_grad():
        assert_logits_match(model(**inputs), hf(**inputs).logits, inputs["attention_mask"], tol)


def assert_audio_moves_logits(
    model: HookedAudioTransformer,
    inputs: dict,
    logits: Float[torch.Tensor, "batch pos vocab"],
    factor: float,
    tol: float = TOL,
) -> None:
    """Other (random) features move the logits by more than ``factor * tol``: the audio path matters, so a
    parity check on these inputs tests it rather than passing on the text alone."""
    other = dict(inputs, input_features=torch.randn_like(inputs["input_features"]))
    with torch.no_grad():
        moved = max_diff(model(**other), logits, inputs["attention_mask"])
    assert moved > factor * tol, f"other audio moved the logits by only {moved:.3g}"


def assert_parity_and_audio_matters(
    hf: torch.nn.Module, model: HookedAudioTransformer, inputs: dict, factor: float
) -> None:
    """The parity case every family runs: logits match HF, and the audio moves them by ``factor`` x TOL."""
    with torch.no_grad():
        theirs = hf(**inputs).logits
        ours = model(**inputs)
    assert_logits_match(ours, theirs, inputs["attention_mask"])
    assert_audio_moves_logits(model, inputs, ours, factor)


def assert_several_clips_per_text_match_hf(hf: torch.nn.Module, processor) -> None:
    """For a processor that takes one clip per text: ``build_inputs`` with two clips in one prompt gives the
    tokens the processor gives each clip alone, in order (checked on one-clip prompts against the processor
    itself), two spans, and HF's logits on the assembled batch."""
    model, token = HookedAudioTransformer.from_hf_model(hf, processor=processor), processor.audio_token
    clips = noise_clips(3, [8000, 40000, 5000])  # the second is longer than one window
    alone = processor(text=[f"hello {token} and", f"{token} yes"], audio=clips[:2], sampling_rate=16000, return_tensors="pt")
    split = model.build_inputs([f"hello {token} and", f"{token} yes"], clips[:2], sampling_rate=16000)
    assert torch.equal(split.input_ids, alone["input_ids"])  # one clip per prompt: the processor's own output
    inputs = model.build_inputs([f"hello {token} and {token} what", f"{token} yes"], clips, sampling_rate=16000)
    first, second = inputs.audio_spans[0]
    run = lambda row: alone["input_ids"][row][alone["input_ids"][row] == model.cfg.audio_token_id]  # noqa: E731
    assert (len(first), len(second), second.clip) == (len(run(0)), len(run(1)), 1)
    batch = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask, **inputs.audio}
    with torch.no_grad():
        assert_logits_match(model(inputs), hf(**batch).logits, inputs.attention_mask)


def assert_generate_matches_hf(
    hf: torch.nn.Module, model: HookedAudioTransformer, inputs: dict, eos_token_id: int, pad_token_id: int
) -> None:
    """Eight greedy tokens, exactly HF's (prompt included)."""
    with torch.no_grad():
        theirs = hf.generate(
            **inputs, max_new_tokens=8, do_sample=False, eos_token_id=eos_token_id, pad_token_id=pad_token_id
        )
    ours = model.generate(**inputs, max_new_tokens=8, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    assert torch.equal(ours, theirs)


def assert_every_hook_fires(model: HookedAudioTransformer, inputs: dict) -> set[str]:
    """Every name in ``model.hook_dict`` fires on one forward pass (no dead hooks); returns the fired names."""
    fired: set[str] = set()
    model.run_with_hooks(**inputs, fwd_hooks=[(lambda name: True, lambda x, hook: fired.add(hook.name))])
    assert set(model.hook_dict) - fired == set()
    return fired


def assert_token_times_continue_across_windows(
    model: HookedAudioTransformer,
    inputs: dict,
    n_tokens: int,
    tokens_per_window: int,
    window_seconds: float,
    seconds_per_token: float,
) -> tuple[AudioTextInput, AudioSpan]:
    """Row 0 holds one clip of several windows: its ``n_tokens`` audio tokens are ``seconds_per_token`` apart
    (the model's ``seconds_per_audio_token``), and window w starts at ``w * window_seconds`` (a clip's later
    windows continue its time axis). Returns the model's input object and the clip's span, for further checks."""
    assert model.cfg.seconds_per_audio_token == pytest.approx(seconds_per_token)
    built = model.to_inputs(**inputs)
    (span,) = built.audio_spans[0]
    assert len(span) == n_tokens
    times = built.token_times()[0, span.start : span.end, 0]
    window, token = torch.arange(len(span)) // tokens_per_window, torch.arange(len(span)) % tokens_per_window
    torch.testing.assert_close(times, window * window_seconds + token * seconds_per_token)
    return built, span


# --- loading -------------------------------------------------------------------------------------
def assert_loads_offline(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    hf: torch.nn.Module,
    inputs: dict,
    family: str,
    saved_processor=None,
    save_hf: bool = True,
    **from_pretrained_kwargs,
) -> HookedAudioTransformer:
    """``from_pretrained`` of a directory written by ``save_pretrained`` works with the hub offline, finds the
    family (and ``saved_processor``, when one is saved with the model) and matches ``hf``. ``save_hf=False``:
    the caller already wrote the checkpoint (e.g. a full omni model around ``hf``). Returns the loaded model."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if save_hf:
        hf.save_pretrained(directory)
    if saved_processor is not None:
        saved_processor.save_pretrained(directory)
    model = HookedAudioTransformer.from_pretrained(str(directory), **from_pretrained_kwargs)
    assert model.cfg.family == family
    if saved_processor is not None:
        assert model.processor is not None
    assert_matches_hf(model, hf, inputs)
    return model


def real_config(name: str) -> tuple[PretrainedConfig, ModelFamily, HookedAudioConfig]:
    """A real checkpoint's HF config (from ``model_configs``), its family and our config mapped from it."""
    hf_config = model_configs.hf_config(name)
    family = family_for_model_type(hf_config.model_type)
    return hf_config, family, family.to_config(hf_config)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_meta_parameter_count_matches(
    cfg: HookedAudioConfig,
    hf_model_class: type,
    hf_config: PretrainedConfig,
    not_reimplemented: Callable[[torch.nn.Module], int] = lambda theirs: 0,
) -> tuple[int, torch.nn.Module]:
    """Built on the meta device (no memory), our model has exactly HF's parameter count, less the parts this
    library leaves out (``not_reimplemented(hf_model)``, e.g. a vision tower). Returns our count and HF's model."""
    with torch.device("meta"):
        ours = HookedAudioTransformer(cfg)
        theirs = hf_model_class(hf_config)
    n_ours = count_parameters(ours)
    assert n_ours == count_parameters(theirs) - not_reimplemented(theirs)
    return n_ours, theirs
