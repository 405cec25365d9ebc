"""The run now in progress: one checked forward, or one ``generate`` call, of a model.

``model.forward`` and ``generate`` open a :class:`Run` around their hook check and forward pass. Hooks that
keep state from the check to the forward (e.g. ``steering_hook(positions="audio")``, which reads the run's
audio mask) keep it in ``current_run().state``, so that it lives exactly as long as the run: a forward that
skips the check (``forward_inputs`` or a block called directly) finds none, and another thread's run (a
context variable is per thread) or a later run never sees it. A forward of a model inside one of its own
forwards (a hook that calls the model) is refused: its hooks, caches and per-run state would mix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from torch import nn


class Run:
    """One forward (or ``generate``) of ``model``; ``state`` holds what hooks keep for this run only."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.state: dict = {}


_RUN: ContextVar[Run | None] = ContextVar("hooked_audio_run", default=None)


def current_run() -> Run | None:
    """The run now in progress in this thread, or None (a forward that skipped the model's entry points)."""
    return _RUN.get()


def refuse_inside_a_run(model: nn.Module) -> None:
    """Refuse to start using ``model`` (a forward, hooks, a cache) from inside one of its own runs."""
    outer = _RUN.get()
    if outer is not None and outer.model is model:
        raise RuntimeError(
            "this model is already running a forward (a hook or metric that calls the model from inside one of "
            "its own forwards?): its hooks, caches and per-run state would mix. Call it after the run, or on a copy "
            "(copy.deepcopy(model))")


@contextmanager
def running(model: nn.Module) -> Iterator[Run]:
    """Hold a new :class:`Run` of ``model`` for the block; refuse one inside a run of the same model."""
    refuse_inside_a_run(model)
    token = _RUN.set(Run(model))
    try:
        yield _RUN.get()
    finally:
        _RUN.reset(token)
