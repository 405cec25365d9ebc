"""AudioLens's prompt formats (Yang et al.): the same clip asked about one attribute three ways, the assistant's
turn prefilled (e.g. "the speaker's gender is") and left open, so the last token is where the attribute is
predicted.

- P1, direct: the clip alone, then the prefill.
- P2, question: the clip and the question, then the prefill.
- P3, question with options: the clip, the question and the options listed, then the prefill.

Each is rendered with the checkpoint's own chat template (``build_inputs(messages=..., continue_final_message=True)``).
"""

from __future__ import annotations

from ..audio.inputs import AudioTextInput
from ..evaluation.scoring import unknown_token_id

PROMPT_FORMATS = ("P1", "P2", "P3")
DEFAULT_OPTIONS_TEMPLATE = "{question} Options: {options}."


def attribute_messages(
    clip, prompt_format: str, prefill: str, question: str | None = None, options: list[str] | None = None,
    options_template: str = DEFAULT_OPTIONS_TEMPLATE, join: str = ", ", sampling_rate: int | None = None,
) -> list[dict]:
    """One conversation in ``prompt_format`` (P1, P2 or P3) whose assistant turn is ``prefill``. P2 and P3 need
    ``question``; P3 also ``options``, listed with ``options_template`` (``{question}``, ``{options}`` joined by
    ``join``)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    if not prefill.strip():
        raise ValueError("prefill is empty; the formats end the assistant's turn with the words before the attribute")
    audio = {"type": "audio", "audio": clip}
    if sampling_rate is not None:
        audio["sampling_rate"] = sampling_rate
    content = [audio]
    if prompt_format != "P1":
        if not question:
            raise ValueError(f"{prompt_format} asks a question: pass question=")
        text = question
        if prompt_format == "P3":
            if not options:
                raise ValueError("P3 lists the options: pass options=")
            text = options_template.format(question=question, options=join.join(options))
        content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}, {"role": "assistant", "content": prefill}]


def attribute_prompt_inputs(
    model, clips: list, prompt_format: str, prefill: str, question: str | None = None,
    options: list[str] | None = None, sampling_rate: int | None = None, **format_kwargs,
) -> AudioTextInput:
    """A batch, one row per clip, in ``prompt_format`` (see ``attribute_messages``), left-padded, the assistant's
    turn open after ``prefill``. Raises if the template does not end the row on the prefill's last token."""
    conversations = [
        attribute_messages(clip, prompt_format, prefill, question, options, sampling_rate=sampling_rate, **format_kwargs)
        for clip in clips
    ]
    inputs = model.build_inputs(messages=conversations, continue_final_message=True)
    tokenizer, last_word = model._require_tokenizer(), prefill.split()[-1]
    unknown = _unknown_words(tokenizer, conversations[0])
    if unknown:
        raise ValueError(
            f"the tokenizer does not know {unknown} of this {prompt_format} prompt: they would reach the model as "
            "the unknown token, so the format would not say what it should. Word the question, options and "
            "prefill (options_template=, join=) in the tokenizer's vocabulary")
    for row in range(inputs.shape[0]):
        ending = tokenizer.decode(inputs.input_ids[row, -4:])
        if not ending.endswith(last_word):
            raise ValueError(
                f"the chat template did not end row {row} on the prefill {prefill!r} (it ends on {ending!r}); "
                "the last position would not predict the attribute")
    return inputs


def _unknown_words(tokenizer, conversation: list[dict]) -> list[str]:
    """The whitespace-separated words of a conversation's text that the tokenizer turns into its unknown token."""
    unk = unknown_token_id(tokenizer)
    if unk is None:
        return []
    texts = [part["text"] for part in conversation[0]["content"] if part["type"] == "text"] + [conversation[1]["content"]]
    words = dict.fromkeys(word for text in texts for word in text.split())
    return [word for word in words if unk in tokenizer(word, add_special_tokens=False)["input_ids"]]
