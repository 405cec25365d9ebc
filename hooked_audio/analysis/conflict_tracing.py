"""Layer tracing of an audio-text conflict (Cho et al. 2026): is the audio's answer *suppressed* or *erased*?

- ``last_position_resid``: every layer's residual stream at each row's last real position.
- ``span_cosine_by_layer``: cosine similarity of the audio span's and the text's mean residuals, per layer.
- ``LinearProbe``: a multinomial logistic-regression probe, fit on audio-only prompts and read under conflict:
  if it still finds the audio's answer at the last position while the model says the text's, the evidence
  was suppressed downstream, not erased.
"""

from __future__ import annotations

import numbers

import torch
from jaxtyping import Float, Int

from ..cache import AudioActivationCache
from ..indices import checked_count, index_tensor, is_index
from ..model import refuse_inference_mode


def _resid_names(n_layers: int) -> list[str]:
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(n_layers)]


def last_position_resid(cache: AudioActivationCache) -> Float[torch.Tensor, "layer batch d_model"]:
    """Row 0: the embedding (``blocks.0.hook_resid_pre``); row l + 1: block l's output, at each row's last real
    position."""
    names = _resid_names(cache.model.cfg.n_layers)
    cache.require("layer tracing", names)
    rows, last = torch.arange(cache.inputs.shape[0]), cache.inputs.last_positions.cpu().long()
    return torch.stack([cache[n].float().cpu()[rows, last] for n in names])


def span_cosine_by_layer(cache: AudioActivationCache) -> Float[torch.Tensor, "layer batch"]:
    """Per layer (embedding first) and row, the cosine similarity between the mean residual over the row's audio
    positions and the mean over its real text positions: how far the two streams have merged."""
    names = _resid_names(cache.model.cfg.n_layers)
    cache.require("layer tracing", names)
    audio, text = cache.inputs.audio_mask.cpu(), cache.inputs.text_mask.cpu()
    if not bool(audio.any(-1).all()):
        raise ValueError("every row needs audio positions")
    out = []
    for name in names:
        resid = cache[name].float().cpu()
        mean_audio = (resid * audio[..., None]).sum(1) / audio.sum(1, keepdim=True)
        mean_text = (resid * text[..., None]).sum(1) / text.sum(1, keepdim=True)
        out.append(torch.nn.functional.cosine_similarity(mean_audio, mean_text, dim=-1))
    return torch.stack(out)


class LinearProbe:
    """Multinomial logistic regression on standardised features with an L2 penalty, fit by L-BFGS (the data
    here are a few hundred rows; the fit is exact to the optimiser's tolerance)."""

    def __init__(self, l2: float = 1e-2, max_iter: int = 200):
        if not (isinstance(l2, numbers.Real) and not isinstance(l2, bool) and 0 <= l2 < float("inf")):
            raise ValueError(f"l2 is the penalty's weight, a finite number >= 0 (0: none), got {l2!r}")
        self.l2, self.max_iter = float(l2), checked_count(max_iter, "max_iter (L-BFGS iterations)")

    def fit(self, x: Float[torch.Tensor, "n d"], y: Int[torch.Tensor, " n"], n_classes: int | None = None) -> "LinearProbe":
        """Labels are class indices ``0..n_classes-1`` (default: the largest label + 1); floats and bools are
        refused, as are non-finite features (they would make the standardisation NaN)."""
        refuse_inference_mode("LinearProbe.fit")
        x, y = torch.as_tensor(x).double(), index_tensor(y, "labels y")
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"need features [n, d] and one label per row, got {tuple(x.shape)} and {tuple(y.shape)}")
        if not bool(torch.isfinite(x).all()):
            rows = torch.nonzero(~torch.isfinite(x).all(-1)).flatten().tolist()
            raise ValueError(f"features have NaN or inf in rows {rows[:10]}: drop those rows (or fix the features) before fitting")
        if len(torch.unique(y)) < 2:
            raise ValueError("the probe needs at least two classes in its training rows")
        if n_classes is not None and not (is_index(n_classes) and n_classes >= 2):
            raise ValueError(f"n_classes must be a whole number >= 2, got {n_classes!r}")
        n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
        if int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise ValueError(f"labels must be class indices in 0..{n_classes - 1}, got labels from {int(y.min())} to "
                             f"{int(y.max())} (pass n_classes= the number of classes, map labels to 0..n_classes-1)")
        self.mean, self.std = x.mean(0), x.std(0).clamp(min=1e-8)
        z = (x - self.mean) / self.std
        self.weight = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        self.bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS([self.weight, self.bias], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def loss():
            optimiser.zero_grad()
            value = torch.nn.functional.cross_entropy(z @ self.weight + self.bias, y) + self.l2 * self.weight.square().sum()
            value.backward()
            return value

        with torch.enable_grad():
            optimiser.step(loss)
        self.weight, self.bias = self.weight.detach(), self.bias.detach()
        return self

    def predict(self, x: Float[torch.Tensor, "n d"]) -> Int[torch.Tensor, " n"]:
        if not hasattr(self, "weight"):
            raise ValueError("fit the probe before predicting")
        x = torch.as_tensor(x).double()
        if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"need features [n, {self.weight.shape[0]}] as in fit, got {tuple(x.shape)} (one row: x[None])")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("features have NaN or inf: the prediction there would be arbitrary; drop those rows")
        return (((x - self.mean) / self.std) @ self.weight + self.bias).argmax(-1)

    def accuracy(self, x: Float[torch.Tensor, "n d"], y: Int[torch.Tensor, " n"]) -> float:
        """Share of rows whose prediction is the label; ``y``: 1-D class indices, one per row of ``x``."""
        predicted, y = self.predict(x), index_tensor(y, "labels y")
        if y.shape != predicted.shape:
            raise ValueError(f"need one label per row of x: x has {len(predicted)} rows, y is {tuple(y.shape)} "
                             "(labels are 1-D, not [n, 1], and are not broadcast)")
        return float((predicted == y.cpu()).double().mean())
