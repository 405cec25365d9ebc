"""Tiny random Qwen2-Audio models, tokenizers and inputs, built offline for the tests.

Shapes are checked at run time in the test session: the jaxtyping annotations of the model, its components
and encoders (``Float[torch.Tensor, "batch pos d_model"]``, ...) are enforced by beartype on every call, so
an annotation that disagrees with what the code does fails the suite. The import hook must be installed
before ``hooked_audio`` is first imported, hence at the very top of this file. ``HOOKED_AUDIO_SHAPE_CHECKS=0``
turns the checks off (to tell a shape failure from another one, or to time the suite without them).
"""

from __future__ import annotations

import os
import shutil
import sys

from jaxtyping import install_import_hook

CHECKED_MODULES = [
    "hooked_audio.model", "hooked_audio.components", "hooked_audio.encoders", "hooked_audio.cache",
    "hooked_audio.kv_cache", "hooked_audio.weight_views", "hooked_audio.audio.inputs",
    "hooked_audio.analysis.encoder_patching",  # generation and analysis validate their own arguments, with clearer errors
]
if os.environ.get("HOOKED_AUDIO_SHAPE_CHECKS", "1") != "0":
    if "hooked_audio" in sys.modules:  # imported before this conftest (a plugin?): the hook would not apply
        raise RuntimeError("hooked_audio was imported before tests/conftest.py could install jaxtyping's shape checks")
    install_import_hook(CHECKED_MODULES, "beartype.beartype")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from family_harness import (  # noqa: F401  (tests import some of these from conftest)
    build_tiny_hf_model, left_padded, n_audio_tokens, padded_features, random_words, randomize_norms_and_biases,
    tiny_feature_extractor, word_level_tokenizer,
)
from transformers import (  # noqa: E402
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
)

from hooked_audio import HookedAudioTransformer  # noqa: E402

# The test models are tiny: one thread is faster than two fighting over them (and CI has 2 cores). The modules
# that run the toy organisms over hundreds of clips are about a fifth faster on both cores.
torch.set_num_threads(1)
HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="needs Debian's espeak-ng (the speech tasks and the multi-event task's word)")
ORGANISM_MODULES = {
    "test_toy", "test_toy_tasks", "test_toy_textual", "test_toy_voxtral", "test_toy_depth", "test_where_to_listen",
    "test_fusion_tracing", "test_listening_heads", "test_listening_heads_textual", "test_text_dominance", "test_back_patching", "test_audiolens",
}


# The suite runs on pytest-xdist workers (``-n auto`` in pyproject.toml), one per core: then every worker keeps to
# one thread. In one process (``python -m pytest -n 0``) the organism modules take both cores.
IN_A_WORKER = "PYTEST_XDIST_WORKER" in os.environ


@pytest.fixture(autouse=True)
def _threads_for_the_module(request):
    torch.set_num_threads(2 if request.module.__name__ in ORGANISM_MODULES and not IN_A_WORKER else 1)


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """A test that turns autograd off globally must not turn it off for the next module on the same worker."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """One xdist group per test module (its module-scoped fixtures, such as a toy organism's clips, are then built
    by one worker only), except the tutorials: each is its own subprocess, so they spread over the workers."""
    for item in items:
        if item.module.__name__ != "test_tutorials":  # ungrouped items go to whichever worker is free
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
WORDS = "what is said in the audio ? answer yes no hello world one two three four five \n user assistant system".split(" ")
VOCAB = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
AUDIO_TOKEN_ID = VOCAB["<|AUDIO|>"]
N_MELS, N_CTX = 16, 50  # 100 mel frames: a 1 s window, 25 audio tokens per full clip
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} \n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|> \n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant \n{% endif %}"
)


def tiny_hf_config(n_kv_heads: int = 4, vocab_size: int = 64) -> Qwen2AudioConfig:
    return Qwen2AudioConfig(
        audio_config=dict(
            d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
            num_mel_bins=N_MELS, max_source_positions=N_CTX,
        ),
        text_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=n_kv_heads,
            intermediate_size=128, vocab_size=vocab_size, max_position_embeddings=512, rms_norm_eps=1e-6,
            pad_token_id=0, eos_token_id=VOCAB["<|im_end|>"],
        ),
        audio_token_index=AUDIO_TOKEN_ID,
    )


def make_hf_model(n_kv_heads: int = 4, seed: int = 0) -> Qwen2AudioForConditionalGeneration:
    return build_tiny_hf_model(
        Qwen2AudioForConditionalGeneration, tiny_hf_config(n_kv_heads), seed,
        louder={"model.multi_modal_projector.linear.weight": 20},
    )


def make_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = word_level_tokenizer(VOCAB, "<|endoftext|>", "<|im_end|>", SPECIAL[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_processor() -> Qwen2AudioProcessor:
    return Qwen2AudioProcessor(
        feature_extractor=tiny_feature_extractor(N_MELS, chunk_length=1), tokenizer=make_tokenizer(),
        chat_template=CHAT_TEMPLATE,
    )


def make_inputs(clips_per_row: list[list[int]], text_lengths: list[int] | None = None, seed: int = 0) -> dict:
    """HF-style inputs: rows of [text, audio, text, audio, ...], left-padded; clip sizes in mel frames."""
    gen = torch.Generator().manual_seed(seed)
    rows, frames = [], []
    for r, clips in enumerate(clips_per_row):
        row = random_words(gen, (text_lengths or [4] * len(clips_per_row))[r], 6, len(VOCAB))
        for mel in clips:
            row += [VOCAB["<|audio_bos|>"]] + [AUDIO_TOKEN_ID] * n_audio_tokens(mel) + [VOCAB["<|audio_eos|>"]]
            row += random_words(gen, 2, 6, len(VOCAB))
            frames.append(mel)
        rows.append(row)
    input_ids, attention_mask = left_padded(rows)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if frames:
        features, mask = padded_features(frames, N_MELS, 2 * N_CTX, gen)
        inputs.update(input_features=features, feature_attention_mask=mask)
    return inputs


@pytest.fixture(scope="session")
def hf_model():
    return make_hf_model()


@pytest.fixture(scope="session")
def model(hf_model):
    return HookedAudioTransformer.from_hf_model(hf_model, processor=make_processor())


@pytest.fixture
def audio_inputs():
    return make_inputs([[100]])


def sine(freq: float, seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
