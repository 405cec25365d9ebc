"""Build model inputs from text or chat messages plus real audio.

Audio may be file paths, numpy arrays, torch tensors or ``datasets`` audio dicts, at any sample rate,
mono or stereo; each clip is validated and resampled by ``audio.load_waveform`` and turned into log-mel
features by the checkpoint's own HF processor, which also expands every audio placeholder to the clip's
number of audio tokens. A clip longer than the processor takes (one encoder window, or more where the family
cuts long audio into windows: Audio Flamingo, Voxtral) raises (``on_too_long="truncate"`` keeps its start, with
a warning); a clip too short to make one audio token raises. Batches are left-padded, as
generation needs.

Everything is checked before any feature is computed: an input the library would have to guess about
(an empty prompt, a chat item it does not know, clips at different rates given one rate) is an error
that says what to write instead.
"""

from __future__ import annotations

import math
import os
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from .inputs import AudioTextInput
from .io import ON_TOO_LONG, load_waveform
from .processing import chat_templater, process, takes_no_audio

Conversation = list[dict[str, Any]]

AUDIO_SOURCE_KEYS = ("audio", "path", "url", "audio_url")  # HF chat items, and Qwen2-Audio's model card
CONTENT_TYPES = ("text", "audio")
PROBE_BELOW_SECONDS = 1.0  # clips shorter than this are checked to give at least one audio token


