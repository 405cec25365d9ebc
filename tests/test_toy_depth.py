"""Every decoder layer of an organism does work: a layer that writes almost nothing into the residual stream
gives layer-wise analyses (information scores, critical layers, back-patching sweeps) resolution they do not have."""

import pytest
import torch

# Share of the residual stream's norm a block writes (attention or MLP output), mean over real positions.
MIN_WRITE = 0.05


def _write_ratios(name: str) -> torch.Tensor:
    from hooked_audio import HookedAudioTransformer
    from hooked_audio.toy import evaluate

    model = HookedAudioTransformer.from_pretrained(name)
    samples = [s for s in evaluate.make_eval_set(n_per_task=4, task_names=["pitch", "beeps", "when", "noise"]) if s.hint is None]
    inputs = model.to_inputs(evaluate.encode(model.processor, samples))
    with torch.no_grad():
        _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith(("attn_out", "mlp_out", "resid_pre")))
    real = inputs.attention_mask.bool()
    ratios = []
    for layer in range(model.cfg.n_layers):
        resid = cache[f"blocks.{layer}.hook_resid_pre"][real].norm(dim=-1).mean()
        writes = [cache[f"blocks.{layer}.hook_{part}_out"][real].norm(dim=-1).mean() / resid for part in ("attn", "mlp")]
        ratios.append(max(writes))
    return torch.stack(ratios)


@pytest.mark.parametrize("name", ["toy-qwen2-audio", "toy-qwen2-audio-textual", "toy-voxtral"])
def test_every_layer_of_every_organism_writes_into_the_residual_stream(name):
    """Measured: every block writes 27-49 % of the residual norm (the larger of attention and MLP) in
    toy-qwen2-audio (the listener it replaced: 25-53 %), 21-54 % in its textual sibling, 23-42 % in toy-voxtral (the one it replaced: 22-46 %). The control is the earlier toy, grown from 4 to 6 layers with its new layers starting as the identity:
    its layers 4-5 wrote 0.4-0.8 % and failed this test."""
    assert bool((_write_ratios(name) > MIN_WRITE).all())
