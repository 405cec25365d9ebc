"""Data-parallel evaluation with ``torchrun``: each process takes every ``world_size``-th batch.

    torchrun --nproc_per_node 2 $(which hooked-audio) eval --dataset ... --out results.jsonl

torchrun sets ``RANK``/``WORLD_SIZE``; :func:`init` joins the process group (gloo on CPU, nccl when the
model is on a GPU). The batches are cut once from the whole dataset (:func:`runner.make_batches`), so
rank ``r`` computes batches ``r, r + W, ...`` exactly as one process would. Each rank writes its own
``results.jsonl.rank{r}.jsonl`` (resumable like ``--out``); at the end rank 0 merges them into ``--out``
in the order one process writes (clip duration, then dataset order) and removes them, so ``--out`` is
the same file with 1 or W processes. Rank files left by an interrupted run are merged by the next run,
whatever its number of processes.
"""

from __future__ import annotations

import glob
import json
import os

from .runner import ResumeError, make_batches, read_results


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment (``(0, 1)`` outside torchrun)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(device: str = "cpu") -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_path(out: str, rank: int) -> str:
    return f"{out}.rank{rank}.jsonl"


def rank_files(out: str) -> list[str]:
    return sorted(p for p in glob.glob(glob.escape(out) + ".rank*.jsonl"))


def merge(out: str, items, config: dict) -> int:
    """Fold every rank file of ``out`` into ``out`` (one process's order), then delete them; returns the
    number of lines merged. A rank file made with other settings, or an id written twice, is an error
    (the files are left as they are)."""
    from .runner import check_resumable

    files = rank_files(out)
    if not files:
        return 0
    for path in files:
        check_resumable(path, config)
    records = read_results(out)
    for path in files:
        records += read_results(path)
    ids = [r["id"] for r in records]
    if len(ids) != len(set(ids)):
        raise ResumeError(f"{out} and its rank files {files} hold the same id twice; they are damaged, move them away")
    write_in_order(out, records, items)
    for path in files:
        os.remove(path)
        if os.path.exists(path + ".meta.json"):
            os.remove(path + ".meta.json")
    return len(records)


def write_in_order(out: str, records: list[dict], items) -> None:
    """Rewrite ``out`` (atomically) with ``records`` in one process's order: clip duration, then dataset order."""
    order = {item.id: i for i, item in enumerate(i for batch in make_batches(items, 1) for i in batch)}
    records = sorted(records, key=lambda r: order.get(r["id"], len(order)))
    temporary = out + ".merging"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, out)
