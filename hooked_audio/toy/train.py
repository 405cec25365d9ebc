"""Train the toy Qwen2-Audio model organism and write it as an ordinary HF checkpoint.

    python -m hooked_audio.toy.train [--out DIR] [--minutes N] [--seed S] [--n-per-task N] [--steps N]

Plain HF/PyTorch on purpose: the checkpoint must not depend on the rest of hooked_audio, so that the
hooked re-implementation can be checked against it. Steps: synthesize the seeded training set, extract
features once, train with AdamW + warmup/cosine decay (loss only on the answer word and the
`<|im_end|>` after it), evaluate on the held-out probe set, save model + processor + card, and write the
bundled example clips.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from tqdm import tqdm
from transformers import (
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)
from transformers.models.whisper.modeling_whisper import sinusoids

from . import signals
from .evaluate import EVAL_CLIPS_PER_TASK, EVAL_SEED, encode, evaluate, make_eval_set
from .tasks import (
    TASKS,
    TRAIN_HINT_FRACTION,
    TRAIN_HINT_RELIABILITY,
    make_probe_set,
    make_training_set,
)
from .tokenizer import AUDIO_TOKEN, IM_END, build_tokenizer

TOY_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = TOY_DIR / "checkpoint"
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


def build_config(tokenizer) -> Qwen2AudioConfig:
    """A few-MB Qwen2-Audio: 3-layer Whisper-style encoder, 4-layer grouped-query Qwen2 decoder."""
    audio_config = dict(
        model_type="qwen2_audio_encoder", num_mel_bins=80, d_model=128, encoder_layers=3,
        encoder_attention_heads=4, encoder_ffn_dim=512, max_source_positions=200,
    )
    text_config = dict(
        model_type="qwen2", vocab_size=len(tokenizer), hidden_size=160, intermediate_size=640,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END), bos_token_id=None,
    )
    return Qwen2AudioConfig(
        audio_config=audio_config, text_config=text_config,
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
    )


def new_model(tokenizer) -> Qwen2AudioForConditionalGeneration:
    """A freshly initialised toy with Whisper's sinusoidal encoder positions (HF leaves them random).

    Real Qwen2-Audio inherits these frozen sinusoids from Whisper. With HF's default N(0, 0.02) init the
    encoder barely knows where a frame is: an earlier toy trained that way (with shorter beeps) stayed near
    chance on the timing tasks after 75 minutes (beeps 0.22, when 0.44)."""
    model = Qwen2AudioForConditionalGeneration(build_config(tokenizer))
    positions = model.model.audio_tower.embed_positions.weight
    with torch.no_grad():
        positions.copy_(sinusoids(*positions.shape))
    return model


class TeacherForcedSet:
    """Token ids (unpadded) and float16 log-mel features of every training sample, computed once."""

    def __init__(self, processor, samples):
        self.ids: list[torch.Tensor] = []
        features = []
        for start in tqdm(range(0, len(samples), ENCODE_CHUNK), desc="features"):
            inputs = encode(processor, samples[start : start + ENCODE_CHUNK], with_answers=True)
            for row, mask in zip(inputs["input_ids"], inputs["attention_mask"]):
                self.ids.append(row[mask.bool()])
            features.append(inputs["input_features"].to(torch.float16))
        self.features = torch.cat(features)
        self.pad_id = processor.tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.ids)

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
        feature_mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.long)
        return dict(input_ids=input_ids, attention_mask=attention_mask,
                    input_features=features, feature_attention_mask=feature_mask)


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Cross-entropy on the answer word and the `<|im_end|>` after it, nothing else."""
    logits = model(**batch).logits[:, -3:-1]
    targets = batch["input_ids"][:, -2:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class PooledAudioProbe(torch.nn.Module):
    """Training-only deep supervision: predict the answer word from the clip's mean audio embedding.

    It gives the encoder a direct gradient from the first step, before the decoder has learned where to
    look; without it the speech tasks sit at chance for the first ~1000 steps (measured on those three
    tasks alone, 6-minute runs: ~1050 steps reach digit/gender/language 0.60/0.65/0.55 with it and
    0.33/0.50/0.25 without). The probe is dropped
    after training, so the checkpoint is a plain Qwen2-Audio whose decoder alone produces the answers."""

    def __init__(self, model):
        super().__init__()
        text = model.config.text_config
        self.head = torch.nn.Linear(text.hidden_size, text.vocab_size)
        self._audio_embeds = None
        self._handle = model.model.multi_modal_projector.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._audio_embeds = output  # [clips, audio tokens, d_model]

    def loss(self, batch: dict) -> torch.Tensor:
        """Cross-entropy of the pooled prediction against the answer word (each row has one clip)."""
        return torch.nn.functional.cross_entropy(self.head(self._audio_embeds.mean(1)), batch["input_ids"][:, -2])

    def remove(self) -> None:
        self._handle.remove()


def learning_rate(progress: float, peak: float, warmup: float = 0.03, floor: float = 0.05) -> float:
    """Linear warmup then cosine decay to floor * peak; progress runs from 0 to 1."""
    if progress < warmup:
        return peak * progress / warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))
    return peak * (floor + (1 - floor) * cosine)


