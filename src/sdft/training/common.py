"""What every training method shares: config, rows, targets, tokens, output folder, PEFT, training, manifest."""


from __future__ import annotations

import random, time  # noqa: E401
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from sdft.config import PRESETS, TRAIN_METHODS, TrainConfig

from sdft.options import folder_free, to_dict
from sdft.data import Example, file_sha256, load_examples, resolve_source
from sdft.store import atomic_write_json, atomic_write_text, read_json, scan_records
from sdft.distillation.tasks import get_task
from sdft.templates import default_prompt_format, get_template
from sdft.prompts import recorded_train_template

LONG_TASKS = {"gsm8k", "openfunctions"}  # the paper trains these for 5 epochs, the others for 2


class TrainError(ValueError):
    """Bad training input or configuration."""


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    if cfg.method not in TRAIN_METHODS:
        raise TrainError(f"--method {cfg.method!r}: unknown; use one of {', '.join(TRAIN_METHODS)}")
    if cfg.preset not in PRESETS:
        raise TrainError(f"--preset '{cfg.preset}': use one of {', '.join(PRESETS)}")
    if cfg.finetuning not in {"lora", "full", "qlora"}:
        raise TrainError(f"--finetuning '{cfg.finetuning}': use lora, full or qlora")
    if cfg.mix_ratio is not None and not 0.0 <= cfg.mix_ratio <= 1.0:
        raise TrainError(f"--mix-ratio {cfg.mix_ratio}: must be between 0 and 1")
    if cfg.export_gguf and cfg.finetuning == "full":
        raise TrainError("export_gguf converts a LoRA adapter; a full fine-tune has none (convert its model folder "
                         "with llama.cpp's convert_hf_to_gguf.py)")
    return replace(cfg, **PRESETS[cfg.preset])


def load_rows(cfg: TrainConfig) -> tuple[list[dict[str, Any]], str, Path]:
    """Rows with ``output`` and ``original``, the task name, and the file they came from."""
    path = Path(cfg.data).expanduser()
    if path.is_dir() and (path / "rows.jsonl").exists():
        scan = scan_records(path / "rows.jsonl", repair=False)
        if scan.quarantined:
            raise TrainError(f"{path / 'rows.jsonl'}: {len(scan.quarantined)} damaged line(s) (line "
                             f"{', '.join(str(n) for n, _ in scan.quarantined[:10])}): those rows would be missing; "
                             "re-run the same `sdft distill` command, which sets them aside and makes them again")
        rows = scan.records
        if not rows:
            raise TrainError(f"{path / 'rows.jsonl'}: no finished rows")
        dcfg = read_json(path / "config.json")["config"] if (path / "config.json").exists() else {}
        manifest = read_json(path / "manifest.json") if (path / "manifest.json").exists() else {}
        if manifest.get("status") not in (None, "complete"):
            raise TrainError(f"{path}: the distillation is {manifest['status']}; finish it (re-run the same "
                             "`sdft distill` command) before training")
        return sorted(rows, key=lambda r: r["index"]), cfg.task or dcfg.get("task", "alpaca"), path / "rows.jsonl"
    if cfg.method == "sdft" and (cfg.mix_ratio is None or cfg.mix_ratio > 0):
        raise TrainError(f"{cfg.data}: SDFT trains on a `sdft distill` folder (rows.jsonl); plain data can only "
                         "be used with --method vanilla or onpolicy")
    task = get_task(cfg.task or "alpaca")
    src = resolve_source(cfg.data, cfg.dataset_dir, cfg.columns or (task.columns or None))
    examples = load_examples(src)
    if task.normalize_output:
        examples = [replace(e, output=task.normalize_output(e.output)) for e in examples]
    rows = [_row(e) for e in examples]
    return rows, task.name, src.path


def _row(e: Example) -> dict[str, Any]:
    r: dict[str, Any] = {"index": e.index, "instruction": e.instruction, "input": e.input, "output": e.output.strip(),
                         "original": e.output}
    if e.history:
        r["history"] = [[t.user, t.assistant] for t in e.history]
    return r


