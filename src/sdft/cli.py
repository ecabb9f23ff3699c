"""The ``sdft`` command: thin typer commands over the library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Self-Distillation Fine-Tuning (Yang et al., ACL 2024): distill → train → eval → report.")
models_app = typer.Typer(no_args_is_help=True, help="Embedded models and the conversion cache.")
app.add_typer(models_app, name="models")
console = Console(stderr=True, soft_wrap=True)


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def _run(fn):
    """Run ``fn`` turning expected errors into one clear message (no traceback)."""
    from .config import ConfigError
    from .data import DataError
    from .store import RunConflict
    from .models import ModelError
    from .templates import TemplateError
    from .train import TrainError
    from .generation.openai_compat import ServerError

    try:
        return fn()
    except (ConfigError, DataError, ModelError, RunConflict, TemplateError, TrainError, ValueError,
            FileNotFoundError, ServerError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        raise typer.Exit(130)


@app.command()
def distill(
    data: Optional[str] = typer.Option(None, help="JSON/JSONL file, HF save_to_disk folder, or a dataset name"),
    out: Optional[str] = typer.Option(None, help="output folder (resumable)"),
    config: Optional[Path] = typer.Option(None, help="YAML config; command-line options override it"),
    task: Optional[str] = typer.Option(None, help="alpaca (default) | gsm8k | openfunctions | magicoder"),
    dataset_dir: Optional[str] = typer.Option(None, help="folder with a LLaMA-Factory dataset_info.json"),
    columns: Optional[str] = typer.Option(None, help="column mapping, e.g. instruction=question,output=answer"),
    formatting: Optional[str] = typer.Option(None, help="auto | alpaca | sharegpt | messages"),
    model: Optional[str] = typer.Option(None, help="seed model: embedded alias, .gguf file or HF folder"),
    teacher: Optional[str] = typer.Option(None, help="another model writes the rewrites (default: the seed)"),
    backend: Optional[str] = typer.Option(None, help="generation backend: auto | hf | llamacpp | openai | vllm"),
    base_url: Optional[str] = typer.Option(None, help="--backend openai: server URL, e.g. http://127.0.0.1:8000/v1"),
    api_model: Optional[str] = typer.Option(None, help="--backend openai: served model name (default: from /v1/models)"),
    api_key_env: Optional[str] = typer.Option(None, help="--backend openai: env variable with the API key (OPENAI_API_KEY)"),
    api_key_file: Optional[str] = typer.Option(None, help="--backend openai: file holding the API key"),
    template: Optional[str] = typer.Option(None, help="using | refer | math-distill | a template .yaml"),
    prompt_format: Optional[str] = typer.Option(None, help="auto | chat | raw"),
    layout: Optional[str] = typer.Option(None, help="raw layout: standard | release (the authors' bytes)"),
    decoding: Optional[str] = typer.Option(None, help="authors (T 0.95, top-p 0.7, top-k 50) | greedy"),
    max_new_tokens: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    subset: Optional[int] = typer.Option(None, help="a seeded random subset of N rows"),
    paper_cut: Optional[bool] = typer.Option(None, help="cut data over 10,000 rows to a random 2,000 (paper)"),
    limit: Optional[int] = typer.Option(None, help="only the first N selected rows"),
    shard: Optional[str] = typer.Option(None, help="i/n: process every n-th row from i"),
    check: Optional[List[str]] = typer.Option(None, help="extra check: regex:PATTERN or module:function"),
    clean: Optional[str] = typer.Option(None, help="strip (paper) | chatter"),
    allow_empty: Optional[bool] = typer.Option(None, help="accept empty rewrites (the release does)"),
    num_candidates: Optional[int] = typer.Option(None, help="best-of-n: up to n samples per row, keep the first passing"),
    batch_size: Optional[int] = typer.Option(None),
    chunk_size: Optional[int] = typer.Option(None, help="rows per generate call (unit of progress and resume)"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for generation (default: all cores)"),
    cache_dir: Optional[str] = typer.Option(None, help="model cache folder"),
    overwrite: bool = typer.Option(False, help="replace a run made with a different config"),
    no_progress: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Rewrite every response with the seed model and keep rewrites that pass the task check."""
    from . import config as cfgmod
    from .distill import distill as run

    overrides = dict(data=data, out=out, task=task, dataset_dir=dataset_dir, columns=columns, formatting=formatting,
                     model=model, teacher=teacher, backend=backend, template=template, prompt_format=prompt_format,
                     base_url=base_url, api_model=api_model, api_key_env=api_key_env, api_key_file=api_key_file,
                     layout=layout, decoding=decoding, max_new_tokens=max_new_tokens, seed=seed, subset=subset,
                     paper_cut=paper_cut, limit=limit, shard=shard, checks=tuple(check) if check else None,
                     clean=clean, allow_empty=allow_empty, num_candidates=num_candidates, batch_size=batch_size, chunk_size=chunk_size, threads=threads, cache_dir=cache_dir,
                     overwrite=overwrite or None)

    def go():
        cfg = cfgmod.load(cfgmod.DistillConfig, config, overrides, section="distill" if config else None)
        res = run(cfg, progress=not no_progress, log=lambda m: console.print(m, highlight=False))
        _print_summary(res)

    _run(go)


