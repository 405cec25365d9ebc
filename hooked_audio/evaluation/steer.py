"""``--steer SPEC``: add a direction to the residual stream during a whole evaluation.

A SPEC is comma-separated ``key=value`` pairs::

    layer=12,file=direction.pt,scale=4,positions=audio

    layer      decoder layer, 0 .. n_layers-1 (required)
    file       the direction: a vector of d_model entries in a .pt/.pth/.bin (torch.save of a tensor, or of a
               dict holding one), .safetensors or .npy file (required)
    scale      multiplies the direction (default 1; negative pushes the other way)
    positions  where it is added (default all):
                 audio  the clip's audio-token positions (each batch's ``inputs.audio_mask``)
                 text   the prompt's text positions (padding excluded) and every generated token
                 last   each row's last prompt position (the answer position) and every generated token
                 all    every position, prompt and generated
    hook       resid_post (default: the output of the layer), resid_pre (its input) or resid_mid
    key        the tensor's name in a file that holds several

Several ``--steer`` flags stack (each adds its own direction). The hooks are built per batch (the audio
and text positions change from batch to batch) with :func:`hooked_audio.analysis.steering_hook`, whose
positions are absolute columns of the token sequence, so a generated token is steered the same way with
the KV cache as without it. The scoring forward (restricted argmax) and every generated token run with
the steering active.

A SPEC is checked before any model work: unknown or repeated keys, a missing or unreadable file, a
tensor that is not one vector, NaN or inf entries, a scale that is not a finite number, an unknown
``positions``/``hook`` (:func:`parse_steer`); a layer outside the model or a vector whose width is not
d_model (:func:`check_steers`, from the model's config alone). The results' settings (``.meta.json``)
record each steer (layer, hook, positions, scale and the vector's sha256), so resuming with another
``--steer`` is refused.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..indices import whole_number_from_text

KEYS = ("layer", "file", "scale", "positions", "hook", "key")
POSITIONS = ("audio", "text", "last", "all")
HOOKS = ("resid_post", "resid_pre", "resid_mid")
VECTOR_FILES = (".pt", ".pth", ".bin", ".safetensors", ".npy")
EXAMPLE = "layer=12,file=direction.pt,scale=4,positions=audio"


class SteerError(ValueError):
    """A ``--steer`` SPEC that cannot be used, with the reason."""


@dataclass(frozen=True)
class Steer:
    """One steering direction: ``scale * vector`` added at ``blocks.{layer}.hook_{hook}`` on ``positions``."""

    layer: int
    vector: torch.Tensor = field(repr=False)
    scale: float = 1.0
    positions: str = "all"
    hook: str = "resid_post"
    source: str = "tensor"  # the file it came from (for messages; not part of the run's settings)

    def __post_init__(self):
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise SteerError(f"layer must be a whole number >= 0, got {self.layer!r}")
        if self.positions not in POSITIONS:
            raise SteerError(f"positions={self.positions!r} is not one of {'|'.join(POSITIONS)}")
        if self.hook not in HOOKS:
            raise SteerError(f"hook={self.hook!r} is not one of {'|'.join(HOOKS)}")
        if not math.isfinite(float(self.scale)):
            raise SteerError(f"scale must be a finite number, got {self.scale!r}")
        object.__setattr__(self, "vector", _as_vector(self.vector, self.source))

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_{self.hook}"

    def config(self) -> dict:
        """What decides the results (recorded in the run's settings; a resumed run must match it)."""
        digest = hashlib.sha256(self.vector.numpy().tobytes()).hexdigest()
        return {"layer": self.layer, "hook": self.hook, "positions": self.positions, "scale": float(self.scale),
                "d_model": int(self.vector.shape[0]), "vector_sha256": digest,
                "vector_norm": round(float(self.vector.norm()), 6)}


def _as_vector(value, source: str) -> torch.Tensor:
    try:
        vector = torch.as_tensor(value).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise SteerError(f"{source}: not a tensor ({error})") from None
    shape = tuple(vector.shape)
    while vector.ndim > 1 and vector.shape[0] == 1:  # [1, d_model] (a mean with keepdim) is one vector
        vector = vector[0]
    if vector.ndim != 1 or vector.numel() == 0:
        raise SteerError(f"{source}: the direction must be one vector of d_model entries, got shape {shape}")
    if vector.dtype == torch.bool or vector.is_complex():
        raise SteerError(f"{source}: the direction must hold real numbers, got {vector.dtype}")
    vector = vector.to(torch.float32).contiguous()
    bad = int((~torch.isfinite(vector)).sum())
    if bad:
        raise SteerError(f"{source}: the direction has {bad} NaN or inf entries (of {vector.numel()})")
    return vector


def load_vector(path: str, key: str | None = None) -> torch.Tensor:
    """The tensor in ``path`` (.pt/.pth/.bin, .safetensors, .npy); ``key`` picks one of several."""
    if not os.path.exists(path):
        raise SteerError(f"file={path!r}: no such file")
    if os.path.isdir(path):
        raise SteerError(f"file={path!r} is a folder, not a vector file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in VECTOR_FILES:
        raise SteerError(f"file={path!r}: unknown kind {ext or '(no extension)'!r}; use one of {', '.join(VECTOR_FILES)}")
    try:
        if ext == ".npy":
            import numpy as np

            loaded = np.load(path, allow_pickle=False)
        elif ext == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(path)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # each loader has its own errors; all mean "not a vector file"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SteerError(f"file={path!r}: cannot read it as {ext} ({first})") from None
    if isinstance(loaded, dict):
        tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if key is not None:
            if key not in tensors:
                raise SteerError(f"file={path!r} has no tensor key={key!r}; it has {sorted(tensors)[:10]}")
            return tensors[key]
        if len(tensors) != 1:
            raise SteerError(f"file={path!r} holds {len(tensors)} tensors {sorted(tensors)[:10]}; name one with key=NAME")
        return next(iter(tensors.values()))
    if key is not None:
        raise SteerError(f"file={path!r} holds one tensor, not named ones: drop key={key!r}")
    return loaded


def parse_steer(text: str) -> Steer:
    """``layer=12,file=direction.pt,scale=4,positions=audio`` -> a :class:`Steer` (its file loaded and checked)."""
    pairs: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise SteerError(f"{part.strip()!r} is not key=value (a SPEC looks like {EXAMPLE})")
        if name not in KEYS:
            raise SteerError(f"unknown key {name!r}; the keys are {', '.join(KEYS)} (e.g. {EXAMPLE})")
        if name in pairs:
            raise SteerError(f"key {name!r} is given twice")
        if not value:
            raise SteerError(f"key {name!r} has no value")
        pairs[name] = value
    missing = [k for k in ("layer", "file") if k not in pairs]
    if missing:
        raise SteerError(f"missing {' and '.join(missing)} (a SPEC looks like {EXAMPLE})")
    try:
        layer = whole_number_from_text(pairs["layer"])
    except ValueError:
        raise SteerError(f"layer={pairs['layer']!r} is not a whole number") from None
    scale_text = pairs.get("scale", "1")
    try:
        if "_" in scale_text:  # float() would read "1_0" as 10
            raise ValueError(scale_text)
        scale = float(scale_text)
    except ValueError:
        raise SteerError(f"scale={pairs['scale']!r} is not a number") from None
    positions, hook = pairs.get("positions", "all"), pairs.get("hook", "resid_post")
    if positions not in POSITIONS:
        raise SteerError(f"positions={positions!r} is not one of {'|'.join(POSITIONS)}")
    if hook not in HOOKS:
        raise SteerError(f"hook={hook!r} is not one of {'|'.join(HOOKS)}")
    vector = load_vector(pairs["file"], pairs.get("key"))
    return Steer(layer=layer, vector=vector, scale=scale, positions=positions, hook=hook,
                 source=f"file={pairs['file']!r}")


def as_steers(steers: Sequence[Steer | str] | Steer | str | None) -> list[Steer]:
    """SPEC strings or :class:`Steer` objects (or one of them) as a list of :class:`Steer`."""
    if steers is None:
        return []
    if isinstance(steers, (Steer, str)):
        steers = [steers]
    return [s if isinstance(s, Steer) else parse_steer(s) for s in steers]


def check_steers(steers: Sequence[Steer], n_layers: int, d_model: int) -> None:
    """Each steer's layer exists and its vector has the residual stream's width (from the model's config)."""
    for steer in steers:
        if not 0 <= steer.layer < n_layers:
            raise SteerError(f"layer={steer.layer} is out of range: the model has layers 0..{n_layers - 1}")
        if steer.vector.shape[0] != d_model:
            raise SteerError(
                f"{steer.source}: the direction has {steer.vector.shape[0]} entries but the model's d_model is {d_model}"
            )


def steer_config(steers: Sequence[Steer]) -> list[dict] | None:
    return [s.config() for s in steers] or None


def positions_for(positions: str, inputs, max_new_tokens: int):
    """The ``positions`` argument of ``steering_hook`` for one batch (absolute columns; generated tokens
    follow the prompt's ``inputs.shape[1]`` columns). None: every position."""
    if positions == "all":
        return None
    if positions in ("audio", "text"):  # read from each run's inputs; "text" takes the generated tokens too
        return positions
    n_rows, n_prompt = inputs.shape
    mask = torch.zeros(n_rows, n_prompt + max_new_tokens, dtype=torch.bool)
    mask[:, n_prompt:] = True  # every generated token
    mask[torch.arange(n_rows), inputs.last_positions.cpu().long()] = True  # and the prompt's last
    return mask


def steering_hooks(steers: Sequence[Steer], inputs, max_new_tokens: int = 0) -> list[tuple]:
    """``fwd_hooks`` steering one batch (its prompt and up to ``max_new_tokens`` generated tokens)."""
    from ..analysis import steering_hook

    return [(s.hook_name, steering_hook(s.vector, s.scale, positions=positions_for(s.positions, inputs, max_new_tokens)))
            for s in steers]
