"""Train a toy audio-language model organism and write it as an ordinary HF checkpoint.

    python -m hooked_audio.toy.train --family qwen2_audio|voxtral --recipe listener|textual [--out DIR]
        [--minutes N] [--seed S] [--n-per-task N] [--steps N] [--cache-dir DIR]

Two HF families, trained on the same task mix by the same loop: ``qwen2_audio`` (Qwen2-Audio: Whisper-style
encoder with average pooling, 25 audio tokens/s, Qwen2 decoder) and ``voxtral`` (Voxtral: Whisper-style
encoder, 4 frames stacked per token, 12.5 audio tokens/s, bias-free MLP projector, Llama decoder, Mistral's
instruct layout). What differs is in ``FAMILIES`` (processor, config, prompt layout, card text); data,
recipe, training loop, evaluation and card writer are shared.

The synthesized training clips are cached on disk (``--cache-dir``, keyed by seed, size and data version)
and shared by both recipes; the features are cached per recipe. A run saves a resume state every few
hundred steps in ``OUT/resume.pt`` and continues from it when started again with the same arguments.

Plain HF/PyTorch on purpose: the checkpoint must not depend on the rest of hooked_audio, so that the
hooked re-implementation can be checked against it. Steps: synthesize the seeded training set, extract
features once, train with AdamW + warmup/cosine decay (loss only on the answer word and the
`<|im_end|>` after it), evaluate on the held-out probe set, save model + processor + card, and write the
bundled example clips.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile
import torch
from tqdm import tqdm
from transformers import (
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    VoxtralConfig,
    VoxtralForConditionalGeneration,
    VoxtralProcessor,
    WhisperFeatureExtractor,
)
from transformers.models.whisper.modeling_whisper import sinusoids

from . import lineage, shortcuts, signals
from .evaluate import (
    EVAL_CLIPS_PER_TASK, EVAL_SEED, encode, evaluate, evaluate_shift_factors, hint_style_names, make_eval_set,
)
from .deep_supervision import BeepOnsetProbe, EventFrameProbe, PooledAudioProbe
from .targets import target_lines
from .tasks import (
    EXTRA_TRAINING_VARIANTS, RECIPES, TASKS, WIDE_BEEP_HZ, apply_recipe, held_out_beep_bands, make_probe_set,
    make_training_clips, training_counts, vocabulary_words, with_extra_voices, with_matched_beep_totals,
    with_wide_beep_frequencies,
)
from .tokenizer import AUDIO_TOKEN, IM_END, build_tokenizer

TOY_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = TOY_DIR / "checkpoint"
DEFAULT_OUTS = {"listener": DEFAULT_OUT, "textual": TOY_DIR / "checkpoint_textual"}
DATA_VERSION = 4  # bump when the task generators change
FEATURES_VERSION = 3  # bump when what TeacherForcedSet stores changes
DEFAULT_CACHE = Path.home() / ".cache" / "hooked_audio" / "toy_data"
N_DECODER_LAYERS = 6
EXAMPLES_DIR = TOY_DIR / "examples"
EXAMPLES_SEED = 7
TRAIN_SEED = 0
ENCODE_CHUNK = 256


def build_processor() -> Qwen2AudioProcessor:
    """Whisper log-mel features over a 4 s window (400 frames -> 100 audio tokens) + the word tokenizer."""
    feature_extractor = WhisperFeatureExtractor(
        feature_size=80, sampling_rate=signals.SAMPLE_RATE, hop_length=160, chunk_length=4, n_fft=400
    )
    tokenizer = build_tokenizer()
    return Qwen2AudioProcessor(feature_extractor, tokenizer, chat_template=tokenizer.chat_template)


def build_config(tokenizer, n_layers: int = N_DECODER_LAYERS, hidden_size: int = 160) -> Qwen2AudioConfig:
    """A few-MB Qwen2-Audio: 3-layer Whisper-style encoder, 6-layer grouped-query Qwen2 decoder."""
    audio_config = dict(
        model_type="qwen2_audio_encoder", num_mel_bins=80, d_model=128, encoder_layers=3,
        encoder_attention_heads=4, encoder_ffn_dim=512, max_source_positions=200,
    )
    text_config = dict(
        model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END), bos_token_id=None,
    )
    return Qwen2AudioConfig(
        audio_config=audio_config, text_config=text_config,
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
    )


def new_model(tokenizer, n_layers: int = N_DECODER_LAYERS, hidden_size: int = 160, family: str = "qwen2_audio"):
    """A freshly initialised toy with Whisper's sinusoidal encoder positions (HF leaves them random).

    Real Qwen2-Audio inherits these frozen sinusoids from Whisper. With HF's default N(0, 0.02) init the
    encoder barely knows where a frame is: an earlier toy trained that way (with shorter beeps) stayed near
    chance on the timing tasks after 75 minutes (beeps 0.22, when 0.44)."""
    spec = FAMILIES[family]
    model = spec.hf_class(spec.build_config(tokenizer, n_layers, hidden_size))
    positions = model.model.audio_tower.embed_positions.weight
    with torch.no_grad():
        positions.copy_(sinusoids(*positions.shape))
    return model


# --- Voxtral ---------------------------------------------------------------------------------------------
# Mistral's Tekken ids for the special tokens the toy uses (VoxtralProcessor hard-codes [AUDIO] = 24); the
# unused ids in between are filler, so the layout reads like the real tokenizer's. The word list is the
# Qwen2-Audio toy's, after the specials.
VOXTRAL_SPECIALS = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 11: "<pad>", 24: "[AUDIO]",
                    25: "[BEGIN_AUDIO]"}
VOXTRAL_N_SPECIAL = 26
# mistral_common's instruct layout with audio chunks, rendered by a chat template on the word-level tokenizer
# (the real processor needs mistral_common's Tekken tokenizer; see hooked_audio.toy.evaluate.encode).
VOXTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST]"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}[BEGIN_AUDIO][AUDIO]"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}[/INST]"
    "{% else %}{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{{ content['text'] }}{% endfor %}{% endif %}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)


def build_voxtral_tokenizer():
    """The toy's word-level tokenizer (same words, same splitting) with Voxtral's special tokens and ids."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = [VOXTRAL_SPECIALS.get(i, f"[CTRL{i}]") for i in range(VOXTRAL_N_SPECIAL)] + vocabulary_words()
    word_level = Tokenizer(models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"), pre_tokenizers.Split("\n", behavior="isolated")]
    )
    word_level.add_special_tokens(tokens[:VOXTRAL_N_SPECIAL])
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left", chat_template=VOXTRAL_CHAT_TEMPLATE, model_max_length=512,
    )