@app.command()
def gap(
    distillation: Path = typer.Argument(..., help="a `sdft distill` folder"),
    model: Optional[str] = typer.Option(None, help="default: the distillation's seed model"),
    out: Optional[Path] = typer.Option(None, help="folder for gap.json (default: the distillation folder)"),
    limit: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(4),
) -> None:
    """Seed-model NLL/perplexity of the original vs the distilled responses (the distribution gap)."""
    from .gap import measure_gap

    _run(lambda: measure_gap(distillation, model=model, out=out or distillation, limit=limit,
                             batch_size=batch_size, log=lambda m: console.print(m, highlight=False)))


@app.command()
def merge(
    out: Path = typer.Argument(..., help="the merged distillation folder"),
    shards: List[Path] = typer.Argument(..., help="the folders of `sdft distill --shard i/n` runs"),
    overwrite: bool = typer.Option(False),
) -> None:
    """Join the shards of a distillation into one dataset and one manifest."""
    from .distill import merge_shards

    _print_summary(_run(lambda: merge_shards(shards, out, overwrite)))


@app.command()
def train(
    data: Optional[str] = typer.Option(None, help="a `sdft distill` folder, or Alpaca data (vanilla only)"),
    out: Optional[str] = typer.Option(None, help="output folder"),
    config: Optional[Path] = typer.Option(None, help="YAML config (a `train:` section or top-level keys)"),
    method: Optional[str] = typer.Option(None, help="sdft | vanilla | onpolicy (TRL's on-policy self-distillation)"),
    model: Optional[str] = typer.Option(None, help="seed model: embedded alias, .gguf file or HF folder"),
    task: Optional[str] = typer.Option(None, help="default: the distillation's task"),
    preset: Optional[str] = typer.Option(None, help="paper (LoRA r8/16 q,v) | fair (r64/128 all linear)"),
    finetuning: Optional[str] = typer.Option(None, help="lora | full | qlora"),
    mix_ratio: Optional[float] = typer.Option(None, help="share of rows trained on the rewrite"),
    num_samples: Optional[int] = typer.Option(None, help="train on N rows (nested seeded prefixes)"),
    seed: Optional[int] = typer.Option(None),
    lora_r: Optional[int] = typer.Option(None),
    lora_alpha: Optional[int] = typer.Option(None),
    lora_targets: Optional[str] = typer.Option(None, help="q_proj,v_proj | all-linear | names"),
    learning_rate: Optional[float] = typer.Option(None),
    epochs: Optional[float] = typer.Option(None),
    max_steps: Optional[int] = typer.Option(None),
    per_device_batch_size: Optional[int] = typer.Option(None),
    gradient_accumulation_steps: Optional[int] = typer.Option(None),
    cutoff_len: Optional[int] = typer.Option(None),
    dtype: Optional[str] = typer.Option(None, help="auto | float32 | bfloat16"),
    gradient_checkpointing: Optional[bool] = typer.Option(None),
    padding_free: Optional[bool] = typer.Option(None),
    cpu_malloc: Optional[bool] = typer.Option(None, help="CPU on glibc: keep freed tensor memory for reuse (default on)"),
    eval_split: Optional[float] = typer.Option(None, help="held-out share for eval loss"),
    report_to: Optional[str] = typer.Option(None, help="none | tensorboard | wandb | mlflow"),
    save_steps: Optional[int] = typer.Option(None),
    merge: Optional[bool] = typer.Option(None, help="also save the merged model"),
    export_gguf: Optional[bool] = typer.Option(None, help="also write adapter.gguf for the llamacpp backend"),
    max_completion_length: Optional[int] = typer.Option(None, help="onpolicy: tokens sampled per prompt"),
    onpolicy_teacher: Optional[str] = typer.Option(None, help="onpolicy: base | ema | live"),
    ddp_backend: Optional[str] = typer.Option(None, help="e.g. gloo for multi-process CPU"),
    resume: bool = typer.Option(False, help="continue from the last checkpoint"),
    overwrite: bool = typer.Option(False),
    cache_dir: Optional[str] = typer.Option(None),
) -> None:
    """Fine-tune on the original responses (vanilla) or the distilled ones (SDFT) with TRL + PEFT, or run TRL's
    on-policy self-distillation (onpolicy) on the same rows as a baseline."""
    from . import config as cfgmod
    from .train import train as run

    overrides = {k: v for k, v in locals().items() if k not in {"config", "cfgmod", "run"}}
    overrides["resume"] = resume or None
    overrides["overwrite"] = overwrite or None

    def go():
        cfg = cfgmod.load(cfgmod.TrainConfig, config, overrides, section="train" if config else None)
        run(cfg, log=lambda m: console.print(m, highlight=False))

    _run(go)


