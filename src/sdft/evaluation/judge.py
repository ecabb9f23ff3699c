"""Pairwise judging of a model's answers against a reference (AlpacaEval's 805 text-davinci-003 outputs).

**Judge.** Any sdft generation backend (``generate(prompts, params) -> [Completion]``) is injected: a local
HF/GGUF model (:func:`make_judge` builds one with :func:`sdft.generation.make_backend`) or an OpenAI-compatible
server backend. ``render`` turns the filled judge prompt into the text the backend continues (the judge model's
chat template as one user turn, or the raw text). Decoding is greedy, 32 new tokens.

**Prompt.** A replaceable text file with the fields ``{instruction}``, ``{output_1}`` ("Output (a)") and
``{output_2}`` ("Output (b)"), filled in one pass (never ``str.format``); a leading ``<!-- ... -->`` block is a
header and is not sent. The default, ``resources/judge/alpaca_eval_pairwise.txt``, is AlpacaEval's own pairwise
prompt (the ``text_davinci_003``/``chatgpt`` annotators' "Output (a) or Output (b)" prompt, Apache-2.0, bundled
byte for byte). AlpacaEval 1's GPT-4 annotator asks for a Python list of ranks instead; that format is hard for
a small local judge, so it is not the default (its answers are still parsed if you use that prompt).

**Both orders.** Each pair is judged twice: model answer as Output (a), then as Output (b). Each parsed verdict
becomes the model's preference in that order (1 = model chosen, 0 = reference chosen, 0.5 = an explicit tie). The
pair's score is the **mean of its two preferences**: 1 (won both), 0 (lost both), 0.5 (order disagreement, i.e.
the judge picked the same position twice, or two ties); 0.75/0.25 only with one explicit tie (the bundled prompt
offers no tie). **Unparseable** verdicts are recorded with the raw text and counted (``unparseable_judgements``,
``unparseable_pairs``); ``unparseable="exclude"`` (default, as AlpacaEval drops NaN annotations) leaves a pair
with any unparseable verdict out of the rate; ``unparseable="tie"`` counts each unparseable verdict as 0.5.

**Log-probability mode** (:mod:`sdft.evaluation.judge_logprob`): the same pairs and orders, but each
preference is the judge's probability of the verdict token instead of a parsed text.

**Interval.** ``ci95`` is the Wilson interval with k = the sum of pair scores (half points allowed) out of n
pairs. Pair scores lie in [0, 1], so their variance is at most p(1-p), the Bernoulli variance Wilson assumes:
with ties the interval is conservative, it never collapses to zero width at 0% or 100% (as a percentile bootstrap
does on 20 pairs), and it is the interval every other sdft score reports. A seeded percentile bootstrap
(``ci95_bootstrap``, 2,000 resamples) is given alongside.

**Length control** (AlpacaEval 2 style, simplified): a logistic regression of the pair score (a soft label in
[0, 1], cross-entropy loss) on ``x = tanh((len_model - len_ref) / sd)`` (characters; sd = the standard deviation
of the differences), fitted by Newton's method with a weak L2 penalty (0.01, keeps an all-win set finite). The
length-controlled win rate is the prediction at zero length difference, ``sigmoid(intercept)``. AlpacaEval 2's
GLM also has a per-instruction difficulty term fitted on many models' annotations; with one model against one
baseline there is nothing to fit it on, so it is left out.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from sdft.generation import Backend, GenerationParams
from sdft.stats import bootstrap_interval, wilson_interval
from sdft.store import RecordWriter, atomic_write_json, read_records

PROMPT_FILE = Path(__file__).parents[1] / "resources" / "judge" / "alpaca_eval_pairwise.txt"
PROMPT_FIELDS = ("instruction", "output_1", "output_2")
JUDGE_PARAMS = GenerationParams(max_new_tokens=32, temperature=0.0)
UNPARSEABLE_POLICIES = ("exclude", "tie")
POSITION_WARN = 0.4  # warn when >= 90% (or <= 10%) of the verdicts name the first answer
ORDERS = ("model_first", "reference_first")  # model answer shown as Output (a), then as Output (b)
_FIELD_RE = re.compile(r"\{(instruction|output_1|output_2)\}")


# ------------------------------------------------------------------------------------------------------ prompt
@dataclass(frozen=True)
class JudgePrompt:
    text: str  # the prompt without its header
    path: str
    sha256: str  # of the whole file as read

    @classmethod
    def load(cls, path: str | Path | None = None) -> "JudgePrompt":
        p = Path(path).expanduser() if path else PROMPT_FILE
        try:
            raw = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"{p}: judge prompt file not found") from None
        text = raw
        if text.lstrip().startswith("<!--"):
            end = text.find("-->")
            if end < 0:
                raise ValueError(f"{p}: header comment '<!--' is never closed with '-->'")
            text = text[end + 3:].lstrip("\r\n")
        missing = [f for f in PROMPT_FIELDS if "{" + f + "}" not in text]
        if missing:
            raise ValueError(f"{p}: judge prompt lacks the field(s) {', '.join('{' + m + '}' for m in missing)}")
        return cls(text, str(p), hashlib.sha256(raw.encode("utf-8")).hexdigest())

    def fill(self, instruction: str, output_1: str, output_2: str) -> str:
        """The prompt with the three fields filled in one pass (text inside an answer is never re-scanned).

        >>> JudgePrompt("I:{instruction} a:{output_1} b:{output_2}", "", "").fill("{output_2}", "x", "y")
        'I:{output_2} a:x b:y'
        """
        values = {"instruction": instruction, "output_1": output_1, "output_2": output_2}
        return _FIELD_RE.sub(lambda m: values[m.group(1)], self.text)


# ----------------------------------------------------------------------------------------------------- parsing
_WORD = r"(?:output|response|answer|option|candidate|assistant|model)"
_END = r"(?=\s*$|\s*[.,;:!)\]\n]|\s+(?:is|was|would|because|as|since|for|with|and|but|or|vs)\b)"
_STRONG = (rf"(?:{_WORD}\s*[(\[]\s*([ab])\s*[)\]]|{_WORD}\s+([ab]){_END}"  # "output (a)", "output a is"
           rf"|[(\[]\s*([ab])\s*[)\]])")  # "(b)"
_BARE = rf"(?<![a-z0-9])([ab]){_END}"  # "A", "B.", "a is better"; never the article in "a better answer"
_LABEL = rf"(?:{_STRONG}|{_BARE})"
_BETTER = (r"(?:better|best|preferred|preferable|superior|stronger|the winner|more helpful|more accurate|"
           r"more appropriate|more relevant|more complete|more detailed|more informative)")
_LEADING = re.compile(rf"^[\s\->:]*(?:{_LABEL})"  # not "Output (a) or Output (b)", not "Output (a) is not better"
                      rf"(?!\s*(?:and|or|vs\.?|versus|,)\s*{_STRONG})(?!\s+(?:is not|isn't|is worse|was not)\b)")
_PHRASES = [
    re.compile(rf"(?:better|best|preferred|superior|winning|correct)\s+(?:output|response|answer|one|choice|option)?"
               rf"\s*(?:is|would be|:)\s*(?:clearly\s+|definitely\s+|probably\s+)?{_LABEL}"),
    re.compile(rf"{_LABEL}\s+(?:is|was|would be)\s+(?:the\s+|clearly\s+|much\s+|slightly\s+|far\s+)?{_BETTER}"),
    re.compile(rf"(?:i\s+(?:would\s+)?(?:choose|prefer|pick|select|go with)|my\s+(?:choice|pick|answer|verdict)\s+is"
               rf"|(?:choice|verdict|answer|winner|selection|preference)\s*:)\s*{_LABEL}"),
]
_TIE = re.compile(r"\b(?:tie|tied|a draw|equally (?:good|bad|helpful|valid|correct)|both (?:outputs |answers |"
                  r"responses )?are (?:equally|equal)|neither is better)\b")
_RANKING = re.compile(r"""model['"]?\s*:\s*['"]?model_([12])['"]?\s*,\s*['"]?rank['"]?\s*:\s*([12])""")


