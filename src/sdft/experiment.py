"""``sdft experiment CONFIG``: the paper's comparison as a DAG of cached stages.

One YAML describes the seed model, data (one dataset, or several under ``datasets:``), methods (``seed``, ``vanilla``, ``sdft``, ``vanilla-fair`` /
``sdft-fair`` with the fair LoRA preset, and the ``onpolicy`` baseline), seeds and sweeps (training-set sizes,
mix ratios, distillation templates and frames), and evaluation. It expands into distill → train → eval (→ shift,
→ retention) stages. The ``self`` method trains on the seed's own answers to the training prompts (distillation
frame ``self``); ``frames: [release, train]`` runs the SDFT arms on rewrites sampled in either frame.
Each stage's folder is ``<out>/stages/<kind>-<hash>`` where the hash covers everything the stage depends on (its
own settings and its inputs' hashes), so a re-run reuses finished stages, a killed run resumes inside the stage
it was in (every stage is itself resumable), and changing one knob re-runs only what it touches. ``--dry-run``
prints the plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from sdft.config import DistillConfig, EvalConfig, TrainConfig

from sdft.options import ConfigError, build, hashable, read_yaml, to_dict
from sdft.experiment_retention import retention_settings, retention_stages
from sdft.stages import DONE, Stage, stage_hash as _hash
from sdft.store import atomic_write_json, read_json

METHODS = {"seed": None, "vanilla": ("vanilla", "paper"), "sdft": ("sdft", "paper"),
           "vanilla-fair": ("vanilla", "fair"), "sdft-fair": ("sdft", "fair"),
           "onpolicy": ("onpolicy", "paper"),  # TRL's on-policy self-distillation (sdft.training.onpolicy), a baseline
           "self": ("sdft", "paper")}  # the seed's own answers to the training prompts (distillation frame self)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    out: str
    model: str = "default"
    data: str = "gsm8k_train"
    task: str = "gsm8k"
    dataset_dir: str | None = None
    methods: tuple[str, ...] = ("seed", "vanilla", "sdft")
    seeds: tuple[int, ...] = (42,)
    num_samples: tuple[int, ...] = ()  # training-set size sweep (paper Figs. 5-6); empty: all distilled rows
    mix_ratios: tuple[float, ...] = ()  # extra SDFT arms with this share of rewritten targets (Figs. 7-8)
    templates: tuple[str, ...] = ()  # distillation template ablation (Table 4); empty: the task's default
    # distillation frame sweep (release: the template's own prompt; train: the training prompt + the reference);
    # the SDFT arms run once per frame; empty: the `distill` section's frame (default release)
    frames: tuple[str, ...] = ()
    frame_seeds: dict = field(default_factory=dict)  # {frame: [seeds]}: run a frame for fewer seeds (default: all)
    distill: dict = field(default_factory=dict)  # DistillConfig keys
    train: dict = field(default_factory=dict)  # TrainConfig keys
    eval: dict = field(default_factory=dict)  # EvalConfig keys (tasks, limit, backend, ...)
    shift_task: str | None = "advbench"  # per-sample drift from the seed's answers on this eval task (Fig. 9)
    gap: bool = True  # seed-model NLL of original vs distilled targets (`sdft gap`)
    # NLL of the seed's own greedy answers under each arm (sdft.evaluation.retention): {tasks: [advbench-direct,
    # alpacaeval], max_tokens: 64, limit?: (default eval's), task_limits?}; None: not measured
    retention: dict | None = None
    cache_dir: str | None = None
    # where the stages run: {kind: local | ray | slurm, address, gpus_per_stage, partition, time_min, ...};
    # never part of a stage hash (sdft.executors.ExecutorSpec has every key; docs/scaling-out.md)
    executor: dict = field(default_factory=dict)
    # several training sets in one comparison: [{name, data, task, dataset_dir?, distill?, train?}]; each entry's
    # distill/train mappings refine the shared ones. Empty: the single dataset given by data/task/dataset_dir.
    datasets: tuple[dict, ...] = ()


DATASET_KEYS = {"name", "data", "task", "dataset_dir", "distill", "train"}


def dataset_entries(cfg: ExperimentConfig) -> list[dict]:
    """The experiment's training sets, each with a name (the task's name for the single-dataset form)."""
    if not cfg.datasets:
        return [{"name": cfg.task, "data": cfg.data, "task": cfg.task, "dataset_dir": cfg.dataset_dir,
                 "distill": {}, "train": {}}]
    return [{"dataset_dir": None, "distill": {}, "train": {}, **d} for d in cfg.datasets]


def _check_datasets(cfg: ExperimentConfig, where: str) -> None:
    names = []
    for i, d in enumerate(cfg.datasets):
        ctx = f"{where} [datasets][{i}]"
        if not isinstance(d, dict):
            raise ConfigError(f"{ctx}: expected a mapping with name, data and task")
        bad = sorted(set(d) - DATASET_KEYS)
        if bad:
            raise ConfigError(f"{ctx}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(DATASET_KEYS))}")
        missing = [k for k in ("name", "data", "task") if not d.get(k)]
        if missing:
            raise ConfigError(f"{ctx}: missing {', '.join(missing)}")
        names.append(d["name"])
        for section, cls in (("distill", DistillConfig), ("train", TrainConfig)):
            _check_section(d.get(section) or {}, cls, f"{ctx} [{section}]")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where} [datasets]: duplicate name(s) {', '.join(dup)}")


def _check_section(values: Any, cls: type, ctx: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{ctx}: expected a mapping of {cls.__name__} keys")
    known = {f.name for f in fields(cls)}
    bad = sorted(set(values) - known)
    if bad:
        raise ConfigError(f"{ctx}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    p = Path(path)
    doc = read_yaml(p)
    doc.update({k: v for k, v in (overrides or {}).items() if v is not None})
    doc.setdefault("name", p.stem)
    doc.setdefault("out", f"runs/{doc['name']}")
    cfg = build(ExperimentConfig, doc, str(p))
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"{p}: unknown method(s) {unknown}; use {', '.join(METHODS)}")
    for section, cls in (("distill", DistillConfig), ("train", TrainConfig), ("eval", EvalConfig)):
        _check_section(getattr(cfg, section), cls, f"{p} [{section}]")
    _check_datasets(cfg, str(p))
    bad = [f for f in cfg.frames if f not in ("release", "train")]
    if bad:
        raise ConfigError(f"{p}: frames {bad}: use release and/or train (the self frame is the method `self`)")
    for frame, seeds in cfg.frame_seeds.items():
        if frame not in cfg.frames:
            raise ConfigError(f"{p} [frame_seeds]: {frame!r} is not one of frames {list(cfg.frames)}")
        if not isinstance(seeds, (list, tuple)) or not set(seeds) <= set(cfg.seeds):
            raise ConfigError(f"{p} [frame_seeds][{frame}]: expected a list of the experiment's seeds {list(cfg.seeds)}")
    if cfg.retention is not None:
        retention_settings(cfg, str(p))
    return cfg


def plan(cfg: ExperimentConfig) -> list[Stage]:
    """Expand the experiment into stages in dependency order."""
    root = Path(cfg.out)
    stages: list[Stage] = []
    ev_common = {**cfg.eval, "model": cfg.model, "cache_dir": cfg.cache_dir}
    if "alpacaeval" in _eval_tasks(cfg) and not cfg.eval.get("judge"):
        ev_common["judge"] = cfg.model  # one fixed judge for every arm: the seed model, never an adapter

    def eval_stage(label: str, adapter_stage: Stage | None, meta: dict) -> Stage:
        fp = hashable(EvalConfig, ev_common)
        key = _hash({"eval": fp, "adapter": adapter_stage.key if adapter_stage else None})
        st = Stage("eval", key, label, None, [adapter_stage.key] if adapter_stage else [], meta)
        adapter = str(adapter_stage.folder(root)) if adapter_stage else None
        st.config = build(EvalConfig, {**ev_common, "adapter": adapter, "out": str(st.folder(root))}, "eval")
        return st

    seed_eval = None
    if "seed" in cfg.methods:
        seed_eval = eval_stage("eval seed model", None, {"arm": "seed"})
    trained = [m for m in cfg.methods if METHODS[m]]
    entries = dataset_entries(cfg)
    for ds in entries:
        stages += _dataset_stages(cfg, ds, trained, root, eval_stage, named=len(entries) > 1)
    if seed_eval:
        stages.insert(0, seed_eval)
    if cfg.shift_task and seed_eval and cfg.shift_task in _eval_tasks(cfg):
        for st in [s for s in stages if s.kind == "eval" and s is not seed_eval]:
            key = _hash({"shift": cfg.shift_task, "a": seed_eval.key, "b": st.key})
            stages.append(Stage("shift", key, f"shift {st.label[5:]}", {"task": cfg.shift_task,
                                "seed_eval": seed_eval.key, "eval": st.key}, [seed_eval.key, st.key], st.meta))
    return stages + retention_stages(cfg, stages, root)


def _dataset_stages(cfg: ExperimentConfig, ds: dict, trained: list[str], root: Path,
                    eval_stage: Callable[[str, Stage | None, dict], Stage], named: bool) -> list[Stage]:
    """distill → gap → train → eval stages of one training set (every seed, template, frame, size and arm). Arms
    that train on the originals (vanilla, onpolicy) run once per template, not once per frame; the ``self`` arm has
    its own distillation (frame self) per seed."""
    stages: list[Stage] = []
    if not trained:
        return stages
    prefix = f"{ds['name']} " if named else ""
    base = {"data": ds["data"], "task": ds["task"], "dataset_dir": ds["dataset_dir"], "model": cfg.model,
            "cache_dir": cfg.cache_dir, **cfg.distill, **ds["distill"]}
    for seed in cfg.seeds:
        for template in (cfg.templates or (None,)):
            frames = [f for f in cfg.frames if seed in cfg.frame_seeds.get(f, cfg.seeds)]
            for i, frame in enumerate(frames or (None,)):  # vanilla trains beside the seed's first frame
                d = {**base, "seed": seed, "template": template, **({"frame": frame} if frame else {})}
                arms = [(m, None) for m in trained if m != "self" and (i == 0 or METHODS[m][0] == "sdft")]
                arms += [(f"sdft-mix{r:g}", r) for r in cfg.mix_ratios]
                stages += _arm_stages(cfg, ds, d, arms, root, eval_stage, prefix)
        if "self" in trained:
            d = {**base, "seed": seed, "template": None, "frame": "self"}
            stages += _arm_stages(cfg, ds, d, [("self", None)], root, eval_stage, prefix)
    return stages


def _as_trained(cfg: ExperimentConfig, ds: dict) -> dict[str, Any]:
    """The training prompt's settings given in the train sections (template, prompt_format, layout)."""
    t = {**cfg.train, **ds["train"]}
    return {k: t[k] for k in ("template", "prompt_format", "layout") if t.get(k) is not None}