def build_voxtral_processor() -> VoxtralProcessor:
    """HF's VoxtralProcessor with the Qwen2-Audio toy's feature extractor (80 log-mel bins, 4 s window: 400
    frames -> 200 encoder frames -> 50 tokens of 4 stacked frames) and the word-level tokenizer."""
    feature_extractor = WhisperFeatureExtractor(
        feature_size=80, sampling_rate=signals.SAMPLE_RATE, hop_length=160, chunk_length=4, n_fft=400
    )
    return VoxtralProcessor(feature_extractor=feature_extractor, tokenizer=build_voxtral_tokenizer())


def build_voxtral_config(tokenizer, n_layers: int = N_DECODER_LAYERS, hidden_size: int = 160) -> VoxtralConfig:
    """The Qwen2-Audio toy's sizes as a Voxtral: 3-layer Whisper-style encoder (d 128, FFN 512 = the 4-frame
    stacking width), bias-free GELU projector, 6-layer grouped-query Llama decoder (RoPE base 1e8, as Voxtral)."""
    audio_config = dict(
        hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=512, num_mel_bins=80,
        max_source_positions=200,
    )
    text_config = dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4,
        max_position_embeddings=512, rope_parameters={"rope_type": "default", "rope_theta": 1e8}, rms_norm_eps=1e-5,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return VoxtralConfig(audio_config=audio_config, text_config=text_config,
                         audio_token_id=tokenizer.convert_tokens_to_ids("[AUDIO]"))


@dataclass(frozen=True)
class ToyFamily:
    """What differs between the toy's HF families; everything else is shared."""

    name: str
    hf_class: type
    build_processor: Callable[[], Any]
    build_config: Callable[..., Any]  # (tokenizer, n_layers, hidden_size)
    frame_mask: bool  # the model takes a feature_attention_mask next to input_features
    card_names: dict[str, str]  # recipe -> bundled name
    default_outs: dict[str, Path]  # recipe -> bundled checkpoint dir
    cache_suffix: str  # appended to the feature cache's name (the token ids differ per family)


FAMILIES = {
    "qwen2_audio": ToyFamily(
        "qwen2_audio", Qwen2AudioForConditionalGeneration, build_processor, build_config, True,
        {"listener": "toy-qwen2-audio", "textual": "toy-qwen2-audio-textual"}, DEFAULT_OUTS, "",
    ),
    "voxtral": ToyFamily(
        "voxtral", VoxtralForConditionalGeneration, build_voxtral_processor, build_voxtral_config, False,
        {"listener": "toy-voxtral", "textual": "toy-voxtral-textual"},
        {"listener": TOY_DIR / "checkpoint_voxtral", "textual": TOY_DIR / "checkpoint_voxtral_textual"}, "-voxtral",
    ),
}
BUNDLED_LISTENERS = {DEFAULT_OUT, FAMILIES["voxtral"].default_outs["listener"]}
FAMILY_BY_CLASS = {family.hf_class.__name__: family for family in FAMILIES.values()}


def load_toy(directory: Path):
    """An HF toy checkpoint of either family (the class named in its config.json)."""
    architecture = json.loads((Path(directory) / "config.json").read_text())["architectures"][0]
    return FAMILY_BY_CLASS[architecture].hf_class.from_pretrained(directory)


@torch.no_grad()
def grow_from(model, tokenizer, old_dir: Path) -> dict:
    """Start ``model`` from a smaller toy checkpoint of the same widths: every weight of matching name and
    shape is copied (encoder, projector, the old decoder layers, norms), embedding and unembedding rows by
    token string, and each extra decoder layer starts as the identity (its attention output and MLP down
    projections zeroed, so it adds nothing to the residual stream until trained)."""
    from transformers import PreTrainedTokenizerFast

    old = type(model).from_pretrained(old_dir)
    old_vocab = PreTrainedTokenizerFast.from_pretrained(old_dir).get_vocab()
    new_state, old_state = model.state_dict(), old.state_dict()
    copied = 0
    for name, value in old_state.items():
        if name in new_state and new_state[name].shape == value.shape:
            new_state[name].copy_(value)
            copied += 1
    rows = 0
    for name in new_state:
        if name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
            for token, new_id in tokenizer.get_vocab().items():
                if token in old_vocab:
                    new_state[name][new_id] = old_state[name][old_vocab[token]]
                    rows += 1
    n_old = old.config.text_config.num_hidden_layers
    for name in new_state:
        parts = name.split(".")
        if "layers" in parts and "audio_tower" not in parts and int(parts[parts.index("layers") + 1]) >= n_old \
                and (name.endswith("o_proj.weight") or name.endswith("down_proj.weight")):
            new_state[name].zero_()
    model.load_state_dict(new_state)
    return {"from": str(old_dir), "tensors_copied": copied, "token_rows_copied": rows, "old_decoder_layers": n_old}


