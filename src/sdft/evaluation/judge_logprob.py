"""Log-probability judging: the judge's probability of each verdict token, not a generated and parsed text.

**Verdict tokens.** The shipped prompt (AlpacaEval's pairwise prompt, :mod:`sdft.evaluation.judge`) asks the judge
to answer ``Output (a)`` or ``Output (b)``. The filled, rendered prompt is continued with the verdict's opening,
``Output (`` (in chat format: the beginning of the judge's own turn), and the backend returns the log-probability
of the next token being ``a`` or ``b`` (``next_token_logprobs``; the embedded judges' tokenizers split
"Output (a)" as ``Output`` `` (`` ``a`` ``)``, so these are the tokens the judge itself would write). A prompt that
asks for AlpacaEval 2's ``m`` / ``M`` identifiers is read at the start of the judge's turn instead. Other prompts
are refused (:class:`JudgeError`): there is no verdict position to read.

**Preference.** ``p_first = p(a) / (p(a) + p(b))``, normalised over the two verdict tokens: the judge's
probability that the answer shown first is better. As in generate mode, each pair is judged in both orders; the
model's preference is ``p_first`` when it is shown first and ``1 - p_first`` when it is shown second, and the
pair's score is the mean of the two: the order-averaged probability. A judge that adds the same log-odds ``b``
to the first position in both orders scores ``(σ(d + b) + σ(d - b)) / 2``: exactly 0.5 when the answers are
equal (``d = 0``) and on the same side of 0.5 as ``d`` otherwise, so the position bias cancels in expectation
rather than turning every pair into a 0.5 tie. Every verdict "parses"; one where neither token has any
probability (a server listing neither among its top-k) is recorded as unparseable (``how: no_candidate``).

Backends: ``hf`` (a forward pass), ``llamacpp`` (exact: top-50, then the whole vocabulary if needed), ``openai``
(the server's top-k, ``logprobs_k`` = 20; a token outside it counts as probability 0) and ``vllm`` (top-20).
A backend without ``next_token_logprobs`` is refused before any judging with a :class:`JudgeError`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from sdft.evaluation import judge as judge_module
from sdft.evaluation.judge import Judge, JudgePrompt

JUDGE_MODES = ("generate", "logprob")


class JudgeError(ValueError):
    """A judge cannot judge in the mode asked for (the message says what to use instead)."""


@dataclass(frozen=True)
class VerdictFormat:
    name: str
    markers: tuple[str, ...]  # all present in the prompt text: the prompt asks for this format
    prefix: str  # appended to the rendered prompt: the verdict's opening
    candidates: tuple[str, str]  # the token naming Output (a), the one naming Output (b)


FORMATS = (
    VerdictFormat("output_ab", ("Output (a)", "Output (b)"), "Output (", ("a", "b")),
    VerdictFormat("alpaca_eval_mM", ('"m"', '"M"'), "", ("m", "M")),
)


def verdict_format(prompt: JudgePrompt) -> VerdictFormat:
    """The verdict format a judge prompt asks for.

    >>> verdict_format(JudgePrompt("Say Output (a) or Output (b). {instruction}{output_1}{output_2}", "", "")).prefix
    'Output ('
    """
    for fmt in FORMATS:
        if all(m in prompt.text for m in fmt.markers):
            return fmt
    raise JudgeError(f"{prompt.path or 'the judge prompt'}: log-probability judging needs a prompt that asks for "
                     "'Output (a)' or 'Output (b)' (as the shipped one) or for \"m\" or \"M\"; use --judge-mode "
                     "generate with this prompt")


def p_first(logprobs: dict[str, float], candidates: Sequence[str]) -> Optional[float]:
    """The first candidate's probability normalised over the two (None when neither has any).

    >>> round(p_first({"a": math.log(0.3), "b": math.log(0.1)}, ("a", "b")), 6)
    0.75
    >>> p_first({"a": -math.inf, "b": -2.0}, ("a", "b")), p_first({"a": -math.inf, "b": -math.inf}, ("a", "b"))
    (0.0, None)
    """
    la, lb = (logprobs.get(c, -math.inf) for c in candidates)
    if la == -math.inf and lb == -math.inf:
        return None
    d = lb - la
    return 1.0 / (1.0 + math.exp(d)) if d < 700 else 0.0


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None  # JSON has no -inf


@dataclass
class LogprobJudge:
    """A :class:`~sdft.evaluation.judge.Judge` read by verdict-token probabilities (same model, prompt and
    rendering; see the module doc). Used wherever a ``Judge`` is (``judge_pairs``, the alpacaeval hook)."""

    base: Judge
    fmt: VerdictFormat

    def __post_init__(self) -> None:
        if not callable(getattr(self.base.backend, "next_token_logprobs", None)):
            name = getattr(self.base.backend, "name", type(self.base.backend).__name__)
            raise JudgeError(f"backend {name} returns no token log-probabilities; use --judge-mode generate")

    mode = "logprob"
    backend = property(lambda self: self.base.backend)
    name = property(lambda self: self.base.name)
    prompt = property(lambda self: self.base.prompt)
    chunk_size = property(lambda self: self.base.chunk_size)
    checks_dir = property(lambda self: self.base.checks_dir)

    def identity(self) -> dict:
        return {**self.base.identity(), "mode": "logprob",
                "decoding": {"verdict_prefix": self.fmt.prefix, "candidates": list(self.fmt.candidates)}}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    def prompt_text(self, item: tuple[str, str, str]) -> str:
        return self.base.render(self.base.prompt.fill(*item)) + self.fmt.prefix

    def _logprobs(self, texts: list[str]) -> list[tuple[Optional[dict], Optional[str]]]:
        """``(log-probs, error)`` per prompt; a failing chunk is retried prompt by prompt (as generate mode)."""
        cands = list(self.fmt.candidates)
        try:
            return [(lp, None) for lp in self.base.backend.next_token_logprobs(texts, cands)]
        except Exception as e:  # noqa: BLE001 - narrowed below, per prompt
            if len(texts) == 1:
                return [(None, f"{type(e).__name__}: {e}")]
        out = []
        for t in texts:
            try:
                out.append((self.base.backend.next_token_logprobs([t], cands)[0], None))
            except Exception as e:  # noqa: BLE001 - a failure becomes a recorded, unparseable verdict
                out.append((None, f"{type(e).__name__}: {e}"))
        return out

    def judge(self, items: Sequence[tuple[str, str, str]]) -> list[dict]:
        """Per ``(instruction, output_1, output_2)``: ``p_first``, ``logprobs``, ``verdict`` (the likelier
        label, for reading), ``how`` and a ``raw`` line. Identical prompts are sent once."""
        prompts = [self.prompt_text(it) for it in items]
        unique = list(dict.fromkeys(prompts))
        done: dict[str, tuple[Optional[dict], Optional[str]]] = {}
        for start in range(0, len(unique), self.chunk_size):
            chunk = unique[start:start + self.chunk_size]
            done.update(zip(chunk, self._logprobs(chunk)))
        a, b = self.fmt.candidates
        out = []
        for prompt in prompts:
            lp, err = done[prompt]
            if err is not None or lp is None:
                out.append({"raw": "", "verdict": None, "how": "error", "p_first": None, "error": err})
                continue
            p = p_first(lp, (a, b))
            raw = ", ".join(f"log p({c})={lp.get(c, -math.inf):.4f}" for c in (a, b))
            out.append({"raw": raw, "verdict": None if p is None else ("a" if p >= 0.5 else "b"),
                        "how": "no_candidate" if p is None else "logprob", "p_first": p,
                        "logprobs": {c: _finite(lp.get(c, -math.inf)) for c in (a, b)}})
        return out


def with_mode(judge: Judge, mode: str) -> Judge | LogprobJudge:
    """``judge`` itself (generate) or read by verdict-token probabilities (logprob)."""
    if mode not in JUDGE_MODES:
        raise ValueError(f"judge mode '{mode}': use one of {', '.join(JUDGE_MODES)}")
    return judge if mode == "generate" else LogprobJudge(judge, verdict_format(judge.prompt))


def make_mode_judge(model: str, backend: str = "auto", *, mode: str = "generate",
                    log: Callable[[str], None] = print, **kw: Any) -> Judge | LogprobJudge:
    """:func:`~sdft.evaluation.judge.make_judge` in the given mode; a mode the judge cannot do fails here, with
    the backend closed again."""
    if mode not in JUDGE_MODES:
        raise ValueError(f"judge mode '{mode}': use one of {', '.join(JUDGE_MODES)}")
    judge = judge_module.make_judge(model, backend, log=log, **kw)  # looked up now (tests replace it)
    try:
        return with_mode(judge, mode)
    except Exception:
        getattr(judge.backend, "close", lambda: None)()
        raise


__all__ = ["FORMATS", "JUDGE_MODES", "JudgeError", "LogprobJudge", "VerdictFormat", "make_mode_judge", "p_first",
           "verdict_format", "with_mode"]
