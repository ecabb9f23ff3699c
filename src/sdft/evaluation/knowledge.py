"""Knowledge benchmarks through lm-eval's Python API (``lm_eval.simple_evaluate``), fully offline.

The paper reports MMLU, TruthfulQA, ARC, HellaSwag and Winogrande with lm-eval's task defaults (0-shot, ``acc``;
the authors ran MMLU 0-shot). Nothing here re-implements a benchmark: lm-eval's own task configs score our model
(an HF folder from :func:`sdft.models.resolve_model`, optionally with a PEFT adapter through lm-eval's ``peft=``).
Only *where the data comes from* changes, because lm-eval's configs load them from the HF hub:

- **MMLU** ships with the package (``mmlu/mmlu.zip``, LLaMA-Factory's packing of hendrycks/test: headerless
  ``data/{dev,val,test}/<subject>_<split>.csv`` with question, A, B, C, D, answer). It is converted once into
  ``<cache>/lm_eval/mmlu-<zip sha256[:12]>/<subject>/{test,validation,dev}.jsonl`` in ``cais/mmlu``'s schema
  (``question``, ``subject``, ``choices``, ``answer`` as an index), and one task YAML per subject,
  ``sdft_mmlu_<subject>``, is generated that ``include``\\ s lm-eval's installed
  ``tasks/mmlu/default/_default_template_yaml`` by absolute path (so prompt, choices ``" A".." D"``, few-shot split
  ``dev`` with ``first_n`` and metric are exactly lm-eval's) and overrides only ``dataset_path: json`` +
  ``dataset_kwargs.data_files`` and the per-subject ``description`` (as lm-eval's own subject YAMLs).
- **Other lm-eval tasks** (``arc_challenge``, ``arc_easy``, ``hellaswag``, ``winogrande``, ``truthfulqa_mc2``, ...)
  run on data the user supplies: ``data={"arc_challenge": "/path/to/ARC-Challenge"}``. The folder holds one file
  per split in the HF dataset's own schema, named by the split lm-eval's config uses (``test*``, ``validation*``,
  ``train*``; ``.parquet``, ``.jsonl``/``.json`` or ``.csv`` — e.g. the hub's ``test-00000-of-00001.parquet``
  files as downloaded elsewhere). A YAML ``include``\\ s lm-eval's config for that task (so ``!function``
  helpers resolve next to it) and points ``dataset_path`` at the local files; splits without a file are set to
  null. A missing evaluation split is an error naming the files looked for.

Results are our ``results.json`` format: ``task``, ``metric``, ``score``, ``n``, ``correct``, ``ci95`` (Wilson);
MMLU adds ``macro`` (mean of subject accuracies), ``subjects`` (per subject the same fields) and the score is the
micro average (all questions pooled), which is what lm-eval's ``mmlu`` group reports (``weight_by_size``).
Model responses are cached in an lm-eval sqlite cache under ``out_dir`` keyed by a fingerprint of model, adapter
and settings, so an interrupted run resumes (lm-eval writes each response as it is computed).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sdft.data import DataError, builtin_data_dir, file_sha256
from sdft.models import atomic_dir, cache_root, resolve_model
from sdft.evaluation.tables import results_markdown
from sdft.stats import wilson_interval
from sdft.store import atomic_write_json, atomic_write_text

MMLU_ZIP = "mmlu/mmlu.zip"
MMLU_TEMPLATE = "mmlu/default/_default_template_yaml"  # inside lm_eval/tasks
SPLITS = {"test": "test", "val": "validation", "dev": "dev"}  # LLaMA-Factory folder -> cais/mmlu split
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
DATA_EXTS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}

# lm-eval config files of the OpenLLM set (relative to lm_eval/tasks); any other lm-eval task name is looked up
# in lm-eval's task index (slower: it scans every config).
LM_EVAL_CONFIGS = {
    "arc_challenge": "arc/arc_challenge.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "truthfulqa_mc1": "truthfulqa/truthfulqa_mc1.yaml",
    "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml",
}


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


# ---------------------------------------------------------------------------------------------------------- MMLU
def _mmlu_zip(zip_path: str | Path | None) -> Path:
    p = Path(zip_path).expanduser() if zip_path else builtin_data_dir() / MMLU_ZIP
    if not p.is_file():
        raise DataError(f"{p}: MMLU zip not found")
    return p


def _read_csv_rows(text: str, where: str) -> list[dict]:
    rows = []
    for i, rec in enumerate(csv.reader(io.StringIO(text, newline=""))):
        if not rec:
            continue
        if len(rec) != 6 or rec[5].strip() not in ("A", "B", "C", "D"):
            raise DataError(f"{where}: row {i}: expected question,A,B,C,D,answer(A-D), got {len(rec)} fields")
        rows.append({"question": rec[0], "choices": rec[1:5], "answer": "ABCD".index(rec[5].strip())})
    return rows


def mmlu_subjects(zip_path: str | Path | None = None) -> list[str]:
    """The subjects of the zip (57 for the shipped one), sorted.

    >>> s = mmlu_subjects(); len(s), s[0]
    (57, 'abstract_algebra')
    """
    with zipfile.ZipFile(_mmlu_zip(zip_path)) as z:
        names = [n for n in z.namelist() if n.startswith("data/test/") and n.endswith("_test.csv")]
    return sorted(Path(n).name[: -len("_test.csv")] for n in names)


def prepare_mmlu(zip_path: str | Path | None = None, root: str | Path | None = None) -> Path:
    """Convert the zip once into ``cais/mmlu``-style JSONL files under ``root`` (default: ``lm_eval/`` beside the
    model cache); returns the data folder, named by the zip's sha256 so a different zip never reuses it."""
    zp = _mmlu_zip(zip_path)
    root = Path(root).expanduser() if root else cache_root().parent / "lm_eval"
    dest = root / f"mmlu-{file_sha256(zp)[:12]}"

    def build(tmp: Path) -> None:
        with zipfile.ZipFile(zp) as z:
            for name in z.namelist():
                parts = name.split("/")
                if len(parts) != 3 or parts[0] != "data" or parts[1] not in SPLITS or not name.endswith(".csv"):
                    continue
                subject = parts[2][: -len(f"_{parts[1]}.csv")]
                rows = _read_csv_rows(z.read(name).decode("utf-8"), f"{zp}:{name}")
                out = tmp / subject / f"{SPLITS[parts[1]]}.jsonl"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text("".join(json.dumps({**r, "subject": subject}, ensure_ascii=False) + "\n"
                                       for r in rows), encoding="utf-8")

    if not dest.exists():
        atomic_dir(dest, build)
    return dest


