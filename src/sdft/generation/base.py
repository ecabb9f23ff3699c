"""The one protocol every generation backend implements: ``generate(prompts, params) -> completions``.

Prompts are full texts, already rendered (chat template and pre-fill included) and tokenized without adding
special tokens, so every backend continues exactly the same text. A completion carries the text, why it
stopped (``stop``: end of sequence or a stop string; ``length``: the token limit) and token counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings. ``temperature == 0`` means greedy. Sampling applies temperature before top-k/top-p
    (as HF does), min-p 0 and no repetition penalty unless set."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def with_seed(self, seed: int) -> "GenerationParams":
        return replace(self, seed=seed)

    def to_dict(self) -> dict:
        return asdict(self)


# The authors' release (LLaMA-Factory defaults): one sample per row.
AUTHORS_SAMPLING = GenerationParams(max_new_tokens=512, temperature=0.95, top_p=0.7, top_k=50)
GREEDY = GenerationParams(max_new_tokens=512)
DECODING_PRESETS = {"authors": AUTHORS_SAMPLING, "greedy": GREEDY}


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class LogprobBackend(Protocol):
    """A backend that can also read token log-probabilities (log-probability judging)."""

    name: str

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Per prompt, the log-probability of each candidate's first token at the position right after the
        prompt (natural log, over the whole vocabulary, before any sampling). A candidate the backend cannot
        see (outside a server's top-k) is ``-inf``."""
        ...


NO_LOGPROB = float("-inf")


def first_token_ids(encode: Callable[[str], Sequence[int]], candidates: Sequence[str]) -> list[int]:
    """The first token id of each candidate (tokenized alone, no special tokens); they must be distinct."""
    ids = []
    for c in candidates:
        toks = list(encode(c)) if c else []
        if not toks:
            raise ValueError(f"candidate {c!r} has no tokens")
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"candidates {list(candidates)} do not start with distinct tokens ({ids})")
    return ids


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Truncate ``text`` at the earliest stop string; report whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
