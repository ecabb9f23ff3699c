"""Task checks that decide whether a rewrite replaces the original response (paper eq. 4).

A check is a pure function ``check(text, original) -> reason | None``: ``None`` accepts, a short reason string
rejects. The built-in ones reproduce the authors' release (``eval/gen_distilled_data.py`` and the task scorers):

>>> banned_phrases("Sure, using the reference answer, ...", "")
'banned_phrase'
>>> gsm8k_answer("so she has 72 clips.", "Natalia sold ...\\nThe answer is 72.") is None
True
"""

from __future__ import annotations

import importlib
import re
from typing import Callable, Optional

Check = Callable[[str, str], Optional[str]]

BANNED_PHRASES = ("reference answer", "your response", "my response", "your own response", "now it's your turn")
CODE_STARTS = ("I have", "Here is", "I implemented")

# the release's sentinel for "no usable number"; kept so that scores match the release bit for bit
INVALID = "-999999999"
NUMBER_RE = re.compile(r"-?\d+(?:[,\s]\d+)*(?:\.\d+)?")


def banned_phrases(text: str, original: str) -> Optional[str]:
    """The authors' filter for every task: banned phrases (any case) or a leading "Your turn" (case-sensitive)."""
    low = text.lower()
    if any(b in low for b in BANNED_PHRASES):
        return "banned_phrase"
    if text.startswith("Your turn"):
        return "your_turn"
    return None


def find_last_integer(s: str) -> str:
    """The authors' number rule: the last match of ``-?\\d+(?:[,\\s]\\d+)*(?:\\.\\d+)?`` with "," and " " removed;
    a non-zero fraction gives the invalid sentinel, a zero fraction is dropped.

    >>> find_last_integer("It costs $1,234.00 in total")
    '1234'
    >>> find_last_integer("no number")
    '-999999999'
    """
    numbers = NUMBER_RE.findall(s)
    number = numbers[-1].replace(",", "").replace(" ", "") if numbers else INVALID
    parts = number.split(".")
    if len(parts) > 1 and int(parts[1]) != 0:
        return INVALID
    return parts[0]


def math_match(prediction: str, label: str) -> bool:
    """Release ``check_math``: last integer of the stripped prediction equals the last integer of the label.
    A match still holding a newline or tab fails ``int()`` and counts as wrong."""
    try:
        return int(find_last_integer(label)) == int(find_last_integer(prediction.strip()))
    except ValueError:
        return False


def gsm8k_answer(text: str, original: str) -> Optional[str]:
    """GSM8K: the last number of the rewrite equals the gold answer (works for "#### N" and "The answer is N.")."""
    return None if math_match(text, original) else "answer_mismatch"


def standardize_function_call(call: str) -> str:
    call = re.sub(r"\s+", " ", call.strip())
    return call.replace("'", '"').replace(", ", ",")


_CALL_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*(?:\.[a-zA-Z_][a-zA-Z0-9_]*)*)\((.*)\)")


class GoldFormatError(ValueError):
    """The gold answer is not in the form the check needs."""


def function_call_match(prediction: str, gold: str) -> bool:
    """Release ``check_openfunction``: the normalised gold ``name(args)`` occurs in the normalised prediction."""
    ref = standardize_function_call(gold)
    m = _CALL_RE.match(ref)
    if not m:
        raise GoldFormatError(f"gold answer is not a function call: {gold[:80]!r}")
    name, params = m.groups()
    pattern = r"\b" + re.escape(name) + r"\(" + re.escape(params) + r"\)"
    return re.search(pattern, standardize_function_call(prediction)) is not None


def openfunctions_call(text: str, original: str) -> Optional[str]:
    return None if function_call_match(text, original) else "call_mismatch"


def code_block(text: str, original: str) -> Optional[str]:
    """MagiCoder: a ```python block and a start of "I have", "Here is" or "I implemented"."""
    text = text.strip()
    if "```python" not in text:
        return "no_python_block"
    if not text.startswith(CODE_STARTS):
        return "bad_start"
    return None


CHECKS: dict[str, Check] = {
    "banned": banned_phrases,
    "gsm8k": gsm8k_answer,
    "openfunctions": openfunctions_call,
    "code": code_block,
}


def regex_check(pattern: str) -> Check:
    """A user check: the rewrite must match ``pattern`` (``re.search``)."""
    rx = re.compile(pattern)

    def check(text: str, original: str) -> Optional[str]:
        return None if rx.search(text) else "regex_mismatch"

    check.__name__ = f"regex({pattern})"
    return check


def import_check(spec: str) -> Check:
    """A user check ``module:function``; the function returns ``True``/``None`` to accept, ``False`` or a reason
    string to reject."""
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise ValueError(f"--check '{spec}': expected module:function")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--check '{spec}': cannot import: {e}") from None

    def check(text: str, original: str) -> Optional[str]:
        result = fn(text, original)
        if result is True or result is None:
            return None
        if result is False:
            return f"user_check:{fn_name}"
        return str(result)

    check.__name__ = spec
    return check


def resolve_check(spec: str) -> Check:
    """A check by name (``CHECKS``), ``regex:PATTERN`` or ``module:function``."""
    if spec in CHECKS:
        return CHECKS[spec]
    if spec.startswith("regex:"):
        return regex_check(spec[len("regex:"):])
    if ":" in spec:
        return import_check(spec)
    raise ValueError(f"unknown check '{spec}'; built-in: {', '.join(CHECKS)}, or regex:PATTERN, or module:function")


def first_rejection(text: str, original: str, checks: list[Check]) -> Optional[str]:
    for check in checks:
        reason = check(text, original)
        if reason:
            return reason
    return None


# --- optional clean-up of a small model's chatter (not in the release; named option ``chatter``) -----------
_ECHO_RE = re.compile(r"^\s*(?:#{2,}\s*)?(?:Response|Answer|Your Response|Rewritten Response)\s*:\s*\n?", re.I)
_PREAMBLE_RE = re.compile(
    r"^\s*(?:Sure|Certainly|Of course|Absolutely|Okay|OK)[!,.]?[^\n]{0,120}?(?:here(?:'s| is| are)[^\n]*?)?[:.!]\s*\n+",
    re.I,
)


def strip_chatter(text: str) -> str:
    """Drop an echoed "### Response:" header and a leading "Sure! Here is ..." line; then strip whitespace."""
    prev = None
    while prev != text:
        prev = text
        text = _ECHO_RE.sub("", text, count=1)
        text = _PREAMBLE_RE.sub("", text, count=1)
    return text.strip()


CLEANERS: dict[str, Callable[[str], str]] = {"strip": str.strip, "chatter": strip_chatter}