def _yaml_dump(cfg: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True, width=1000)


def write_mmlu_tasks(data_dir: Path, task_dir: Path, subjects: Sequence[str]) -> list[str]:
    """One lm-eval task YAML per subject (``sdft_mmlu_<subject>``) in ``task_dir``; returns the task names."""
    template = lm_eval_tasks_dir() / MMLU_TEMPLATE
    if not template.is_file():
        raise RuntimeError(f"lm-eval's MMLU template {template} is missing; this lm-eval version is unsupported")
    names = []
    for s in subjects:
        files = {split: str(data_dir / s / f"{split}.jsonl") for split in SPLITS.values()}
        if not Path(files["test"]).is_file():
            raise DataError(f"MMLU subject '{s}' not found in {data_dir}")
        name = f"sdft_mmlu_{s}"
        cfg = {"include": str(template), "task": name, "task_alias": s, "tag": "sdft_mmlu",
               "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files},
               "description": f"The following are multiple choice questions (with answers) about "
                              f"{s.replace('_', ' ')}.\n\n"}
        atomic_write_text(task_dir / f"{name}.yaml", _yaml_dump(cfg))
        names.append(name)
    return names


# ----------------------------------------------------------------------------------------- other lm-eval tasks
def lm_eval_config_path(task: str) -> Path:
    """The installed lm-eval YAML of a task name."""
    if task in LM_EVAL_CONFIGS:
        return lm_eval_tasks_dir() / LM_EVAL_CONFIGS[task]
    from lm_eval.tasks import TaskManager

    entry = TaskManager().task_index.get(task)
    if entry is None or entry.yaml_path is None:
        raise ValueError(f"'{task}' is not an lm-eval task with a YAML config")
    return Path(entry.yaml_path)