def _label(m: re.Match) -> str:
    return next(g for g in m.groups() if g)


def parse_verdict(text: str) -> tuple[Optional[str], str]:
    """``(label, how)``: label ``"a"`` (Output (a), the first shown), ``"b"``, ``"tie"``, or None when unparseable.

    Rules, in order: empty -> None; AlpacaEval's ranking list (``{'model': 'model_1', 'rank': 1}``); a label at
    the very start (``Output (a)``, ``**Output (b)**``, ``(a)``, ``B.``; a bare letter only when followed by the
    end, punctuation or a word like "is"/"because", so "A better answer is B" is not read as A); the first decisive
    phrase anywhere ("the better answer is B", "Output (a) is better", "I choose (b)", "Answer: A"); an explicit
    tie; exactly one label mentioned. Both labels mentioned without a decisive phrase -> None (``ambiguous``).

    >>> [parse_verdict(t)[0] for t in ["Output (a)", "(b)", "A", "The better answer is B.", "**Output (a)**"]]
    ['a', 'b', 'a', 'b', 'a']
    >>> parse_verdict("Output (a) or Output (b)?"), parse_verdict(""), parse_verdict("I like cats.")
    ((None, 'ambiguous'), (None, 'empty'), (None, 'no_label'))
    """
    if not text or not text.strip():
        return None, "empty"
    ranks = {m.group(1): m.group(2) for m in _RANKING.finditer(text)}
    firsts = [model for model, rank in ranks.items() if rank == "1"]
    if len(firsts) == 1:
        return ("a" if firsts[0] == "1" else "b"), "ranking"
    t = re.sub(r"[*_`#\"']", "", text.lower())
    t = re.sub(r"[ \t]+", " ", t).strip()
    m = _LEADING.match(t)
    if m:
        return _label(m), "leading"
    hits = [m for rx in _PHRASES for m in [rx.search(t)] if m]
    if hits:
        return _label(min(hits, key=lambda m: m.start())), "phrase"
    if _TIE.search(t):
        return "tie", "tie"
    labels = {_label(m) for m in re.finditer(_STRONG, t)}
    if len(labels) == 1:
        return labels.pop(), "single"
    return None, ("ambiguous" if labels else "no_label")