def _distill_key(d: dict) -> str:
    h = hashable(DistillConfig, {**d, "truncated": d.get("truncated", "keep")})
    for key, old in (("frame", "release"), ("truncated", "reject"), ("train_template", None)):
        if h.get(key, old) == old:  # what distillation did before these options: the stage keeps its key
            h.pop(key, None)
    return _hash(h)


def _arm_stages(cfg: ExperimentConfig, ds: dict, d: dict, arms: list[tuple[str, float | None]], root: Path,
                eval_stage: Callable[[str, Stage | None, dict], Stage], prefix: str) -> list[Stage]:
    """One distillation ``d`` (its gap) and the train → eval stages of ``arms`` on it."""
    trained_as = _as_trained(cfg, ds)
    frame = d.get("frame") or "release"
    if frame != "release":  # frames train/self render the training prompt: the run's template and format
        d = {"train_template": trained_as.get("template"),
             **{k: v for k, v in trained_as.items() if k != "template"}, **d}
    seed, template = d["seed"], d.get("template")
    dkey = _distill_key(d)
    tag = {"dataset": ds["name"], "seed": seed, "template": template, **({"frame": frame} if "frame" in d else {})}
    suffix = f" seed={seed}" + (f" template={template}" if template else "") + (
        f" frame={frame}" if "frame" in d else "")
    dist = Stage("distill", dkey, f"{prefix}distill{suffix}", None, [], dict(tag))
    dist.config = build(DistillConfig, {**d, "out": str(dist.folder(root))}, "distill")
    stages = [dist]
    if cfg.gap:  # scored under the prompt training uses (the run's train template and format)
        gkey = _hash({"gap": dkey, **trained_as})
        stages.append(Stage("gap", gkey, f"{prefix}gap{suffix}", {"distill": dkey, **trained_as}, [dkey], dict(tag)))
    for n in cfg.num_samples or (None,):
        for arm, mix in arms:
            method, preset = METHODS.get(arm) or ("sdft", "paper")
            t = {"data": str(dist.folder(root)), "method": method, "preset": preset, "model": cfg.model,
                 "seed": seed, "num_samples": n, "mix_ratio": mix, "cache_dir": cfg.cache_dir, **cfg.train,
                 **ds["train"]}
            tkey = _hash({"train": {k: v for k, v in hashable(TrainConfig, t).items() if k != "data"},
                          "distill": dkey})
            meta = {"dataset": ds["name"], "arm": arm, "seed": seed, "num_samples": n, "mix_ratio": mix,
                    "template": template}
            if "frame" in d and method == "sdft" and arm != "self":  # the arm's targets depend on the frame
                meta["frame"] = frame
            tr = Stage("train", tkey, f"train {prefix}{arm} seed={seed}" + (f" n={n}" if n else "")
                       + (f" template={template}" if template else "")
                       + (f" frame={frame}" if "frame" in meta else ""), None, [dkey], meta)
            tr.config = build(TrainConfig, {**t, "out": str(tr.folder(root))}, "train")
            stages.append(tr)
            stages.append(eval_stage(f"eval {tr.label[6:]}", tr, meta))
    return stages