@app.command("eval")
def eval_(
    out: Optional[str] = typer.Option(None, help="output folder (resumable)"),
    tasks: Optional[str] = typer.Option(None, help="comma-separated: gsm8k,multiarith,openfunctions,humaneval,"
                                                   "humaneval-chat,advbench,advbench-jailbreak,alpacaeval"),
    config: Optional[Path] = typer.Option(None, help="YAML config (an `eval:` section or top-level keys)"),
    model: Optional[str] = typer.Option(None, help="embedded alias, .gguf file or HF folder"),
    adapter: Optional[str] = typer.Option(None, help="a PEFT adapter folder (`sdft train` output)"),
    backend: Optional[str] = typer.Option(None, help="auto | hf | llamacpp | openai | vllm"),
    base_url: Optional[str] = typer.Option(None, help="--backend openai: server URL, e.g. http://127.0.0.1:8000/v1"),
    api_model: Optional[str] = typer.Option(None, help="--backend openai: served model name (default: from /v1/models)"),
    api_key_env: Optional[str] = typer.Option(None, help="--backend openai: env variable with the API key (OPENAI_API_KEY)"),
    api_key_file: Optional[str] = typer.Option(None, help="--backend openai: file holding the API key"),
    prompt_format: Optional[str] = typer.Option(None, help="auto | chat | raw"),
    layout: Optional[str] = typer.Option(None, help="raw layout: standard | release"),
    decoding: Optional[str] = typer.Option(None, help="greedy (default) | authors (the release's sampling)"),
    max_new_tokens: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    limit: Optional[int] = typer.Option(None, help="first N samples per task"),
    batch_size: Optional[int] = typer.Option(None),
    workers: Optional[int] = typer.Option(None, help="parallel sandboxes for code tasks"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for generation (default: all cores)"),
    judge: Optional[str] = typer.Option(None, help="judge model for alpacaeval (alias, .gguf or HF folder)"),
    judge_backend: Optional[str] = typer.Option(None, help="backend of the judge (default auto)"),
    judge_prompt: Optional[str] = typer.Option(None, help="pairwise judge prompt file (default: AlpacaEval's)"),
    judge_unparseable: Optional[str] = typer.Option(None, help="exclude (default) | tie: pairs without a verdict"),
    shift_vs: Optional[str] = typer.Option(None, help="another eval folder: BLEU-4, ROUGE-L, embedding similarity"),
    cache_dir: Optional[str] = typer.Option(None),
    overwrite: bool = typer.Option(False),
    no_progress: bool = typer.Option(False),
) -> None:
    """Evaluate a model (optionally with an adapter) on the paper's benchmarks."""
    from . import config as cfgmod
    from .evaluate import evaluate

    overrides = dict(out=out, tasks=tasks, model=model, adapter=adapter, backend=backend, prompt_format=prompt_format,
                     base_url=base_url, api_model=api_model, api_key_env=api_key_env, api_key_file=api_key_file,
                     layout=layout, decoding=decoding, max_new_tokens=max_new_tokens, seed=seed, limit=limit,
                     batch_size=batch_size, workers=workers, threads=threads, cache_dir=cache_dir, overwrite=overwrite or None,
                     judge=judge, judge_backend=judge_backend, judge_prompt=judge_prompt,
                     judge_unparseable=judge_unparseable)

    def go():
        cfg = cfgmod.load(cfgmod.EvalConfig, config, overrides, section="eval" if config else None)
        if tasks or config or not shift_vs:
            evaluate(cfg, progress=not no_progress, log=lambda m: console.print(m, highlight=False))
        if shift_vs:
            from .shift import shift_report

            rep = shift_report(Path(shift_vs), Path(cfg.out), out=Path(cfg.out) / "shift")
            console.print(rep.get("summary", rep), highlight=False)

    _run(go)


@app.command()
def score(
    task: str = typer.Option(..., help="task name (see `sdft eval --help`)"),
    predictions: Path = typer.Option(..., help='JSONL: {"index": i, "output": "..."} per line'),
    out: Path = typer.Option(..., help="output folder"),
    data: Optional[str] = typer.Option(None, help="the task's data file (default: the shipped copy)"),
) -> None:
    """Score outputs made by any other system with the same scorers as `sdft eval`."""
    from .scoring import results_markdown, score_predictions

    res = _run(lambda: score_predictions(task, predictions, out, data))
    print(results_markdown([res]))


@app.command()
def knowledge(
    out: Path = typer.Option(..., help="output folder (knowledge.json/md; lm-eval's response cache resumes)"),
    tasks: str = typer.Option("mmlu", help="comma-separated: mmlu (shipped data) and lm-eval tasks given --data"),
    model: str = typer.Option("default", help="embedded alias, .gguf file or HF folder"),
    adapter: Optional[str] = typer.Option(None, help="a PEFT adapter folder (`sdft train` output)"),
    subjects: Optional[str] = typer.Option(None, help="comma-separated MMLU subjects (default: all 57)"),
    data: List[str] = typer.Option([], help="TASK=FOLDER with that lm-eval task's split files (repeatable)"),
    num_fewshot: Optional[int] = typer.Option(None, help="default: lm-eval's task default (0-shot)"),
    limit: Optional[int] = typer.Option(None, help="questions per task / MMLU subject"),
    chat_template: bool = typer.Option(False, help="lm-eval's apply_chat_template (chat models)"),
    batch_size: int = typer.Option(8),
    cache_dir: Optional[str] = typer.Option(None),
) -> None:
    """Knowledge benchmarks (MMLU, and ARC/HellaSwag/... with your data) through lm-eval, offline."""
    from .knowledge import evaluate_knowledge
    from .scoring import results_markdown

    def go():
        bad = [d for d in data if "=" not in d]
        if bad:
            raise ValueError(f"--data {bad[0]}: expected TASK=FOLDER")
        res = evaluate_knowledge(model, [t for t in tasks.split(",") if t], adapter=adapter,
                                 subjects=subjects.split(",") if subjects else None,
                                 data=dict(d.split("=", 1) for d in data), num_fewshot=num_fewshot, limit=limit,
                                 apply_chat_template=chat_template, batch_size=batch_size, cache_dir=cache_dir,
                                 out_dir=out, log=lambda m: console.print(m, highlight=False))
        print(results_markdown(res))

    _run(go)


@app.command("judge-check")
def judge_check_(
    judge: str = typer.Option(..., help="judge model: embedded alias, .gguf file or HF folder"),
    out: Path = typer.Option(..., help="output folder (judge_check.json; verdicts are resumable)"),
    n: int = typer.Option(20, help="AlpacaEval instructions to build probes from"),
    backend: str = typer.Option("auto", help="auto | hf | llamacpp | ..."),
    prompt: Optional[str] = typer.Option(None, help="pairwise judge prompt file (default: AlpacaEval's)"),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None, help="CPU threads for generation (default: all cores)"),
    cache_dir: Optional[str] = typer.Option(None),
) -> None:
    """How far can a judge be trusted? Agreement on pairs whose winner is known (reference vs truncated,
    empty or off-topic answers; a copy of itself should tie)."""
    from .judge import make_judge
    from .judge_check import judge_check

    def go():
        log = lambda m: console.print(m, highlight=False)  # noqa: E731
        j = make_judge(judge, backend, prompt=prompt, cache_dir=cache_dir, threads=threads, log=log)
        try:
            res = judge_check(j, n=n, seed=seed, out_dir=out, log=log)
        finally:
            getattr(j.backend, "close", lambda: None)()
        o = res["overall"]
        acc = "n/a" if o["accuracy"] is None else f"{o['accuracy']:.0%}"
        pos = res["first_position_rate"]
        console.print(f"overall agreement {acc} (n={o['n']}); the first answer was named in "
                      f"{'n/a' if pos is None else f'{pos:.0%}'} of verdicts", highlight=False)
        for w in res["warnings"]:
            console.print(f"[yellow]warning:[/yellow] {w}")
        console.print(f"written: {Path(out) / 'judge_check.json'}")

    _run(go)


