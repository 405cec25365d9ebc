# %% [markdown]
# # How does an audio-language model listen? A first look with hooked_audio
#
# This tutorial runs on the bundled toy model (a tiny Qwen2-Audio trained on synthetic audio questions),
# on a laptop CPU, in under a minute. Every step is a hook on the model: the same code runs on
# Qwen2-Audio-7B with `HookedAudioTransformer.from_pretrained("Qwen/Qwen2-Audio-7B-Instruct")`.
#
#     python tutorials/01_how_the_toy_listens.py
#
# (or open it as a notebook: the `# %%` markers are cells in VS Code and Jupytext.)

# %%
import torch
from transformer_lens import patching

from hooked_audio import HookedAudioTransformer
from hooked_audio.analysis import (
    audio_attention_by_head,
    head_ablation_hooks,
    logit_lens,
    random_heads,
    same_prompt_donors,
    steering_hook,
    top_heads,
)
from hooked_audio.toy import evaluate, tasks

torch.set_grad_enabled(False)
model = HookedAudioTransformer.from_pretrained("toy-qwen2-audio")
print(model.cfg.n_layers, "decoder layers,", len(model.hook_dict), "hook points")

# %% [markdown]
# ## 1. Ask a question about a clip
# `build_inputs` takes files or arrays at any sample rate; the processor expands the audio placeholder
# into one token per 40 ms of audio. `display_tokens` shows the audio span compactly
# (`to_str_tokens` gives one string per position, each audio token labelled by the seconds it covers).

# %%
pitch_clips = [s for s in tasks.make_probe_set(seed=3, n_per_task=2, task_names=["pitch"]) if s.hint is None]
low = next(s for s in pitch_clips if s.answer == "low")
high = next(s for s in pitch_clips if s.answer == "high")
inputs = model.build_inputs(messages=[{"role": "user", "content": [
    {"type": "audio", "audio": low.waveform}, {"type": "text", "text": low.question}]}], sampling_rate=16000)
print(model.display_tokens(inputs))
logits = model(inputs)
print("answer:", model.tokenizer.convert_ids_to_tokens(int(logits[0, -1].argmax())))

# %% [markdown]
# ## 2. The cache knows where the audio is
# `run_with_cache` returns TransformerLens's `ActivationCache` (all of its methods work) plus the audio
# spans and a time axis. Encoder activations are there too, under `audio_encoder.`.

# %%
logits, cache = model.run_with_cache(inputs)
span = cache.audio_spans[0][0]
print("audio tokens", span.start, "to", span.end, "; token 10 covers", cache.token_times()[0, span.start + 10].tolist(), "s")
print(cache["audio_encoder.blocks.0.attn.hook_pattern"].shape, cache["pattern", 0].shape)

# %% [markdown]
# ## 3. Logit lens: in which layer does the answer appear?

# %%
answer = torch.tensor([model.to_single_token(low.answer)])
lens = logit_lens(model, cache)
for label, p in zip(lens.labels, lens.target_prob(answer)[:, 0, -1]):
    print(f"{label:>10}  P({low.answer}) = {p:.3f}")

# %% [markdown]
# ## 4. Which heads read the audio, and do they matter?
# Rank decoder heads by the attention mass from the answer position to the audio, then take the top 8
# (of 24) out in two ways and compare with 8 random other heads. *Resample* ablation gives each clip the
# heads' outputs from another clip with the same question: the heads keep working, on the wrong audio.
# *Zero* ablation removes their outputs altogether.

# %%
probe = [s for s in tasks.make_probe_set(seed=1, n_per_task=10, task_names=["pitch", "beeps", "noise", "when"]) if s.hint is None]
batch = model.to_inputs(evaluate.encode(model.processor, probe))
answers = torch.tensor([model.to_single_token(s.answer) for s in probe])
_, patterns = model.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_pattern") and not n.startswith("audio"))
scores = audio_attention_by_head(patterns, model.cfg.n_layers)
best = top_heads(scores, 8)
others = random_heads(model.cfg.n_layers, model.cfg.n_heads, 8, exclude=best, seed=0)
print("top audio heads:", best, "  random control:", others)
donors = same_prompt_donors(batch)  # for each row, another row with the same prompt