def _eval_tasks(cfg: ExperimentConfig) -> tuple[str, ...]:
    t = cfg.eval.get("tasks", EvalConfig.__dataclass_fields__["tasks"].default)
    return tuple(t.split(",")) if isinstance(t, str) else tuple(t)


def _run_distill(stage: Stage, folder: Path, by_key: dict, root: Path, log, progress: bool) -> None:
    from sdft.distillation.distill import distill

    distill(stage.config, progress=progress, log=log)


def _run_train(stage: Stage, folder: Path, by_key: dict, root: Path, log, progress: bool) -> None:
    from dataclasses import replace

    from sdft.training import train

    resume = (folder / "checkpoints").exists()
    train(replace(stage.config, resume=resume, overwrite=resume), log=log)


def _run_eval(stage: Stage, folder: Path, by_key: dict, root: Path, log, progress: bool) -> None:
    from sdft.evaluation.evaluate import evaluate

    evaluate(stage.config, progress=progress, log=log)


def _run_gap(stage: Stage, folder: Path, by_key: dict, root: Path, log, progress: bool) -> None:
    from sdft.distillation.gap import measure_gap

    c = stage.config  # the training prompt: the run's train template, prompt format and layout
    measure_gap(by_key[c["distill"]].folder(root), out=folder, template=c.get("template"),
                prompt_format=c.get("prompt_format", "auto"), layout=c.get("layout", "standard"), log=log)


