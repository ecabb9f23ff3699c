"""Frozen dataclass configs loaded from YAML plus CLI overrides; an unknown key is an error.

Each option is described once, on its dataclass field (as TRL's ``SFTConfig`` does for ``TrlParser``):
``metadata={"help": ..., "run_only": ..., "choices": ..., "min": ...}``. The CLI options, the run-only set that
stage hashes and run-folder checks leave out, choice and range validation, and the option tables in
``docs/options.md`` (:mod:`sdft.docs_tables`) are all derived from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdft.options import opt
from sdft.scale_options import ScaleOptions  # executor, ray_address, concurrency (run-only)

DEFAULT_MAX_NEW_TOKENS = 512  # distillation and every benchmark, unless a task says otherwise
TRAIN_METHODS = ("sdft", "vanilla", "onpolicy")  # sdft.training.METHODS has one entry each (a test checks)
BACKEND_CHOICES = ("auto", "hf", "llamacpp", "openai", "vllm")  # sdft.generation.BACKENDS plus auto (tested)
DECODING_CHOICES = ("authors", "greedy")  # sdft.generation.DECODING_PRESETS (tested)


# ---- options shared by several configs: each written once here -------------------------------------------
def _model() -> Any:
    return opt("default", "the seed model: embedded alias (`sdft models list`), .gguf file or HF folder")


def _backend() -> Any:
    return opt("auto", "generation backend: auto (vllm on a GPU, llamacpp for a GGUF on CPU, else hf)",
               choices=BACKEND_CHOICES)


def _server() -> dict[str, Any]:
    return {
        "base_url": opt(None, "--backend openai: the server URL, e.g. http://127.0.0.1:8000/v1", run_only=True),
        "api_model": opt(None, "--backend openai: the served model name (default: from /v1/models)"),
        "api_key_env": opt("OPENAI_API_KEY", "--backend openai: environment variable holding the API key "
                           "(never recorded)", run_only=True),
        "api_key_file": opt(None, "--backend openai: or a file holding the API key", run_only=True),
    }


def _prompt_format() -> Any:
    return opt("auto", "auto (chat when the model has a chat template) | chat | raw", choices=("auto", "chat", "raw"))


def _layout() -> Any:
    return opt("standard", "raw prompt format only: standard | release (the authors' bytes)",
               choices=("standard", "release"))


def _batch_size(default: int = 8, auto: bool = False) -> Any:
    if not auto:
        return opt(default, "prompts per generate call on the backend", run_only=True, min=1)
    return opt(default, "prompts per generate call on the backend | auto (hf backend: the fastest of "
                        "8 / 16 / 24 for this run's model, weights and prompts on this machine, timed once on its first 48 "
                        "prompts; the chunk size is raised to twice it; other backends: 8); with --weights bf16 the batch "
                        "shape moves greedy near-ties (docs/reproducibility.md)", run_only=True, min=1,
               choices=("auto",))


def _chunk_size() -> Any:
    return opt(16, "rows per generate call (the unit of progress and resume)", run_only=True, min=1)


def _threads() -> Any:
    return opt(None, "CPU threads for generation (default: the cores this process may use)", run_only=True, min=1)


def _cache_dir() -> Any:
    return opt(None, "model cache folder (default: ~/.cache/sdft)", run_only=True)


def _trust() -> Any:
    return opt(False, "allow model code from the model folder (transformers' trust_remote_code)")


def _overwrite() -> Any:
    return opt(False, "replace a run made with a different config (removes only what sdft wrote)", run_only=True)


def _weights(auto: bool = False) -> Any:
    return opt("native", "the weight type generation runs: native (llama.cpp: the GGUF as shipped; hf: float32 on a "
                         "CPU) | q8_0 | f16 | f32 (llama.cpp: a copy made once in the model cache) | bf16 (hf: torch "
                         "bfloat16, fast on CPUs with AMX/AVX512-BF16); faster on some machines, see BENCHMARKS.md; "
                         "answers may differ from native at near-ties"
               + (" | auto (the fastest of the backend's types on this machine for this run's prompts, measured "
                  "once and recorded)" if auto else ""),
               choices=("native", "q8_0", "f16", "f32", "bf16") + (("auto",) if auto else ()), late=True)


def _deterministic() -> Any:
    return opt(False, "bit-reproducible runs: one llama.cpp slot, one hf row per forward pass, every row seeded by "
                      "its index, torch deterministic algorithms (slower; docs/reproducibility.md)", run_only=True)


def _seed() -> Any:
    return opt(42, "random seed (sampling, subsets, permutations, training)")


SERVER_OPTIONS = tuple(_server())  # --backend openai; other backends ignore them


def server_options(cfg: Any) -> dict[str, Any]:
    """The ``make_backend`` keyword arguments for an OpenAI-compatible server (the key itself is never read here)."""
    return {k: getattr(cfg, k) for k in SERVER_OPTIONS}


@dataclass(frozen=True)
class DistillConfig(ScaleOptions):
    """``sdft distill``: the seed model rewrites every response; rewrites that pass the task check are kept."""

    data: str = opt(help="JSON/JSONL/CSV file, HF save_to_disk folder, or a shipped dataset name")
    out: str = opt(help="output folder (resumable)", run_only=True)
    task: str = opt("alpaca", "distillation task: template, checks and data normalisation",
                    choices=("alpaca", "general", "gsm8k", "openfunctions", "magicoder", "code"))
    dataset_dir: str | None = opt(None, "folder with a LLaMA-Factory dataset_info.json")
    columns: str | None = opt(None, "column mapping, e.g. instruction=question,output=answer")
    formatting: str = opt("auto", "data format", choices=("auto", "alpaca", "sharegpt", "messages"))
    model: str = _model()
    teacher: str | None = opt(None, "another model writes the rewrites (not the method; for ablations)")
    backend: str = _backend()
    base_url: str | None = _server()["base_url"]
    api_model: str | None = _server()["api_model"]
    api_key_env: str = _server()["api_key_env"]
    api_key_file: str | None = _server()["api_key_file"]
    template: str | None = opt(None, "distillation template: using | refer | math-distill | a template .yaml "
                                     "(default: the task's)")
    frame: str = opt("release", "the prompt rewrites are sampled from: release (the distillation template's, as the "
                     "authors) | train (the training prompt + reference + the template's guidance) | self (the "
                     "training prompt alone: the seed's own answers)", choices=("release", "train", "self"))
    train_template: str | None = opt(None, "frames train/self: the template training uses (default: the task's)")
    prompt_format: str = _prompt_format()
    layout: str = _layout()
    decoding: str = opt("authors", "authors (T 0.95, top-p 0.7, top-k 50) | greedy", choices=DECODING_CHOICES)
    max_new_tokens: int = opt(DEFAULT_MAX_NEW_TOKENS, "new tokens per rewrite", min=1)
    seed: int = _seed()
    subset: int | None = opt(None, "a seeded random subset of this many rows", min=1)
    paper_cut: bool = opt(True, "as the paper: data over 10,000 rows are cut to a random 2,000")
    limit: int | None = opt(None, "only the first N of the selection (raise it to continue a run)", extends=True,
                            min=1)
    shard: str | None = opt(None, "i/n: every n-th selected row from i (join shards with `sdft merge`)")
    checks: tuple[str, ...] = opt((), "extra check: regex:PATTERN or module:function (repeatable)", flag="check")
    clean: str = opt("strip", "strip (paper) | chatter (also drop echoed headers and \"Sure! Here is ...\")",
                     choices=("strip", "chatter"))
    allow_empty: bool = opt(False, "accept an empty rewrite (the release does; rejected by default)")
    truncated: str = opt("keep", "a rewrite cut off at max_new_tokens: keep (checked like any other, as the release) "
                         "| reject", choices=("keep", "reject"))
    num_candidates: int = opt(1, "best-of-n: sample up to n rewrites per row, keep the first that passes", min=1)
    batch_size: int | str = _batch_size(auto=True)
    chunk_size: int = _chunk_size()
    threads: int | None = _threads()
    weights: str = _weights(auto=True)
    kv_cache: str = opt("dynamic", "hf backend's KV cache: dynamic (transformers' default: grows each step) | static "
                                   "(allocated once per batch for prompt + max_new_tokens: no copy per step) | auto "
                                   "(the faster here, timed with --batch-size auto's passes); in bf16 it moves "
                                   "near-ties as the batch size does", run_only=True,
                        choices=("dynamic", "static", "auto"))
    cache_dir: str | None = _cache_dir()
    trust_remote_code: bool = _trust()
    deterministic: bool = _deterministic()
    overwrite: bool = _overwrite()


PRESETS: dict[str, dict[str, Any]] = {
    # the paper (LLaMA-Factory defaults of the release): LoRA r 8, alpha 16 on q/v, lr 1e-4 cosine, batch 2 x 4
    "paper": {},
    # a fair baseline: a published critique found vanilla's handicap shrinks with more LoRA capacity
    "fair": {"lora_r": 64, "lora_alpha": 128, "lora_targets": "all-linear"},
}


@dataclass(frozen=True)
class TrainConfig:
    """``sdft train``: vanilla or SDFT fine-tuning with TRL's SFTTrainer and PEFT (or TRL's on-policy baseline)."""

    data: str = opt(help="a `sdft distill` folder, or Alpaca-style data (vanilla or onpolicy only)")
    out: str = opt(help="output folder", run_only=True)
    method: str = opt("sdft", "sdft (targets = checked rewrites) | vanilla (original responses) | onpolicy (TRL's "
                              "on-policy self-distillation, Shenfeld et al. 2026)", choices=TRAIN_METHODS)
    model: str = _model()
    task: str | None = opt(None, "default: the distillation's task (decides the prompt template and epochs)")
    dataset_dir: str | None = opt(None, "folder with a LLaMA-Factory dataset_info.json")
    columns: str | None = opt(None, "column mapping, e.g. instruction=question,output=answer")
    template: str | None = opt(None, "prompt template (default: the task's train template)")
    prompt_format: str = _prompt_format()
    layout: str = _layout()
    mix_ratio: float | None = opt(None, "share of rows whose target is the rewrite (default 1 for sdft, 0 for "
                                        "vanilla)", min=0)
    num_samples: int | None = opt(None, "train on the first N of the seeded permutation (nested across N)", min=1)
    seed: int = _seed()
    preset: str = opt("paper", "paper (LoRA r8/16 on q,v) | fair (r64/128 all linear; overrides the LoRA options)",
                      choices=tuple(PRESETS))
    finetuning: str = opt("lora", "lora | full | qlora (GPU + bitsandbytes)", choices=("lora", "full", "qlora"))
    lora_r: int = opt(8, "LoRA rank", min=1)
    lora_alpha: int = opt(16, "LoRA alpha", min=1)
    lora_dropout: float = opt(0.05, "LoRA dropout", min=0)
    lora_targets: str = opt("q_proj,v_proj", "LoRA target modules: q_proj,v_proj | all-linear | names")
    learning_rate: float = opt(1e-4, "peak learning rate", min=0)
    lr_scheduler: str = opt("cosine", "learning-rate schedule (transformers' lr_scheduler_type)")
    warmup_ratio: float = opt(0.0, "share of steps for a linear warm-up (the release: none)", min=0)
    per_device_batch_size: int = opt(2, "rows per device per step", min=1)
    gradient_accumulation_steps: int = opt(4, "steps accumulated per optimizer update", min=1)
    epochs: float | None = opt(None, "default: 5 for gsm8k/openfunctions, 2 otherwise (the paper)", min=0)
    max_steps: int = opt(-1, "stop after this many optimizer steps (-1: epochs decide)")
    cutoff_len: int = opt(1024, "longest training sequence in tokens (prompt + target)", min=1)
    dtype: str = opt("auto", "auto | float32 | bfloat16 | float16", choices=("auto", "float32", "bfloat16", "float16"))
    gradient_checkpointing: bool = opt(False, "recompute activations to save memory")
    padding_free: bool = opt(False, "TRL padding-free batches")
    cpu_malloc: bool = opt(True, "CPU on glibc: keep freed tensor memory for reuse (fewer page faults, ~+10%)",
                           run_only=True)
    max_completion_length: int | None = opt(None, "onpolicy: tokens sampled per prompt (default: longest "
                                                  "demonstration)", min=1)
    onpolicy_teacher: str = opt("base", "onpolicy: base (frozen seed model) | ema (the paper's) | live (the "
                                        "student)", choices=("base", "ema", "live"))
    eval_split: float = opt(0.0, "held-out share for eval loss", min=0)
    report_to: str = opt("none", "passed to the trainer: none | tensorboard | wandb | mlflow", run_only=True)
    logging_steps: int = opt(1, "log the loss every N steps", run_only=True, min=1)
    save_steps: int = opt(50, "checkpoint every N steps", run_only=True, min=1)
    merge: bool = opt(False, "also save the merged full model")
    export_gguf: bool = opt(False, "also write out/adapter.gguf: the LoRA for llama.cpp, against the base "
                                   "model's GGUF", run_only=True)
    resume: bool = opt(False, "continue from the last complete checkpoint in `out`", run_only=True)
    ddp_backend: str | None = opt(None, "e.g. gloo for multi-process CPU runs", run_only=True)
    cache_dir: str | None = _cache_dir()
    trust_remote_code: bool = _trust()
    deterministic: bool = _deterministic()
    overwrite: bool = _overwrite()


@dataclass(frozen=True)
class EvalConfig(ScaleOptions):
    """``sdft eval``: generate answers to benchmark prompts and score them with the paper's rules."""

    out: str = opt(help="output folder (resumable)", run_only=True)
    tasks: tuple[str, ...] = opt(("gsm8k",), "comma-separated benchmarks (see `sdft eval --help`)", extends=True)
    model: str = _model()
    adapter: str | None = opt(None, "a PEFT adapter folder (`sdft train` output)")
    backend: str = _backend()
    base_url: str | None = _server()["base_url"]
    api_model: str | None = _server()["api_model"]
    api_key_env: str = _server()["api_key_env"]
    api_key_file: str | None = _server()["api_key_file"]
    prompt_format: str = _prompt_format()
    layout: str = _layout()
    decoding: str = opt("greedy", "greedy (reproducible default) | authors (the release's sampling)",
                        choices=DECODING_CHOICES)
    max_new_tokens: int | None = opt(None, "new tokens per answer (default: the task's)", min=1)
    seed: int = _seed()
    limit: int | None = opt(None, "the first N samples of each task", extends=True, min=1)
    task_limits: dict = opt(help="per-task override of `limit`, e.g. {alpacaeval: 8}", factory=dict, extends=True,
                            cli=False)
    task_data: tuple[str, ...] = opt((), "a task's data from your file: TASK=PATH[:COLUMNS], e.g. multiarith=x.json:"
                                         "question=sQuestion,answer=lSolutions[0] (JSON, JSONL, CSV or a save_to_disk "
                                         "folder; repeatable; in YAML a list)", flag="task_data")
    task_files: tuple[str, ...] = opt((), "a YAML file defining your own task (name, data, columns, prompt, extract, "
                                          "score; see docs/evaluation.md); name it in --tasks (repeatable)",
                                      flag="task_file")
    batch_size: int = _batch_size()
    chunk_size: int = _chunk_size()
    workers: int | None = opt(None, "parallel sandboxes for code tasks", run_only=True, min=1)
    threads: int | None = _threads()
    weights: str = _weights()
    cache_dir: str | None = _cache_dir()
    trust_remote_code: bool = _trust()
    deterministic: bool = _deterministic()
    overwrite: bool = _overwrite()
    sandbox: str = opt("bwrap", "how HumanEval programs run: bwrap (bubblewrap namespaces, no network, unprivileged; "
                                "the default) | guard (in-process guard and rlimits only: weaker, by name)",
                       choices=("bwrap", "guard"))
    # judged tasks (alpacaeval): verdicts live in one folder per judge, so these never invalidate generations
    judge: str | None = opt(None, "judge model for alpacaeval: alias, .gguf or HF folder (never the adapter under "
                                  "test)", extends=True)
    judge_backend: str = opt("auto", "backend of the judge", extends=True, choices=BACKEND_CHOICES)
    judge_prompt: str | None = opt(None, "pairwise judge prompt file (default: AlpacaEval's, shipped)", extends=True)
    judge_unparseable: str = opt("exclude", "exclude | tie: how a pair without a parseable verdict counts",
                                 extends=True, choices=("exclude", "tie"))
    judge_mode: str = opt("generate", "generate (parse the judge's verdict) | logprob (order-averaged probability of "
                                      "the verdict tokens)", extends=True, choices=("generate", "logprob"))