def _split_file(folder: Path, split: str) -> Path | None:
    found = sorted(p for p in folder.iterdir() if p.suffix in DATA_EXTS and p.name.startswith(split))
    return found[0] if found else None


def write_local_task(task: str, data: str | Path, task_dir: Path) -> str:
    """A YAML that runs lm-eval's ``task`` on the user's local files; returns its task name ``sdft_<task>``."""
    from lm_eval.tasks._yaml_loader import load_yaml

    base = lm_eval_config_path(task)
    cfg = load_yaml(base, resolve_func=False)
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise DataError(f"{task}: data folder {folder} not found (one file per split: test*, validation*, train*)")
    files, builders, override = {}, set(), {}
    for key in SPLIT_KEYS:
        split = cfg.get(key)
        if not split:
            continue
        f = files.get(split) or _split_file(folder, split)
        if f is None:
            override[key] = None
            continue
        files[split] = f
        builders.add(DATA_EXTS[f.suffix])
    eval_split = next((cfg.get(k) for k in ("test_split", "validation_split") if cfg.get(k) in files), None)
    if eval_split is None:
        wanted = [cfg.get(k) for k in ("test_split", "validation_split") if cfg.get(k)]
        raise DataError(f"{task}: no file for its evaluation split in {folder}: looked for "
                        f"{' or '.join(f'{w}*' + '{' + ','.join(DATA_EXTS) + '}' for w in wanted)}")
    if len(builders) > 1:
        raise DataError(f"{task}: mixed file types in {folder} ({sorted(builders)}); use one format for all splits")
    name = f"sdft_{task}"
    out = {"include": str(base), "task": name, "task_alias": task, "tag": "sdft_local",
           "dataset_path": builders.pop(), "dataset_name": None,
           "dataset_kwargs": {"data_files": {s: str(p.resolve()) for s, p in files.items()}}, **override}
    atomic_write_text(task_dir / f"{name}.yaml", _yaml_dump(out))
    return name


# ------------------------------------------------------------------------------------------------------ running
def _entry(task: str, metric: str, acc: float, n: int, **extra: Any) -> dict:
    k = int(round(acc * n))
    lo, hi = wilson_interval(k, n)
    return {"task": task, "metric": metric, "score": k / n if n else 0.0, "n": n, "correct": k, "ci95": [lo, hi],
            **extra}