def build_inputs(
    model,
    prompt: str | list[str] | None = None,
    audio: Any = None,
    *,
    messages: Conversation | list[Conversation] | None = None,
    sampling_rate: int | list[int | None] | None = None,
    on_too_long: str = "error",
    add_generation_prompt: bool | None = None,
    continue_final_message: bool = False,
) -> AudioTextInput:
    """Inputs for ``model`` from either ``prompt`` or chat ``messages``.

    ``prompt``: text with the processor's audio placeholder (e.g.
    ``"<|audio_bos|><|AUDIO|><|audio_eos|>What is said?"``), or a list of such texts (a batch), and
    ``audio``: one clip or a list of clips, in placeholder order.

    ``messages``: one conversation (a list of ``{"role": ..., "content": ...}``) or a list of them.
    ``content`` is a string or a list of items: ``{"type": "text", "text": ...}`` and
    ``{"type": "audio", <source>}`` where the source is exactly one of ``"audio"`` (a path, array,
    tensor or ``datasets`` dict), ``"path"``, or ``"url"``/``"audio_url"`` (a local path or
    ``file://`` URL; http(s) is refused: nothing is downloaded). An audio item may carry its own
    ``"sampling_rate"``. Any other item type or a text item without ``"text"`` is an error.

    ``sampling_rate``: the rate of the array/tensor clips (files and dicts carry their own). One int
    applies to every array clip; a list gives one rate per clip, in placeholder order (``None`` for
    clips that carry their own). ``add_generation_prompt`` (messages only, default True) ends the
    text with the assistant's turn. ``continue_final_message=True`` (messages only) leaves the last message, an
    assistant turn you began (a prefill such as "the speaker's gender is"), open: no end-of-turn token, so the
    last position is where the next word is predicted.
    """
    processor = model.processor
    if processor is None or not hasattr(processor, "feature_extractor"):
        raise ValueError(
            "this model has no audio processor; load it with from_pretrained on a checkpoint that has one, "
            "or pass processor= to from_hf_model"
        )
    if type(getattr(processor, "tokenizer", None)).__name__ == "MistralCommonBackend":
        raise NotImplementedError(
            "build_inputs cannot build inputs with mistral_common's tokenizer (a Voxtral checkpoint's): its text "
            "tokenizer does not read the [AUDIO] placeholders, mistral_common expands each clip itself. Build them "
            "with the processor, e.g. processor.apply_chat_template(messages, tokenize=True, return_dict=True) (or "
            "processor.apply_transcription_request(...)), and pass the output to the model as it is: "
            "model(**out), model.run_with_cache(model.to_inputs(out))")
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt= or messages=")
    if on_too_long not in ON_TOO_LONG:
        raise ValueError(f"on_too_long={on_too_long!r} is not allowed; use one of {ON_TOO_LONG}.")

    if messages is not None:
        if audio is not None:
            raise ValueError("with messages=, put the audio inside the messages, not in audio=")
        conversations = _conversations(messages)
        if continue_final_message:
            if add_generation_prompt:
                raise ValueError("continue_final_message=True continues the last message; do not also add a generation prompt")
            open_turns = [i for i, c in enumerate(conversations) if c[-1].get("role") != "assistant"]
            if open_turns:
                raise ValueError(f"continue_final_message=True needs each conversation to end with the assistant turn to "
                                 f"continue (the prefill); conversations {open_turns} do not")
        clips, own_rates = _audio_items(conversations)
        generation_prompt = not continue_final_message if add_generation_prompt is None else add_generation_prompt
        templated = [
            chat_templater(processor).apply_chat_template(
                _for_template(c), add_generation_prompt=generation_prompt, continue_final_message=continue_final_message,
                tokenize=False,
            )
            for c in conversations
        ]
        texts = [t[0] if isinstance(t, list) else t for t in templated]
    else:
        if add_generation_prompt is not None or continue_final_message:
            raise ValueError(
                "add_generation_prompt= and continue_final_message= only apply to messages=; a prompt= is used exactly "
                "as written (end it with the assistant's turn yourself, or pass messages=)"
            )
        texts = _prompts(prompt)
        clips = _clip_list(audio)
        own_rates = [None] * len(clips)

    placeholder = processor.audio_token
    n_placeholders = sum(text.count(placeholder) for text in texts)
    if n_placeholders != len(clips):
        raise ValueError(
            f"the text has {n_placeholders} audio placeholder(s) ({placeholder!r}) but {len(clips)} clip(s) were "
            f"given; put one placeholder where each clip goes, in order"
        )
    rates = _rate_per_clip(sampling_rate, clips, own_rates)

    feature_extractor = processor.feature_extractor
    target_rate = feature_extractor.sampling_rate
    waveforms = []
    for index, (clip, rate) in enumerate(zip(clips, rates)):
        try:
            waveforms.append(
                load_waveform(
                    clip, sampling_rate=rate, target_rate=target_rate,
                    max_seconds=max_audio_seconds(processor), on_too_long=on_too_long,
                )
            )
        except (ValueError, TypeError, FileNotFoundError) as error:
            if len(clips) == 1:
                raise
            raise type(error)(f"audio clip {index}: {error}") from error
    for index, wave in enumerate(waveforms):
        _check_makes_an_audio_token(model, processor, wave, index)

    tokenizer = processor.tokenizer
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = process(processor, texts, waveforms, target_rate)
    finally:
        tokenizer.padding_side = previous_side
    inputs = model.to_inputs(batch)
    _check_one_run_per_clip(inputs, texts, placeholder)
    if messages is not None and continue_final_message:
        _check_ends_on_the_prefill(inputs, conversations, tokenizer)
    return inputs


def _check_ends_on_the_prefill(inputs, conversations: list[list[dict]], tokenizer) -> None:
    """With ``continue_final_message`` each row's last token must be the end of its prefill: HF cuts the rendered
    turn at the prefill's last occurrence, which can lie inside the template's end-of-turn token (a prefill "s"
    and Mistral's ``</s>``), leaving a piece of that token last."""
    for row, conversation in enumerate(conversations):
        content = conversation[-1].get("content")
        prefill = (content if isinstance(content, str) else
                   "".join(item.get("text", "") for item in content if isinstance(item, Mapping))).strip()
        if not prefill:
            continue
        word = prefill.split()[-1]
        ending = tokenizer.decode(inputs.input_ids[row, -4:]).strip()  # a few tokens: a character may span several
        if not (ending.endswith(word) or (ending and word.endswith(ending))):
            raise ValueError(
                f"row {row} does not end on its prefill {prefill!r} but on {ending!r}: the chat template's cut of the "
                "continued turn fell elsewhere (a prefill that also occurs in the template's end-of-turn text?), so "
                "the last position would not continue it. Word the prefill differently (e.g. longer)")


