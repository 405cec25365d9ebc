"""A pre-norm transformer block with TransformerLens's residual-stream hook points.

resid_pre -> ln1 -> attn -> hook_attn_out -> (+) resid_mid -> ln2 -> mlp -> hook_mlp_out -> (+) resid_post
The same block serves the text decoder (causal, RMSNorm, gated MLP, rotary) and the audio encoder
(bidirectional, LayerNorm, GELU MLP); the config decides.

TransformerLens's input switches (``HookedAudioTransformer.set_use_attn_in`` / ``set_use_split_qkv_input`` /
``set_use_hook_mlp_in``, model-wide, so encoder blocks too) add their hook points here while on, and only then:
- ``hook_attn_in`` ``[batch, pos, head, d_model]``: resid_pre repeated per head; each copy normalised (ln1's
  weights) and read by its head's q. Under grouped-query attention kv head ``g`` reads the copy of the first
  query head it serves (``g * n_heads // n_key_value_heads``, TransformerLens's ``repeat_interleave`` grouping);
- ``hook_q_input`` ``[batch, pos, head, d_model]``, ``hook_k_input`` / ``hook_v_input``
  ``[batch, pos, kv_head, d_model]`` (TransformerLens's GQA convention: one copy per kv head), each normalised;
- ``hook_mlp_in`` ``[batch, pos, d_model]``: resid_mid as the MLP reads it (before ln2; not the skip path).
Each per-head input has TransformerLens 2's block-level name (``blocks.{l}.hook_q_input``), fired first, and
TransformerLens 4's attention-level one (``blocks.{l}.attn.hook_q_input``), fired on its output: one input under
two names, so a forward hook on both at once is refused (it would apply twice). As in TransformerLens 4, ln1's own
hooks see the unsplit residual (``[batch, pos, ...]``, what ``apply_ln_to_stack`` divides by); the per-head copies
are normalised without them, so an edit at ``ln1.hook_*`` does not reach the attention while a switch is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from ..hook_points import HookPoint
from .attention import Attention, PerHeadInputs
from .mlp import MLP, GatedMLP
from .norms import LayerNorm, RMSNorm, make_norm

if TYPE_CHECKING:
    from ..config import AudioEncoderConfig
    from ..kv_cache import KVCacheEntry


class TransformerBlock(nn.Module):
    # ``hook_resid_post`` is the whole residual stream (what TransformerLens's logit-lens tools check for)
    hook_out_is_single_residual_stream = True
    # TransformerLens's input switches (see the module docstring); set through ``set_input_hooks``
    use_attn_in = False
    use_split_qkv_input = False
    use_hook_mlp_in = False

    def __init__(
        self,
        *,
        d_model: int,
        n_heads: int,
        d_head: int,
        d_mlp: int,
        n_key_value_heads: int | None,
        normalization_type: str,
        eps: float,
        act_fn: str,
        gated_mlp: bool,
        qkv_bias: tuple[bool, bool, bool],
        o_bias: bool,
        mlp_bias: bool,
        causal: bool,
        rotary: bool,
        qk_norm_eps: float | None = None,
        mlp: nn.Module | None = None,
        clamp_fp16: bool = False,
    ):
        """``qk_norm_eps``: per-head q/k RMSNorm (Qwen3). ``mlp``: a ready feed-forward module replacing the
        dense one (e.g. ``components.moe.MoEMLP``), still called as ``blocks.{l}.mlp``. ``clamp_fp16``: in
        float16, clamp the block's output to +-(65504 - 1000) before ``hook_resid_post``, as HF's Whisper-style
        encoder layers do (an outlier there would otherwise overflow to inf and then NaN)."""
        super().__init__()
        self.clamp_fp16 = clamp_fp16
        self.ln1 = make_norm(normalization_type, d_model, eps)
        self.attn = Attention(
            d_model, n_heads, d_head, n_key_value_heads, qkv_bias, o_bias, causal, rotary, qk_norm_eps
        )
        self.ln2 = make_norm(normalization_type, d_model, eps)
        mlp_class = GatedMLP if gated_mlp else MLP
        self.mlp = mlp if mlp is not None else mlp_class(d_model, d_mlp, act_fn, bias=mlp_bias)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    @classmethod
    def for_encoder(cls, cfg: AudioEncoderConfig, rotary: bool = False, clamp_fp16: bool = True) -> TransformerBlock:
        """One audio-encoder block from its config: bidirectional, ungated MLP, and as many kv heads as
        ``cfg.n_key_value_heads`` says (None: one per head). Every audio encoder builds its blocks here, so
        that they stay the same module tree (and state-dict keys) whatever the tower around them. ``clamp_fp16``:
        HF's Whisper-style layers clamp in float16 (GLM-ASR's do not)."""
        return cls(
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            d_head=cfg.d_head,
            d_mlp=cfg.d_mlp,
            n_key_value_heads=cfg.n_key_value_heads or cfg.n_heads,
            normalization_type=cfg.normalization_type,
            eps=cfg.eps,
            act_fn=cfg.act_fn,
            gated_mlp=False,
            qkv_bias=cfg.qkv_bias,
            o_bias=cfg.o_bias,
            mlp_bias=cfg.mlp_bias,
            causal=False,
            rotary=rotary,
            clamp_fp16=clamp_fp16,
        )

    def set_input_hooks(self, *, attn_in: bool, split_qkv_input: bool, mlp_in: bool) -> None:
        """Switch TransformerLens's per-head / MLP inputs on or off, adding or removing their hook points (the
        model's ``set_use_*`` then re-runs ``setup`` so that ``hook_dict`` lists exactly the live points)."""
        if attn_in and split_qkv_input:
            raise ValueError(
                "use_attn_in and use_split_qkv_input are exclusive (as in TransformerLens 4): switch one off first"
            )
        per_head = [("hook_attn_in", attn_in)] + [(f"hook_{x}_input", split_qkv_input) for x in "qkv"]
        points = [(owner, name, on) for name, on in per_head for owner in (self, self.attn)]
        hooked = [getattr(owner, name).name for owner, name, on in [*points, (self, "hook_mlp_in", mlp_in)]
                  if not on and hasattr(owner, name) and (getattr(owner, name).fwd_hooks or getattr(owner, name).bwd_hooks)]
        if hooked:  # the point goes away with the switch: its hooks would be dropped without a word
            raise ValueError(f"{', '.join(hooked)} still carry hooks; remove them first (model.reset_hooks("
                             "including_permanent=True)) and add them again after switching back on")
        for owner, name, on in [*points, (self, "hook_mlp_in", mlp_in)]:
            if on and not hasattr(owner, name):
                owner.add_module(name, HookPoint().train(owner.training))
            elif not on and hasattr(owner, name):
                delattr(owner, name)
        self.use_attn_in, self.use_split_qkv_input, self.use_hook_mlp_in = attn_in, split_qkv_input, mlp_in

    def forward(
        self,
        resid: Float[torch.Tensor, "batch pos d_model"],
        mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_kv: KVCacheEntry | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """``past_kv``: this layer's entry of a ``KVCache`` (generation); ``resid`` is then the new positions only."""
        resid = self.hook_resid_pre(resid)
        attn_in = self._per_head_inputs(resid) if self.use_attn_in or self.use_split_qkv_input else self.ln1(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(attn_in, mask, rotary, past_kv)))
        mlp_in = self.hook_mlp_in(resid.clone()) if self.use_hook_mlp_in else resid
        out = resid + self.hook_mlp_out(self.mlp(self.ln2(mlp_in)))
        if self.clamp_fp16 and out.dtype == torch.float16:
            limit = torch.finfo(torch.float16).max - 1000
            out = out.clamp(-limit, limit)
        return self.hook_resid_post(out)

    def _per_head_inputs(self, resid: Float[torch.Tensor, "batch pos d_model"]) -> PerHeadInputs:
        """TransformerLens's split inputs: resid_pre copied per head, hooked, then each copy normalised."""
        points = (self.ln1.hook_scale, self.ln1.hook_normalized)
        for direction, hooked in (("forward", [p.name for p in points if p._forward_hooks]),
                                  ("backward", [p.name for p in points if p._backward_hooks])):
            if hooked:  # the attention reads the per-head copies, normalised apart: ln1's own output is unused
                effect = "would change nothing" if direction == "forward" else "would never fire"
                raise ValueError(
                    f"a {direction} hook on {', '.join(hooked)} {effect} while per-head inputs are on "
                    "(use_split_qkv_input / use_attn_in): the attention normalises each per-head copy itself. Hook "
                    "the per-head inputs (hook_q_input, ...), or turn the per-head inputs off to hook ln1")
        if self.ln1.hook_scale.is_hooked or self.ln1.hook_normalized.is_hooked:
            self.ln1(resid)  # ln1's own points are cached from the unsplit residual (what caches and lenses expect)
        n_heads, n_kv = self.attn.n_heads, self.attn.n_key_value_heads
        if self.use_attn_in:
            attn_in = _normalized(self.ln1, _fire(self.hook_attn_in, self.attn.hook_attn_in, _copies(resid, n_heads)))
            kv_in = attn_in[:, :, :: n_heads // n_kv]  # kv head g <- the first query head it serves
            return attn_in, kv_in, kv_in
        return (
            _normalized(self.ln1, _fire(self.hook_q_input, self.attn.hook_q_input, _copies(resid, n_heads))),
            _normalized(self.ln1, _fire(self.hook_k_input, self.attn.hook_k_input, _copies(resid, n_kv))),
            _normalized(self.ln1, _fire(self.hook_v_input, self.attn.hook_v_input, _copies(resid, n_kv))),
        )


def _copies(resid: Float[torch.Tensor, "batch pos d_model"], n: int) -> Float[torch.Tensor, "batch pos n d_model"]:
    """``n`` separate (writable) copies along a new head axis, as TransformerLens's ``repeat_along_head_dimension``."""
    return resid.unsqueeze(2).expand(-1, -1, n, -1).clone()


def _fire(
    outer: HookPoint, inner: HookPoint, x: Float[torch.Tensor, "batch pos n d_model"]
) -> Float[torch.Tensor, "batch pos n d_model"]:
    """One per-head input under TransformerLens 2's block-level name (``outer``), then TransformerLens 4's
    attention-level name (``inner``)."""
    if outer._forward_hooks and inner._forward_hooks:
        raise ValueError(
            f"{outer.name} and {inner.name} are one input under TransformerLens 2's and 4's names, and both carry "
            "forward hooks, which would apply twice: hook only one (e.g. filter out names containing '.attn.hook_')"
        )
    return inner(outer(x))


def _normalized(norm: nn.Module, x: Float[torch.Tensor, "*batch d_model"]) -> Float[torch.Tensor, "*batch d_model"]:
    """``norm`` applied to each per-head copy without firing its hook points (the same arithmetic as its forward)."""
    if isinstance(norm, LayerNorm):
        return F.layer_norm(x, (x.shape[-1],), norm.w, norm.b, norm.eps)
    if isinstance(norm, RMSNorm):
        x32 = x.float()
        return norm.w * (x32 / (x32.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()).to(x.dtype)
    raise TypeError(f"per-head inputs need a LayerNorm or RMSNorm ln1, not {type(norm).__name__}")