# ------------------------------------------------------------------------------------------------------- judge
@dataclass
class Judge:
    """A judge model behind any backend; ``render`` maps a filled prompt to the text the backend continues."""

    backend: Backend
    name: str
    prompt: JudgePrompt = field(default_factory=JudgePrompt.load)
    render: Callable[[str], str] = lambda text: text
    prompt_format: str = "raw"
    params: GenerationParams = JUDGE_PARAMS
    chunk_size: int = 16
    checks_dir: Optional[Path] = None  # where `sdft judge-check` results are looked up by fingerprint (judge_trust)

    def identity(self) -> dict:
        return {"model": self.name, "backend": getattr(self.backend, "name", type(self.backend).__name__),
                "prompt_file": self.prompt.path, "prompt_sha256": self.prompt.sha256,
                "prompt_format": self.prompt_format, "decoding": self.params.to_dict()}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    def _generate(self, texts: list[str]) -> list[tuple[str, Optional[str]]]:
        """``(raw text, error)`` per prompt; a failing chunk is retried one prompt at a time, and a prompt that
        still fails (e.g. longer than the judge's context) is recorded with its error instead of crashing."""
        try:
            return [(c.text, None) for c in self.backend.generate(texts, self.params)]
        except Exception as e:  # noqa: BLE001 - narrowed below, per prompt
            if len(texts) == 1:
                return [("", f"{type(e).__name__}: {e}")]
        out = []
        for t in texts:
            try:
                out.append((self.backend.generate([t], self.params)[0].text, None))
            except Exception as e:  # noqa: BLE001 - any backend failure becomes a recorded, unparseable verdict
                out.append(("", f"{type(e).__name__}: {e}"))
        return out

    def judge(self, items: Sequence[tuple[str, str, str]]) -> list[dict]:
        """Verdicts for ``(instruction, output_1, output_2)`` triples: ``raw``, ``verdict``, ``how`` (and
        ``error``). Identical prompts are sent once."""
        prompts = [self.render(self.prompt.fill(*it)) for it in items]
        unique = list(dict.fromkeys(prompts))
        done: dict[str, tuple[str, Optional[str]]] = {}
        for start in range(0, len(unique), self.chunk_size):
            chunk = unique[start:start + self.chunk_size]
            done.update(zip(chunk, self._generate(chunk)))
        out = []
        for p in prompts:
            raw, err = done[p]
            verdict, how = parse_verdict(raw) if err is None else (None, "error")
            out.append({"raw": raw, "verdict": verdict, "how": how, **({"error": err} if err else {})})
        return out