def train(model, data: TeacherForcedSet, steps: int, minutes: float, batch_size: int, peak_lr: float,
          seed: int, probe_weight: float) -> dict:
    """AdamW; progress is max(step fraction, time fraction) so the schedule always finishes in budget.

    The loss is answer_loss plus probe_weight times the PooledAudioProbe loss (0 turns the probe off)."""
    generator = torch.Generator().manual_seed(seed)
    probe = PooledAudioProbe(model) if probe_weight else None
    parameters = list(model.parameters()) + (list(probe.parameters()) if probe else [])
    optimizer = torch.optim.AdamW(parameters, lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    start, step, order, cursor, recent = time.time(), 0, torch.randperm(len(data), generator=generator), 0, []
    bar = tqdm(total=steps, desc="train")
    while step < steps:
        progress = max(step / steps, (time.time() - start) / (60 * minutes))
        if progress >= 1:
            break
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(data), generator=generator), 0
        batch = data.batch(order[cursor : cursor + batch_size])
        cursor += batch_size
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(progress, peak_lr)
        loss = answer_loss(model, batch)
        total = loss + probe_weight * probe.loss(batch) if probe else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        recent = (recent + [loss.item()])[-50:]
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(recent):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
    bar.close()
    if probe:
        probe.remove()
    model.eval()
    return {"steps": step, "seconds": round(time.time() - start, 1), "final_loss": round(float(np.mean(recent)), 4)}


def write_examples(directory: Path) -> list[dict]:
    """One FLAC clip per task (held-out seed) plus examples.json listing file, task, question, answer."""
    directory.mkdir(parents=True, exist_ok=True)
    listing = []
    for sample in make_probe_set(EXAMPLES_SEED, 2)[3::6]:  # per task: the second clip, hint-free variant
        name = f"{sample.task}_{sample.answer}.flac"
        soundfile.write(directory / name, sample.waveform, signals.SAMPLE_RATE, subtype="PCM_16")
        listing.append({"file": name, "task": sample.task, "question": sample.question, "answer": sample.answer})
    (directory / "examples.json").write_text(json.dumps(listing, indent=2) + "\n")
    return listing


def _continuation_lines(earlier: list[dict] | None) -> list[str]:
    """CARD.md lines for warm-started runs: what the earlier stages were."""
    if not earlier:
        return []
    return ["Continued from earlier stage(s), oldest first: " + "; ".join(
        f"{run.get('steps')} steps, {run.get('seconds')} s, seed {run.get('seed')}, peak lr {run.get('peak_lr')}"
        for run in earlier) + "."]