def accuracy(hooks):
    logits = model.run_with_hooks(batch, fwd_hooks=hooks)
    return (logits[torch.arange(len(probe)), batch.last_positions].argmax(-1) == answers).float().mean().item()


print("clean", accuracy([]))
for label, heads in [("top 8", best), ("random 8", others)]:
    print(f"{label:>8}: resampled {accuracy(head_ablation_hooks(heads, 'resample', donors=donors)):.2f},"
          f" zeroed {accuracy(head_ablation_hooks(heads, 'zero')):.2f}")
# On the bundled toy (clean accuracy 1.00 on these 40 clips), resampling the top 8 heads takes accuracy to
# 0.65 while resampling 8 random heads leaves 0.93: the top heads carry more of the audio the answer is read from.
# Zeroing them costs little (0.93, three clips of 40; random heads 0.98), because other heads carry the same information
# redundantly; zeroing removes a head's output altogether, resampling puts another clip's information in
# its place, which competes. Which ablation you use decides what you measure. The redundancy is wide here:
# the heads of blocks 1-5 put 0.53-0.93 of their attention on the audio (those of block 0 at most 0.04), and
# resampling only the top 6 costs 0.12 (0.88).

# %% [markdown]
# ## 5. Activation patching across clips
# Run the *high* clip, then patch the *low* clip's residual stream in, one (layer, position) at a time.
# The two runs carry their own audio; the text is identical, so only audio positions can matter at layer 0.

# %%
low_in = model.to_inputs(evaluate.encode(model.processor, [low]))
high_in = model.to_inputs(evaluate.encode(model.processor, [high]))
_, low_cache = model.run_with_cache(low_in)
ids = [model.to_single_token(w) for w in ("low", "high")]


def low_minus_high(logits):
    return logits[0, -1, ids[0]] - logits[0, -1, ids[1]]


effect = patching.get_act_patch_resid_pre(model, high_in, low_cache, low_minus_high)
audio = low_in.audio_mask[0]
print("layer-by-layer max effect at audio positions:", effect[:, audio].max(-1).values)
print("... and at the last position:", effect[:, -1])
# On the bundled toy the clean high clip scores -16.1. Patching a single audio position moves it up to -13.3 at
# layer 0, -11.5 at layer 1 and -13.6 at layer 2 (no single position flips it: the pitch is spread over the clip's
# tokens), to -14.5 at layer 3 and barely from layer 4 on; patching the last position does nothing before layer 2,
# gives -2.3 at layer 2, +5.6 at layer 3, +13.2 at layer 4 and the full flip (+14.1) by layer 5. The pitch reaches
# the answer position through the attention of layers 1-4:
# a route you can now chase head by head (``patching.get_act_patch_attn_head_out_by_pos``).

# %% [markdown]
# ## 6. Steering: push the model's reading of the audio
# The mean difference of the residual stream at audio positions between low and high clips, added to a
# high clip's audio positions before the layer that reads them (layer 0's output, per section 5), should
# move the answer toward "low". On the toy, scale 1 already flips it (-16.1 to +15.2).

# %%
layer = 0
name = f"blocks.{layer}.hook_resid_post"
_, c_low = model.run_with_cache(low_in, names_filter=[name])
_, c_high = model.run_with_cache(high_in, names_filter=[name])
direction = c_low[name][0][audio].mean(0) - c_high[name][0][audio].mean(0)
for scale in (0.0, 1.0, 2.0, 4.0):
    steered = model.run_with_hooks(high_in, fwd_hooks=[(name, steering_hook(direction, scale, high_in.audio_mask))])
    print(f"scale {scale}: low - high logit = {low_minus_high(steered).item():+.2f}")
