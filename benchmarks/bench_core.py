"""Speed of HookedAudioTransformer relative to the HF model, measured in one run.

    python benchmarks/bench_core.py [--repeats 7] [--out benchmarks/results_core.md]

Three numbers, as ratios (ours / HF) of median wall times, CPU float32, interleaved repetitions so that
machine noise hits both sides alike:
1. forward with no hooks vs HF's sdpa forward                  (target <= 1.10x)
2. run_with_cache() of every hook point vs HF eager forward with
   output_hidden_states=True and output_attentions=True         (target <= 1.5x)
   Where TransformerLens 4.3's TransformerBridge boots on the same model, its forward and its
   run_with_cache are timed in the same run too (booted offline, with its torchvision auto-install off).
   "All hooks" is TransformerLens's default set: every hook point but hook_result (per-head outputs
   [batch, pos, head, d_model], cached only with use_attn_result=True, as in TransformerLens).
   Also run_with_cache of the decoder's resid_post kept at the audio span only, vs HF's hidden states.
3. fixed cost of entering and leaving run_with_hooks with one hook, on the real Qwen2-Audio-7B
   architecture (built on the meta device: ~1,260 hook points, no weights)   (target <= 0.05 ms)
4. a TransformerLens patching sweep (``get_act_patch_resid_pre``) vs as many HF forwards   (target <= 1.3x)
Configurations: small, medium, and Qwen2-Audio-7B's widths with 2 + 2 layers (fewer repeats).
Results are printed and written as a Markdown table to --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

from hooked_audio import HookedAudioTransformer
from report import verdict, write_report
from hooked_audio.families import family_for_model_type

CONFIGS = {
    # name: (audio width, audio layers, audio heads, mel bins, window positions, text width, text layers, heads, kv heads, d_mlp, vocab)
    "small (1 s audio)": (64, 2, 4, 16, 50, 64, 2, 4, 2, 128, 512),
    "medium (5 s audio)": (384, 4, 6, 128, 250, 512, 4, 8, 4, 1408, 8000),
    # Qwen2-Audio-7B's widths (encoder 1280 x 20 heads, decoder 4096 x 32 heads, MLP 11008) with 2 + 2 layers and
    # a small vocabulary, so it fits a CPU machine: per-layer costs at the real size
    "7B-shaped, 2 + 2 layers (5 s audio)": (1280, 2, 20, 128, 250, 4096, 2, 32, 32, 11008, 8000),
}
MAX_REPEATS = {"7B-shaped, 2 + 2 layers (5 s audio)": 3}


def build_hf(spec, attn: str) -> Qwen2AudioForConditionalGeneration:
    d_a, l_a, h_a, mels, ctx, d, l, h, kv, mlp, vocab = spec
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=d_a, encoder_layers=l_a, encoder_attention_heads=h_a, encoder_ffn_dim=4 * d_a,
                          num_mel_bins=mels, max_source_positions=ctx),
        text_config=dict(hidden_size=d, num_hidden_layers=l, num_attention_heads=h, num_key_value_heads=kv,
                         intermediate_size=mlp, vocab_size=vocab, max_position_embeddings=2048),
        audio_token_index=vocab - 1,
    )
    config._attn_implementation = attn
    torch.manual_seed(0)
    return Qwen2AudioForConditionalGeneration(config).eval()


def make_inputs(spec, n_text: int = 40) -> dict:
    _, _, _, mels, ctx, *_, vocab = spec
    n_audio = ((2 * ctx - 1) // 2 + 1 - 2) // 2 + 1
    ids = torch.randint(0, vocab - 2, (1, n_text + n_audio))
    ids[0, 10 : 10 + n_audio] = vocab - 1
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "input_features": torch.randn(1, mels, 2 * ctx),
        "feature_attention_mask": torch.ones(1, 2 * ctx, dtype=torch.long),
    }


def median_times(fns: dict, repeats: int) -> dict[str, float]:
    """Interleaved repetitions (A B A B ...) after one warm-up each; medians in seconds."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def boot_bridge(hf_model):
    """TransformerBridge on a saved copy of ``hf_model``, or None when it does not boot here."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PIP_NO_INDEX", "1")
    try:
        import transformer_lens.model_bridge.sources.transformers.helpers as helpers
        from transformer_lens.model_bridge import TransformerBridge

        helpers._ensure_torchvision = lambda *args, **kwargs: None  # never pip-install from a benchmark
        directory = tempfile.mkdtemp(prefix="bench_bridge_")
        hf_model.save_pretrained(directory)
        return TransformerBridge.boot_transformers(directory, device="cpu")
    except Exception as error:  # the bridge is a comparison, not a requirement
        print(f"TransformerBridge did not boot: {type(error).__name__}: {error}")
        return None


@torch.no_grad()
def bench_config(name: str, spec, repeats: int) -> list[tuple]:
    hf_sdpa = build_hf(spec, "sdpa")
    hf_eager = build_hf(spec, "eager")
    ours = HookedAudioTransformer.from_hf_model(hf_sdpa)
    bridge = boot_bridge(hf_sdpa)
    inputs = make_inputs(spec)
    audio_kwargs = {k: v for k, v in inputs.items() if k != "input_ids"}
    n_params = sum(p.numel() for p in hf_sdpa.parameters())
    fns = {
        "hf_sdpa": lambda: hf_sdpa(**inputs),
        "ours": lambda: ours(**inputs),
        "hf_eager_all": lambda: hf_eager(**inputs, output_hidden_states=True, output_attentions=True),
        "ours_cache_all": lambda: ours.run_with_cache(**inputs),
        "hf_hidden": lambda: hf_sdpa(**inputs, output_hidden_states=True),
        "ours_cache_audio_resid": lambda: ours.run_with_cache(
            **inputs, positions="audio", names_filter=lambda n: n.endswith("hook_resid_post") and n.startswith("blocks")
        ),
    }
    if bridge is not None:
        fns["bridge"] = lambda: bridge(inputs["input_ids"], **audio_kwargs)
        fns["bridge_cache_all"] = lambda: bridge.run_with_cache(inputs["input_ids"], **audio_kwargs)
    times = median_times(fns, min(repeats, MAX_REPEATS.get(name, repeats)))
    label = f"{name}, {n_params / 1e6:.1f}M params, {inputs['input_ids'].shape[1]} tokens"
    rows = [
        (label, "forward, no hooks", times["ours"], times["hf_sdpa"], "HF sdpa forward", 1.10),
        (label, "run_with_cache(), all hooks", times["ours_cache_all"], times["hf_eager_all"],
         "HF eager, hidden states + attentions", 1.5),
        (label, "run_with_cache(resid_post, audio span only)", times["ours_cache_audio_resid"], times["hf_hidden"],
         "HF sdpa, hidden states", 1.10),
    ]
    if bridge is not None:
        rows += [
            (label, "forward, no hooks", times["ours"], times["bridge"], "TL 4.3 TransformerBridge forward", None),
            (label, "run_with_cache(), all hooks", times["ours_cache_all"], times["bridge_cache_all"],
             "TL 4.3 TransformerBridge run_with_cache", 1.0),
        ]
    return rows


@torch.no_grad()
def bench_patching_sweep(name: str, spec, repeats: int) -> tuple:
    """TransformerLens's ``get_act_patch_resid_pre`` (one forward per layer x position) against as many HF
    forwards: the cost of a patching cell beyond the forward it needs."""
    from transformer_lens import patching

    hf_sdpa = build_hf(spec, "sdpa")
    ours = HookedAudioTransformer.from_hf_model(hf_sdpa)
    clean = ours.to_inputs(make_inputs(spec))
    corrupted = ours.to_inputs({**make_inputs(spec), "input_ids": clean.input_ids})
    _, clean_cache = ours.run_with_cache(clean)
    token = int(clean.input_ids[0, -1])
    n_cells = ours.cfg.n_layers * clean.shape[1]
    inputs = make_inputs(spec)
    times = median_times({
        "sweep": lambda: patching.get_act_patch_resid_pre(ours, corrupted, clean_cache, lambda out: out[0, -1, token]),
        "hf": lambda: hf_sdpa(**inputs),
    }, max(1, repeats // 2))
    label = f"{name}, {n_cells} cells ({ours.cfg.n_layers} layers x {clean.shape[1]} positions)"
    return (label, "TL patching.get_act_patch_resid_pre", times["sweep"], n_cells * times["hf"],
            f"{n_cells} HF sdpa forwards", 1.3)


def bench_hook_overhead(repeats: int) -> tuple:
    """Entering/leaving run_with_hooks with one hook on the 7B architecture (no forward)."""
    from hooked_audio import model_configs

    hf_config = model_configs.hf_config("qwen2-audio-7b-instruct")
    cfg = family_for_model_type("qwen2_audio").to_config(hf_config)
    with torch.device("meta"):
        model = HookedAudioTransformer(cfg)
    hook = ("blocks.20.hook_resid_post", lambda x, hook: x)
    n = 2000

    def enter_exit():
        for _ in range(n):
            with model.hooks(fwd_hooks=[hook]):
                pass

    per_call = median_times({"hooks": enter_exit}, repeats)["hooks"] / n
    return len(model.hook_dict), per_call


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_core.md")))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    rows = []
    for name, spec in CONFIGS.items():
        rows += bench_config(name, spec, args.repeats)
    rows.append(bench_patching_sweep("small (1 s audio)", CONFIGS["small (1 s audio)"], args.repeats))
    n_hooks, hook_cost = bench_hook_overhead(args.repeats)

    lines = [
        "# hooked_audio core benchmark",
        "",
        f"`python benchmarks/bench_core.py --repeats {args.repeats}` on {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU float32, batch 1; "
        "medians of interleaved repetitions.",
        "",
        "| model | measurement | ours (ms) | reference | reference (ms) | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, what, ours, ref, ref_name, target in rows:
        ratio = ours / ref
        lines.append(f"| {label} | {what} | {ours * 1e3:.1f} | {ref_name} | {ref * 1e3:.1f} | {ratio:.2f}x | {verdict(ratio, target)} |")
    lines.append(f"| Qwen2-Audio-7B architecture (meta), {n_hooks} hook points | enter + leave run_with_hooks, "
                 f"one hook | {hook_cost * 1e3:.3f} | - | - | - | <= 0.05 ms {'ok' if hook_cost <= 5e-5 else 'MISSED'} |")
    return write_report(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