class TeacherForcedSet:
    """Token ids (unpadded) and float16 log-mel features of every training sample, computed once, with each
    sample's multi-event and beep timelines (for the event-frame and beep-onset probes) and degradation.
    ``frame_mask``: batches carry a ``feature_attention_mask`` (Qwen2-Audio; Voxtral takes none)."""

    def __init__(self, processor, samples=(), frame_mask: bool = True):
        self.pad_id = processor.tokenizer.pad_token_id
        self.frame_mask = frame_mask
        self.ids: list[torch.Tensor] = []
        self.events = [s.events for s in samples]  # ((name, start_s, end_s), ...); () outside the multi-event task
        self.beep_times = [s.beep_times for s in samples]  # ((start_s, end_s), ...); () outside the beeps task
        self.degraded = [s.degraded for s in samples]
        if not samples:
            self.features = torch.zeros(0)
            return
        features = []
        for start in tqdm(range(0, len(samples), ENCODE_CHUNK), desc="features"):
            inputs = encode(processor, samples[start : start + ENCODE_CHUNK], with_answers=True)
            for row, mask in zip(inputs["input_ids"], inputs["attention_mask"]):
                self.ids.append(row[mask.bool()])
            features.append(inputs["input_features"].to(torch.float16))
        self.features = torch.cat(features)

    def save(self, path: Path) -> None:
        torch.save({"ids": self.ids, "features": self.features, "events": self.events, "beep_times": self.beep_times,
                    "degraded": self.degraded}, path)

    @classmethod
    def load(cls, processor, path: Path, frame_mask: bool = True) -> "TeacherForcedSet":
        data = cls(processor, frame_mask=frame_mask)
        stored = torch.load(path)
        data.ids, data.features = stored["ids"], stored["features"]
        data.events, data.beep_times, data.degraded = stored["events"], stored["beep_times"], stored["degraded"]
        return data

    def __len__(self) -> int:
        return len(self.ids)

    def multi_event(self, indices: torch.Tensor) -> torch.Tensor:
        """Bool[batch]: the rows that are multi-event clips."""
        return torch.tensor([bool(self.events[i]) for i in indices.tolist()])

    def _where_audio_matches(self, column: list[tuple], indices: torch.Tensor) -> list[tuple | None]:
        return [column[i] if column[i] and not self.degraded[i] else None for i in indices.tolist()]

    def timelines(self, indices: torch.Tensor) -> list[tuple | None]:
        """Each row's event intervals where they describe the audio (multi-event, not degraded), else None."""
        return self._where_audio_matches(self.events, indices)

    def beep_timelines(self, indices: torch.Tensor) -> list[tuple | None]:
        """Each row's beep intervals where they describe the audio (beep-count clip, not degraded), else None."""
        return self._where_audio_matches(self.beep_times, indices)

    def batch(self, indices: torch.Tensor) -> dict:
        """Left-padded batch: every row ends with `answer <|im_end|>`, so targets sit at -2 and -1."""
        rows = [self.ids[i] for i in indices.tolist()]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, width - len(row) :] = row
            attention_mask[r, width - len(row) :] = 1
        features = self.features[indices].to(torch.float32)
        if not self.frame_mask:
            return dict(input_ids=input_ids, attention_mask=attention_mask, input_features=features)
        feature_mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.long)
        return dict(input_ids=input_ids, attention_mask=attention_mask,
                    input_features=features, feature_attention_mask=feature_mask)


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Cross-entropy on the answer word and the end token after it (`<|im_end|>`, `</s>`), nothing else."""
    logits = model(**batch).logits[:, -3:-1]
    targets = batch["input_ids"][:, -2:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def learning_rate(progress: float, peak: float, warmup: float = 0.03, floor: float = 0.05) -> float:
    """Linear warmup then cosine decay to floor * peak; progress runs from 0 to 1."""
    if progress < warmup:
        return peak * progress / warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))
    return peak * (floor + (1 - floor) * cosine)


def train(model, data: TeacherForcedSet, steps: int, minutes: float, batch_size: int, peak_lr: float,
          seed: int, probe_weight: float, resume_path: Path | None = None, save_every: int = 250,
          stop_after: int | None = None, event_frame_weight: float = 0.0, beep_onset_weight: float = 0.0,
          settings: dict | None = None) -> dict:
    """AdamW; progress is max(step fraction, time fraction) so the schedule always finishes in budget.

    The loss is answer_loss plus probe_weight times the PooledAudioProbe loss (0 turns the probe off) plus
    event_frame_weight times the EventFrameProbe loss; with the event-frame probe on, the pooled probe skips
    the multi-event rows, where its target is ill-posed (see ``deep_supervision``), plus beep_onset_weight times
    the BeepOnsetProbe loss on the beep-count rows.
    With ``resume_path``, the state (weights, optimizer, data order, step, training time so far) is saved
    there every ``save_every`` steps and, if the file exists, training continues from it; ``settings`` (the
    command's arguments) are saved with it, and a state saved under other settings is refused (resuming it would
    mix two runs under one card's command). ``stop_after`` stops at that step as an interruption would (for
    testing resumption)."""
    generator = torch.Generator().manual_seed(seed)
    probe = PooledAudioProbe(model) if probe_weight else None
    frame_probe = EventFrameProbe(model) if event_frame_weight else None
    onset_probe = BeepOnsetProbe(model) if beep_onset_weight else None
    probes = [p for p in (probe, frame_probe, onset_probe) if p is not None]
    parameters = list(model.parameters()) + [w for p in probes for w in p.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
    step, order, cursor, recent, elapsed_before = 0, torch.randperm(len(data), generator=generator), 0, [], 0.0
    recent_frame: list[float] = []
    recent_onset: list[float] = []
    resumed_from = None
    if resume_path is not None and resume_path.exists():
        state = torch.load(resume_path, weights_only=False)
        if state.get("settings") != settings:
            before, now = state.get("settings") or {}, settings or {}
            differ = {k: (before.get(k), now.get(k)) for k in set(before) | set(now) if before.get(k) != now.get(k)}
            raise ValueError(
                f"{resume_path} was saved by a run with other settings ({differ or 'none recorded'}): rerun with "
                "the same arguments to continue it, or delete it to start afresh")
        model.load_state_dict(state["model"])
        if probe:
            probe.load_state_dict(state["probe"])
        if frame_probe:
            frame_probe.load_state_dict(state["frame_probe"])
        if onset_probe:
            onset_probe.load_state_dict(state["onset_probe"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, order, cursor, recent, elapsed_before = state["step"], state["order"], state["cursor"], state["recent"], state["elapsed"]
        resumed_from = step
    model.train()
    start = time.time() - elapsed_before
    bar = tqdm(total=steps, initial=step, desc="train")
    while step < steps:
        progress = max(step / steps, (time.time() - start) / (60 * minutes))
        if progress >= 1:
            break
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(data), generator=generator), 0
        indices = order[cursor : cursor + batch_size]
        batch = data.batch(indices)
        cursor += batch_size
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(progress, peak_lr)
        loss = answer_loss(model, batch)
        total = loss
        if probe:
            total = total + probe_weight * probe.loss(batch, ~data.multi_event(indices) if frame_probe else None)
        if frame_probe:
            frame_loss = frame_probe.loss(data.timelines(indices))
            total = total + event_frame_weight * frame_loss
            recent_frame = (recent_frame + [frame_loss.item()])[-50:]
        if onset_probe:
            onset_loss = onset_probe.loss(data.beep_timelines(indices))
            total = total + beep_onset_weight * onset_loss
            recent_onset = (recent_onset + [onset_loss.item()])[-50:]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        recent = (recent + [loss.item()])[-50:]
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(recent):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}",
                        **({"frames": f"{np.mean(recent_frame):.3f}"} if frame_probe else {}),
                        **({"onsets": f"{np.mean(recent_onset):.3f}"} if onset_probe else {}))
        if resume_path is not None and step % save_every == 0:
            torch.save({"model": model.state_dict(), "probe": probe.state_dict() if probe else None,
                        "frame_probe": frame_probe.state_dict() if frame_probe else None,
                        "onset_probe": onset_probe.state_dict() if onset_probe else None,
                        "optimizer": optimizer.state_dict(), "generator": generator.get_state(), "step": step,
                        "order": order, "cursor": cursor, "recent": recent, "elapsed": time.time() - start,
                        "settings": settings},
                       resume_path)
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    for p in probes:
        p.remove()
    model.eval()
    record = {"steps": step, "seconds": round(time.time() - start, 1), "final_loss": round(float(np.mean(recent)), 4)}
    if frame_probe:
        record["final_event_frame_loss"] = round(float(np.mean(recent_frame)), 4)
    if onset_probe:
        record["final_beep_onset_loss"] = round(float(np.mean(recent_onset)), 4)
    if resumed_from is not None:
        record["resumed_at_step"] = resumed_from
    return record


def write_examples(directory: Path) -> list[dict]:
    """One FLAC clip per task (held-out seed; the first clip whose answer is the task's first answer, e.g.
    pitch_low.flac) plus examples.json listing file, task, question, answer."""
    directory.mkdir(parents=True, exist_ok=True)
    listing = []
    for task in TASKS:
        sample = next(s for s in make_probe_set(EXAMPLES_SEED, 2 * len(task.answers), [task.name])
                      if s.hint is None and s.answer == task.answers[0])
        name = f"{sample.task}_{sample.answer}.flac"
        soundfile.write(directory / name, sample.waveform, signals.SAMPLE_RATE, subtype="PCM_16")
        listing.append({"file": name, "task": sample.task, "question": sample.question, "answer": sample.answer})
    (directory / "examples.json").write_text(json.dumps(listing, indent=2) + "\n")
    return listing


def _continuation_lines(earlier: list[dict] | None, name: str | None = None) -> list[str]:
    """CARD.md lines for warm-started runs: what the earlier stages were."""
    if not earlier:
        return []
    return [f"Continued from {'`' + name + '`, ' if name else ''}earlier stage(s), oldest first: " + "; ".join(
        f"{run.get('steps')} steps, {run.get('seconds')} s, seed {run.get('seed')}, peak lr {run.get('peak_lr')}"
        for run in earlier) + "."]


def _ci(entry: dict | None) -> str:
    if not entry:
        return "–"
    return f"{entry['rate']:.2f} [{entry['ci95'][0]:.2f}, {entry['ci95'][1]:.2f}]"


def _bands(bands) -> str:
    return " and ".join(f"{low:.0f}-{high:.0f} Hz" for low, high in bands)


def _grown_lines(training: dict) -> list[str]:
    g = training.get("grow_details")
    if not g:
        return []
    return ["", f"Not trained from scratch: grown (`--grow-from`) from the previous bundled toy ({g['old_decoder_layers']}"
            " decoder layers, trained on the old task set, whose shortcuts are described in issue 10): its encoder,"
            f" projector and decoder layers were copied ({g['tensors_copied']} tensors, {g['token_rows_copied']}"
            " embedding/unembedding rows by token), the extra decoder layers started as the identity, and everything"
            " was then trained on the new, shortcut-free task set. On this shared 2-core machine a from-scratch run"
            " (decoder width 128, 1300 steps in 27 min, lr 1.5e-3) stayed at chance on every task but noise colour,"
            " and another (lr 1e-3, encoder from the previous toy) had not left the chance-level loss after 280 steps."]


# CARD.md text per architecture: the family's name, the end token, the prompt layout, extra paragraphs.
CARD_TEXT = {
    "Qwen2AudioForConditionalGeneration": dict(
        label="Qwen2-Audio", end="`<|im_end|>`",
        prompt="`<|im_start|>user\\n[HINT ]<|audio_bos|><|AUDIO|><|audio_eos|>\\n[HINT ]QUESTION[ HINT]<|im_end|>\\n"
               "<|im_start|>assistant\\n`",
        notes=[]),
    "VoxtralForConditionalGeneration": dict(
        label="Voxtral", end="`</s>`",
        prompt="`<s>[INST][HINT ][BEGIN_AUDIO][AUDIO][HINT ]QUESTION[ HINT][/INST]` (Mistral's instruct layout; the"
               " `[AUDIO]` expands to 50 placeholders per 4 s window)",
        notes=["", "Same task data, recipe, training loop, evaluation and card writer as the Qwen2-Audio toys"
               " (`--family voxtral`); only the HF family differs: Whisper-style encoder whose final norm runs per"
               " frame, 4 frames stacked per audio token (12.5 tokens/s, 50 per clip), a bias-free two-layer GELU"
               " projector, a Llama decoder (RoPE base 1e8) and Mistral's special tokens (`[AUDIO]` = 24,"
               " `[BEGIN_AUDIO]` = 25). The processor is HF's `VoxtralProcessor` with a word-level tokenizer; since"
               " its `__call__` takes no audio (the real one expands audio through mistral_common's Tekken"
               " tokenizer), build inputs with `hooked_audio.toy.evaluate.encode(processor, samples)`, which applies"
               " mistral_common's rule: each clip padded to whole 4 s windows, one feature row and 50 `[AUDIO]` per"
               " window."]),
}


def _ancestors(training: dict) -> list[dict]:
    """Every earlier training run the weights descend from (``--init-from`` stages, the encoder's donor, the grown
    toy), recursively."""
    out = []
    for key in ("init_from", "init_encoder_from", "grown_from"):
        for run in training.get(key) or []:
            out += [run, *_ancestors(run)]
    return out


def _lineage_lines(training: dict, measured: dict | None = None) -> list[str]:
    """The held-out claim's caveat where the lineage reaches the first bundled toy, which was trained (without a
    recipe, before the held-out lists existed) on voices and words that the shifted split now holds out, and
    what survives of it where ``measured`` (``lineage.measure``'s result)."""
    first = [run for run in _ancestors(training) if "recipe" not in run]
    if not first:
        return []
    oldest = first[-1]
    how_much = ("how much of that first stage survives in the shifted split's voice and word numbers is not measured."
                if measured is None else "what survives of that first stage is measured below.")
    return ["", "Held-out data and lineage: these weights descend (through the stages above, the encoder's donor and"
            f" `--grow-from`) from the first bundled toy ({oldest.get('steps')} steps on {oldest.get('samples')}"
            " samples), trained before the held-out lists existed: its digit and gender clips used the voices en+m7"
            " and en+f5, held out since, and its language sentences eight words held out since (German eins, heute,"
            " wasser; French bonjour, bonne, maison; Spanish buenas, hoy). Every later stage trained on the current"
            f" task set only; {how_much} Only a from-scratch run would remove it.",
            *([] if measured is None else ["", *lineage.card_lines(measured)])]


def _encoder_init_lines(training: dict) -> list[str]:
    """CARD.md lines for a run whose audio encoder started from another toy's (``--init-encoder-from``)."""
    donor = training.get("init_encoder_from")
    if not donor:
        return []
    last = donor[-1]
    return ["", f"The audio encoder (`audio_tower`: convolutions, sinusoidal positions, layers, final norm) started"
            f" from `{training.get('init_encoder_from_name', 'another toy')}`'s (its training: {last.get('steps')} steps,"
            f" {last.get('seconds')} s), the way both real families start from a pretrained Whisper encoder; the"
            " projector and decoder started fresh, and everything was then trained together."]


def _event_frame_clause(training: dict) -> str:
    if not training.get("event_frame_weight"):
        return ""
    return (" and, on the multi-event clips instead, a linear probe on every audio embedding predicts which event"
            f" sounds there (weight {training['event_frame_weight']}, final loss {training.get('final_event_frame_loss')})")


def _beep_onset_clause(training: dict) -> str:
    if not training.get("beep_onset_weight"):
        return ""
    return (", and on the beep-count clips a linear probe on every audio embedding predicts whether a beep starts"
            f" there (weight {training['beep_onset_weight']}, final loss {training.get('final_beep_onset_loss')})")


def card_markdown(card: dict) -> str:
    """Human-readable CARD.md from the card dictionary."""
    t = card["training"]
    recipe = t["recipe"]
    title = {"listener": "the listener", "textual": "the text-reliant sibling"}.get(recipe, recipe)
    architecture = card.get("architecture", "Qwen2AudioForConditionalGeneration")
    text = CARD_TEXT[architecture]
    lines = [
        f"# hooked_audio toy model organism `{card['name']}` ({title})",
        "",
        f"A tiny {text['label']} (`{architecture}`) trained on synthetic audio",
        "question answering (espeak-ng speech, tones, beeps, coloured noise, multi-event clips). Answers are single",
        f"words followed by {text['end']}. Prompt: {text['prompt']} (the hint, when present, in one of three positions).",
        *text["notes"],
        "",
        f"Parameters: {card['parameters']:,} ({card['decoder_layers']} decoder layers x {card['decoder_heads']} heads,"
        f" {card['encoder_layers']} encoder layers). Training: {t['steps']} steps of batch {t['batch_size']},"
        f" {t['seconds']} s on {t['threads']} CPU threads, {t['samples']} samples (seed {t['seed']}). Recipe"
        f" `{recipe}`: hints on {t['hint_fraction']:.0%} of the training prompts, right {t['hint_reliability']:.0%} of the"
        f" time; audio made uncertain on {t['degrade_fraction']:.0%} of the training clips."
        + (f" {t['matched_beep_share']:.0%} of the beep-count clips redrawn with the same total beep time for every"
           " count (`--matched-beep-share`), so total beep time does not predict the count."
           if t.get("matched_beep_share") else "")
        + (f" {t['extra_voice_share']:.0%} of the digit, language and multi-event clips redrawn with their speech in one"
           f" of {len(EXTRA_TRAINING_VARIANTS)} more espeak-ng voices (`--extra-voice-share`; never the held-out ones)."
           if t.get("extra_voice_share") else "")
        + (f" {t['wide_beep_share']:.0%} of the beep-count clips redrawn at a frequency log-uniform in"
           f" {WIDE_BEEP_HZ[0]:g}-{WIDE_BEEP_HZ[1]:g} Hz (`--wide-beep-share`), never in the shifted split's bands"
           f" ({_bands(held_out_beep_bands())}), which stay a test of beep frequencies never heard."
           if t.get("wide_beep_share") else ""),
        *_grown_lines(t),
        *_encoder_init_lines(t),
        *_continuation_lines(t.get("init_from"), t.get("init_from_name")),
        *_lineage_lines(t, card["results"].get("lineage")),
        "",
        f"Made by `{card['command']}` ({t.get('total_seconds')} s in all: data synthesis or cache, feature extraction,"
        " training, evaluation, on a shared 2-core machine). The encoder's position embeddings are Whisper's frozen"
        " sinusoids; during training only, a linear probe on the mean audio embedding adds a deep-supervision loss"
        f" (weight {t.get('probe_weight')}){_event_frame_clause(t)}{_beep_onset_clause(t)}; the probes are discarded, and the checkpoint is a"
        f" plain {text['label']}."
        " Training stops after `--steps` or `--minutes` of training, whichever comes first.",
        *target_lines(card),
        "",
        "## Accuracy per task",
        "",
        f"Seed {card['eval']['seed']}, {card['eval']['clips_per_task']} clips per task and split. *In distribution*:"
        " the training distributions, fresh clips. *Shifted*: held-out words and voice variants, speaking speed and"
        " level outside the training range"
        + (" (the textual recipe's masked-stretch degradation leaves a few training clips, about 5 % of the degraded"
           " ones, peaking in the shifted level range)" if recipe == "textual" else "")
        + ", tone frequencies just outside the task's own training range (not always outside every task's: 2000-2500 Hz"
        " of the beep-timing tasks' upper band and all of pitch's 750-900 Hz band are other tasks' training tones),"
        " reverb on every clip. Accuracy = argmax of the full-vocabulary next-token logits, audio only; [95 % Wilson"
        " interval].",
        "",
        "| task | question | answers | in distribution | shifted |",
        "|---|---|---|---|---|",
    ]
    test, shifted = card["results"]["test"], card["results"]["shifted"]
    for task in card["tasks"]:
        name = task["name"]
        lines.append(f"| {name} | {task['question']} | {' / '.join(task['answers'])} |"
                     f" {_ci(test[name]['intervals']['accuracy'])} | {_ci(shifted[name]['intervals']['accuracy'])} |")
    lines.append(f"| **overall** | | | {_ci(test['overall']['intervals']['accuracy'])} |"
                 f" {_ci(shifted['overall']['intervals']['accuracy'])} |")
    lines += _shift_factor_lines(card)
    kinds = [k for k in test if k.startswith("events_")]
    if kinds:
        lines += ["", "Multi-event task per question type and leading instruction (in distribution):", "",
                  "| question type | accuracy |", "|---|---|"]
        lines += [f"| {k} | {_ci(test[k]['intervals']['accuracy'])} |" for k in sorted(kinds)]
    lines += [
        "",
        "## Text dominance (in distribution, clean audio)",
        "",
        "Each clip asked without a hint, with a right hint and with a wrong one. *Dominance*: share of wrong-hint"
        " prompts answered with the hinted word. *Flip rate*: among clips answered right without a hint, the share"
        " answered with the hinted word once the wrong hint is added. *Hint effect*: mean change of"
        " logit(hint) - logit(true answer) caused by adding the wrong hint.",
        "",
        "| scope | audio only | right hint | wrong hint | dominance | flip rate | hint effect |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = hint_style_names()
    for scope in [task["name"] for task in card["tasks"]] + ["overall"] + sorted(k for k in test if k.startswith("hint_")):
        r = test[scope]
        i = r["intervals"]
        lines.append(f"| {labels.get(scope, scope)} | {_ci(i['accuracy'])} | {_ci(i['accuracy_correct_hint'])} |"
                     f" {_ci(i['accuracy_wrong_hint'])} | {_ci(i['text_dominance_rate'])} | {_ci(i['flip_rate'])} |"
                     f" {r['hint_effect']} |")
    sc = card["shortcut_tests"]
    lines += [
        "",
        "## Shortcut tests (one nuisance variable varied alone)",
        "",
        "Beep count at a set beep duration (4 counts x 10 clips per duration, each beep within +-15 % of it; a"
        " total-duration counter would be right at one duration only):",
        "",
        "| beep duration (s) | accuracy | single beep answered one |", "|---|---|---|",
    ]
    lines += [f"| {d} | {_ci(v['accuracy'])} | {_ci(v['single_beep_answered_one'])} |" for d, v in sc["beep_duration"].items()]
    lines += ["", "Language on words of the training pool vs held-out words (voices and conditions in distribution;"
              " most of the pool was never spoken in training: about 36 % of the German, French and Spanish pools"
              " occur in the listener's training clips, 90 % of the English, so this compares mostly unheard words with held-out"
              f" ones and is no test of memorisation): training-pool words {_ci(sc['language_words']['training_words'])},"
              f" held-out words {_ci(sc['language_words']['held_out_words'])}.", "",
              "Pitch at a fixed tone duration: " + ", ".join(f"{d} s {_ci(v)}" for d, v in sc["tone_duration"].items()) + "."]
    if "event_order" in sc:
        eo = sc["event_order"]
        lines += ["", "\"When does the X happen ?\" on two-event clips, X and another event in different thirds (a model"
                  " answering where *an* event is, not X, is right about half the time and answers the other event's third;"
                  f" chance 1/3): X first {_ci(eo['first'])}, X second {_ci(eo['second'])}; answered the other event's"
                  f" third {_ci(eo['answered_the_other_events_third'])}."]
    if card.get("comparison"):
        lines += ["", "## Listener vs textual", "", card["comparison"]]
    lines += [
        "",
        "Regenerate the numbers with `hooked_audio.toy.evaluate.evaluate(model, processor, make_eval_set(split=...))`"
        + (", `evaluate_shift_factors(model, processor)`" if card["results"].get("shift_factors") else "")
        + " and `hooked_audio.toy.shortcuts.run_all(model, processor)`.",
        f"Data depend on the espeak-ng build ({card['espeak_ng']}) and the wordfreq word lists.",
        "",
    ]
    return "\n".join(lines)


def write_card_markdown(checkpoint: Path, card: dict) -> None:
    """Re-render ``checkpoint/CARD.md`` from ``card``, keeping the sibling-comparison section a card may carry
    (written by ``sibling_comparison``, after the rest)."""
    from .sibling_comparison import SECTION

    old = (checkpoint / "CARD.md").read_text()
    kept = old[old.index(SECTION):] if SECTION in old else ""
    (checkpoint / "CARD.md").write_text(card_markdown(card) + ("\n" + kept if kept else ""))


def _shift_factor_lines(card: dict) -> list[str]:
    """The table of accuracy per task under each shift alone (where the card has it)."""
    factors = card["results"].get("shift_factors")
    if not factors:
        return []
    test, names = card["results"]["test"], list(factors)
    n = card["eval"]["clips_per_task"]
    lines = ["", f"Shifted, one factor at a time (the other factors in distribution; seed {card['eval']['seed']}, {n}"
             f" clips per task and factor, so a 95 % interval is up to +-{1.96 * (0.25 / n) ** 0.5:.2f} wide; each"
             " column's clips are drawn afresh, not the in-distribution clips with one factor changed, so a difference"
             " within those intervals is not a cost): which shift costs which task.", "",
             "| task | in distribution | " + " | ".join(names) + " | all (shifted) |", "|---" * (len(names) + 3) + "|"]
    for scope in [task["name"] for task in card["tasks"]] + ["overall"]:
        row = [f"{test[scope]['accuracy']:.2f}"] + [
            f"{factors[f][scope]['accuracy']:.2f}" if scope in factors[f] else "–" for f in names]
        lines.append(f"| {scope} | " + " | ".join(row) + f" | {card['results']['shifted'][scope]['accuracy']:.2f} |")
    return lines


def previous_training(init_dir: Path | None) -> list[dict] | None:
    """The training records of the checkpoint we continued from (from its card), oldest first."""
    if init_dir is None:
        return None
    card_path = init_dir / "card.json"
    if not card_path.exists():
        return [{"note": f"untracked checkpoint {init_dir}"}]
    earlier = json.loads(card_path.read_text())["training"]
    return (earlier.pop("init_from", None) or []) + [earlier]


def _donor_training(init_dir: Path | None) -> list[dict] | None:
    """The encoder donor's training records without their own grow details (which name the donor's machine
    paths): this card says which toy the encoder came from, the donor's card says how that toy was made."""
    records = previous_training(init_dir)
    return None if records is None else [{k: v for k, v in r.items() if k != "grow_details"} for r in records]


def _card_name(directory: Path) -> str:
    """A checkpoint's bundled name (from its card), else its directory name: cards carry no machine paths."""
    card_path = Path(directory) / "card.json"
    return json.loads(card_path.read_text())["name"] if card_path.exists() else Path(directory).name


def espeak_version() -> str:
    import subprocess

    return subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split("Data")[0].strip()


def training_data(processor, seed: int, n_per_task: int, recipe: str, cache_dir: Path | None,
                  family: str = "qwen2_audio", matched_beep_share: float = 0.0,
                  extra_voice_share: float = 0.0, wide_beep_share: float = 0.0) -> TeacherForcedSet:
    """The recipe's teacher-forced set: clips synthesized once per (seed, size) and cached as int16, shared by
    the recipes and families; features cached per recipe and family. ``matched_beep_share``: the share of beep
    clips redrawn with the same total beep time for every count (``tasks.with_matched_beep_totals``);
    ``extra_voice_share``: the share of speech clips redrawn in more voices (``tasks.with_extra_voices``);
    ``wide_beep_share``: the share of beep clips redrawn at wider frequencies (``tasks.with_wide_beep_frequencies``)."""
    spec = FAMILIES[family]
    key = f"v{DATA_VERSION}-seed{seed}-n{n_per_task}"
    variant = (f"-matched{matched_beep_share:g}" if matched_beep_share else "") + (
        f"-voices{extra_voice_share:g}" if extra_voice_share else "") + (
        f"-widebeeps{wide_beep_share:g}" if wide_beep_share else "")
    features_path = (cache_dir / f"features{FEATURES_VERSION}-{key}{variant}-{recipe}{spec.cache_suffix}.pt"
                     if cache_dir else None)
    if features_path is not None and features_path.exists():
        return TeacherForcedSet.load(processor, features_path, frame_mask=spec.frame_mask)
    clips_path = cache_dir / f"clips-{key}.pt" if cache_dir else None
    if clips_path is not None and clips_path.exists():
        stored = torch.load(clips_path, weights_only=False)
        clips = stored["meta"]
        for clip, wave in zip(clips, stored["waves"]):
            clip.waveform = wave.numpy().astype(np.float32) / 32767
    else:
        clips = make_training_clips(seed, n_per_task)
        if clips_path is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            waves = [torch.from_numpy(np.round(c.waveform * 32767).astype(np.int16)) for c in clips]
            meta = [replace(c, waveform=np.zeros(0, np.float32)) for c in clips]
            torch.save({"meta": meta, "waves": waves}, clips_path)
    if matched_beep_share:
        clips = with_matched_beep_totals(clips, matched_beep_share, seed)
    if wide_beep_share:  # after the matching, which it keeps
        clips = with_wide_beep_frequencies(clips, wide_beep_share, seed)
    if extra_voice_share:
        clips = with_extra_voices(clips, extra_voice_share, seed)
    data = TeacherForcedSet(processor, apply_recipe(clips, RECIPES[recipe], seed), frame_mask=spec.frame_mask)
    if features_path is not None:
        data.save(features_path)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="qwen2_audio", choices=sorted(FAMILIES),
                        help="HF family of the organism: qwen2_audio (Qwen2-Audio) or voxtral (Voxtral)")
    parser.add_argument("--recipe", default="listener", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, default=None, help="default: the bundled checkpoint dir of the recipe")
    parser.add_argument("--minutes", type=float, default=24.0, help="wall-clock cap on the training loop")
    parser.add_argument("--seed", type=int, default=TRAIN_SEED)
    parser.add_argument("--n-per-task", type=int, default=800,
                        help="training clips for a tone task; others get more (tasks.TRAINING_WEIGHTS)")
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is several times faster than 2 on a 2-core machine other jobs share)")
    parser.add_argument("--layers", type=int, default=N_DECODER_LAYERS, help="decoder layers")
    parser.add_argument("--probe-weight", type=float, default=1.0,
                        help="weight of the training-only pooled-audio probe loss (0: plain answer loss)")
    parser.add_argument("--event-frame-weight", type=float, default=0.0,
                        help="weight of the training-only event-frame probe loss on multi-event clips (0: off)")
    parser.add_argument("--beep-onset-weight", type=float, default=0.0,
                        help="weight of the training-only beep-onset probe loss on beep-count clips (0: off)")
    parser.add_argument("--matched-beep-share", type=float, default=0.0,
                        help="share of the beep-count training clips redrawn with the same total beep time for every "
                             "count, so that total beep time does not predict the count (0: none)")
    parser.add_argument("--extra-voice-share", type=float, default=0.0,
                        help="share of the digit, language and multi-event training clips redrawn with their speech in"
                             " one of tasks.EXTRA_TRAINING_VARIANTS (more voices; 0: none)")
    parser.add_argument("--wide-beep-share", type=float, default=0.0,
                        help="share of the beep-count training clips redrawn at a frequency from tasks.WIDE_BEEP_HZ"
                             " (never the shifted split's bands), so the count does not hang on the tone (0: none)")
    parser.add_argument("--eval-clips", type=int, default=EVAL_CLIPS_PER_TASK)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="synthesized-data cache ('' to disable)")
    parser.add_argument("--grow-from", type=Path, default=None,
                        help="start from this smaller toy checkpoint (same widths): its weights, extra layers as identity")
    parser.add_argument("--init-encoder-from", type=Path, default=None,
                        help="start the audio encoder (audio_tower) from this toy checkpoint's (either family:"
                             " the encoders share names and shapes); the rest fresh")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="continue training from this checkpoint (a warm restart of the schedule)")
    args = parser.parse_args()
    for name in ("matched_beep_share", "extra_voice_share", "wide_beep_share"):  # before minutes of synthesis, not after
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be a share in [0, 1], got {getattr(args, name)}")
    family = FAMILIES[args.family]
    out = args.out or family.default_outs[args.recipe]
    cache_dir = args.cache_dir if str(args.cache_dir) else None
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()

    processor = family.build_processor()
    data = training_data(processor, args.seed, args.n_per_task, args.recipe, cache_dir, args.family,
                         args.matched_beep_share, args.extra_voice_share, args.wide_beep_share)
    print(f"data ready: {len(data)} samples, {time.time() - started:.0f} s", flush=True)
    grown = None
    if args.init_from is None:
        model = new_model(processor.tokenizer, args.layers, family=args.family)
        if args.grow_from is not None:
            grown = grow_from(model, processor.tokenizer, args.grow_from)
            print("grown from", grown, flush=True)
        if args.init_encoder_from is not None:
            donor = load_toy(args.init_encoder_from).model.audio_tower
            model.model.audio_tower.load_state_dict(donor.state_dict())
            del donor
    else:
        model = family.hf_class.from_pretrained(args.init_from)
    model.generation_config.eos_token_id = model.config.text_config.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    resume_path = out / "resume.pt"
    training = train(model, data, args.steps, args.minutes, args.batch_size, args.lr, args.seed, args.probe_weight,
                     resume_path=resume_path, event_frame_weight=args.event_frame_weight,
                     beep_onset_weight=args.beep_onset_weight,
                     settings={k: v for k, v in vars(args).items() if k not in ("out", "cache_dir", "threads")})
    model.save_pretrained(out)
    processor.save_pretrained(out)

    results = {
        "test": evaluate(model, processor, make_eval_set(EVAL_SEED, args.eval_clips, split="test")),
        "shifted": evaluate(model, processor, [s for s in make_eval_set(EVAL_SEED, args.eval_clips, split="shifted")
                                               if s.hint is None]),
        "shift_factors": evaluate_shift_factors(model, processor, EVAL_SEED, args.eval_clips),
    }
    recipe = RECIPES[args.recipe]
    text = model.config.text_config
    card = {
        "name": family.card_names[args.recipe],
        "architecture": family.hf_class.__name__,
        "command": "python -m hooked_audio.toy.train " + " ".join(sys.argv[1:]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "decoder_layers": text.num_hidden_layers, "decoder_heads": text.num_attention_heads,
        "encoder_layers": model.config.audio_config.encoder_layers,
        "tasks": [{"name": t.name, "question": t.question, "answers": list(t.answers)} for t in TASKS],
        "training": training | {
            "recipe": args.recipe, "seed": args.seed, "samples": len(data), "samples_per_task": training_counts(args.n_per_task),
            "batch_size": args.batch_size, "peak_lr": args.lr, "probe_weight": args.probe_weight,
            "event_frame_weight": args.event_frame_weight, "beep_onset_weight": args.beep_onset_weight,
            "matched_beep_share": args.matched_beep_share, "extra_voice_share": args.extra_voice_share,
            "wide_beep_share": args.wide_beep_share,
            "threads": torch.get_num_threads(), "hint_fraction": recipe.hint_fraction,
            "hint_reliability": recipe.hint_reliability, "degrade_fraction": recipe.degrade_fraction,
            "init_from": previous_training(args.init_from),
            "init_encoder_from": _donor_training(args.init_encoder_from),
            "grown_from": previous_training(args.grow_from), "grow_details": grown,
        },
        "eval": {"seed": EVAL_SEED, "clips_per_task": args.eval_clips, "splits": ["test", "shifted"]},
        "results": results,
        "shortcut_tests": shortcuts.run_all(model, processor),
        "espeak_ng": espeak_version(),
        # the bundled clips sit next to the bundled listener (shared by the families' bundled listeners: the same
        # seeded clips); any other run keeps its clips to itself
        "examples": write_examples(EXAMPLES_DIR if out.resolve() in BUNDLED_LISTENERS else out / "examples"),
    }
    if args.init_encoder_from is not None:
        card["training"]["init_encoder_from_name"] = _card_name(args.init_encoder_from)
    if args.init_from is not None:
        card["training"]["init_from_name"] = _card_name(args.init_from)
    card["training"]["total_seconds"] = round(time.time() - started)
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "CARD.md").write_text(card_markdown(card))
    resume_path.unlink(missing_ok=True)
    print(card_markdown(card))


if __name__ == "__main__":
    main()
