"""Frozen dataclass configs loaded from YAML plus CLI overrides; an unknown key is an error."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and key."""


def _coerce(cls: type, name: str, tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(cls, name, inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{name}' must be a list")
        return tuple(value)
    if tp is bool and not isinstance(value, bool):
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{where}: '{name}' must be true or false, got {value!r}")
    if tp in (int, float) and not isinstance(value, bool):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: '{name}' must be a number, got {value!r}") from None
    if tp is str and not isinstance(value, str):
        if isinstance(value, (int, float)):
            return str(value)
        raise ConfigError(f"{where}: '{name}' must be a string, got {value!r}")
    return value


def build(cls: type[T], values: Mapping[str, Any], where: str = "config") -> T:
    """Instantiate ``cls`` from a mapping, refusing unknown keys and coercing simple types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    kwargs = {k: _coerce(cls, k, hints[k], v, where) for k, v in values.items()}
    missing = [f.name for f in fields(cls) if f.name not in kwargs  # type: ignore[arg-type]
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)


def load(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
         section: str | None = None) -> T:
    """YAML file (optionally one ``section`` of it) overlaid with non-None CLI ``overrides``."""
    import yaml

    values: dict[str, Any] = {}
    where = "command line"
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if section is not None and isinstance(loaded, dict) and isinstance(loaded.get(section), dict):
            loaded = loaded[section]
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of keys")
        values.update(loaded)
        where = str(p) + (f" [{section}]" if section else "")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build(cls, values, where)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


@dataclass(frozen=True)
class DistillConfig:
    """Everything ``sdft distill`` needs. Fields marked "run-only" do not change the result and may differ
    when a run is resumed."""

    data: str
    out: str
    task: str = "alpaca"  # distillation task: template, checks, data normalisation (sdft.tasks)
    dataset_dir: str | None = None
    columns: str | None = None  # e.g. "instruction=question,output=answer"
    formatting: str = "auto"  # auto | alpaca | sharegpt | messages
    model: str = "default"  # the seed model: embedded alias, .gguf file or HF folder
    teacher: str | None = None  # another model writes the rewrites (not the method; for ablations)
    backend: str = "auto"  # auto (vllm on a GPU, llamacpp for a GGUF on CPU, else hf) | hf | llamacpp | openai | vllm
    base_url: str | None = None  # run-only: --backend openai: the server, e.g. http://127.0.0.1:8000/v1
    api_model: str | None = None  # --backend openai: the served model name (default: from /v1/models)
    api_key_env: str = "OPENAI_API_KEY"  # run-only: environment variable holding the API key (never recorded)
    api_key_file: str | None = None  # run-only: or a file holding it
    template: str | None = None  # default: the task's distillation template
    prompt_format: str = "auto"  # auto (chat when the model has a chat template) | chat | raw
    layout: str = "standard"  # raw format: standard | release (the authors' bytes)
    decoding: str = "authors"  # authors (T 0.95, top-p 0.7, top-k 50) | greedy
    max_new_tokens: int = 512
    seed: int = 42
    subset: int | None = None  # a seeded random subset of this many rows
    paper_cut: bool = True  # as the paper: data over 10,000 rows are cut to a random 2,000
    limit: int | None = None  # run-only: the first N of the selection (raise it to continue a run)
    shard: str | None = None  # "i/n": every n-th selected row from i (merge shards with `sdft merge`)
    checks: tuple[str, ...] = ()  # extra checks: regex:PATTERN or module:function
    clean: str = "strip"  # strip (paper) | chatter (also drop echoed headers and "Sure! Here is ...")
    allow_empty: bool = False  # the release accepts an empty rewrite; by default it is rejected
    num_candidates: int = 1  # best-of-n: sample up to n rewrites per row, keep the first that passes
    batch_size: int = 8  # run-only
    chunk_size: int = 16  # run-only: rows per generate call (the unit of progress and resume)
    threads: int | None = None  # run-only: CPU threads for generation (default: all cores)
    cache_dir: str | None = None  # run-only
    trust_remote_code: bool = False
    overwrite: bool = False  # run-only


RUN_ONLY = {"limit", "task_limits", "batch_size", "chunk_size", "cache_dir", "overwrite", "out", "workers", "tasks", "threads",
            "judge", "judge_backend", "judge_prompt", "judge_unparseable"}
RUN_ONLY |= {"base_url", "api_key_env", "api_key_file"}  # where the server is and how to log in, not what it serves
SERVER_OPTIONS = ("base_url", "api_model", "api_key_env", "api_key_file")  # --backend openai; others ignore them


def server_options(cfg: Any) -> dict[str, Any]:
    """The ``make_backend`` keyword arguments for an OpenAI-compatible server (the key itself is never read here)."""
    return {k: getattr(cfg, k) for k in SERVER_OPTIONS}


PRESETS: dict[str, dict[str, Any]] = {
    # the paper (LLaMA-Factory defaults of the release): LoRA r 8, alpha 16 on q/v, lr 1e-4 cosine, batch 2 x 4
    "paper": {},
    # a fair baseline: a published critique found vanilla's handicap shrinks with more LoRA capacity
    "fair": {"lora_r": 64, "lora_alpha": 128, "lora_targets": "all-linear"},
}


@dataclass(frozen=True)
class TrainConfig:
    """``sdft train``: vanilla or SDFT fine-tuning with TRL's SFTTrainer and PEFT."""

    data: str  # a `sdft distill` folder, or Alpaca-style data (vanilla or onpolicy only)
    out: str
    method: str = "sdft"  # sdft (targets = checked rewrites) | vanilla (original responses) | onpolicy (TRL's
    # on-policy self-distillation, Shenfeld et al. 2026: see sdft.onpolicy)
    model: str = "default"
    task: str | None = None  # default: the distillation's task (decides the prompt template and epochs)
    dataset_dir: str | None = None
    columns: str | None = None
    template: str | None = None  # default: the task's train template
    prompt_format: str = "auto"
    layout: str = "standard"
    mix_ratio: float | None = None  # share of rows whose target is the rewrite (default 1 for sdft, 0 for vanilla)
    num_samples: int | None = None  # train on the first N of the seeded permutation (nested across N)
    seed: int = 42
    preset: str = "paper"  # paper | fair (overrides the LoRA settings below)
    finetuning: str = "lora"  # lora | full | qlora (GPU + bitsandbytes)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str = "q_proj,v_proj"  # or all-linear
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0  # share of steps for a linear warm-up (the release: none)
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    epochs: float | None = None  # default: 5 for gsm8k/openfunctions, 2 otherwise (the paper)
    max_steps: int = -1
    cutoff_len: int = 1024
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    gradient_checkpointing: bool = False
    padding_free: bool = False
    cpu_malloc: bool = True  # CPU training on glibc: keep freed tensor memory for reuse (fewer page faults, ~+10%)
    max_completion_length: int | None = None  # onpolicy: sampled tokens per prompt (default: longest demonstration)
    onpolicy_teacher: str = "base"  # onpolicy: base (frozen seed model) | ema (the paper's) | live (the student)
    eval_split: float = 0.0  # held-out share for eval loss
    report_to: str = "none"  # passed to the trainer: tensorboard, wandb, mlflow ...
    logging_steps: int = 1
    save_steps: int = 50
    merge: bool = False  # also save the merged full model
    export_gguf: bool = False  # also write out/adapter.gguf: the LoRA for llama.cpp, against the base model's GGUF
    resume: bool = False  # continue from the last checkpoint in `out`
    ddp_backend: str | None = None  # e.g. gloo for multi-process CPU runs
    cache_dir: str | None = None
    trust_remote_code: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class EvalConfig:
    """``sdft eval``: generate answers to benchmark prompts and score them with the paper's rules."""

    out: str
    tasks: tuple[str, ...] = ("gsm8k",)
    model: str = "default"
    adapter: str | None = None  # a PEFT adapter folder (`sdft train` output)
    backend: str = "auto"
    base_url: str | None = None  # run-only: --backend openai: the server, e.g. http://127.0.0.1:8000/v1
    api_model: str | None = None  # --backend openai: the served model name (default: from /v1/models)
    api_key_env: str = "OPENAI_API_KEY"  # run-only: environment variable holding the API key (never recorded)
    api_key_file: str | None = None  # run-only: or a file holding it
    prompt_format: str = "auto"  # auto (chat when the model has a chat template) | chat | raw
    layout: str = "standard"
    decoding: str = "greedy"  # greedy (reproducible default) | authors (the release's sampling)
    max_new_tokens: int | None = None  # default: the task's
    seed: int = 42
    limit: int | None = None  # the first N samples of each task
    task_limits: dict = field(default_factory=dict)  # per-task override of `limit`, e.g. {alpacaeval: 8}
    batch_size: int = 8  # run-only
    chunk_size: int = 16  # run-only
    workers: int | None = None  # run-only: parallel sandboxes for code tasks
    threads: int | None = None  # run-only: CPU threads for generation (default: all cores)
    cache_dir: str | None = None  # run-only
    trust_remote_code: bool = False
    overwrite: bool = False  # run-only
    # judged tasks (alpacaeval): verdicts live in one folder per judge, so these never invalidate generations
    judge: str | None = None  # judge model: embedded alias, .gguf or HF folder (never the adapter under test)
    judge_backend: str = "auto"
    judge_prompt: str | None = None  # a pairwise prompt file (default: AlpacaEval's, shipped)
    judge_unparseable: str = "exclude"  # exclude | tie: how a pair without a parseable verdict counts
