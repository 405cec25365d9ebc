"""TransformerLens's model-level weight views for the text decoder, mixed into ``HookedAudioTransformer``.

Shapes follow ``HookedTransformer``: ``W_Q``/``W_K``/``W_V`` ``[layer, head, d_model, d_head]``, ``W_O``
``[layer, head, d_head, d_model]``, biases ``[layer, head, d_head]`` / ``[layer, d_model]``, MLP weights
``[layer, d_model, d_mlp]`` (with a leading expert axis after the layer for mixture-of-experts decoders),
``QK`` / ``OV`` as ``FactoredMatrix``. Grouped-query attention follows TransformerLens's convention: ``W_K`` and
``W_V`` are repeated to one matrix per query head, so every per-head tool (``OV``, ``QK``, composition scores)
works unchanged; ``_W_K`` / ``_W_V`` keep the stored key/value heads, as ``hook_k`` / ``hook_v`` do.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from transformer_lens import FactoredMatrix


class TransformerLensWeights:
    """Needs ``self.blocks`` (each with ``attn`` and ``mlp``), ``self.embed``, ``self.unembed`` and ``self.cfg``."""

    # --- embeddings ----------------------------------------------------------------------------------
    @property
    def W_E(self) -> Float[torch.Tensor, "d_vocab d_model"]:
        return self.embed.weight

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        return self.unembed.weight.T

    @property
    def b_U(self) -> Float[torch.Tensor, "d_vocab"]:
        return torch.zeros(self.cfg.d_vocab, dtype=self.W_U.dtype, device=self.W_U.device)

    # --- attention -----------------------------------------------------------------------------------
    def _stack(self, get) -> torch.Tensor:
        return torch.stack([get(block) for block in self.blocks])

    @property
    def W_Q(self) -> Float[torch.Tensor, "layer head d_model d_head"]:
        return self._stack(lambda b: b.attn.W_Q)

    @property
    def _W_K(self) -> Float[torch.Tensor, "layer kv_head d_model d_head"]:
        return self._stack(lambda b: b.attn._W_K)

    @property
    def _W_V(self) -> Float[torch.Tensor, "layer kv_head d_model d_head"]:
        return self._stack(lambda b: b.attn._W_V)

    @property
    def W_K(self) -> Float[torch.Tensor, "layer head d_model d_head"]:
        return self._stack(lambda b: b.attn.W_K)

    @property
    def W_V(self) -> Float[torch.Tensor, "layer head d_model d_head"]:
        return self._stack(lambda b: b.attn.W_V)

    @property
    def W_O(self) -> Float[torch.Tensor, "layer head d_head d_model"]:
        return self._stack(lambda b: b.attn.W_O)

    @property
    def b_Q(self) -> Float[torch.Tensor, "layer head d_head"]:
        return self._stack(lambda b: b.attn.b_Q)

    @property
    def b_K(self) -> Float[torch.Tensor, "layer head d_head"]:
        return self._stack(lambda b: b.attn.b_K)

    @property
    def b_V(self) -> Float[torch.Tensor, "layer head d_head"]:
        return self._stack(lambda b: b.attn.b_V)

    @property
    def b_O(self) -> Float[torch.Tensor, "layer d_model"]:
        return self._stack(lambda b: b.attn.b_O)

    @property
    def QK(self) -> FactoredMatrix:
        """Each head's query-key circuit ``W_Q @ W_K^T`` (before rotary, which makes it position-dependent).
        Refused where each head's q and k are RMS-normalised before the scores (Qwen3's ``q_norm`` / ``k_norm``):
        the scores are then not a bilinear form of the residual stream, and ``W_Q @ W_K^T`` leaves out the norms'
        learned weights, so it would be a different circuit."""
        if any(hasattr(block.attn, "q_norm") for block in self.blocks):
            raise NotImplementedError(
                "QK is not defined for this decoder: each head's q and k are RMS-normalised (attn.q_norm / "
                "attn.k_norm, with learned weights) before the attention scores, so W_Q @ W_K^T is not the query-key "
                "circuit. Use W_Q, W_K with blocks[l].attn.q_norm.w / k_norm.w, or the cached hook_rot_q / hook_rot_k"
            )
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """Each head's output-value circuit ``W_V @ W_O``."""
        return FactoredMatrix(self.W_V, self.W_O)

    def all_head_labels(self) -> list[str]:
        return [f"L{layer}H{head}" for layer in range(self.cfg.n_layers) for head in range(self.cfg.n_heads)]

    # --- MLPs ----------------------------------------------------------------------------------------
    @property
    def W_in(self) -> Float[torch.Tensor, "layer ... d_model d_mlp"]:
        return self._stack(lambda b: b.mlp.W_in)

    @property
    def W_gate(self) -> Float[torch.Tensor, "layer ... d_model d_mlp"]:
        return self._stack(lambda b: b.mlp.W_gate)

    @property
    def W_out(self) -> Float[torch.Tensor, "layer ... d_mlp d_model"]:
        return self._stack(lambda b: b.mlp.W_out)

    @property
    def b_in(self) -> Float[torch.Tensor, "layer d_mlp"]:
        return self._stack(lambda b: _mlp_bias(b.mlp, "b_in"))

    @property
    def b_out(self) -> Float[torch.Tensor, "layer d_model"]:
        return self._stack(lambda b: _mlp_bias(b.mlp, "b_out"))

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Float[torch.Tensor, "d_model"]:
        """Sum of the attention-output and MLP-output biases written to the residual stream before ``layer``
        (and the attention bias of ``layer`` itself with ``mlp_input``), as TransformerLens's."""
        if not 0 <= layer <= self.cfg.n_layers or (mlp_input and layer == self.cfg.n_layers):
            raise ValueError(f"layer must be in 0..{self.cfg.n_layers} (mlp_input: 0..{self.cfg.n_layers - 1}), got {layer}")
        total = torch.zeros(self.cfg.d_model, dtype=self.W_E.dtype, device=self.W_E.device)
        for block in self.blocks[:layer]:
            total = total + block.attn.b_O
            if include_mlp_biases and hasattr(block.mlp, "b_out"):  # mixture-of-experts MLPs have no biases
                total = total + block.mlp.b_out
        if mlp_input:
            total = total + self.blocks[layer].attn.b_O
        return total


def _mlp_bias(mlp, name: str) -> torch.Tensor:
    if not hasattr(mlp, name):
        raise NotImplementedError(f"{name} is not defined for this decoder's mixture-of-experts MLPs: their experts "
                                  "have no biases (per-expert weights: W_in / W_gate / W_out)")
    return getattr(mlp, name)
