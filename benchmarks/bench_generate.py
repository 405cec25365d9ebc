"""Generation speed of HookedAudioTransformer relative to HF's ``generate``, measured in one run.

    python benchmarks/bench_generate.py [--repeats 5] [--new-tokens 64] [--threads 1] [--out benchmarks/results_generate.md]

The medium Qwen2-Audio configuration of ``bench_core.py`` with its audio window widened to 15 s
(``max_source_positions=750``: 375 audio tokens, plus 35 text tokens = a 410-token prompt), batch 1,
CPU float32, greedy, a fixed number of new tokens (no stop token). Both sides must give the same tokens
(asserted). Rows, as ratios of median wall times over interleaved repetitions (A B A B ...):
1. ``generate`` with the KV cache (the default) vs HF ``generate`` (sdpa)          (target <= 1.2x)
2. the same with a steering hook on every layer's ``hook_resid_post`` (all positions), for scale
3. ``generate(use_past_kv_cache=False)`` (the full sequence every step), for scale
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

from hooked_audio import HookedAudioTransformer
from report import verdict, write_report
from hooked_audio.analysis import steering_hook

# bench_core.py's "medium" config, with a 15 s audio window
D_AUDIO, L_AUDIO, H_AUDIO, MELS, CTX = 384, 4, 6, 128, 750
D, L, H, KV, MLP, VOCAB = 512, 4, 8, 4, 1408, 8000
N_TEXT = 35


def build_hf() -> Qwen2AudioForConditionalGeneration:
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=D_AUDIO, encoder_layers=L_AUDIO, encoder_attention_heads=H_AUDIO,
                          encoder_ffn_dim=4 * D_AUDIO, num_mel_bins=MELS, max_source_positions=CTX),
        text_config=dict(hidden_size=D, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=KV,
                         intermediate_size=MLP, vocab_size=VOCAB, max_position_embeddings=2048),
        audio_token_index=VOCAB - 1,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = None  # a fixed number of new tokens
    model.generation_config.pad_token_id = 0
    return model


def make_inputs() -> dict:
    n_audio = ((2 * CTX - 1) // 2 + 1 - 2) // 2 + 1
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB - 2, (1, N_TEXT + n_audio), generator=gen)
    ids[0, 10 : 10 + n_audio] = VOCAB - 1
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "input_features": torch.randn(1, MELS, 2 * CTX, generator=gen),
        "feature_attention_mask": torch.ones(1, 2 * CTX, dtype=torch.long),
    }


def median_times(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Interleaved repetitions after one warm-up each; medians in seconds, and each side's last output."""
    outputs = {name: fn() for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}, outputs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine more threads mostly measure contention)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_generate.md")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_new = args.new_tokens

    hf = build_hf()
    ours = HookedAudioTransformer.from_hf_model(hf)
    inputs = make_inputs()
    n_prompt = inputs["input_ids"].shape[1]
    n_params = sum(p.numel() for p in hf.parameters())
    steer = steering_hook(torch.randn(D, generator=torch.Generator().manual_seed(2)), scale=1e-3)
    steer_hooks = [(f"blocks.{layer}.hook_resid_post", steer) for layer in range(L)]

    @torch.no_grad()
    def hf_generate():
        return hf.generate(**inputs, max_new_tokens=n_new, do_sample=False)

    fns = {
        "hf": hf_generate,
        "ours": lambda: ours.generate(**inputs, max_new_tokens=n_new, eos_token_id=[]),
        "ours_steered": lambda: ours.generate(**inputs, max_new_tokens=n_new, eos_token_id=[], fwd_hooks=steer_hooks),
    }
    load_before = os.getloadavg()[0]
    times, outputs = median_times(fns, args.repeats)
    # the full-sequence path is ~7x slower: timed once, after the others (the model is warm by then)
    start = time.perf_counter()
    outputs["ours_full"] = ours.generate(**inputs, max_new_tokens=n_new, eos_token_id=[], use_past_kv_cache=False)
    times["ours_full"] = time.perf_counter() - start

    assert outputs["hf"].shape == (1, n_prompt + n_new), outputs["hf"].shape
    for name in ("ours", "ours_full"):
        assert torch.equal(outputs[name], outputs["hf"]), f"{name} generated other tokens than HF"
    changed = int((outputs["ours_steered"] != outputs["hf"]).sum())

    label = f"medium Qwen2-Audio, 15 s clip, {n_params / 1e6:.1f}M params, {n_prompt}-token prompt, {n_new} new tokens"
    rows = [
        ("generate (KV cache, default)", times["ours"], 1.2),
        ("generate + steering hook on every layer (KV cache)", times["ours_steered"], None),
        ("generate(use_past_kv_cache=False)", times["ours_full"], None),
    ]
    lines = [
        "# hooked_audio generation benchmark",
        "",
        f"`python benchmarks/bench_generate.py --repeats {args.repeats} --new-tokens {n_new} --threads {args.threads}` on "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU float32, "
        "batch 1, greedy; medians of interleaved repetitions in one process (the full-sequence row: one "
        "run after the others). Same tokens as HF asserted for the "
        f"unhooked rows; the steering row (a random direction, scale 1e-3) changed {changed} tokens. "
        f"Machine load average (1 min) {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the timings.",
        "",
        "| model | measurement | ours (ms) | reference | reference (ms) | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for what, ours_s, target in rows:
        ratio = ours_s / times["hf"]
        lines.append(
            f"| {label} | {what} | {ours_s * 1e3:.0f} | HF generate (sdpa) | {times['hf'] * 1e3:.0f} | {ratio:.2f}x | {verdict(ratio, target)} |"
        )
    return write_report(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
