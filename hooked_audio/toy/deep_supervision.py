"""Training-only deep supervision of the toy's audio encoder: linear probes on the projector's output.

Both probes read the audio embeddings the decoder will see (the multimodal projector's output) and are
dropped after training, so the checkpoint stays a plain HF model whose decoder alone produces the answers.

- ``PooledAudioProbe`` predicts the answer word from the clip's mean audio embedding. It gives the encoder
  a direct gradient from the first step, before the decoder has learned where to look; without it the
  speech tasks sit at chance for the first ~1000 steps (measured on those three tasks alone, 6-minute
  runs: ~1050 steps reach digit/gender/language 0.60/0.65/0.55 with it and 0.33/0.50/0.25 without).
- ``EventFrameProbe`` predicts, at every audio token of a multi-event clip, which event sounds there (or
  none). The pooled probe is ill-posed on those clips (the answer depends on which event the question
  names, or on "first" vs "last", which the audio alone cannot tell), and "when does the sweep happen?"
  needs an encoder that says *where* each event is, which a clip-level target never asks for. Measured on
  30-minute warm restarts of the listener: multi-event accuracy stayed near 0.45 without it and reached 0.61
  ("when") / 0.88 ("first / last") with it, the other tasks as good or better.
- ``BeepOnsetProbe`` predicts, at every audio token of a beep-count clip, whether a beep starts there. A
  clip-level count target is met as well, on the training distribution, by total beep time (count times a
  duration drawn independently of it), and the listener learnt that: it under-counted 0.08 s beeps and
  over-counted 0.4 s ones. Onsets are what a count is made of, and their mean over the clip's tokens is
  proportional to the count whatever the beeps' duration, so one uniform attention head can read it. Measured
  on warm restarts: toy-voxtral's count at fixed 0.08 s beeps rose from 0.42 to 0.75 (beeps 0.71 to 0.84; 30
  min, weight 1); the listener's only from 0.30 to 0.40 (beeps 0.65 to 0.75; 40 min, weight 3; at weight 1 and
  30 min it stayed at 0.30).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int

from . import signals
from .tasks import EVENT_NAMES

IGNORE = -100  # cross_entropy's ignore_index: tokens (or rows) without a frame target


class _ProjectorProbe(torch.nn.Module):
    """A linear head on the projector output of the model's last forward, kept by a forward hook."""

    def __init__(self, model, n_outputs: int):
        super().__init__()
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, n_outputs)
        self._audio_embeds = None
        self._handle = model.model.multi_modal_projector.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._audio_embeds = output  # [clips, audio tokens, d_model]; Voxtral's: [clips * audio tokens, d_model]

    def audio_embeds(self, n_rows: int) -> Float[torch.Tensor, "clip audio_tok d_model"]:
        """The kept embeddings as [clips, audio tokens, d_model] (each training row has one clip)."""
        embeds = self._audio_embeds
        return embeds.reshape(n_rows, -1, embeds.shape[-1]) if embeds.ndim == 2 else embeds

    def remove(self) -> None:
        self._handle.remove()


class PooledAudioProbe(_ProjectorProbe):
    """Predicts the answer word from the clip's mean audio embedding (see the module docstring)."""

    def __init__(self, model):
        super().__init__(model, model.config.text_config.vocab_size)

    def loss(self, batch: dict, rows: Bool[torch.Tensor, "batch"] | None = None) -> torch.Tensor:
        """Cross-entropy of the pooled prediction against the answer word, over ``rows`` (default: all)."""
        logits = self.head(self.audio_embeds(batch["input_ids"].shape[0]).mean(1))
        targets = batch["input_ids"][:, -2]
        if rows is not None:
            targets = torch.where(rows, targets, IGNORE)
            if not rows.any():
                return logits.sum() * 0.0
        return torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE)


def _token_loss(head: torch.nn.Module, embeds: Float[torch.Tensor, "clip audio_tok d_model"],
                targets: Int[torch.Tensor, "clip audio_tok"], weight: torch.Tensor | None = None) -> torch.Tensor:
    """Token-level cross-entropy of ``head`` on the embeddings, IGNORE targets skipped (zero if all are)."""
    if (targets == IGNORE).all():
        return embeds.sum() * 0.0
    logits = head(embeds)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             weight=weight, ignore_index=IGNORE)


def _stack_targets(rows: list, n_tokens: int, make) -> Int[torch.Tensor, "clip audio_tok"]:
    """``make(row, n_tokens)`` per row, IGNORE everywhere on a row that is None."""
    return torch.stack([make(row, n_tokens) if row is not None else torch.full((n_tokens,), IGNORE) for row in rows])


def event_frame_targets(events: tuple, n_tokens: int) -> Int[torch.Tensor, "audio_tok"]:
    """Per audio token of a clip: 1 + the index in EVENT_NAMES of the event sounding at the token's centre, 0
    where none does. ``events`` are (name, start_s, end_s); the clip's tokens cover CLIP_SECONDS evenly."""
    centres = (torch.arange(n_tokens) + 0.5) * (signals.CLIP_SECONDS / n_tokens)
    targets = torch.zeros(n_tokens, dtype=torch.long)
    for name, start, end in events:
        targets[(centres >= start) & (centres < end)] = 1 + EVENT_NAMES.index(name)
    return targets


class EventFrameProbe(_ProjectorProbe):
    """Predicts which event (or none) sounds at every audio token of a multi-event clip."""

    def __init__(self, model):
        super().__init__(model, 1 + len(EVENT_NAMES))

    def loss(self, events: list[tuple | None]) -> torch.Tensor:
        """Token-level cross-entropy; ``events[i]`` is row i's (name, start_s, end_s) tuples, or None for a row
        without a trustworthy timeline (not a multi-event clip, or its audio degraded), which is skipped."""
        embeds = self.audio_embeds(len(events))
        return _token_loss(self.head, embeds, _stack_targets(events, embeds.shape[1], event_frame_targets))


def beep_onset_targets(beep_times: tuple, n_tokens: int) -> Int[torch.Tensor, "audio_tok"]:
    """Per audio token of a clip: 1 where a beep starts inside the token's stretch of time, else 0.
    ``beep_times`` are (start_s, end_s) per beep; the clip's tokens cover CLIP_SECONDS evenly."""
    targets = torch.zeros(n_tokens, dtype=torch.long)
    for start, _ in beep_times:
        targets[min(int(start * n_tokens / signals.CLIP_SECONDS), n_tokens - 1)] = 1
    return targets


class BeepOnsetProbe(_ProjectorProbe):
    """Predicts whether a beep starts at every audio token of a beep-count clip (see the module docstring)."""

    ONSET_WEIGHT = 10.0  # an onset is one token in tens: unweighted, "no onset anywhere" is already a low loss

    def __init__(self, model):
        super().__init__(model, 2)

    def loss(self, beep_times: list[tuple | None]) -> torch.Tensor:
        """Token-level cross-entropy; ``beep_times[i]`` is row i's beep intervals, or None for a row that is
        not a beep-count clip (or whose audio was degraded), which is skipped."""
        embeds = self.audio_embeds(len(beep_times))
        return _token_loss(self.head, embeds, _stack_targets(beep_times, embeds.shape[1], beep_onset_targets),
                           weight=torch.tensor([1.0, self.ONSET_WEIGHT]))
