"""The ``sdft`` command: thin typer commands over :mod:`sdft.api`. Options of distill, train and eval are derived
from the config dataclass fields (:mod:`sdft.cli_args`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sdft.config import DistillConfig, EvalConfig, TrainConfig
from sdft.cli_args import config_command

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Self-Distillation Fine-Tuning (Yang et al., ACL 2024): distill → train → eval → report.")
models_app = typer.Typer(no_args_is_help=True, help="Embedded models and the conversion cache.")
app.add_typer(models_app, name="models")
console = Console(stderr=True, soft_wrap=True)
PROGRESS = typer.Option(True, "--progress/--no-progress", help="progress bars on long work")


def _log(msg: str) -> None:
    console.print(Text(str(msg)), highlight=False)  # literal: a message is never read as markup


def _fail(msg: str, code: int = 2) -> None:
    console.print(Text("error: ", style="bold red") + Text(str(msg)), highlight=False)
    raise typer.Exit(code)


def _run(fn: Callable):
    """Run ``fn`` turning expected errors into one clear message (no traceback)."""
    from sdft.options import ConfigError
    from sdft.data import DataError
    from sdft.evaluation.sandbox.base import SandboxUnavailable
    from sdft.generation.openai_compat import ServerError
    from sdft.models import ModelError
    from sdft.store import RunConflict
    from sdft.templates import TemplateError
    from sdft.training.common import TrainError

    try:
        return fn()
    except (ConfigError, DataError, ModelError, RunConflict, TemplateError, TrainError, ValueError,
            FileNotFoundError, ServerError, SandboxUnavailable) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        raise typer.Exit(130)


@config_command(app, DistillConfig, "distill")
def distill(make_cfg, progress: bool = PROGRESS) -> None:
    """Rewrite every response with the seed model and keep rewrites that pass the task check."""
    from sdft import api

    _run(lambda: _print_summary(api.distill(make_cfg(), progress=progress, log=_log)))


@config_command(app, TrainConfig, "train")
def train(make_cfg) -> None:
    """Fine-tune on the original responses (vanilla) or the distilled ones (SDFT) with TRL + PEFT, or run TRL's
    on-policy self-distillation (onpolicy) on the same rows as a baseline."""
    from sdft import api

    _run(lambda: api.train(make_cfg(), log=_log))


@config_command(app, EvalConfig, "eval", name="eval")
def eval_(make_cfg, shift_vs: Optional[str] = typer.Option(None, help="another eval folder: BLEU-4, ROUGE-L, "
                                                                    "embedding similarity against it"),
          progress: bool = PROGRESS) -> None:
    """Evaluate a model (optionally with an adapter) on the paper's benchmarks."""
    from sdft import api

    def go():
        cfg = make_cfg()
        api.evaluate(cfg, progress=progress, log=_log)
        if shift_vs:
            from sdft.evaluation.shift import shift_report

            rep = shift_report(Path(shift_vs), Path(cfg.out), out=Path(cfg.out) / "shift")
            _log(rep.get("summary", rep))

    _run(go)


@app.command()
def gap(
    data: Path = typer.Option(..., help="a `sdft distill` folder"),
    model: Optional[str] = typer.Option(None, help="default: the distillation's seed model"),
    out: Optional[Path] = typer.Option(None, help="folder for gap.json (default: the distillation folder)"),
    limit: Optional[int] = typer.Option(None, min=1),
    batch_size: int = typer.Option(4, min=1),
    template: Optional[str] = typer.Option(None, help="the training template the run trains with (default: the "
                                                      "distillation's train_template, else the task's)"),
    prompt_format: str = typer.Option("auto", help="as `sdft train --prompt-format`: auto | chat | raw"),
    layout: str = typer.Option("standard", help="as `sdft train --layout`: standard | release"),
) -> None:
    """Seed-model NLL/perplexity of the original vs the distilled responses (the distribution gap), each under the
    training prompt."""
    from sdft import api

    _run(lambda: api.gap(data, model=model, out=out, limit=limit, batch_size=batch_size, template=template,
                         prompt_format=prompt_format, layout=layout, log=_log))


@app.command()
def merge(
    shards: List[Path] = typer.Argument(..., help="the folders of `sdft distill --shard i/n` runs"),
    out: Path = typer.Option(..., help="the merged distillation folder"),
    overwrite: bool = typer.Option(False, "--overwrite/--no-overwrite"),
) -> None:
    """Join the shards of a distillation into one dataset and one manifest."""
    from sdft.distillation.merge import merge_shards

    _print_summary(_run(lambda: merge_shards(shards, out, overwrite)))