def _fingerprint(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def evaluate_knowledge(model: str, tasks: Sequence[str] = ("mmlu",), *, adapter: str | None = None,
                       subjects: Sequence[str] | None = None, data: Mapping[str, str | Path] | None = None,
                       num_fewshot: int | None = None, limit: int | float | None = None,
                       apply_chat_template: bool = False, batch_size: int = 8, device: str | None = None,
                       mmlu_zip: str | Path | None = None, cache_dir: str | Path | None = None,
                       out_dir: str | Path | None = None, trust_remote_code: bool = False,
                       log: Callable[[str], None] = print) -> list[dict]:
    """Run knowledge benchmarks with lm-eval; return (and, with ``out_dir``, write) results dicts.

    ``model``: an embedded alias, a ``.gguf`` or an HF folder (lm-eval gets the HF folder). ``tasks``: ``mmlu``
    (the shipped data; ``subjects`` picks some) and/or lm-eval task names whose data is in ``data[name]``.
    ``num_fewshot=None`` keeps lm-eval's task default (0 for these). ``limit``: questions per task/subject.
    """
    resolved = resolve_model(model, cache_dir, log=log)
    data = dict(data or {})
    out = Path(out_dir) if out_dir else None
    with tempfile.TemporaryDirectory(prefix="sdft-lm-eval-") as tmp:
        work = (out / "lm_eval_tasks") if out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return _run(resolved, model, tasks, work, out, adapter=adapter, subjects=subjects, data=data,
                    num_fewshot=num_fewshot, limit=limit, apply_chat_template=apply_chat_template,
                    batch_size=batch_size, device=device, mmlu_zip=mmlu_zip, cache_dir=cache_dir,
                    trust_remote_code=trust_remote_code, log=log)


def _run(resolved, model: str, tasks: Sequence[str], work: Path, out: Path | None, *, adapter, subjects, data,
         num_fewshot, limit, apply_chat_template, batch_size, device, mmlu_zip, cache_dir, trust_remote_code,
         log) -> list[dict]:
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    names: dict[str, list[str]] = {}
    for t in tasks:
        if t == "mmlu":
            subs = list(subjects) if subjects else mmlu_subjects(mmlu_zip)
            names[t] = write_mmlu_tasks(prepare_mmlu(mmlu_zip, cache_root(cache_dir).parent / "lm_eval"), work, subs)
        elif t in data:
            names[t] = [write_local_task(t, data[t], work)]
        else:
            raise DataError(f"task '{t}': only MMLU's data ships with sdft; pass its data folder "
                            f"(data={{'{t}': '/path/to/folder'}}, CLI --data {t}=PATH)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_args = {"pretrained": str(resolved.hf_dir), "dtype": "float32" if device == "cpu" else "auto",
                  "device": device, "trust_remote_code": trust_remote_code}
    if adapter:
        model_args["peft"] = str(adapter)
    settings = {"model_args": model_args, "num_fewshot": num_fewshot, "apply_chat_template": apply_chat_template,
                "lm_eval": lm_eval.__version__}
    cache = None
    if out:
        (out / "lm_eval_cache").mkdir(parents=True, exist_ok=True)
        cache = str(out / "lm_eval_cache" / _fingerprint(settings))
    all_names = [n for ns in names.values() for n in ns]
    t0 = time.perf_counter()
    res = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=all_names, num_fewshot=num_fewshot,
                                  limit=limit, batch_size=batch_size, apply_chat_template=apply_chat_template,
                                  task_manager=TaskManager(include_path=str(work), include_defaults=False),
                                  log_samples=False, bootstrap_iters=0, use_cache=cache)
    seconds = round(time.perf_counter() - t0, 2)
    common = {"model": model, "adapter": adapter, "num_fewshot": num_fewshot, "limit": limit,
              "apply_chat_template": apply_chat_template, "lm_eval_version": lm_eval.__version__,
              "seconds": seconds}
    results = []
    for t, ns in names.items():
        per = {}
        for n in ns:
            acc = res["results"][n]["acc,none"]
            count = int(res["n-samples"][n]["effective"])
            per[n] = _entry(res["results"][n].get("alias", n), "accuracy", acc, count)
        if t == "mmlu":
            n_all = sum(e["n"] for e in per.values())
            k_all = sum(e["correct"] for e in per.values())
            macro = sum(e["score"] for e in per.values()) / max(1, len(per))
            subj = {e["task"]: {k: e[k] for k in ("score", "n", "correct", "ci95")} for e in per.values()}
            results.append(_entry("mmlu", "accuracy (micro)", k_all / n_all if n_all else 0.0, n_all,
                                  macro=macro, subjects=subj, **common))
        else:
            e = per[ns[0]]
            results.append({**e, "task": t, "data": str(data[t]), **common})
    for r in results:
        log(f"{r['task']}: {r['score']:.1%} {r['metric']} (n={r['n']}, 95% CI {r['ci95'][0]:.1%}–{r['ci95'][1]:.1%})")
    if out:
        atomic_write_json(out / "knowledge.json", results)
        atomic_write_text(out / "knowledge.md", results_markdown(results))
    return results