@app.command()
def experiment(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/)"),
    dry_run: bool = typer.Option(False, help="print the plan with cached/pending per stage, run nothing"),
    out: Optional[str] = typer.Option(None, help="override the experiment's output folder"),
    no_progress: bool = typer.Option(False),
) -> None:
    """Run a whole comparison (seed vs vanilla vs SDFT, sweeps) as cached stages, then write the report."""
    from .experiment import load_experiment, run_experiment

    def go():
        cfg = load_experiment(config, {"out": out})
        report = run_experiment(cfg, dry_run=dry_run, progress=not no_progress,
                                log=lambda m: console.print(m, highlight=False))
        if not dry_run:
            print(f"report: {report}")

    _run(go)


@app.command()
def report(run: Path = typer.Argument(..., help="an experiment's output folder")) -> None:
    """(Re)write an experiment's report (markdown + self-contained HTML)."""
    from .report import write_report

    if not (run / "experiment.json").exists():
        _fail(f"{run}: not an experiment folder (no experiment.json)")
    print(f"report: {_run(lambda: write_report(run))}")


def _print_summary(res) -> None:
    s = res.summary
    t = Table(title=f"distillation → {res.out}", show_header=False)
    t.add_row("rows", str(s["rows"]))
    t.add_row("accepted", f"{s['accepted']} ({s['acceptance_rate']:.1%})")
    for reason, n in s["by_reason"].items():
        if reason != "accepted":
            t.add_row(f"  rejected: {reason}", str(n))
    sess = res.manifest.get("this_session") or {}
    if sess.get("tokens_per_s"):
        t.add_row("generated tokens/s", f"{sess['tokens_per_s']:.1f} ({sess['generated_tokens']} tokens, "
                                        f"{sess['seconds']:.0f}s this session)")
    t.add_row("training sets", f"{res.out}/distilled.json (SDFT), {res.out}/original.json (vanilla)")
    Console().print(t)