def make_judge(model: str, backend: str = "auto", *, prompt: str | Path | None = None,
               prompt_format: str = "auto", cache_dir: str | Path | None = None,
               log: Callable[[str], None] = print, **backend_kw: Any) -> Judge:
    """A judge from a local model spec (embedded alias, ``.gguf`` or HF folder) and a backend name."""
    from sdft.generation import make_backend, pick_backend
    from sdft.models import cache_root, load_tokenizer, resolve_model
    from sdft.templates import bos_prefix, default_prompt_format

    resolved = resolve_model(model, cache_dir, log=log)
    tok = load_tokenizer(resolved, cache_dir=cache_dir)
    fmt = default_prompt_format(tok) if prompt_format == "auto" else prompt_format
    renderers = {
        "chat": lambda text: tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                     add_generation_prompt=True),
        "raw": lambda text: bos_prefix(tok) + text,
    }
    if fmt not in renderers:
        raise ValueError(f"judge prompt format '{fmt}': use one of {', '.join(renderers)} or auto")
    judge_prompt = JudgePrompt.load(prompt)  # a bad prompt file fails before a model is loaded
    engine = make_backend(pick_backend(backend, resolved), resolved, **{"tokenizer": tok, **backend_kw})
    return Judge(engine, resolved.name, judge_prompt, renderers[fmt], fmt,
                 checks_dir=cache_root(cache_dir) / "judge-checks")


# ------------------------------------------------------------------------------------------------- both orders
def model_preference(verdict: Optional[str], order: str) -> Optional[float]:
    """The model's preference for one verdict: 1 chosen, 0 not, 0.5 tie, None unparseable.

    >>> model_preference("a", "model_first"), model_preference("a", "reference_first"), model_preference("tie", "x")
    (1.0, 0.0, 0.5)
    """
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    return float((verdict == "a") == (order == "model_first"))


def preference(judgement: Mapping[str, Any], order: str) -> Optional[float]:
    """The model's preference in one order: a log-probability judgement's ``p_first`` (the probability that the
    first answer is better) turned to the model's side, else :func:`model_preference` of the verdict."""
    p = judgement.get("p_first")
    if p is None:
        return model_preference(judgement.get("verdict"), order)
    return float(p) if order == "model_first" else 1.0 - float(p)


def first_position(records: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Per decisive judgement (preference not 0.5), whether it favoured the answer shown first."""
    return [(p > 0.5) == (o == "model_first") for r in records for o, p in zip(ORDERS, r["preferences"])
            if p is not None and p != 0.5]


def pair_score(prefs: Sequence[Optional[float]], unparseable: str = "exclude") -> Optional[float]:
    """The pair's score from its two per-order preferences (see the module doc); None = left out.

    >>> pair_score([1.0, 1.0]), pair_score([1.0, 0.0]), pair_score([1.0, None]), pair_score([1.0, None], "tie")
    (1.0, 0.5, None, 0.75)
    """
    if unparseable not in UNPARSEABLE_POLICIES:
        raise ValueError(f"unparseable='{unparseable}': use one of {', '.join(UNPARSEABLE_POLICIES)}")
    if any(p is None for p in prefs):
        if unparseable == "exclude":
            return None
        prefs = [0.5 if p is None else p for p in prefs]
    return sum(prefs) / len(prefs)


def judge_pairs(judge: Judge, pairs: Sequence[Mapping[str, Any]], path: Path | None = None) -> list[dict]:
    """Judge each ``{"index", "instruction", "model", "reference"}`` pair in both orders; with ``path``, verdicts
    are appended to that JSONL as chunks finish and reused on a re-run (resumable). Returns one record per pair
    with ``judgements`` (per order: raw, verdict, how) and ``preferences`` (model's, per order)."""
    done = {r["key"]: r for r in read_records(path, key="key")} if path else {}
    jobs = []
    for p in pairs:
        for order in ORDERS:
            key = f"{p['index']}:{order}"
            if key not in done:
                a, b = (p["model"], p["reference"]) if order == "model_first" else (p["reference"], p["model"])
                jobs.append((key, (p["instruction"], a, b)))
    step = max(1, judge.chunk_size)
    writer = RecordWriter(path) if path and jobs else None
    try:
        for start in range(0, len(jobs), step):
            chunk = jobs[start:start + step]
            recs = [{"key": k, **v} for (k, _), v in zip(chunk, judge.judge([it for _, it in chunk]))]
            if writer:
                writer.write(recs)
            done.update((r["key"], r) for r in recs)
    finally:
        if writer:
            writer.close()
    out = []
    for p in pairs:
        js = {o: done[f"{p['index']}:{o}"] for o in ORDERS}
        keys = ("raw", "verdict", "how") + (("p_first",) if "p_first" in js[ORDERS[0]] else ())
        out.append({"index": p["index"], "judgements": {o: {k: js[o].get(k) for k in keys} for o in ORDERS},
                    "preferences": [preference(js[o], o) for o in ORDERS]})
    return out


# ------------------------------------------------------------------------------------------------- aggregation
def length_controlled(scores: Sequence[float], model_len: Sequence[float], ref_len: Sequence[float],
                      l2: float = 0.01, iters: int = 50) -> dict:
    """Fit ``logit(score) = b0 + b1 * tanh((len_model - len_ref) / sd)``; the win rate at zero length difference
    is ``sigmoid(b0)``. Returns ``win_rate``, ``intercept``, ``slope``, ``sd_chars``."""
    import numpy as np

    y = np.asarray(scores, float)
    diff = np.asarray(model_len, float) - np.asarray(ref_len, float)
    if len(y) == 0:
        return {"win_rate": None, "intercept": None, "slope": None, "sd_chars": None}
    sd = float(diff.std(ddof=1)) if len(y) > 1 else 0.0
    x = np.tanh(diff / sd) if sd > 0 else np.zeros_like(diff)
    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ beta)))
        grad = X.T @ (p - y) + l2 * beta
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return {"win_rate": float(1.0 / (1.0 + math.exp(-beta[0]))), "intercept": float(beta[0]),
            "slope": float(beta[1]), "sd_chars": sd}


