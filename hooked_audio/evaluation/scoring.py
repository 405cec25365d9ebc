"""Three ways to score an answer: restricted-label argmax, MMAU-style string matching, exact match.

- :func:`restricted_choice` (as AudioLens): the logits at the answer position compared over the choice
  set only, each choice represented by its first token. Choices whose first tokens coincide cannot be
  told apart this way, so they raise (``first_token_ids``) instead of scoring one of them by accident.
- :func:`mmau_match`: MMAU's string matching, implemented here from its description (not copied from
  MMAU's script): the prediction is right when every word of the answer occurs in it and no word of a
  wrong choice does (words a wrong choice shares with the answer do not count against it).
- :func:`exact_match`: the prediction equals the answer (or one of its aliases) after normalising
  case, whitespace and punctuation (any Unicode punctuation: ``"Dog。"`` and ``"it’s"`` as ``"Dog."`` and
  ``"it's"``; full-width letters and digits as their ASCII forms), keeping what makes a number (a sign, a
  decimal point, a percent: ``"-5"`` is not ``"5"``, and ``"−5"`` with the Unicode minus is ``"-5"``) and symbols
  that are not punctuation (``"C++"`` is not ``"C"``, ``"$5"`` not ``"5"``), bar the markup symbols `` ` ~ ^ | ``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import torch

_WORD = re.compile(r"\w+")
_DECORATION = "`~^|"  # ASCII symbols that mark text up rather than say anything (markdown's code, strike-through)


def words(text: str) -> set[str]:
    """The lower-cased words (runs of letters, digits, underscore) of a text, after NFKC (full-width letters as
    ASCII, a decomposed accent composed)."""
    return set(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))


def normalise(text: str) -> str:
    """NFKC, lower case, Unicode punctuation to spaces except a number's sign, decimal point and percent (the
    Unicode minus as ``-``), markdown's decoration symbols to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("\u2212", "-").lower()
    kept = []
    for i, c in enumerate(text):
        before, after = text[i - 1] if i else " ", text[i + 1] if i + 1 < len(text) else " "
        in_number = ((c in "+-" and after.isdigit() and not (before.isalnum() or before == "."))
                     or (c == "." and before.isdigit() and after.isdigit()) or (c == "%" and before.isdigit()))
        kept.append(c if in_number or not (unicodedata.category(c).startswith("P") or c in _DECORATION) else " ")
    return " ".join("".join(kept).split())


def exact_match(prediction: str, answer: str, aliases: Sequence[str] = ()) -> bool:
    target = normalise(prediction)
    return bool(target) and any(target == normalise(a) for a in (answer, *aliases))


def mmau_match(prediction: str, answer: str, choices: Sequence[str] | None) -> bool:
    """Every word of ``answer`` in ``prediction`` and no word of a wrong choice (beyond the answer's own).

    MMAU's own rule, kept so that scores compare with published ones: a wrong choice with exactly the answer's
    words in another order (``"cat then dog"`` for ``"dog then cat"``) cannot be told apart by it."""
    predicted, wanted = words(prediction), words(answer)
    if not predicted or not wanted:
        return False
    wrong: set[str] = set()
    for choice in choices or ():
        choice_words = words(choice)
        if choice_words != wanted:
            wrong |= choice_words - wanted
    return wanted <= predicted and not (predicted & wrong)


def first_token_ids(tokenizer, choices: Sequence[str]) -> list[int]:
    """The first token of each choice as the tokenizer writes it at the start of the answer; raises when a
    choice makes no token or two choices share their first token (restricted argmax could not tell them apart)."""
    ids = []
    for choice in choices:
        tokens = tokenizer(choice, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise ValueError(f"choice {choice!r} tokenizes to nothing; restricted scoring needs a token per choice")
        ids.append(int(tokens[0]))
    by_id: dict[int, list[str]] = {}
    for choice, token in zip(choices, ids):
        by_id.setdefault(token, []).append(choice)
    clashes = {tokenizer.convert_ids_to_tokens(t): c for t, c in by_id.items() if len(c) > 1}
    if clashes:
        raise ValueError(
            f"choices {list(choices)} share first tokens {clashes}: restricted argmax scores the first token of "
            "each choice, so these cannot be told apart; relabel the choices (the evaluation can also score the generated "
            "text: --scoring mmau)"
        )
    unk = unknown_token_id(tokenizer)
    unknown = [c for c, t in zip(choices, ids) if unk is not None and t == unk]
    if unknown:
        raise ValueError(f"choices {unknown} start with the unknown token; restricted argmax would compare <unk>, the "
                         "token of every out-of-vocabulary word: use words the tokenizer knows")
    return ids


def restricted_choice(logits: torch.Tensor, choice_ids: Sequence[int], choices: Sequence[str]) -> dict:
    """The choice whose first token has the highest logit at the answer position.

    Returns ``prediction``, ``choice_logprobs`` (log-softmax over the whole vocabulary at each choice's
    first token) and ``choice_probs_restricted`` (softmax over the choice set alone)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)[list(choice_ids)]
    restricted = torch.softmax(logprobs, dim=-1)
    best = int(torch.argmax(logprobs))
    return {
        "prediction": choices[best],
        "choice_logprobs": {c: round(float(v), 5) for c, v in zip(choices, logprobs)},
        "choice_probs_restricted": {c: round(float(v), 5) for c, v in zip(choices, restricted)},
    }


def unknown_token_id(tokenizer) -> int | None:
    """The id unknown words become: the tokenizer's ``unk_token_id``, else its fast backend's word-level or BPE
    model's unknown token (a tokenizer built from a ``tokenizers`` model may name it only there)."""
    if getattr(tokenizer, "unk_token_id", None) is not None:
        return tokenizer.unk_token_id
    backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    token = getattr(backend, "unk_token", None)
    return None if token is None else tokenizer.convert_tokens_to_ids(token)