def choose_targets(rows: list[dict], method: str, mix_ratio: float | None, num_samples: int | None,
                   seed: int) -> tuple[list[tuple[dict, str]], dict[str, Any]]:
    """Pure: which rows train and on which target. Returns (row, target) pairs and statistics."""
    r = mix_ratio if mix_ratio is not None else (1.0 if method == "sdft" else 0.0)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    if num_samples is not None:
        if num_samples > len(rows):
            raise TrainError(f"--num-samples {num_samples}: only {len(rows)} rows available")
        order = order[:num_samples]
    n_distilled = round(r * len(order))
    pairs = []
    changed = 0
    for k, i in enumerate(order):
        row = rows[i]
        use_rewrite = k < n_distilled
        target = row["output"] if use_rewrite else row["original"].strip()
        changed += target != row["original"].strip()
        pairs.append((row, target))
    stats = {"rows": len(pairs), "mix_ratio": r, "rows_taking_rewrite_slot": n_distilled,
             "targets_changed": changed, "share_changed": changed / len(pairs) if pairs else 0.0}
    return pairs, stats


def tokenize(pairs: list[tuple[dict, str]], tokenizer, template, prompt_format: str, layout: str,
             cutoff_len: int) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    """``input_ids`` = prompt + target + eos, ``completion_mask`` = 1 on target and eos. Prompt and target are
    tokenized separately (as LLaMA-Factory does) so the prompt tokens equal what generation sees."""
    from sdft.prompts import encode, training_prompt  # the one training prompt (gap and distillation use it too)

    feats, prompt_tokens, target_tokens, truncated = [], 0, 0, 0
    for row, target in pairs:
        prompt = training_prompt(row, template, prompt_format=prompt_format, layout=layout, tokenizer=tokenizer)
        p_ids, t_ids = encode(prompt, target, tokenizer)
        ids, mask = p_ids + t_ids, [0] * len(p_ids) + [1] * len(t_ids)
        if len(ids) > cutoff_len:
            truncated += 1
            ids, mask = ids[:cutoff_len], mask[:cutoff_len]
        prompt_tokens += len(p_ids)
        target_tokens += sum(mask)
        feats.append({"input_ids": ids, "completion_mask": mask})
    return feats, {"prompt_tokens": prompt_tokens, "target_tokens": target_tokens, "truncated_rows": truncated}


def default_epochs(task: str) -> float:
    return 5.0 if task in LONG_TASKS else 2.0


@dataclass
class TrainResult:
    out: Path
    manifest: dict[str, Any]


# what `sdft train` writes into its folder (besides config.json): a folder holding any of these without an sdft
# config.json is someone else's, and is never written into
TRAIN_OUTPUTS = ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", "manifest.json",
                 "README.md", "loss.csv", "loss.png", "checkpoints", "merged", "adapter.gguf")


def is_train_config(doc: Any) -> bool:
    """Whether a config.json is one `sdft train` wrote (its TrainConfig as a dict)."""
    return isinstance(doc, dict) and {"data", "out", "method", "model", "lora_r"} <= set(doc)


def check_out(out: Path, cfg: TrainConfig) -> None:
    prev = out / "config.json"
    if not prev.exists():
        foreign = [n for n in TRAIN_OUTPUTS if (out / n).exists()]
        if foreign:
            raise TrainError(f"{out}: holds {', '.join(foreign)} but no config.json of an `sdft train` run; training "
                             "would overwrite them, so nothing is written (--overwrite replaces only an sdft run's "
                             "files): move them away or choose another --out")
        return
    try:
        doc = read_json(prev)
    except ValueError:
        doc = None
    if not is_train_config(doc):
        raise TrainError(f"{out}: its config.json was not written by `sdft train` (e.g. a model folder); nothing is "
                         "written there, even with --overwrite: choose another --out")
    keep = set(folder_free(TrainConfig))
    if cfg.resume:  # a resumed run may extend its budget
        keep |= {"max_steps", "epochs"}
    old = {k: v for k, v in doc.items() if k not in keep}
    defaults = to_dict(TrainConfig(data="", out=""))  # a key added to TrainConfig later counts as its default
    new = {k: v for k, v in to_dict(cfg).items() if k not in keep and (k in old or v != defaults.get(k))}
    if old != new and not cfg.overwrite:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise TrainError(f"{out}: holds a run with a different config (differs in: {', '.join(diff)}); "
                         "choose another --out or pass --overwrite")
    if (out / "adapter_config.json").exists() or (out / "model.safetensors").exists():
        if not cfg.resume and not cfg.overwrite:
            raise TrainError(f"{out}: already holds a finished run; pass --overwrite to train again")
    if cfg.overwrite and not cfg.resume and (out / "checkpoints").is_dir():  # never resume a replaced run
        __import__("shutil").rmtree(out / "checkpoints")


