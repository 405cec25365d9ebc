"""Interpretability methods as hook functions plus thin helpers over ``run_with_cache``.

- ``logit_lens``: what each layer's residual stream would predict, at any position (audio ones too).
- ``heads``: how much each decoder head attends to the audio span; top heads.
- ``ablation``: zero-, mean- or resample-ablation hooks for chosen heads, and random control heads.
- ``audiolens``: AudioLens label lens, information scores, critical layer, audio masking, enrichment.
- ``attribute_prompts``: AudioLens's prompt formats P1-P3, the assistant's turn prefilled and left open.
- ``listening``: listening-head ranking, listening signal, audio-silence steering.
- ``counterfactuals``: the same prompt with its clips silenced, replaced by matched noise, or removed.
- ``steering``: add a direction to the residual stream (at audio positions or anywhere).
- ``text_dominance``: who wins when audio and text disagree (rate, flip rate, hint effect).
- ``conflict_tracing``: last-position residuals by layer, audio-text span similarity, a linear probe.
- ``back_patching``: a late layer's audio-span residual written into an earlier layer.
- ``causal_tracing``: corrupt the audio, restore text positions by layer / group, recovery rate.
- ``encoder_patching``: clean audio-encoder activations patched into a corrupted run, by time window or head.
- ``attribution``: attribution patching (grad x delta) and its check against activation patching.
- ``instruction_steering``: the residual difference of two instructions about the same audio, added back.
- ``temporal``: attention to the audio on a time axis, the window of maximal change, overlap scores.
"""

from .attribution import attribution_patching, attribution_vs_activation_patching
from .back_patching import back_patching_hooks, back_patching_sweep, patch_positions
from .conflict_tracing import LinearProbe, last_position_resid, span_cosine_by_layer
from .causal_tracing import CausalTrace, causal_tracing, position_groups
from .encoder_patching import EncoderPatchingResult, encoder_frame_times, encoder_patching
from .instruction_steering import instruction_steering_hooks, instruction_steering_vector
from .temporal import interval_overlap, localise, random_window_baseline, temporal_attention
from .text_dominance import text_dominance, text_positions, without_text
from .attribute_prompts import PROMPT_FORMATS, attribute_messages, attribute_prompt_inputs
from .audiolens import (
    AttributeInformation, EnrichmentSweep, attribute_information, audio_masking_hooks, critical_layer,
    critical_layer_correlation, enrichment_hook, enrichment_sweep, information_scores, label_log_probs,
)
from .ablation import head_ablation_effects, head_ablation_hooks, random_heads, same_prompt_donors
from .heads import audio_attention_by_head, top_heads
from .counterfactuals import matched_noise, silence_like, without_audio
from .listening import (
    SignalAUC, audio_attention_per_row, audio_silence_steering_hooks, generated_queries, listening_head_scores,
    listening_signal, listening_signal_auc, silence_direction,
)
from .logit_lens import LogitLens, at_last_positions, logit_lens
from .steering import steering_hook

__all__ = [
    "attribution_patching",
    "attribution_vs_activation_patching",
    "back_patching_hooks",
    "back_patching_sweep",
    "patch_positions",
    "LinearProbe",
    "last_position_resid",
    "span_cosine_by_layer",
    "CausalTrace",
    "causal_tracing",
    "position_groups",
    "instruction_steering_hooks",
    "instruction_steering_vector",
    "interval_overlap",
    "localise",
    "random_window_baseline",
    "temporal_attention",
    "text_dominance",
    "without_text",
    "text_positions",
    "audio_masking_hooks",
    "PROMPT_FORMATS",
    "attribute_messages",
    "attribute_prompt_inputs",
    "AttributeInformation",
    "EnrichmentSweep",
    "attribute_information",
    "critical_layer_correlation",
    "enrichment_sweep",
    "critical_layer",
    "enrichment_hook",
    "information_scores",
    "label_log_probs",
    "audio_attention_per_row",
    "listening_head_scores",
    "listening_signal",
    "listening_signal_auc",
    "SignalAUC",
    "silence_like",
    "matched_noise",
    "without_audio",
    "generated_queries",
    "silence_direction",
    "audio_silence_steering_hooks",
    "LogitLens",
    "at_last_positions",
    "audio_attention_by_head",
    "head_ablation_effects",
    "head_ablation_hooks",
    "logit_lens",
    "random_heads",
    "same_prompt_donors",
    "steering_hook",
    "top_heads",
    "EncoderPatchingResult",
    "encoder_frame_times",
    "encoder_patching",
]