def _run_retention(stage: Stage, folder: Path, by_key: dict, root: Path, log, progress: bool) -> None:
    from sdft.evaluation.retention import measure_retention

    measure_retention(stage.config, log=log)


def _run_shift(stage: Stage, folder: Path, by_key: dict, root: Path, log, progress: bool) -> None:
    from sdft.evaluation.shift import shift_report

    a = by_key[stage.config["seed_eval"]].folder(root)
    b = by_key[stage.config["eval"]].folder(root)
    shift_report(a, b, task=stage.config["task"], out=folder)


STAGE_RUNNERS: dict[str, Callable[..., None]] = {"distill": _run_distill, "train": _run_train, "eval": _run_eval,
                                                 "gap": _run_gap, "shift": _run_shift, "retention": _run_retention}


def run_stage(stage: Stage, root: Path, by_key: dict[str, Stage], log: Callable[[str], None],
              progress: bool) -> None:
    STAGE_RUNNERS[stage.kind](stage, stage.folder(root), by_key, root, log, progress)


def check_inputs(cfg: ExperimentConfig, stages: list[Stage]) -> None:
    """Everything a stage would fail on at its start, checked for all stages before any runs (also for a dry run),
    without loading a model: each training set's data (file, HF folder or dataset name), task, template, columns
    and checks; each training method/preset; each eval task; every model (seed, teacher, judge). Raises
    :class:`ConfigError` naming the dataset entry or the key."""
    from sdft.distillation.distill import plan as distill_plan
    from sdft.evaluation.benchmarks import get_eval_task
    from sdft.models import ModelError, check_model
    from sdft.templates import get_template
    from sdft.training.common import resolve_config

    index = {d["name"]: i for i, d in enumerate(cfg.datasets)}
    where = f"experiment '{cfg.name}'"

    def entry(st: Stage) -> str:
        name = st.meta.get("dataset")
        return f"[datasets][{index[name]}] ({name})" if name in index else "data"

    models: set[tuple[str, str]] = set()

    def model(spec: str | None, key: str) -> None:
        if spec and (spec, key) not in models:
            models.add((spec, key))
            try:
                check_model(spec, cfg.cache_dir)
            except ModelError as e:
                raise ConfigError(f"{where}: {key}: {e}") from None

    model(cfg.model, "model")
    for st in stages:
        c = st.config
        try:
            if st.kind == "distill":
                distill_plan(c)
                model(c.teacher, f"{entry(st)} [distill] teacher")
                continue
            if st.kind == "train":
                resolve_config(c)
                if c.template:
                    get_template(c.template)
                continue
            if st.kind == "eval":
                for t in c.tasks:
                    get_eval_task(t)
                model(c.judge, "[eval] judge")
        except (ValueError, FileNotFoundError) as e:  # DataError, TemplateError, TrainError are ValueErrors
            ctx = entry(st) if st.kind == "distill" else f"[{st.kind}] ({st.label})"
            raise ConfigError(f"{where}: {ctx}: {e}") from None