def _check_one_run_per_clip(inputs, texts: list[str], placeholder: str) -> None:
    """Two placeholders with nothing between them once tokenized make one run of audio tokens, which positions,
    times and clip numbers would read as one clip: refused."""
    for row, text in enumerate(texts):
        if len(inputs.audio_spans[row]) < text.count(placeholder):
            raise ValueError(
                f"prompt {row} has audio placeholders ({placeholder!r}) with no token between them: their clips' "
                "tokens would form one run, which positions, times and clip numbers would read as one clip; put text "
                "between them (e.g. the chat template's <|audio_eos|><|audio_bos|>, or messages=)"
            )


# Voxtral's documented limit for audio understanding (a 32k-token context at 12.5 audio tokens per second).
VOXTRAL_MAX_SECONDS = 40 * 60.0


def max_audio_seconds(processor) -> float:
    """The longest clip the processor accepts: its own limit where it splits audio into windows (Audio
    Flamingo's ``max_audio_len``; Voxtral's, whose clips mistral_common cuts into windows), none where it
    extracts features without truncating (Qwen3-Omni's processor: every chunk of any length), else the feature
    extractor's single window."""
    if takes_no_audio(processor):
        return VOXTRAL_MAX_SECONDS
    if (getattr(processor, "audio_kwargs", None) or {}).get("truncation") is False:
        return math.inf
    feature_extractor = processor.feature_extractor
    return float(getattr(processor, "max_audio_len", None) or feature_extractor.n_samples / feature_extractor.sampling_rate)


def min_audio_samples(model, processor=None) -> int:
    """The fewest samples (at the feature extractor's rate) a clip needs for one audio token, as the
    processor counts them (e.g. 321 samples, about 20 ms, for Qwen2-Audio)."""
    processor = processor if processor is not None else model.processor
    sr = processor.feature_extractor.sampling_rate
    low, high = 1, sr  # tokens(high) >= 1 for every supported family (>= 12.5 tokens/s)

    def makes_a_token(n: int) -> bool:
        try:
            return _n_audio_tokens(model, processor, np.zeros(n, dtype=np.float32)) >= 1
        except (ValueError, RuntimeError):  # a feature extractor that cannot frame so few samples: no token either
            return False

    if makes_a_token(low):
        return low
    while high - low > 1:
        mid = (low + high) // 2
        if makes_a_token(mid):
            high = mid
        else:
            low = mid
    return high


# --- validation of the text side -----------------------------------------------------------------------


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, (list, tuple)):
        if not prompt:
            raise ValueError("prompt=[] is empty; pass a text (or a list of texts, one per batch row)")
        if any(isinstance(p, Mapping) for p in prompt):
            raise TypeError(
                "prompt= got a list of dicts, which looks like chat messages; pass them as messages= "
                "(prompt= takes text with the audio placeholder)"
            )
        prompts = list(prompt)
    else:
        raise TypeError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
    for row, text in enumerate(prompts):
        if not isinstance(text, str):
            raise TypeError(f"prompt[{row}] is a {type(text).__name__}, not a string")
        if not text.strip():
            where = "the prompt" if len(prompts) == 1 else f"prompt[{row}]"
            raise ValueError(f"{where} is empty; the model needs at least one token of text or audio placeholder")
    return prompts