@models_app.command("list")
def models_list(cache_dir: Optional[str] = typer.Option(None)) -> None:
    """Embedded models, their aliases and whether they are installed and cached."""
    import importlib.util

    from .models import ALIASES, EMBEDDED, cache_root

    t = Table("name", "description", "installed", "cached", "aliases")
    for name, m in EMBEDDED.items():
        installed = all(importlib.util.find_spec(p) is not None for p in m.packages)
        cached = (cache_root(cache_dir) / name / "hf").exists()
        t.add_row(name, m.description, "yes" if installed else f"no: {m.pip}", "yes" if cached else "no",
                  ", ".join(a for a, v in ALIASES.items() if v == name))
    Console().print(t)


@models_app.command("path")
def models_path(name: str = typer.Argument("default"), cache_dir: Optional[str] = typer.Option(None)) -> None:
    """Print where a model's converted cache lives (HF folder and GGUF)."""
    from .models import resolve_model

    m = _run(lambda: resolve_model(name, cache_dir, prepare=False))
    print(f"hf:   {m.hf_dir}\ngguf: {m.gguf}")


@models_app.command("prepare")
def models_prepare(names: List[str] = typer.Argument(None), cache_dir: Optional[str] = typer.Option(None)) -> None:
    """Convert embedded models once into the cache (safetensors + tokenizer, and the GGUF)."""
    from .models import resolve_model

    for name in names or ["default"]:
        m = _run(lambda: resolve_model(name, cache_dir, log=lambda s: console.print(s, highlight=False)))
        print(f"{m.name}: {m.hf_dir}")


@app.command()
def version() -> None:
    """Print the version."""
    from . import __version__

    print(__version__)


def main() -> None:
    app(prog_name="sdft")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
