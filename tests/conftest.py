"""Tiny random Qwen2-Audio models, tokenizers and inputs, built offline for the tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

from hooked_audio import HookedAudioTransformer

# The test models are tiny: one thread is faster than two fighting over them (and CI has 2 cores).
torch.set_num_threads(1)

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
    torch.manual_seed(seed)
    config = tiny_hf_config(n_kv_heads)
    config._attn_implementation = "eager"
    model = Qwen2AudioForConditionalGeneration(config).eval()
    randomize_norms_and_biases(model, seed)
    # Random init leaves the audio path tiny next to the text path; scale the projector up so the
    # audio really moves the logits and a broken splice cannot hide behind small numbers.
    with torch.no_grad():
        model.model.multi_modal_projector.linear.weight.mul_(20)
    return model


def randomize_norms_and_biases(model: torch.nn.Module, seed: int) -> None:
    """HF initialises norm weights to 1 and biases to 0, which would hide a mis-mapped norm or bias."""
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=gen))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))


def make_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_processor() -> Qwen2AudioProcessor:
    feature_extractor = WhisperFeatureExtractor(
        feature_size=N_MELS, sampling_rate=16000, hop_length=160, chunk_length=1, n_fft=400
    )
    return Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=make_tokenizer(), chat_template=CHAT_TEMPLATE)


def n_audio_tokens(mel_frames: int) -> int:
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def make_inputs(clips_per_row: list[list[int]], text_lengths: list[int] | None = None, seed: int = 0) -> dict:
    """HF-style inputs: rows of [text, audio, text, audio, ...], left-padded; clip sizes in mel frames."""
    gen = torch.Generator().manual_seed(seed)
    rows, frames = [], []
    for r, clips in enumerate(clips_per_row):
        n_text = (text_lengths or [4] * len(clips_per_row))[r]
        row = [int(t) for t in torch.randint(6, len(VOCAB), (n_text,), generator=gen)]
        for mel in clips:
            row += [VOCAB["<|audio_bos|>"]] + [AUDIO_TOKEN_ID] * n_audio_tokens(mel) + [VOCAB["<|audio_eos|>"]]
            row += [int(t) for t in torch.randint(6, len(VOCAB), (2,), generator=gen)]
            frames.append(mel)
        rows.append(row)
    width = max(map(len, rows))
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, width - len(row):] = torch.tensor(row)
        attention_mask[r, width - len(row):] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if frames:
        features = torch.randn(len(frames), N_MELS, 2 * N_CTX, generator=gen)
        mask = torch.zeros(len(frames), 2 * N_CTX, dtype=torch.long)
        for i, mel in enumerate(frames):
            mask[i, :mel] = 1
            features[i, :, mel:] = -0.8  # what the feature extractor's padding looks like
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