def _conversations(messages: Any) -> list[Conversation]:
    """One conversation or a batch of them, each checked message by message."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts (or a list of such lists), "
            f"got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError(
            "messages=[] is empty; pass at least one message, e.g. "
            "[{'role': 'user', 'content': [{'type': 'audio', 'path': 'clip.wav'}, {'type': 'text', 'text': '...'}]}]"
        )
    if all(isinstance(m, Mapping) for m in messages):
        conversations = [list(messages)]
    elif all(isinstance(c, (list, tuple)) for c in messages):
        conversations = [list(c) for c in messages]
    else:
        raise TypeError("messages mixes dicts and lists; pass one conversation (a list of dicts) or a list of them")
    batched = len(conversations) > 1 or not all(isinstance(m, Mapping) for m in messages)
    for ci, conversation in enumerate(conversations):
        where_c = f"conversation {ci}" if batched else "the conversation"
        if not conversation:
            raise ValueError(f"{where_c} is empty; each conversation needs at least one message")
        for mi, message in enumerate(conversation):
            where = f"{where_c}, message {mi}"
            if not isinstance(message, Mapping):
                raise TypeError(f"{where} is a {type(message).__name__}, not a {{'role': ..., 'content': ...}} dict")
            missing = [k for k in ("role", "content") if k not in message]
            if missing:
                raise ValueError(f"{where} has no {' or '.join(map(repr, missing))} key (it has {sorted(message)})")
            content = message["content"]
            if isinstance(content, str):
                continue
            if not isinstance(content, (list, tuple)):
                raise TypeError(f"{where}: content must be a string or a list of items, got {type(content).__name__}")
            for ii, item in enumerate(content):
                _check_item(item, f"{where}, item {ii}")
    return conversations


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, Mapping):
        raise TypeError(f"{where} is a {type(item).__name__}; content items are dicts like {{'type': 'text', 'text': ...}}")
    kind = item.get("type")
    if kind not in CONTENT_TYPES:
        what = "has no 'type'" if kind is None else f"has type {kind!r}"
        raise ValueError(
            f"{where} {what}; this library takes {CONTENT_TYPES} items: {{'type': 'text', 'text': ...}} and "
            f"{{'type': 'audio', 'path': ...}} (or 'audio'/'url' instead of 'path')"
        )
    if kind == "text":
        if not isinstance(item.get("text"), str):
            others = [k for k in item if k != "type"]
            raise ValueError(
                f"{where} is a text item without a 'text' string (it has {others}); "
                "write {'type': 'text', 'text': '...'}"
            )
        return
    sources = [k for k in AUDIO_SOURCE_KEYS if item.get(k) is not None]
    if len(sources) != 1:
        problem = "has none of" if not sources else f"has several of {sources}, out of"
        raise ValueError(
            f"{where} is an audio item that {problem} {list(AUDIO_SOURCE_KEYS)}; give exactly one, e.g. "
            "{'type': 'audio', 'path': 'clip.wav'}"
        )


def _audio_items(conversations: list[Conversation]) -> tuple[list[Any], list[int | None]]:
    """The clips of all conversations in order, and each item's own ``sampling_rate`` (or None)."""
    clips, rates = [], []
    for conversation in conversations:
        for message in conversation:
            content = message["content"]
            for item in content if isinstance(content, (list, tuple)) else []:
                if item["type"] != "audio":
                    continue
                key = next(k for k in AUDIO_SOURCE_KEYS if item.get(k) is not None)
                value = item[key]
                clips.append(_local_path(value) if key in ("url", "audio_url") else value)
                rates.append(item.get("sampling_rate"))
    return clips, rates


def _local_path(url: Any) -> str:
    if not isinstance(url, (str, os.PathLike)):
        raise TypeError(f"an audio 'url' must be a string, got {type(url).__name__}; put arrays under 'audio'")
    url = os.fspath(url)
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme in ("http", "https", "ftp", "s3", "gs"):
        raise ValueError(
            f"cannot fetch {url!r}: this library does not download audio. Download the file and pass "
            "{'type': 'audio', 'path': LOCAL_FILE}"
        )
    if scheme == "data":
        raise ValueError("data: URLs are not supported; decode the audio yourself and pass the array under 'audio'")
    if scheme == "file":
        return urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    return url


def _for_template(conversation: Conversation) -> Conversation:
    """The conversation as the chat template sees it: an audio item keeps its type and source key, with
    arrays and tensors replaced by a string (a template may test the value, and an array has no truth
    value); text items keep their text."""
    out = []
    for message in conversation:
        content = message["content"]
        if isinstance(content, (list, tuple)):
            content = [_item_for_template(item) for item in content]
        out.append({**message, "content": content})
    return out


def _item_for_template(item: Mapping) -> dict:
    """What the chat template sees of an item. An audio item always has an ``audio`` key (as well as the
    source key it was given with): templates test ``'audio' in content`` (Qwen2-Audio's) or its type, and one
    given by ``path`` or ``url`` would otherwise render no placeholder."""
    if item["type"] == "text":
        return {"type": "text", "text": item["text"]}
    key = next(k for k in AUDIO_SOURCE_KEYS if item.get(k) is not None)
    value = item[key]
    shown = os.fspath(value) if isinstance(value, (str, os.PathLike)) else "<audio>"
    return {"type": "audio", key: shown, "audio": shown}