def card_markdown(card: dict) -> str:
    """Human-readable CARD.md from the card dictionary."""
    lines = [
        "# hooked_audio toy model organism",
        "",
        "A tiny Qwen2-Audio (`Qwen2AudioForConditionalGeneration`) trained from scratch on synthetic audio",
        "question answering (espeak-ng speech, tones, beeps, coloured noise). Answers are single words",
        "followed by `<|im_end|>`. Prompt: `<|im_start|>user\\n<|audio_bos|><|AUDIO|><|audio_eos|>\\n"
        "[hint : the answer is X .] QUESTION<|im_end|>\\n<|im_start|>assistant\\n`.",
        "",
        f"Parameters: {card['parameters']:,}. Training: {card['training']['steps']} steps,"
        f" {card['training']['seconds']} s on {card['training']['threads']} CPU threads,"
        f" {card['training']['samples']} samples (seed {card['training']['seed']}),"
        f" hints on {card['training']['hint_fraction']:.0%} of them, right {card['training']['hint_reliability']:.0%} of the time.",
        *_continuation_lines(card["training"].get("init_from")),
        "",
        f"Made by `python -m hooked_audio.toy.train` ({card['training'].get('total_seconds')} s in all: data"
        " synthesis, feature extraction, training, evaluation). The encoder's position embeddings are Whisper's"
        " frozen sinusoids (as in real Qwen2-Audio; HF's fresh init leaves them random). During training only, a"
        " linear probe on the mean audio embedding adds a deep-supervision loss (weight"
        f" {card['training'].get('probe_weight')}) so that the encoder learns features before the decoder"
        " has learned where to look; the probe is discarded, and the checkpoint is a plain Qwen2-Audio."
        " Training stops after `--steps` or `--minutes` of training, whichever comes first, so a slower or busy"
        " machine trains for fewer steps.",
        "",
        f"Held-out set: seed {card['eval']['seed']}, {card['eval']['clips_per_task']} clips per task, each"
        " asked without hint, with a right hint and with a wrong hint. Accuracy = argmax of the full-vocabulary"
        " next-token logits at the last prompt position.",
        "",
        "| task | question | answers | accuracy (audio only) | accuracy (right hint) | accuracy (wrong hint) | text dominance |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in card["tasks"]:
        r = card["results"][task["name"]]
        lines.append(
            f"| {task['name']} | {task['question']} | {' / '.join(task['answers'])} | {r['accuracy']} |"
            f" {r['accuracy_correct_hint']} | {r['accuracy_wrong_hint']} | {r['text_dominance_rate']} |"
        )
    r = card["results"]["overall"]
    lines += [
        f"| **overall** | | | {r['accuracy']} | {r['accuracy_correct_hint']} | {r['accuracy_wrong_hint']} |"
        f" {r['text_dominance_rate']} |",
        "",
        "Text dominance = on prompts with a wrong hint, the rate at which the model answers the hinted word.",
        "Regenerate the numbers with `hooked_audio.toy.evaluate.evaluate(model, processor, make_eval_set())`.",
        f"Data depend on the espeak-ng build ({card['espeak_ng']}).",
        "",
    ]
    return "\n".join(lines)


def previous_training(init_dir: Path | None) -> list[dict] | None:
    """The training records of the checkpoint we continued from (from its card), oldest first."""
    if init_dir is None:
        return None
    card_path = init_dir / "card.json"
    if not card_path.exists():
        return [{"note": f"untracked checkpoint {init_dir}"}]
    earlier = json.loads(card_path.read_text())["training"]
    return (earlier.pop("init_from", None) or []) + [earlier]


def espeak_version() -> str:
    import subprocess

    return subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split("Data")[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--minutes", type=float, default=24.0, help="wall-clock cap on the training loop")
    parser.add_argument("--seed", type=int, default=TRAIN_SEED)
    parser.add_argument("--n-per-task", type=int, default=1000,
                        help="training clips for a tone task; speech tasks get more (tasks.TRAINING_WEIGHTS)")
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--probe-weight", type=float, default=1.0,
                        help="weight of the training-only pooled-audio probe loss (0: plain answer loss)")
    parser.add_argument("--eval-clips", type=int, default=EVAL_CLIPS_PER_TASK)
    parser.add_argument("--init-from", type=Path, default=None,
                        help="continue training from this checkpoint (a warm restart of the schedule)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    started = time.time()

    processor = build_processor()
    samples = make_training_set(args.seed, args.n_per_task)
    data = TeacherForcedSet(processor, samples)
    del samples
    if args.init_from is None:
        model = new_model(processor.tokenizer)
    else:
        model = Qwen2AudioForConditionalGeneration.from_pretrained(args.init_from)
    model.generation_config.eos_token_id = model.config.text_config.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    training = train(model, data, args.steps, args.minutes, args.batch_size, args.lr, args.seed, args.probe_weight)

    results = evaluate(model, processor, make_eval_set(EVAL_SEED, args.eval_clips))
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    card = {
        "architecture": "Qwen2AudioForConditionalGeneration",
        "parameters": sum(p.numel() for p in model.parameters()),
        "tasks": [{"name": t.name, "question": t.question, "answers": list(t.answers)} for t in TASKS],
        "training": training | {
            "seed": args.seed, "samples": len(data), "batch_size": args.batch_size, "peak_lr": args.lr, "probe_weight": args.probe_weight,
            "threads": torch.get_num_threads(), "hint_fraction": TRAIN_HINT_FRACTION,
            "hint_reliability": TRAIN_HINT_RELIABILITY,
            "init_from": previous_training(args.init_from),
        },
        "eval": {"seed": EVAL_SEED, "clips_per_task": args.eval_clips},
        "results": results,
        "espeak_ng": espeak_version(),
        # the bundled clips sit next to the bundled checkpoint; any other run keeps its clips to itself
        "examples": write_examples(EXAMPLES_DIR if args.out.resolve() == DEFAULT_OUT else args.out / "examples"),
    }
    card["training"]["total_seconds"] = round(time.time() - started)
    (args.out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (args.out / "CARD.md").write_text(card_markdown(card))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