def run_experiment(cfg: ExperimentConfig, *, dry_run: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> Path:
    """Plan, check every input (:func:`check_inputs`), then run the pending stages in order and write the report.
    The experiment folder is held by :func:`~sdft.store.run_lock` (each stage also locks its own folder)."""
    from sdft.store import run_lock

    root = Path(cfg.out)
    stages = plan(cfg)
    check_inputs(cfg, stages)  # a bad path or name fails now, not hours later in the stage that needs it
    by_key = {s.key: s for s in stages}
    for i, st in enumerate(stages, 1):
        log(f"[{i}/{len(stages)}] {st.kind:7s} {st.label:45s} {'cached' if st.done(root) else 'pending'}  "
            f"{st.folder(root)}")
    from sdft.executors import make_executor

    executor = make_executor(cfg.executor, f"experiment '{cfg.name}' [executor]")  # a bad key fails a dry run too
    if dry_run:
        return root
    with run_lock(root):
        atomic_write_json(root / "experiment.json", {"config": to_dict(cfg), "stages": [
            {"kind": s.kind, "key": s.key, "label": s.label, "deps": s.deps, "meta": s.meta,
             "folder": str(s.folder(root))} for s in stages]})
        t_all = time.perf_counter()
        ran, cached = executor.run(stages, root, run_stage, by_key=by_key, log=log, progress=progress)
        from sdft.reporting.report import write_report

        report = write_report(root)
    log(f"{ran} stage(s) ran, {cached} cached, {time.perf_counter() - t_all:.0f}s. Report: {report}")
    return report


def stage_seconds(root: Path) -> dict[str, float]:
    out = {}
    for p in (root / "stages").glob(f"*/{DONE}"):
        d = read_json(p)
        out[d["label"]] = d["seconds"]
    return out