def summarize_pairs(records: Sequence[Mapping[str, Any]], unparseable: str = "exclude") -> dict:
    """Win rate and its statistics from pair records with ``preferences``, ``model_chars`` and ``reference_chars``.
    Sets each record's ``score`` (None when left out) in place."""
    counted = []
    for r in records:
        r["score"] = pair_score(r["preferences"], unparseable)  # type: ignore[index]
        if r["score"] is not None:
            counted.append(r)
    scores = [r["score"] for r in counted]
    n, total = len(counted), sum(scores)
    prefs = [p for r in records for p in r["preferences"] if p is not None]
    first_pos = first_position(records)
    lc = length_controlled(scores, [r["model_chars"] for r in counted], [r["reference_chars"] for r in counted])
    mean = lambda xs: round(sum(xs) / len(xs), 1) if xs else None  # noqa: E731
    position = sum(first_pos) / len(first_pos) if first_pos else None
    warnings = []
    if position is not None and len(first_pos) >= 10 and abs(position - 0.5) >= POSITION_WARN:
        warnings.append(f"the judge named the {'first' if position > 0.5 else 'second'} answer in "
                        f"{max(position, 1 - position):.0%} of its verdicts: the win rate mostly measures position "
                        f"bias (order disagreements score 0.5), not answer quality; check the judge with "
                        f"sdft judge-check")
    if records and (len(records) - n) / len(records) > 0.2:
        warnings.append(f"{len(records) - n} of {len(records)} pairs had an unparseable verdict")
    return {
        "score": total / n if n else 0.0, "n": n, "correct": total, "ci95": list(wilson_interval(total, n)),
        "ci95_bootstrap": bootstrap_interval(scores), "pairs": len(records),
        "wins": sum(s == 1.0 for s in scores), "losses": sum(s == 0.0 for s in scores),
        "ties": sum(0.0 < s < 1.0 for s in scores),
        "order_disagreements": sum(r["preferences"] in ([1.0, 0.0], [0.0, 1.0]) for r in records),
        "unparseable_judgements": sum(p is None for r in records for p in r["preferences"]),
        "unparseable_pairs": sum(any(p is None for p in r["preferences"]) for r in records),
        "unparseable_policy": unparseable, "parsed_judgements": len(prefs),
        "first_position_rate": position, "decisive_judgements": len(first_pos), "warnings": warnings,
        "length_controlled": lc,
        "mean_model_chars": mean([r["model_chars"] for r in records]),
        "mean_reference_chars": mean([r["reference_chars"] for r in records]),
    }


def write_model_outputs(path: str | Path, rows: Iterable[Mapping[str, Any]], generator: str) -> None:
    """AlpacaEval's ``model_outputs.json``: a list of ``{instruction, output, generator, dataset?}``, for running
    the official ``alpaca_eval --model_outputs model_outputs.json`` (e.g. with GPT-4) on the same answers."""
    out = []
    for r in rows:
        rec = {"instruction": r["instruction"], "output": r["output"], "generator": generator}
        if r.get("dataset"):
            rec["dataset"] = r["dataset"]
        out.append(rec)
    atomic_write_json(Path(path), out)
