"""The cost plan of an experiment (``sdft experiment CONFIG --dry-run --estimate [--gpus N] [--throughput ...]``).

Per stage, without loading a model:

- **tokens to generate**: distillation rows x ``max_new_tokens`` (x ``num_candidates``), eval samples x the task's
  ``max_new_tokens``, judge verdicts for a judged task: upper bounds, since generation stops early at an end of
  sequence; where a stage folder already holds rows, their measured mean completion length instead;
- **tokens to train on**: rows x epochs (or ``max_steps`` x batch) x the mean tokenized length of prompt + target
  (template text included, capped at ``cutoff_len``), counted from the data with the model's tokenizer where it
  is on disk, else as characters / 4 (the plan says which); the seed-NLL gap scores originals and rewrites once;
- **time**: tokens / throughput (tokens/s per GPU: ``--throughput gen=..,train=..`` or a profile of
  ``resources/throughputs.yaml``: measured CPU figures, published GPU references), GPU-hours summed over
  stages, and the wall time on N GPUs from scheduling the DAG with one GPU per stage (as the ray and slurm
  executors run it), which the critical path bounds from below.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdft.config import DEFAULT_MAX_NEW_TOKENS

from sdft.options import ConfigError
from sdft.experiment import ExperimentConfig, plan

DEFAULT_PROFILE = "gpu-reference"
SCORE_SPEEDUP = 3.0  # a forward pass costs about a third of a training step


@dataclass(frozen=True)
class Throughput:
    gen: float
    train: float
    source: str

    @property
    def score(self) -> float:
        return self.train * SCORE_SPEEDUP


def profiles() -> dict[str, dict[str, Any]]:
    import yaml

    return yaml.safe_load((Path(__file__).parent / "resources" / "throughputs.yaml").read_text(encoding="utf-8"))


def parse_throughput(spec: str | dict | None) -> Throughput:
    """A profile name of ``resources/throughputs.yaml``, or ``gen=TOK_S,train=TOK_S`` (missing keys from the
    default profile), or a mapping of those keys."""
    table = profiles()
    if spec is None or (isinstance(spec, str) and spec in table):
        name = spec or DEFAULT_PROFILE
        p = table[name]
        return Throughput(float(p["gen"]), float(p["train"]), f"profile {name} ({p['status']})")
    given: dict[str, Any] = dict(spec) if isinstance(spec, dict) else {}
    if isinstance(spec, str):
        for part in filter(None, spec.split(",")):
            key, eq, value = part.partition("=")
            if not eq:
                raise ConfigError(f"--throughput {spec!r}: expected gen=TOK_S,train=TOK_S or one of {', '.join(table)}")
            given[key.strip()] = value
    bad = sorted(set(given) - {"gen", "train"})
    if bad:
        raise ConfigError(f"--throughput: unknown key(s) {', '.join(bad)}; use gen and train (tokens/s per GPU)")
    try:
        values = {k: float(v) for k, v in given.items()}
    except ValueError:
        raise ConfigError(f"--throughput {spec!r}: values must be numbers (tokens/s)") from None
    if any(v <= 0 for v in values.values()):
        raise ConfigError("--throughput: values must be positive")
    base = table[DEFAULT_PROFILE]
    return Throughput(values.get("gen", float(base["gen"])), values.get("train", float(base["train"])),
                      "given: " + ", ".join(f"{k}={v:g}" for k, v in sorted(values.items()))
                      + (f" (the rest from {DEFAULT_PROFILE})" if len(values) < 2 else ""))


class Counter:
    """Token counts with the model's tokenizer when it is on disk, else characters / 4."""

    def __init__(self, model: str, cache_dir: str | None):
        self.tok = None
        self.method = "characters / 4 (the model's tokenizer is not on disk here)"
        try:
            from sdft.models import resolve_model

            m = resolve_model(model, cache_dir, prepare=False)
            if (Path(m.hf_dir) / "tokenizer_config.json").exists():
                from transformers import AutoTokenizer

                self.tok = AutoTokenizer.from_pretrained(str(m.hf_dir))
                self.method = f"the tokenizer of {model} ({m.name})"
        except Exception:  # noqa: BLE001 - any failure falls back to the approximation, and the plan says so
            self.tok = None

    def mean(self, texts: list[str], cap: int | None = None, sample: int = 2000) -> float:
        if not texts:
            return 0.0
        step = max(1, len(texts) // sample)  # an even sample of a big set is as good a mean
        picked = texts[::step]
        counts = [len(self.tok(t, add_special_tokens=False)["input_ids"]) if self.tok else len(t) / 4 for t in picked]
        return sum(min(c, cap) if cap else c for c in counts) / len(counts)


@dataclass
class StageCost:
    kind: str
    label: str
    key: str
    deps: list[str]
    gen: float = 0.0  # tokens to generate
    train: float = 0.0  # tokens to train on
    score: float = 0.0  # tokens scored by forward passes (gap)
    basis: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class CostPlan:
    name: str
    stages: list[StageCost]
    gpus: int
    throughput: Throughput
    counting: str

    @property
    def gpu_hours(self) -> float:
        return sum(s.seconds for s in self.stages) / 3600

    def wall_hours(self, gpus: int | None = None) -> float:
        return schedule(self.stages, gpus or self.gpus) / 3600

    def critical_hours(self) -> float:
        return schedule(self.stages, len(self.stages) or 1) / 3600

    def totals(self) -> dict[str, float]:
        return {"gen": sum(s.gen for s in self.stages), "train": sum(s.train for s in self.stages),
                "score": sum(s.score for s in self.stages), "gpu_hours": self.gpu_hours,
                "wall_hours": self.wall_hours(), "critical_hours": self.critical_hours()}

    def markdown(self) -> str:
        t = self.totals()
        lines = [f"## Cost plan: {self.name} on {self.gpus} GPU(s)", "",
                 f"Throughput per GPU: generation {self.throughput.gen:g} tokens/s, training "
                 f"{self.throughput.train:g} tokens/s, scoring {self.throughput.score:g} tokens/s; "
                 f"{self.throughput.source}.", f"Training tokens counted with {self.counting}.", "",
                 "| # | stage | generate (tokens) | train (tokens) | GPU-hours | basis |", "|---|---|---|---|---|---|"]
        for i, s in enumerate(self.stages, 1):
            lines.append(f"| {i} | {s.label} | {s.gen:,.0f} | {s.train + s.score:,.0f} | "
                         f"{s.seconds / 3600:.2f} | {'; '.join(s.basis)} |")
        lines += ["", f"**Total**: {t['gen']:,.0f} tokens to generate, {t['train']:,.0f} to train on"
                  + (f" (+{t['score']:,.0f} scored)" if t["score"] else "") + f"; {t['gpu_hours']:.1f} GPU-hours; "
                  f"wall time on {self.gpus} GPU(s) ~{t['wall_hours']:.1f} h (one GPU per stage; the critical path "
                  f"alone takes {t['critical_hours']:.1f} h)."]
        return "\n".join(lines) + "\n"


def schedule(stages: list[StageCost], gpus: int) -> float:
    """Seconds until every stage is done when each takes one GPU, starts once its dependencies are done, and
    stages start in plan order as GPUs free up (list scheduling)."""
    finish: dict[str, float] = {}
    free = [0.0] * max(1, gpus)
    heapq.heapify(free)
    for s in stages:  # plan order is a dependency order
        ready = max((finish[d] for d in s.deps if d in finish), default=0.0)
        if s.seconds <= 0:
            finish[s.key] = ready
            continue
        start = max(ready, heapq.heappop(free))
        finish[s.key] = start + s.seconds
        heapq.heappush(free, finish[s.key])
    return max(finish.values(), default=0.0)


def _measured(path: Path, key: str = "completion_tokens") -> tuple[int, float] | None:
    """(rows, mean ``key``) of a resumable records file, if it has rows."""
    if not path.exists():
        return None
    vals = [json.loads(line).get(key, 0) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return (len(vals), sum(vals) / len(vals)) if vals else None


@lru_cache(maxsize=None)
def _task_size(name: str) -> tuple[int, int]:
    from sdft.evaluation.benchmarks import get_eval_task

    task = get_eval_task(name)
    return len(task.load()), int(getattr(task, "max_new_tokens", None) or DEFAULT_MAX_NEW_TOKENS)


def estimate_plan(cfg: ExperimentConfig, *, gpus: int = 1, throughput: str | dict | None = None) -> CostPlan:
    from sdft.distillation.distill import plan as distill_plan
    from sdft.templates import get_template
    from sdft.training.common import default_epochs

    tp = parse_throughput(throughput)
    counter = Counter(cfg.model, cfg.cache_dir)
    root = Path(cfg.out)
    stages = plan(cfg)
    data: dict[str, dict[str, Any]] = {}  # per distill stage: rows and mean tokenized lengths
    out: list[StageCost] = []
    for st in stages:
        cost = StageCost(st.kind, st.label, st.key, list(st.deps))
        c = st.config
        folder = st.folder(root)
        if st.kind == "distill":
            p = distill_plan(c)
            rows = len(p.indices)
            ex = [p.examples[i] for i in p.indices]
            tmpl = get_template(c.train_template or p.task.train_template)
            frame = len(tmpl.system) + len(tmpl.user) + len(tmpl.prefill)
            prompts = [" " * frame + e.instruction + "\n" + e.input for e in ex]
            data[st.key] = {"rows": rows, "task": p.task.name, "prompts": prompts, "outputs": [e.output for e in ex]}
            measured = _measured(folder / "rows.jsonl")
            if measured:
                cost.gen = rows * measured[1]
                cost.basis.append(f"{rows} rows x {measured[1]:.0f} tokens (mean of {measured[0]} done)")
            else:
                cost.gen = rows * c.max_new_tokens * c.num_candidates
                cost.basis.append(f"{rows} rows x {c.max_new_tokens} new tokens"
                                  + (f" x {c.num_candidates} candidates" if c.num_candidates > 1 else "")
                                  + " (upper bound)")
        elif st.kind == "gap":
            d = data[st.deps[0]]
            cost.score = 2 * d["rows"] * _row_tokens(counter, d, None)
            cost.basis.append(f"seed NLL of {d['rows']} originals and rewrites")
        elif st.kind == "train":
            d = data[st.deps[0]]
            rows = min(c.num_samples or d["rows"], d["rows"])
            if c.max_steps and c.max_steps > 0:
                seen = c.max_steps * c.per_device_batch_size * c.gradient_accumulation_steps
                how = f"{c.max_steps} steps x {c.per_device_batch_size * c.gradient_accumulation_steps} rows"
            else:
                epochs = c.epochs if c.epochs is not None else default_epochs(c.task or d["task"])
                seen, how = rows * epochs, f"{rows} rows x {epochs:g} epochs"
            per_row = _row_tokens(counter, d, c.cutoff_len)
            cost.train = seen * per_row
            cost.basis.append(f"{how} x {per_row:.0f} tokens")
            if c.method == "onpolicy":
                new = c.max_completion_length or DEFAULT_MAX_NEW_TOKENS
                cost.gen = seen * new
                cost.basis.append(f"+ {new} sampled tokens per row (onpolicy, upper bound)")
        elif st.kind == "eval":
            for task in c.tasks:
                n, default_new = _task_size(task)
                limit = c.task_limits.get(task, c.limit)
                n = min(n, int(limit)) if limit else n
                new = c.max_new_tokens or default_new
                measured = _measured(folder / task / "generations.jsonl")
                per = measured[1] if measured and measured[0] >= n else new
                cost.gen += n * per
                if task == "alpacaeval":
                    cost.gen += 2 * n * 32  # the judge: both orders, verdicts of at most 32 tokens
                cost.basis.append(f"{task} {n} x {per:.0f}" + ("" if measured and measured[0] >= n else " (max)"))
        else:
            cost.basis.append("CPU only" if st.kind == "shift" else "not estimated")
        cost.seconds = cost.gen / tp.gen + cost.train / tp.train + cost.score / tp.score
        out.append(cost)
    return CostPlan(cfg.name, out, gpus, tp, counter.method)


def _row_tokens(counter: Counter, d: dict[str, Any], cap: int | None) -> float:
    """Mean tokens of one training row (template text + instruction + input + target), capped at ``cap``."""
    key = ("mean", cap)
    if key not in d:
        d[key] = counter.mean([p + o for p, o in zip(d["prompts"], d["outputs"])], cap)
    return d[key]


def sweep_table(cfgs: list[ExperimentConfig], gpu_counts: tuple[int, ...] = (1, 8, 64),
                throughput: str | dict | None = None) -> str:
    """One markdown row per experiment: tokens, GPU-hours and wall time on each GPU count (docs/scaling-cost.md)."""
    head = "| experiment | stages | generate (M tokens) | train (M tokens) | GPU-hours | " + \
        " | ".join(f"wall on {g} GPU{'s' if g > 1 else ''} (h)" for g in gpu_counts) + " |"
    lines = [head, "|" + "---|" * (5 + len(gpu_counts))]
    total = {"gen": 0.0, "train": 0.0, "gpu": 0.0, "n": 0}
    plans = [estimate_plan(c, throughput=throughput) for c in cfgs]
    for p in plans:
        t = p.totals()
        lines.append(f"| {p.name} | {len(p.stages)} | {t['gen'] / 1e6:.1f} | {(t['train'] + t['score']) / 1e6:.1f} | "
                     f"{t['gpu_hours']:.1f} | " + " | ".join(f"{p.wall_hours(g):.1f}" for g in gpu_counts) + " |")
        total["gen"] += t["gen"]
        total["train"] += t["train"] + t["score"]
        total["gpu"] += t["gpu_hours"]
        total["n"] += len(p.stages)
    merged = [s for p in plans for s in p.stages]  # the configs are independent: one combined schedule
    lines.append(f"| **all** | {total['n']} | {total['gen'] / 1e6:.1f} | {total['train'] / 1e6:.1f} | "
                 f"{total['gpu']:.1f} | " + " | ".join(f"{schedule(merged, g) / 3600:.1f}" for g in gpu_counts) + " |")
    return "\n".join(lines) + "\n"
