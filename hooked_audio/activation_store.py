"""Activations streamed to disk for SAE training: safetensors shards with an index, and a lazy loader.

``stream_activations(model, batches, names, out_dir)`` runs ``run_with_cache`` on each batch and writes, per
hook name, the activation rows of the chosen positions (``[n_tokens, *trailing]``, e.g. ``[n_tokens,
d_model]`` for the residual stream), with per-token metadata, to ``out_dir``::

    index.json                  names, shapes, dtype, shards with their token ranges, model, positions rule
    shard_00000.safetensors     "act.<hook name>" [rows, ...] for every name, and "meta.<key>" [rows(, 2)]
    shard_00001.safetensors     ...

Every shard holds the same token range for all names, so row ``i`` of every name (and of the metadata) is
the same token. Metadata: ``item`` (the batch row, numbered across all batches), ``position`` (its decoder
position in that batch), ``is_audio``, ``clip_in_row`` (which of its row's clips the audio token belongs to: 0, 1, ...;
-1 at text positions), ``start_s`` / ``end_s`` (the seconds of that clip the audio token covers, from
``inputs.token_times()``; NaN at text positions).

``ActivationStore(out_dir)`` reads it back lazily (``safetensors.safe_open``): ``store[name][a:b]``,
``store.load(name, a, b)``, ``store.metadata(a, b)`` and ``store.iter_batches(name, batch_size,
shuffle=True)`` for a training loop, which holds ``buffer_shards`` shards in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from safetensors import safe_open
from safetensors.torch import save_file

from .audio.inputs import AudioTextInput
from .cache import activation_layout, position_dims
from .fingerprint import model_fingerprint
from .indices import as_bool_mask, index_tensor, is_index

FORMAT = "hooked_audio.activation_store"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
SHARD_PATTERN = "shard_{:05d}.safetensors"
META_KEYS = ("item", "position", "is_audio", "clip_in_row", "start_s", "end_s")
RESUME_KEYS = ("model", "names", "positions", "dtype", "shard_size_mb", "attached_hooks", "metadata_keys")  # what a resumed store must share
Positions = Literal["audio", "last", "text", "all"]
Rows = Float[torch.Tensor, "batch ..."]  # a batch of stored rows: [batch, d_model], [batch, head, d_head], ...
POSITION_RULES = {
    "audio": "every audio token of each row (inputs.audio_mask), never padding",
    "last": "each row's last real position (inputs.last_positions)",
    "text": "every real text position of each row (inputs.text_mask)",
    "all": "every real position of each row (attention mask), never padding",
}


def stream_activations(
    model,
    batches,
    names: str | list[str],
    out_dir: str | os.PathLike,
    positions: Positions = "audio",
    dtype: torch.dtype | None = torch.float16,
    shard_size_mb: float = 256.0,
    overwrite: bool = False,
    resume: bool = False,
) -> "ActivationStore":
    """Write the activations of ``names`` at ``positions`` of every batch to safetensors shards in ``out_dir``.

    ``batches``: one input ``model.to_inputs`` accepts (HF-style dict, processor output, ``AudioTextInput``,
    tokens) or an iterable of them. ``names``: decoder hook names (``blocks.*``, ``hook_embed``,
    ``ln_final.*``) and, with ``positions="audio"``, ``hook_audio_embeds``; attention patterns/scores and
    encoder activations are refused. ``dtype``: the stored floating dtype (None: the model's), cast as each
    activation is cached; a value that does not fit it (float16 ends at 65504) is refused, naming the hook.
    Shards hold about ``shard_size_mb`` MB each. A non-empty ``out_dir`` is refused unless ``overwrite=True``
    (which deletes the store's own files there) or ``resume=True`` with the same model (weights and config:
    ``model_fingerprint``), names, positions, dtype, shard size and no hooks attached to the model (their
    functions cannot be compared; the hook points attached are recorded): the batches are checked against the
    fingerprints of those stored (not recomputed), then a finished store is returned as it is and an interrupted
    one continues after the last batch whose rows all reached a shard.
    Returns the ``ActivationStore`` on ``out_dir``.
    """
    names = _check_names(model, names, positions)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype (e.g. torch.float16) or None, got {dtype!r}")
    if not shard_size_mb > 0:
        raise ValueError(f"shard_size_mb must be positive, got {shard_size_mb}")
    out_dir = Path(out_dir)
    dtype = dtype or next(model.parameters()).dtype
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "hooked_audio_version": _version(),
        "model": _model_summary(model), "names": names, "positions": positions,
        "positions_rule": POSITION_RULES[positions], "dtype": _dtype_name(dtype), "shard_size_mb": shard_size_mb,
        "attached_hooks": model.attached_hook_names(), "metadata_keys": list(META_KEYS),
    }
    previous = None
    if out_dir.exists() and any(out_dir.iterdir()):
        previous = _read_index(out_dir)
        differ = [] if previous is None else [k for k in RESUME_KEYS if previous.get(k, []) != header[k]]
        if previous is not None and header["attached_hooks"] and "attached_hooks" not in differ:
            differ.append("attached_hooks (hooks at the same points: their functions cannot be compared)")
        resumable = resume and previous is not None and not differ
        if resumable and "resume_point" not in previous and not previous["complete"]:
            raise ValueError(f"the interrupted store in {str(out_dir)!r} was written without a resume point (an older "
                             "version): pass overwrite=True to write it again")
        if resumable and previous["complete"]:
            _check_same_batches(model, batches, previous, out_dir)
            return ActivationStore(out_dir)
        if not resumable:
            if not overwrite:
                why = (f" (its index differs in {', '.join(differ)})" if resume and differ else
                       " (it holds no readable store index)" if resume and previous is None else "")
                raise FileExistsError(
                    f"{str(out_dir)!r} is not empty{why}: pass overwrite=True to replace a store there, "
                    "resume=True to keep a finished one or continue an interrupted one, or choose an empty folder"
                )
            previous = None
            for path in [out_dir / INDEX_FILE, out_dir / (INDEX_FILE + ".tmp"), *out_dir.glob("shard_*.safetensors")]:
                path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)

    writer = _ShardWriter(out_dir, names, shard_size_mb * 1e6)
    n_items = n_batches = 0
    fingerprints: list[str] = []
    resume_point = {"n_batches": 0, "n_items": 0, "n_rows": 0}
    if previous is not None:
        resume_point = previous["resume_point"]
        writer.restore(previous, resume_point["n_rows"])
        fingerprints = previous["fingerprints"][: resume_point["n_batches"]]
        writer.write_index({**header, "complete": False, "n_items": resume_point["n_items"],
                            "n_batches": resume_point["n_batches"], "resume_point": resume_point, "fingerprints": fingerprints})
    boundaries = [resume_point]  # rows through each batch; all of the first one's are in shards
    for batch in _as_batches(batches):
        inputs = model.to_inputs(batch)
        if n_batches < resume_point["n_batches"]:  # stored before the interruption: check it is the same batch
            _check_batch(inputs, n_batches, fingerprints, out_dir)
            n_items += inputs.shape[0]
            n_batches += 1
            continue
        with torch.no_grad():
            _, cache = model.run_with_cache(inputs, names_filter=names, device="cpu", cache_dtype=dtype)
        rows = _rows(cache.cache_dict, inputs, names, positions, n_items, dtype)
        if rows is not None:
            writer.add(rows)
        n_items += inputs.shape[0]
        n_batches += 1
        fingerprints.append(_fingerprint(inputs))
        boundaries.append({"n_batches": n_batches, "n_items": n_items, "n_rows": writer.n_rows + writer.n_buffered})
        # the latest batch boundary whose rows have all reached a shard: where an interrupted run continues
        resume_point = [b for b in boundaries if b["n_rows"] <= writer.n_rows][-1]
        if writer.trailing:  # nothing to index before the first stored row
            writer.write_index({**header, "complete": False, "n_items": n_items, "n_batches": n_batches,
                               "resume_point": resume_point, "fingerprints": fingerprints})
    if n_batches < resume_point["n_batches"]:
        raise ValueError(f"only {n_batches} batches were given, but {resume_point['n_batches']} were stored before "
                         "the interruption: resume with the same batches")
    writer.close()
    if writer.n_rows == 0:
        raise ValueError(
            f"no token of the {n_items} batch rows is at positions={positions!r}: nothing to store "
            f"(positions='audio' on text-only input?)"
        )
    writer.write_index({**header, "complete": True, "n_items": n_items, "n_batches": n_batches,
                        "fingerprints": fingerprints})
    return ActivationStore(out_dir)


class ActivationStore:
    """The activations ``stream_activations`` wrote to ``out_dir``, read lazily shard by shard."""

    def __init__(self, out_dir: str | os.PathLike, allow_incomplete: bool = False):
        self.out_dir = Path(out_dir)
        path = self.out_dir / INDEX_FILE
        if not path.exists():
            raise FileNotFoundError(f"no {INDEX_FILE} in {str(self.out_dir)!r}: not an activation store")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a {FORMAT} index")
        if not self.index["complete"] and not allow_incomplete:
            raise ValueError(
                f"the store in {str(self.out_dir)!r} is incomplete (the run stopped after "
                f"{len(self.index['shards'])} shards); rerun stream_activations with overwrite=True, "
                "or pass allow_incomplete=True to read the shards written so far"
            )
        self.shards = self.index["shards"]
        self._stops = [s["stop"] for s in self.shards]

    # --- description --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.index["n_tokens"]

    @property
    def names(self) -> list[str]:
        return list(self.index["names"])

    def __contains__(self, name: str) -> bool:
        return name in self.index["activations"]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._info(name)["shape"])

    def dtype(self, name: str) -> torch.dtype:
        return getattr(torch, self._info(name)["dtype"])

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.out_dir)!r}: {len(self)} tokens at positions={self.index['positions']!r}, "
                f"{len(self.names)} names, {len(self.shards)} shards)")

    def _info(self, name: str) -> dict:
        if name not in self.index["activations"]:
            raise KeyError(f"{name!r} is not in this store, which holds {self.names}")
        return self.index["activations"][name]

    # --- reading ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> "ActivationView":
        self._info(name)
        return ActivationView(self, name)

    def load(self, name: str, start: int = 0, stop: int | None = None) -> Float[torch.Tensor, "rows ..."]:
        """Rows ``[start, stop)`` of ``name`` (read from the shards that hold them only)."""
        self._info(name)
        return self._read(f"act.{name}", start, stop)

    def metadata(self, start: int = 0, stop: int | None = None) -> dict[str, torch.Tensor]:
        """Per-token metadata of rows ``[start, stop)``: ``item``, ``position``, ``is_audio``, ``clip_in_row``,
        ``start_s``, ``end_s`` (a store written before ``clip_in_row`` existed has the others)."""
        return {key: self._read(f"meta.{key}", start, stop) for key in self.index.get("metadata_keys", META_KEYS)}

    def _read(self, key: str, start: int, stop: int | None) -> torch.Tensor:
        start, stop, _ = slice(start, stop).indices(len(self))
        stop = max(start, stop)
        parts = []
        for shard in self.shards:
            a, b = max(start, shard["start"]), min(stop, shard["stop"])
            if a < b:
                with safe_open(self.out_dir / shard["file"], framework="pt") as f:
                    parts.append(f.get_slice(key)[a - shard["start"] : b - shard["start"]])
        if not parts:  # an empty range, with the right trailing shape and dtype
            with safe_open(self.out_dir / self.shards[0]["file"], framework="pt") as f:
                parts.append(f.get_slice(key)[0:0])
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _read_shard(self, shard: dict, keys: list[str]) -> list[torch.Tensor]:
        with safe_open(self.out_dir / shard["file"], framework="pt") as f:
            return [f.get_tensor(key) for key in keys]

    def iter_batches(
        self,
        name: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        buffer_shards: int = 1,
        with_index: bool = False,
    ) -> Iterator[Rows | tuple[Rows, Int[torch.Tensor, "batch"]]]:
        """Batches of ``name``'s rows, each row once per pass. ``shuffle``: shards in a random order, and rows
        shuffled within a buffer of ``buffer_shards`` shards (plus the previous buffer's leftover), seeded, so
        memory holds about ``buffer_shards`` shards. ``with_index``: yield ``(rows, store_row_indices)``."""
        self._info(name)
        if batch_size < 1 or buffer_shards < 1:
            raise ValueError(f"batch_size and buffer_shards must be >= 1, got {batch_size} and {buffer_shards}")
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.shards), generator=gen).tolist() if shuffle else list(range(len(self.shards)))
        rest_x: torch.Tensor | None = None
        rest_i = torch.zeros(0, dtype=torch.long)
        for g in range(0, len(order), buffer_shards):
            group = [self.shards[k] for k in order[g : g + buffer_shards]]
            xs = [self._read_shard(shard, [f"act.{name}"])[0] for shard in group]
            idx = [torch.arange(shard["start"], shard["stop"]) for shard in group]
            x = torch.cat(([rest_x] if rest_x is not None else []) + xs)
            i = torch.cat([rest_i, *idx])
            if shuffle:
                perm = torch.randperm(len(x), generator=gen)
                x, i = x[perm], i[perm]
            n_full = len(x) // batch_size * batch_size
            for a in range(0, n_full, batch_size):
                yield (x[a : a + batch_size], i[a : a + batch_size]) if with_index else x[a : a + batch_size]
            rest_x, rest_i = x[n_full:], i[n_full:]
        if rest_x is not None and len(rest_x) and not drop_last:
            yield (rest_x, rest_i) if with_index else rest_x


class ActivationView:
    """``store[name]``: the rows of one name across all shards, read when indexed (``view[a:b]``, ``view[i]``,
    ``view[tensor_of_indices]``)."""

    def __init__(self, store: ActivationStore, name: str):
        self.store, self.name = store, name

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.store.shape(self.name))

    @property
    def dtype(self) -> torch.dtype:
        return self.store.dtype(self.name)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index) -> torch.Tensor:
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step < 0:
                return self[torch.arange(start, stop, step)]
            rows = self.store.load(self.name, start, stop)
            return rows[::step] if step != 1 else rows
        if is_index(index):
            index = int(index)
            if not -n <= index < n:
                raise IndexError(f"row {index} is outside the store's {n} rows")
            return self.store.load(self.name, index % n, index % n + 1)[0]
        if (mask := as_bool_mask(index)) is not None:  # a mask selects rows; it is not the indices 0 and 1
            if mask.shape != (n,):
                raise IndexError(f"a bool mask over the store's rows must have shape ({n},), got {tuple(mask.shape)}")
            index = torch.nonzero(mask).flatten()
        else:
            index = index_tensor(index, "rows").reshape(-1)
        if bool(((index < -n) | (index >= n)).any()):
            raise IndexError(f"rows {index.tolist()} are outside the store's {n} rows")
        index = index % n
        out = None
        for shard in self.store.shards:
            hit = (index >= shard["start"]) & (index < shard["stop"])
            if not bool(hit.any()):
                continue
            local = index[hit]
            block = self.store.load(self.name, int(local.min()), int(local.max()) + 1)
            if out is None:
                out = block.new_empty((len(index), *block.shape[1:]))
            out[hit] = block[local - int(local.min())]
        if out is None:
            return self.store.load(self.name, 0, 0)
        return out

    def __repr__(self) -> str:
        return f"ActivationView({self.name!r}, shape={tuple(self.shape)}, dtype={self.dtype})"


# --- writing ------------------------------------------------------------------------------------
class _ShardWriter:
    """Buffers rows of every key and writes shards of ``rows_per_shard`` rows (the last one shorter)."""

    def __init__(self, out_dir: Path, names: list[str], shard_bytes: float):
        self.out_dir, self.names, self.shard_bytes = out_dir, names, shard_bytes
        self.buffer: dict[str, list[torch.Tensor]] = {}
        self.n_buffered = self.n_rows = 0
        self.rows_per_shard: int | None = None
        self.shards: list[dict] = []
        self.trailing: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        n = len(rows["meta.item"])
        for name in self.names:
            act = rows[f"act.{name}"]
            seen = self.trailing.setdefault(name, (tuple(act.shape[1:]), act.dtype))
            if seen != (tuple(act.shape[1:]), act.dtype):
                raise ValueError(f"{name!r} changed from {seen} to {(tuple(act.shape[1:]), act.dtype)} between batches")
        if self.rows_per_shard is None:
            row_bytes = sum(t[0].numel() * t.element_size() for t in rows.values() if len(t))
            self.rows_per_shard = max(1, int(self.shard_bytes // max(row_bytes, 1)))
        for key, t in rows.items():
            self.buffer.setdefault(key, []).append(t)
        self.n_buffered += n
        while self.n_buffered >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def restore(self, index: dict, n_rows: int) -> None:
        """Continue an interrupted store at row ``n_rows`` (a batch boundary): keep its shards up to there, cut
        the shard that runs past it down to it, and delete the rest."""
        self.rows_per_shard = index["rows_per_shard"]
        self.trailing = {name: (tuple(info["shape"][1:]), getattr(torch, info["dtype"]))
                         for name, info in index["activations"].items()}
        for shard in index["shards"]:
            path = self.out_dir / shard["file"]
            if shard["stop"] <= n_rows:
                self.shards.append(shard)
            elif shard["start"] < n_rows:
                with safe_open(path, framework="pt") as f:
                    rows = {key: f.get_slice(key)[: n_rows - shard["start"]] for key in f.keys()}
                save_file(rows, path, metadata={"format": FORMAT, "start": str(shard["start"]), "stop": str(n_rows)})
                self.shards.append({**shard, "stop": n_rows})
        kept = {shard["file"] for shard in self.shards}
        for path in self.out_dir.glob("shard_*.safetensors"):  # past the resume point, or written but never indexed
            if path.name not in kept:
                path.unlink()
        self.n_rows = n_rows

    def close(self) -> None:
        if self.n_buffered:
            self._flush(self.n_buffered)

    def _flush(self, n: int) -> None:
        shard, keep = {}, {}
        for key, parts in self.buffer.items():
            t = torch.cat(parts) if len(parts) > 1 else parts[0]
            shard[key], keep[key] = t[:n].clone(), [t[n:]]
        self.buffer, self.n_buffered = keep, self.n_buffered - n
        start, stop = self.n_rows, self.n_rows + n
        file = SHARD_PATTERN.format(len(self.shards))
        save_file(shard, self.out_dir / file, metadata={"format": FORMAT, "start": str(start), "stop": str(stop)})
        self.shards.append({"file": file, "start": start, "stop": stop})
        self.n_rows = stop

    def write_index(self, header: dict) -> None:
        index = {
            **header,
            "n_tokens": self.n_rows,
            "activations": {
                name: {"shape": [self.n_rows, *shape], "dtype": _dtype_name(dt), "layout": activation_layout(name)}
                for name, (shape, dt) in self.trailing.items()
            },
            "rows_per_shard": self.rows_per_shard,
            "shards": self.shards,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = self.out_dir / (INDEX_FILE + ".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, self.out_dir / INDEX_FILE)


def _check_names(model, names: str | list[str], positions: str) -> list[str]:
    """Explicit, known, distinct hook names whose activations have one row per decoder position."""
    if positions not in POSITION_RULES:
        raise ValueError(f"positions must be one of {list(POSITION_RULES)}, got {positions!r}")
    names = [names] if isinstance(names, str) else list(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a hook name or a non-empty list of them, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"names repeat: {names}")
    for name in names:
        model._resolve(name)  # a KeyError naming the closest real names
        layout = activation_layout(name)
        if layout == "window":
            raise ValueError(
                f"{name!r} is an audio-side activation (one row per encoder window and frame, not per decoder "
                "position): stream_activations stores decoder positions; cache it with run_with_cache instead"
            )
        if layout == "audio_token" and positions != "audio":
            raise ValueError(f"{name!r} holds audio tokens only: stream it with positions='audio', got {positions!r}")
        if layout == "batch" and position_dims(name) != (1,):
            raise ValueError(
                f"{name!r} is an attention pattern/score [batch, head, q_pos, k_pos] (two position axes): "
                "not a per-token activation; stream hook_z or hook_result instead"
            )
    return names


def _as_batches(batches) -> Iterable:
    """One batch (anything ``to_inputs`` takes) as a list of one, or the iterable of batches as it is."""
    single = isinstance(batches, (Mapping, AudioTextInput, torch.Tensor, str)) or (
        isinstance(batches, list) and batches and all(isinstance(b, str) for b in batches)
    )
    return [batches] if single else batches


def _position_mask(inputs: AudioTextInput, positions: str) -> Bool[torch.Tensor, "batch pos"]:
    if inputs.attention_mask is None:
        real = torch.ones(inputs.shape, dtype=torch.bool)
    else:
        real = inputs.attention_mask.bool().cpu()
    if positions == "audio":
        return inputs.audio_mask.cpu() & real
    if positions == "text":
        return inputs.text_mask.cpu()
    if positions == "all":
        return real
    mask = torch.zeros(inputs.shape, dtype=torch.bool)
    mask[torch.arange(inputs.shape[0]), inputs.last_positions.cpu()] = True
    return mask


def _rows(cache_dict: dict, inputs: AudioTextInput, names: list[str], positions: str,
          item_offset: int, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """The selected rows of every name, and their metadata (None: the batch has no token at ``positions``).
    A floating activation with a value that is not finite once stored as ``dtype`` is refused."""
    mask = _position_mask(inputs, positions)
    if not bool(mask.any()):
        return None
    batch, n_pos = inputs.shape
    audio = inputs.audio_mask.cpu()
    times = inputs.token_times()[mask]
    clip_in_row = torch.full((batch, n_pos), -1, dtype=torch.long)
    for row, spans in enumerate(inputs.audio_spans):
        for number, span in enumerate(spans):
            clip_in_row[row, span.start : span.end] = number
    rows = {
        "meta.item": (torch.arange(batch)[:, None].expand(batch, n_pos)[mask] + item_offset).long(),
        "meta.position": torch.arange(n_pos)[None, :].expand(batch, n_pos)[mask].long(),
        "meta.is_audio": audio[mask],
        "meta.clip_in_row": clip_in_row[mask],
        "meta.start_s": times[:, 0].float().contiguous(),
        "meta.end_s": times[:, 1].float().contiguous(),
    }
    for name in names:
        if name not in cache_dict:
            raise ValueError(f"{name!r} produced no activation on this input (is it computed for this model/config?)")
        act = cache_dict[name]
        if activation_layout(name) == "audio_token":
            if act.shape[0] != int(audio.sum()):
                raise ValueError(f"{name!r} has {act.shape[0]} rows for {int(audio.sum())} audio positions")
            rows[f"act.{name}"] = act[mask[audio]].contiguous()
        else:
            if tuple(act.shape[:2]) != (batch, n_pos):
                raise ValueError(f"{name!r} has shape {tuple(act.shape)}, not [batch={batch}, pos={n_pos}, ...]")
            rows[f"act.{name}"] = act[mask].contiguous()
        stored = rows[f"act.{name}"]
        if stored.is_floating_point() and not bool(torch.isfinite(stored).all()):  # (a dtype too narrow: to_cache)
            raise ValueError(f"{name!r} has inf or NaN values: the model's own activations are not finite (check its "
                             "weights and inputs)")
    return rows


def _read_index(out_dir: Path) -> dict | None:
    try:
        index = json.loads((out_dir / INDEX_FILE).read_text())
    except (OSError, ValueError):
        return None
    return index if index.get("format") == FORMAT else None


def _fingerprint(inputs: AudioTextInput) -> str:
    """A hash of a batch's tokens, mask and audio (values, shapes and dtypes): enough to tell that a resumed run
    was given the same batches."""
    digest = hashlib.sha1()
    tensors = [inputs.input_ids, inputs.attention_mask, *(inputs.audio[k] for k in sorted(inputs.audio))]
    for t in tensors:
        if t is not None:
            digest.update(f"{tuple(t.shape)}:{t.dtype};".encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _check_batch(inputs: AudioTextInput, number: int, fingerprints: list[str], out_dir: Path) -> None:
    if _fingerprint(inputs) != fingerprints[number]:
        raise ValueError(f"batch {number} differs from the one stored in {str(out_dir)!r}: resume with the same "
                         "batches in the same order, or pass overwrite=True")


def _check_same_batches(model, batches, index: dict, out_dir: Path) -> None:
    """A finished store is returned on ``resume=True`` only when the batches given are the ones it was made of."""
    fingerprints = index["fingerprints"]
    n_given = 0
    for number, batch in enumerate(_as_batches(batches)):
        if number < len(fingerprints):
            _check_batch(model.to_inputs(batch), number, fingerprints, out_dir)
        n_given = number + 1
    if n_given != len(fingerprints):
        raise ValueError(f"{n_given} batches were given, but the finished store in {str(out_dir)!r} was made of "
                         f"{len(fingerprints)}: pass the same batches, or overwrite=True to write it again")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _model_summary(model) -> dict:
    cfg = model.cfg
    summary = {key: getattr(cfg, key, None) for key in (
        "model_name", "family", "n_layers", "d_model", "n_heads", "n_key_value_heads", "d_head", "d_mlp", "d_vocab")}
    summary["dtype"] = _dtype_name(next(model.parameters()).dtype)
    summary["seconds_per_audio_token"] = cfg.audio.seconds_per_token if cfg.audio is not None else None
    summary["weights_fingerprint"] = model_fingerprint(model)  # a fine-tune or sibling shares everything above
    return summary


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hooked_audio")
    except Exception:  # not installed (a checkout on sys.path)
        return "unknown"


__all__ = ["ActivationStore", "ActivationView", "stream_activations", "META_KEYS"]
