"""Qwen3-Omni thinker (HF ``Qwen3OmniMoeThinkerForConditionalGeneration``): its contract spec and what is
special about it (the MoE router and expert hooks, q/k norms, attention windows of several chunks, folding
into the experts, a full Omni checkpoint, the feature extractor).

HF's token count hard-codes 13 tokens per 100-mel-frame chunk, so the tiny encoder keeps ``n_window`` = 50;
``n_window_infer`` = 200 makes attention windows of 2 chunks (26 frames), so a 2.6 s clip spans two windows.
"""

from __future__ import annotations

import pytest
import torch
from family_harness import (
    TOL, FamilySpec, TokenTimes, assert_loads_offline, assert_logits_match, assert_matches_hf, build_pair,
    build_tiny_hf_model, count_parameters, noise_clips, real_config,
)
from test_family_qwen2_5_omni import (
    AUDIO, AUDIO_BOS, EOS, IMAGE, N_MELS, PAD, VIDEO, VISION_BOS, VOCAB, add_speech_weights, make_inputs,
)
from transformers import (
    Qwen3OmniMoeConfig,
    Qwen3OmniMoeForConditionalGeneration,
    Qwen3OmniMoeThinkerConfig,
    Qwen3OmniMoeThinkerForConditionalGeneration,
)
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import _get_feat_extract_output_lengths

from hooked_audio import HookedAudioTransformer

N_EXPERTS, TOP_K = 8, 2


def make_hf_model(seed: int = 0, n_kv_heads: int = 2, norm_topk_prob: bool = True, audio_act: str = "gelu"):
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(
            activation_function=audio_act, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=N_MELS,
            max_source_positions=50, n_window=50, n_window_infer=200, downsample_hidden_size=8, output_dim=64,
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=64,
                           deepstack_visual_indexes=[0]),
        text_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=n_kv_heads, head_dim=16,
            moe_intermediate_size=32, num_experts=N_EXPERTS, num_experts_per_tok=TOP_K, norm_topk_prob=norm_topk_prob,
            vocab_size=VOCAB, max_position_embeddings=512, pad_token_id=PAD, eos_token_id=EOS,
            rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 3, 3], mrope_interleaved=True),
        ),
        audio_token_id=AUDIO, audio_start_token_id=AUDIO_BOS, vision_start_token_id=VISION_BOS,
        image_token_id=IMAGE, video_token_id=VIDEO,
    )
    config.text_config._experts_implementation = "eager"
    # the audio must be loud next to the positions too, so the stem is scaled as well as the projector
    louder = {"conv2d1": 30, "conv2d2": 10, "conv2d3": 10, "conv_out": 10, "proj2": 20}
    return build_tiny_hf_model(
        Qwen3OmniMoeThinkerForConditionalGeneration, config, seed,
        louder={f"model.audio_tower.{name}.weight": scale for name, scale in louder.items()},
    )


def n_audio_tokens(mel_frames: int) -> int:
    return int(_get_feat_extract_output_lengths(torch.tensor(mel_frames), 50))


def inputs_for(clips_per_row, **kwargs) -> dict:
    return make_inputs(clips_per_row, count=n_audio_tokens, **kwargs)


SPEC = FamilySpec(
    name="qwen3_omni",
    hf_class=Qwen3OmniMoeThinkerForConditionalGeneration,
    make_hf_model=make_hf_model,
    variants={"gqa_normtopk": dict(seed=2, n_kv_heads=2, norm_topk_prob=True),
              "mha_rawtopk": dict(seed=4, n_kv_heads=4, norm_topk_prob=False)},
    make_inputs=inputs_for,  # a clip is its number of mel frames; chunks of 100, windows of 2 chunks
    cases={
        "one_clip_over_two_windows": [[260]],
        "batch_padded_different_lengths": [[157], [60]],
        "two_clips_in_one_prompt": [[230, 45]],
        "batch_mixed_clip_counts": [[100, 200], [37]],  # and whole chunks
        "batch_of_clips_shorter_than_a_chunk": [[60], [37]],  # HF's stem width is then the longest clip
    },
    long_audio_case="one_clip_over_two_windows",
    eos_token_id=EOS,
    pad_token_id=PAD,
    seconds_per_token=1 / 13,
    token_times=TokenTimes([[300]], n_tokens=39, tokens_per_window=13, window_seconds=1.0),  # 13 tokens a second
    real_configs={"qwen3-omni-30b-a3b-instruct": 31_180_574_080},
    unhandled=("text_config", "mlp_only_layers", [0]),
    audio_factor=30,
    expected_hooks=frozenset({
        "blocks.1.mlp.hook_router_logits", "blocks.1.mlp.hook_expert_out", "blocks.0.attn.k_norm.hook_scale",
        "audio_encoder.hook_conv_out", "audio_encoder.ln_post.hook_normalized", "hook_audio_embeds",
    }),
    absent_hooks=frozenset({"audio_encoder.hook_pooled"}),  # Qwen3-Omni does not pool
    not_reimplemented=lambda hf: count_parameters(hf.model.visual),
)