# --- validation of the audio side ----------------------------------------------------------------------


def _clip_list(audio: Any) -> list[Any]:
    if audio is None:
        return []
    if (
        isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[1], (int, np.integer))
        and not isinstance(audio[1], bool) and not isinstance(audio[0], (int, np.integer))
    ):
        raise ValueError(
            "audio= got a (waveform, rate) pair (as torchaudio.load returns); pass audio=waveform, "
            "sampling_rate=rate"
        )
    if (
        isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[0], (int, np.integer))
        and not isinstance(audio[0], bool) and not isinstance(audio[1], (int, np.integer))
    ):
        raise ValueError(
            "audio= got a (rate, waveform) pair (as scipy.io.wavfile.read returns); pass audio=waveform, "
            "sampling_rate=rate"
        )
    return list(audio) if isinstance(audio, (list, tuple)) else [audio]


def _carries_own_rate(clip: Any) -> bool:
    return isinstance(clip, (str, os.PathLike, Mapping))


def _rate_per_clip(sampling_rate: Any, clips: list[Any], own_rates: list[int | None]) -> list[int | None]:
    """One rate (or None, for clips that carry their own) per clip; refuses what is ambiguous."""
    n = len(clips)
    if isinstance(sampling_rate, (list, tuple)):
        if len(sampling_rate) != n:
            raise ValueError(
                f"sampling_rate is a list of {len(sampling_rate)} rates but there are {n} clip(s); give one rate "
                "per clip, in placeholder order (None for files), or one int for all array clips"
            )
        rates = list(sampling_rate)
    elif sampling_rate is None or isinstance(sampling_rate, (int, np.integer)):
        if sampling_rate is not None and not all(_carries_own_rate(c) for c in clips):
            # one int is the rate of the array clips; files and dicts keep their own
            rates = [None if _carries_own_rate(c) else sampling_rate for c in clips]
        else:
            rates = [sampling_rate] * n
    else:
        raise TypeError(f"sampling_rate must be an int, a list of ints (one per clip) or None, got {sampling_rate!r}")
    for index, (rate, own) in enumerate(zip(rates, own_rates)):
        if own is None:
            continue
        if rate is not None and rate != own and isinstance(sampling_rate, (list, tuple)):
            raise ValueError(
                f"audio clip {index} has sampling_rate={own} in its item but sampling_rate[{index}]={rate} was given; "
                "say it once"
            )
        if rate is not None and rate != own:
            raise ValueError(
                f"audio clip {index} has sampling_rate={own} in its item but sampling_rate={rate} was given; "
                "say it once (the item's own rate, or the argument)"
            )
        rates[index] = own
    return rates


def _n_audio_tokens(model, processor, wave: np.ndarray) -> int:
    batch = process(processor, [processor.audio_token], [wave], processor.feature_extractor.sampling_rate)
    return int((batch["input_ids"] == model.cfg.audio_token_id).sum())


def _check_makes_an_audio_token(model, processor, wave: np.ndarray, index: int) -> None:
    """Refuse a clip so short that the processor gives it no audio token (the model would answer from
    the text alone). Only short clips are probed, each with a one-placeholder text."""
    sr = processor.feature_extractor.sampling_rate
    if len(wave) >= PROBE_BELOW_SECONDS * sr:
        return
    try:
        n_tokens = _n_audio_tokens(model, processor, wave)
    except Exception:  # a processor that cannot take a bare placeholder: the processor call itself will tell
        return
    if n_tokens >= 1:
        return
    need = min_audio_samples(model, processor)
    raise ValueError(
        f"audio clip {index} is {1000 * len(wave) / sr:.1f} ms long ({len(wave)} samples at {sr} Hz), too short for "
        f"one audio token: this model needs at least {1000 * need / sr:.1f} ms ({need} samples), and with no audio "
        f"token it would answer from the text alone. Use a longer clip, or pad this one with silence to at least "
        f"{1000 * need / sr:.1f} ms."
    )
