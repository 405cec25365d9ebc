"""Instruction-based steering (Lin & Lee 2026): the residual difference between two instructions about the
same audio, added back at later layers' text positions to move where the model listens.

- ``instruction_steering_vector``: mean over items of ``h_last(A) - h_last(B)`` at one layer, audio fixed.
- ``instruction_steering_hooks``: ``alpha * v`` added at the text positions of chosen layers.
"""

from __future__ import annotations

import functools

import torch
from jaxtyping import Float

from ..audio.inputs import AudioTextInput
from ..indices import checked_layers
from .steering import steering_hook


def _same_audio(a, b) -> None:
    if not a.has_audio or not b.has_audio:
        raise ValueError("both instruction sets need the audio: the vector contrasts instructions about the same clips")
    if not a.same_audio_as(b):
        raise ValueError(
            "inputs_a and inputs_b carry different audio; the vector must contrast the instructions alone "
            "(the same clips, in the same order, under both instructions)"
        )


@torch.no_grad()
def instruction_steering_vector(model, inputs_a, inputs_b, layer: int) -> Float[torch.Tensor, " d_model"]:
    """Mean over rows of ``blocks.{layer}.hook_resid_post`` at row i's last real position under instruction A
    minus the same under instruction B (row i of both: the same clip). Refuses different audio, and the
    same prompts under both names (a zero vector)."""
    inputs_a, inputs_b = model.to_inputs(inputs_a), model.to_inputs(inputs_b)
    if inputs_a.shape[0] != inputs_b.shape[0]:
        raise ValueError(f"inputs_a has {inputs_a.shape[0]} rows and inputs_b {inputs_b.shape[0]}: pair each clip")
    (layer,) = checked_layers([layer], model.cfg.n_layers, "layer")
    _same_audio(inputs_a, inputs_b)
    if inputs_a.shape == inputs_b.shape and torch.equal(inputs_a.input_ids.cpu(), inputs_b.input_ids.cpu()):
        raise ValueError("inputs_a and inputs_b are the same prompts, so the vector would be exactly zero: "
                         "give the clips under two different instructions")
    name = f"blocks.{layer}.hook_resid_post"
    means = []
    for inputs in (inputs_a, inputs_b):
        _, cache = model.run_with_cache(inputs, names_filter=[name])
        rows = torch.arange(inputs.shape[0])
        means.append(cache[name].float().cpu()[rows, inputs.last_positions.cpu().long()].mean(0))
    return means[0] - means[1]


def instruction_steering_hooks(
    vector: Float[torch.Tensor, " d_model"], layers: list[int], alpha: float, inputs, normalize: bool = False,
) -> list[tuple]:
    """``fwd_hooks`` adding ``alpha * vector`` to ``blocks.{l}.hook_resid_post`` at the text positions of
    ``inputs`` (an ``AudioTextInput``), for every ``l`` in ``layers``. Positions generated later are left
    alone (the prompt's text positions are steered, as in the paper). ``normalize=True`` scales the vector to
    unit norm first, so ``alpha`` is the norm added: vectors of different instructions (whose norms can differ by
    orders of magnitude) then push equally hard."""
    layers = checked_layers(layers, None)
    if not isinstance(inputs, AudioTextInput):
        raise TypeError("inputs must be an AudioTextInput (model.to_inputs(...)): its text positions are steered")
    if normalize:
        norm = float(torch.as_tensor(vector).float().norm())
        if norm == 0:
            raise ValueError("the steering vector is zero: there is no direction to normalize")
        vector = torch.as_tensor(vector) / norm
    hook = functools.partial(_steer_rows_built_for, built_for=inputs,
                             add=steering_hook(vector, alpha, positions=inputs.text_mask))
    return [(f"blocks.{l}.hook_resid_post", hook) for l in layers]


def _steer_rows_built_for(resid: torch.Tensor, hook, *, built_for: AudioTextInput, add) -> torch.Tensor:
    """The steering hook, on a batch of exactly the rows it was built for (a one-row mask would otherwise steer
    that row's text positions in every row)."""
    if resid.shape[0] != built_for.shape[0]:
        raise ValueError(f"the instruction-steering hooks were built for {built_for.shape[0]} rows but {hook.name} "
                         f"has {resid.shape[0]}: build them from the inputs you run")
    return add(resid, hook)