def peft_config(cfg: TrainConfig) -> Any:
    """The PEFT LoRA config of a resolved ``cfg`` (None for full fine-tuning); every method uses this one."""
    if cfg.finetuning not in {"lora", "qlora"}:
        return None
    from peft import LoraConfig

    targets: Any = "all-linear" if cfg.lora_targets == "all-linear" else [
        t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


class RunInputs(NamedTuple):
    out: Path
    rows: list
    data_path: Path
    task: Any
    template: Any
    model_ref: Any
    tokenizer: Any
    fmt: str
    pairs: list
    mix_stats: dict


def prepare_run(cfg: TrainConfig, log: Callable[[str], None] = print) -> RunInputs:
    """What every training method starts from: the checked output folder, the rows and their chosen targets,
    the task, template, seed model, tokenizer and prompt format."""
    from sdft.models import load_tokenizer, resolve_model

    out = Path(cfg.out)
    check_out(out, cfg)
    rows, task_name, data_path = load_rows(cfg)
    task = get_task(task_name)
    template = get_template(cfg.template or recorded_train_template(cfg.data) or task.train_template)  # frame's own
    model_ref = resolve_model(cfg.model, cfg.cache_dir, log=log)
    tokenizer = load_tokenizer(model_ref, cfg.trust_remote_code, cfg.cache_dir)
    fmt = default_prompt_format(tokenizer) if cfg.prompt_format == "auto" else cfg.prompt_format
    pairs, mix_stats = choose_targets(rows, cfg.method, cfg.mix_ratio, cfg.num_samples, cfg.seed)
    return RunInputs(out, rows, data_path, task, template, model_ref, tokenizer, fmt, pairs, mix_stats)


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed memory for reuse: a CPU training step allocates and frees the same activation
    tensors every step, and with glibc's defaults many of them are fresh ``mmap`` regions whose pages the kernel must
    fault in and zero again each time (measured: ~20% more page faults and ~1 s per step of system time on
    SmolLM2-135M; see BENCHMARKS.md). Raises the mmap threshold to its 32 MiB maximum and lets up to 1 GiB of freed
    heap stay mapped — the same as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment.
    Returns False (and changes nothing) where the C library is not glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(m_mmap_threshold, mmap_threshold)) and bool(libc.mallopt(m_trim_threshold,
                                                                                      trim_threshold))


class Trained(NamedTuple):
    result: Any  # the trainer's TrainOutput
    wall: float  # seconds spent in trainer.train()
    resumed: bool
    losses: list[dict]  # the logged steps that carry a loss
    resumed_from: str | None = None  # the checkpoint folder's name
    set_aside: tuple[str, ...] = ()  # incomplete checkpoints moved out of the way