@pytest.fixture(scope="session", params=list(SPEC.variants))
def pair(request):
    return build_pair(SPEC, request.param)


def test_router_logits_and_mixture_match_hf(pair):
    """``hook_router_logits`` is HF's ``router_logits``; per-slot expert outputs sum to the MLP output."""
    hf, model = pair
    inputs = inputs_for([[157], [60]], seed=2)
    with torch.no_grad():
        theirs = hf(**inputs, output_router_logits=True).router_logits
        _, cache = model.run_with_cache(**inputs)
    real = inputs["attention_mask"].bool()
    for layer in range(model.cfg.n_layers):
        ours = cache[f"blocks.{layer}.mlp.hook_router_logits"]
        assert ours.shape == (*inputs["input_ids"].shape, N_EXPERTS)
        assert (ours[real] - theirs[layer].view(ours.shape)[real]).abs().max() <= TOL
        per_slot = cache[f"blocks.{layer}.mlp.hook_expert_out"]
        assert per_slot.shape == (*inputs["input_ids"].shape, TOP_K, model.cfg.d_model)
        torch.testing.assert_close(per_slot.sum(-2), cache[f"blocks.{layer}.hook_mlp_out"], atol=1e-5, rtol=1e-5)
        weights = cache[f"blocks.{layer}.mlp.hook_expert_weights"]
        if model.cfg.norm_topk_prob:
            torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_routing_hooks_steer_the_mixture(pair):
    _, model = pair
    inputs = inputs_for([[157]], seed=3)
    name = "blocks.0.mlp.hook_expert_weights"
    with torch.no_grad():
        clean = model(**inputs)
        zeroed = model.run_with_hooks(**inputs, fwd_hooks=[(name, lambda w, hook: torch.zeros_like(w))])
    assert (zeroed - clean).abs().max() > 1e-3
    with torch.no_grad(), model.hooks(fwd_hooks=[(name, lambda w, hook: torch.zeros_like(w))]):
        _, ablated = model.run_with_cache(**inputs, names_filter=lambda n: n == "blocks.0.hook_mlp_out")
    assert ablated["blocks.0.hook_mlp_out"].abs().max() == 0


def test_qk_norm_hooks(pair):
    _, model = pair
    inputs = inputs_for([[60]])
    _, cache = model.run_with_cache(**inputs)
    q = cache["blocks.0.attn.hook_q"]
    normalized = cache["blocks.0.attn.q_norm.hook_normalized"]
    assert normalized.shape == q.shape == (1, inputs["input_ids"].shape[1], model.cfg.n_heads, model.cfg.d_head)
    torch.testing.assert_close(normalized, model.blocks[0].attn.q_norm.w * q / cache["blocks.0.attn.q_norm.hook_scale"])
    assert cache["blocks.0.attn.k_norm.hook_normalized"].shape[2] == model.cfg.n_key_value_heads


def test_encoder_attends_inside_windows_of_two_chunks(pair):
    _, model = pair
    inputs = inputs_for([[260], [60]], seed=3)
    with torch.no_grad():
        _, cache = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    # windows of 2 chunks (26 frames) are batch rows: the 260-frame clip gives 3 chunks = 39 frames in 2
    # windows, the second with 13 real frames; the 60-frame clip has 8 frames in its first window
    pattern = cache["audio_encoder.blocks.0.attn.hook_pattern"]
    window = model.cfg.audio.attention_window_frames
    assert window == 26 and pattern.shape == (4, 4, window, window)
    for row, n_real in [(1, 13), (2, 8)]:
        assert pattern[row, :, :n_real, n_real:].abs().max() == 0
        assert pattern[row, :, :n_real, :n_real].sum(-1).allclose(torch.ones(4, n_real))


def test_bad_inputs_are_clear_errors(pair):
    _, model = pair
    inputs = inputs_for([[157]])
    with pytest.raises(TypeError, match="pixel_values_videos"):
        model(**inputs, pixel_values_videos=torch.zeros(4, 16))
    too_few = dict(inputs, input_ids=inputs["input_ids"].masked_fill((inputs["input_ids"] == AUDIO).cumsum(-1) == 1, 7))
    with pytest.raises(ValueError, match="audio placeholders"):
        model(**too_few)