@app.command()
def score(
    task: str = typer.Option(..., help="task name (see `sdft eval --help`)"),
    predictions: Path = typer.Option(..., help='JSONL: {"index": i, "output": "..."} per line'),
    out: Path = typer.Option(..., help="output folder"),
    data: Optional[str] = typer.Option(None, help="the task's data file (default: the shipped copy)"),
    task_data: List[str] = typer.Option([], help="TASK=PATH[:COLUMNS]: the data from your file with a column "
                                                 "mapping, e.g. multiarith=x.json:question=sQuestion,answer="
                                                 "lSolutions[0]"),
    task_file: List[Path] = typer.Option([], help="a YAML file defining your own task (name it with --task)"),
    id_column: Optional[str] = typer.Option(None, help="key predictions by this column of the data (the "
                                                       "prediction holds the same key, or 'id') instead of index"),
    sandbox: str = typer.Option("bwrap", help="how HumanEval programs run: bwrap (default) | guard (weaker, by "
                                              "name)"),
) -> None:
    """Score outputs made by any other system with the same scorers as `sdft eval`."""
    from sdft import api
    from sdft.evaluation.tables import results_markdown

    print(results_markdown([_run(lambda: api.score(task, predictions, out, data, task_data=task_data,
                                                   task_files=task_file, id_column=id_column,
                                                   sandbox=sandbox))]))


@app.command()
def knowledge(
    out: Path = typer.Option(..., help="output folder (knowledge.json/md; lm-eval's response cache resumes)"),
    tasks: str = typer.Option("mmlu", help="comma-separated: mmlu (shipped data) and lm-eval tasks given --data"),
    model: str = typer.Option("default", help="embedded alias, .gguf file or HF folder"),
    adapter: Optional[str] = typer.Option(None, help="a PEFT adapter folder (`sdft train` output)"),
    subjects: Optional[str] = typer.Option(None, help="comma-separated MMLU subjects (default: all 57)"),
    data: List[str] = typer.Option([], help="TASK=FOLDER with that lm-eval task's split files (repeatable)"),
    num_fewshot: Optional[int] = typer.Option(None, help="default: lm-eval's task default (0-shot)"),
    limit: Optional[int] = typer.Option(None, min=1, help="questions per task / MMLU subject"),
    chat_template: bool = typer.Option(False, "--chat-template/--no-chat-template",
                                       help="lm-eval's apply_chat_template (chat models)"),
    batch_size: int = typer.Option(8, min=1),
    cache_dir: Optional[str] = typer.Option(None),
) -> None:
    """Knowledge benchmarks (MMLU, and ARC/HellaSwag/... with your data) through lm-eval, offline."""
    from sdft.evaluation.knowledge import evaluate_knowledge
    from sdft.evaluation.tables import results_markdown

    def go():
        bad = [d for d in data if "=" not in d]
        if bad:
            raise ValueError(f"--data {bad[0]}: expected TASK=FOLDER")
        res = evaluate_knowledge(model, [t for t in tasks.split(",") if t], adapter=adapter,
                                 subjects=subjects.split(",") if subjects else None,
                                 data=dict(d.split("=", 1) for d in data), num_fewshot=num_fewshot, limit=limit,
                                 apply_chat_template=chat_template, batch_size=batch_size, cache_dir=cache_dir,
                                 out_dir=out, log=_log)
        print(results_markdown(res))

    _run(go)


@app.command("judge-check")
def judge_check_(
    judge: str = typer.Option(..., help="judge model: embedded alias, .gguf file or HF folder"),
    out: Path = typer.Option(..., help="output folder (judge_check.json; verdicts are resumable)"),
    n: int = typer.Option(20, min=1, help="AlpacaEval instructions to build probes from"),
    mode: str = typer.Option("both", help="generate (parse generated verdicts) | logprob (verdict-token "
                                          "probabilities) | both"),
    backend: str = typer.Option("auto", help="auto | hf | llamacpp | ..."),
    prompt: Optional[str] = typer.Option(None, help="pairwise judge prompt file (default: AlpacaEval's)"),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for generation (default: all cores)"),
    cache_dir: Optional[str] = typer.Option(None),
) -> None:
    """How far can a judge be trusted? Agreement on pairs whose winner is known (reference vs truncated,
    empty or off-topic answers; a copy of itself should tie), in one or both judging modes."""
    from sdft import api

    def go():
        res = api.judge_check(judge, out, n=n, mode=mode, backend=backend, prompt=prompt, seed=seed,
                              threads=threads, cache_dir=cache_dir, log=_log)
        for name, r in res["modes"].items():
            o, pos = r["overall"], r["first_position_rate"]
            acc = "n/a" if o["accuracy"] is None else f"{o['accuracy']:.0%}"
            _log(f"[{name}] overall agreement {acc} (n={o['n']}); the first answer was named in "
                 f"{'n/a' if pos is None else f'{pos:.0%}'} of decisive verdicts; "
                 f"{'passed' if r['passed'] else 'FAILED'}")
            for w in r["warnings"]:
                console.print(Text(f"warning [{name}]: ", style="yellow") + Text(str(w)))
        if res.get("mode_agreement", {}).get("rate") is not None:
            _log(f"the two modes picked the same answer in {res['mode_agreement']['rate']:.0%} of verdicts")
        _log(f"written: {Path(out) / 'judge_check.json'}")

    _run(go)