CHECKPOINT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                      "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` (a ``checkpoint-N``) cannot be resumed from, or None when it is complete. The trainer writes
    weights, optimizer, scheduler and RNG state first and ``trainer_state.json`` last, so a save that was killed
    (or an old checkpoint whose deletion was) misses one of these."""
    import json

    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "trainer_state.json is damaged"
    if not any((folder / w).is_file() and (folder / w).stat().st_size > 0 for w in CHECKPOINT_WEIGHTS):
        return "no model or adapter weights"
    for f in ("optimizer.pt", "scheduler.pt"):
        if not (folder / f).is_file() or (folder / f).stat().st_size == 0:
            return f"no {f}"
    return None


def latest_checkpoint(ckpt_dir: Path, log: Callable[[str], None] = print,
                      set_aside: bool = True) -> tuple[Path | None, list[str]]:
    """The complete ``checkpoint-N`` with the highest N (or None), and the incomplete ones found. With
    ``set_aside`` each incomplete one is renamed ``incomplete-checkpoint-N-<time>`` (kept for inspection, but no
    longer a checkpoint to the trainer's resume or its rotation), with a warning."""
    import re

    complete: list[tuple[int, Path]] = []
    bad: list[str] = []
    for d in sorted(ckpt_dir.glob("checkpoint-*")) if ckpt_dir.is_dir() else ():
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if not m or not d.is_dir():
            continue
        why = checkpoint_problem(d)
        if why is None:
            complete.append((int(m.group(1)), d))
            continue
        bad.append(d.name)
        if set_aside:
            dest = ckpt_dir / f"incomplete-{d.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            try:
                d.rename(dest)
                log(f"warning: {d} is incomplete ({why}; a save was interrupted): moved aside to {dest.name}")
            except OSError as e:
                log(f"warning: {d} is incomplete ({why}) and could not be moved aside: {e}")
    return (max(complete)[1] if complete else None), bad


def run_and_save(trainer: Any, tokenizer: Any, out: Path, resume: bool, merge: bool,
                 log: Callable[[str], None] = print) -> Trained | None:
    """Train (with ``resume``: from the latest *complete* checkpoint in ``out/checkpoints``; incomplete ones are
    moved aside, and with none complete training starts again, with a warning), then on the main process save the
    adapter or model, the tokenizer, the loss curve and, with ``merge``, the merged model under ``out/merged``.
    None on the other processes of a distributed run."""
    ckpt, bad = (latest_checkpoint(out / "checkpoints", log, set_aside=trainer.is_world_process_zero())
                 if resume else (None, []))
    if resume and ckpt is None and bad:
        log(f"warning: {out / 'checkpoints'} holds no complete checkpoint; training starts from the beginning")
    resume = ckpt is not None
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    wall = time.perf_counter() - t0
    if not trainer.is_world_process_zero():
        return None
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    if merge:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"), safe_serialization=True)
        tokenizer.save_pretrained(str(out / "merged"))
    history = trainer.state.log_history
    write_loss_curve(out, history)
    return Trained(result, wall, resume, [h for h in history if "loss" in h], ckpt.name if ckpt else None, tuple(bad))


def base_manifest(cfg: TrainConfig, task: Any, template: Any, fmt: str, model_ref: Any, data_path: Path,
                  rows: Sequence[Any], targets: dict, tok_stats: dict, epochs: Any, steps: int,
                  run: Trained) -> dict[str, Any]:
    """The manifest fields every training method writes (the report and `sdft eval` read these)."""
    return {
        "method": cfg.method, "task": task.name, "template": template.name, "prompt_format": fmt,
        "model": {"name": model_ref.name, "source": model_ref.source}, "data": {
            "path": str(data_path), "sha256": file_sha256(data_path), "rows_available": len(rows)},
        "targets": targets, "tokens": tok_stats, "epochs": epochs, "steps": steps,
        "loss_first": run.losses[0]["loss"] if run.losses else None,
        "loss_last": run.losses[-1]["loss"] if run.losses else None, "train_runtime_s": round(run.wall, 2),
        "resumed": run.resumed, "resumed_from": run.resumed_from, "incomplete_checkpoints": list(run.set_aside),
        "deterministic": _deterministic(), "config": to_dict(cfg), "versions": _versions(), "trainer_metrics": run.result.metrics,
    }


def _deterministic() -> bool:
    """Whether torch's deterministic algorithms were on for this run (``sdft.training.train(deterministic=True)``)."""
    import torch

    return bool(torch.are_deterministic_algorithms_enabled())


def fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("sdft", "torch", "transformers", "trl", "peft", "accelerate")}


def write_loss_curve(out: Path, history: list[dict]) -> None:
    rows = [h for h in history if "loss" in h or "eval_loss" in h]
    lines = ["step,epoch,loss,eval_loss,learning_rate,grad_norm"]
    for h in rows:
        lines.append(",".join(str(h.get(k, "")) for k in ("step", "epoch", "loss", "eval_loss", "learning_rate",
                                                             "grad_norm")))
    atomic_write_text(out / "loss.csv", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional (the `eval` extra)
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    tr = [h for h in rows if "loss" in h]
    ax.plot([h["step"] for h in tr], [h["loss"] for h in tr], label="train loss")
    ev = [h for h in rows if "eval_loss" in h]
    if ev:
        ax.plot([h["step"] for h in ev], [h["eval_loss"] for h in ev], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)


def model_card(m: dict[str, Any]) -> str:
    c = m["config"]
    return (f"# {m['method'].upper()} fine-tune of {m['model']['name']}\n\n"
            f"Made with `sdft train` (Self-Distillation Fine-Tuning, Yang et al., ACL 2024).\n\n"
            f"- method: **{m['method']}** — targets: {m['targets']['share_changed']:.1%} of "
            f"{m['targets']['rows']} rows are the seed model's own rewrites (mix ratio {m['targets']['mix_ratio']})\n"
            f"- task / template / prompt format: {m['task']} / {m['template']} / {m['prompt_format']}\n"
            f"- fine-tuning: {c['finetuning']} (r {c['lora_r']}, alpha {c['lora_alpha']}, targets "
            f"{c['lora_targets']}), lr {c['learning_rate']} {c['lr_scheduler']}, batch "
            f"{c['per_device_batch_size']}×{c['gradient_accumulation_steps']}, {m['epochs']} epochs, "
            f"{m['steps']} steps, seed {c['seed']}\n"
            f"- loss: {fmt_loss(m['loss_first'])} → {fmt_loss(m['loss_last'])}; {m['train_tokens_per_s']} tokens/s\n"
            f"- data: `{m['data']['path']}` (sha256 {m['data']['sha256'][:16]}…)\n")