def test_a_full_omni_checkpoint_loads_offline(tmp_path, monkeypatch):
    """model_type "qwen3_omni_moe", weights under "thinker." (talker left out to stay tiny) plus speech weights."""
    hf, _ = build_pair(SPEC)
    full = Qwen3OmniMoeForConditionalGeneration(
        Qwen3OmniMoeConfig(thinker_config=hf.config.to_dict(), enable_audio_output=False)
    )
    full.thinker.load_state_dict(hf.state_dict())
    full.save_pretrained(tmp_path)
    add_speech_weights(tmp_path, ["talker.model.norm.weight", "code2wav.pre_transformer.norm.weight"])
    inputs = inputs_for([[157], [60]])
    assert_loads_offline(tmp_path, monkeypatch, hf, inputs, "qwen3_omni", save_hf=False, processor=None)


def test_real_configuration_reads_the_checkpoints_sizes():
    hf_config, family, cfg = real_config("qwen3-omni-30b-a3b-instruct")
    assert family.name == "qwen3_omni"
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_vocab) == (
        48, 2048, 32, 4, 128, 152064
    )
    assert (cfg.num_experts, cfg.experts_per_token, cfg.d_mlp, cfg.use_qk_norm) == (128, 8, 768, True)
    assert (cfg.rotary_base, cfg.eps, cfg.audio_token_id, cfg.tie_word_embeddings) == (1e6, 1e-6, 151675, False)
    audio = cfg.audio
    assert (audio.n_layers, audio.d_model, audio.n_heads, audio.d_mlp, audio.n_mels) == (32, 1280, 20, 5120, 128)
    assert (audio.chunk_mel_frames, audio.attention_window_frames, audio.window_frames) == (100, 104, None)
    with torch.device("meta"):
        assert HookedAudioTransformer(cfg).audio_encoder.chunk_frames == 13
        theirs = Qwen3OmniMoeThinkerForConditionalGeneration(hf_config.thinker_config)
    # the text model's 30.53e9 parameters are keras-hub's published 30532122624 to within 0.002 %
    assert 30.5e9 < count_parameters(theirs.model.language_model) + count_parameters(theirs.lm_head) < 30.6e9


def test_folding_norms_into_the_router_and_experts_keeps_logits(pair):
    hf, model = pair
    folded = HookedAudioTransformer.from_hf_model(hf, fold_ln=True)
    inputs = inputs_for([[157], [60]], seed=6)
    with torch.no_grad():
        assert_logits_match(folded(**inputs), model(**inputs), inputs["attention_mask"])
    assert (folded.blocks[0].ln2.w == 1).all() and not torch.equal(folded.blocks[0].mlp.gate_up, model.blocks[0].mlp.gate_up)


def test_feature_extractor_inputs_match_hf():
    """From waveforms the way Qwen3OmniMoeProcessor prepares audio (it cannot be built here: its video
    processor needs torchvision): Whisper features padded to the longest clip, untruncated, mask renamed,
    placeholders expanded by the processor's own token-count formula."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import _get_feat_extract_output_lengths as count

    hf = make_hf_model(seed=7)
    model = HookedAudioTransformer.from_hf_model(hf)
    extractor = WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=16000, hop_length=160, chunk_length=1)
    clips = noise_clips(0, [40000, 9000])
    audio = extractor(clips, sampling_rate=16000, padding=True, truncation=False, return_attention_mask=True,
                      return_tensors="pt")
    mel_lengths = audio["attention_mask"].sum(-1)
    assert mel_lengths.tolist() == [250, 57]  # 2.5 s is longer than the extractor's 1 s chunk_length: no truncation
    counts = count(mel_lengths, 50).tolist()
    assert counts == [n_audio_tokens(250), n_audio_tokens(57)] == [33, 8]
    batch = inputs_for([[250], [57]], text_lengths=[3, 5])
    batch.update(input_features=audio["input_features"], feature_attention_mask=audio["attention_mask"])
    assert_matches_hf(model, hf, batch)


@torch.no_grad()
def test_the_audio_activation_also_runs_between_the_projector_layers():
    """HF applies audio_config.activation_function in the encoder blocks and between proj1 and proj2; the projector
    once stayed GELU (0.048 logits off HF with SiLU)."""
    for act in ("silu", "gelu"):  # gelu: the published checkpoints' (control)
        hf = make_hf_model(audio_act=act)
        model = HookedAudioTransformer.from_hf_model(hf)
        assert model.cfg.projector.act_fn == act
        assert_matches_hf(model, hf, SPEC.make_inputs(SPEC.cases["batch_mixed_clip_counts"], text_lengths=[3, 7], seed=1))


@torch.no_grad()
def test_a_short_clip_batched_with_a_longer_one_is_warned_of(pair):
    """HF's stem runs every chunk at the batch's widest, so a clip shorter than one chunk is encoded with the longer
    clip's padding and its last tokens move (we match HF, which does the same): was, silently. Controls: the clip
    alone, and clips all at least a chunk long, raise no warning."""
    import warnings

    _, model = pair
    with pytest.warns(UserWarning, match="a clip shorter than one chunk is batched with a longer one"):
        model(**inputs_for([[260], [60]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(**inputs_for([[60]]))
        model(**inputs_for([[260], [130]]))