@app.command("export-lm-eval")
def export_lm_eval_(
    out: Path = typer.Option(..., help="folder for the task YAMLs, their JSONL data and utils.py"),
    tasks: str = typer.Option("gsm8k,multiarith,openfunctions,advbench,advbench-direct,advbench-jailbreak",
                              help="comma-separated sdft tasks (also advbench-jailbreak-direct)"),
    model: Optional[str] = typer.Option(None, help="render the prompts in this model's format (default: raw "
                                                   "prompts, no model needed)"),
    prompt_format: str = typer.Option("auto", help="auto (chat when --model has a chat template) | chat | raw"),
    layout: str = typer.Option("standard", help="raw format only: standard | release"),
    limit: Optional[int] = typer.Option(None, min=1, help="only the first N items of each task"),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="lm-eval's max_gen_toks (default: the task's)"),
    task_data: List[str] = typer.Option([], help="TASK=PATH[:COLUMNS]: export your data for that task"),
    cache_dir: Optional[str] = typer.Option(None),
) -> None:
    """Write our benchmarks as lm-eval tasks (`lm_eval --include_path OUT --tasks sdft_gsm8k ...`), with sdft's
    scoring rules copied into a self-contained utils.py."""
    from sdft import api

    def go():
        done = api.export_lm_eval(out, [t for t in tasks.split(",") if t], model=model, prompt_format=prompt_format,
                                  layout=layout, limit=limit, max_new_tokens=max_new_tokens, task_data=task_data,
                                  cache_dir=cache_dir, log=_log)
        names = ",".join(v["lm_eval_task"] for v in done.values())
        print(f"lm_eval --model hf --model_args pretrained=MODEL --include_path {out} --tasks {names}")

    _run(go)


@app.command()
def experiment(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/)"),
    dry_run: bool = typer.Option(False, "--dry-run/--no-dry-run",
                                 help="check every input, print the plan with cached/pending per stage, run nothing"),
    out: Optional[str] = typer.Option(None, help="override the experiment's output folder"),
    executor: Optional[str] = typer.Option(None, help="where stages run: local (default) | ray (a task per stage, "
                                           "independent ones in parallel) | slurm (a submitit job per stage)"),
    ray_address: Optional[str] = typer.Option(None, help="--executor ray: join this cluster (auto, "
                                              "ray://head:10001); default: start a local one"),
    estimate: bool = typer.Option(False, "--estimate", help="with --dry-run: tokens to generate and train on, "
                                  "GPU-hours and wall time per stage (docs/scaling-cost.md)"),
    gpus: int = typer.Option(1, min=1, help="--estimate: GPUs the stages are spread over"),
    throughput: Optional[str] = typer.Option(None, help="--estimate: tokens/s per GPU, gen=N,train=N, or a profile "
                                             "(gpu-reference, the default; cpu; cpu-qwen0.5b)"),
    progress: bool = PROGRESS,
) -> None:
    """Run a whole comparison (seed vs vanilla vs SDFT, sweeps) as cached stages, then write the report."""
    from sdft import api

    def go():
        report = api.run_experiment(config, dry_run=dry_run or estimate, progress=progress, log=_log, out=out,
                                    executor=executor, ray_address=ray_address)
        if estimate:
            print(api.estimate_cost(config, gpus=gpus, throughput=throughput, out=out).markdown())
        elif not dry_run:
            print(f"report: {report}")

    _run(go)


@app.command()
def report(run: Path = typer.Argument(..., help="an experiment's output folder")) -> None:
    """(Re)write an experiment's report (markdown + self-contained HTML)."""
    from sdft import api

    print(f"report: {_run(lambda: api.report(run))}")


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

    from sdft.models import ALIASES, EMBEDDED, cache_root

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
    from sdft.models import resolve_model

    m = _run(lambda: resolve_model(name, cache_dir, prepare=False))
    print(f"hf:   {m.hf_dir}\ngguf: {m.gguf}")


@models_app.command("prepare")
def models_prepare(names: List[str] = typer.Argument(None), cache_dir: Optional[str] = typer.Option(None)) -> None:
    """Convert embedded models once into the cache (safetensors + tokenizer, and the GGUF)."""
    from sdft.models import resolve_model

    for name in names or ["default"]:
        m = _run(lambda: resolve_model(name, cache_dir, log=_log))
        print(f"{m.name}: {m.hf_dir}")


@app.command()
def version() -> None:
    """Print the version."""
    from sdft.version import __version__

    print(__version__)


def main() -> None:
    app(prog_name="sdft")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
