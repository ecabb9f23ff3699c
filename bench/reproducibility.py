"""Reproducibility: do the same config and seed give identical rows, adapters and scores on one machine? (issue #15
item 8; findings in docs/reproducibility.md)

    .venv/bin/python bench/reproducibility.py --json bench/results/reproducibility.json          # all parts
    .venv/bin/python bench/reproducibility.py --parts tiny                                       # ~1-2 min

Parts (each runs the library functions ``sdft distill``/``train``/``eval`` use, into fresh temporary folders):

  tiny       the random 2-layer Llama of the tests (hf backend, CPU): distill twice with sampling (the authors'
             decoding, seeded) and twice greedy; the same with another batch size / chunk size; train twice (and
             with 1 vs 2 torch threads); eval twice. Rows are compared byte for byte, adapters tensor by tensor.
  llamacpp   SmolLM2-135M GGUF (embedded ``smollm2``), greedy, 8 GSM8K rows, 64 new tokens: the default 8 slots
             twice, and ``deterministic`` (1 slot) twice.
  hf         SmolLM2-135M float32 through the hf backend, greedy, the same 8 rows: batch 8 vs ``deterministic``
             (batch 1).

Keep it short on a shared machine: a handful of rows, <= 64 new tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def quiet(*_):
    pass


def tiny_model(d: Path) -> Path:
    """The tests' tiny model (tests/conftest.py): 2 layers, hidden 64, SmolLM2's tokenizer, seed 0."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(ROOT / "tests" / "fixtures" / "smollm2-tokenizer"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rows.jsonl").read_text(encoding="utf-8").splitlines()]


def compare_rows(a: Path, b: Path) -> dict:
    ra = {r["index"]: r for r in rows_of(a)}
    rb = {r["index"]: r for r in rows_of(b)}
    same = sum(ra[i]["distilled"] == rb.get(i, {}).get("distilled") for i in ra)
    return {"rows": len(ra), "same_text": same,
            "rows_jsonl_identical": (a / "rows.jsonl").read_bytes() == (b / "rows.jsonl").read_bytes()}


def compare_adapters(a: Path, b: Path) -> dict:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    diff = max((ta[k] - tb[k]).abs().max().item() for k in ta)
    return {"tensors": len(ta), "identical": all(k in tb and ta[k].equal(tb[k]) for k in ta), "max_abs_diff": diff,
            "file_identical": (a / "adapter_model.safetensors").read_bytes()
            == (b / "adapter_model.safetensors").read_bytes()}


def part_tiny(tmp: Path) -> dict:
    import torch

    from sdft.config import DistillConfig, EvalConfig, TrainConfig
    from sdft.distillation.distill import distill
    from sdft.evaluation.evaluate import evaluate
    from sdft.training import train

    model = tiny_model(tmp / "tiny")
    data = tmp / "gsm.json"
    data.write_text(json.dumps([{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\nThe answer is "
                                 f"{2 * i}."} for i in range(1, 9)]))
    res: dict = {}

    def dist(name: str, **kw) -> Path:
        out = tmp / name
        base = dict(data=str(data), out=str(out), task="gsm8k", model=str(model), backend="hf", max_new_tokens=24,
                    batch_size=4, chunk_size=8)
        det = kw.pop("deterministic", False)
        distill(DistillConfig(**{**base, **kw}), progress=False, log=quiet, deterministic=det)
        return out

    t0 = time.perf_counter()
    res["distill_sampling_rerun"] = compare_rows(dist("s1", decoding="authors"), dist("s2", decoding="authors"))
    res["distill_greedy_rerun"] = compare_rows(dist("g1", decoding="greedy"), dist("g2", decoding="greedy"))
    res["distill_greedy_batch4_vs_batch1"] = compare_rows(tmp / "g1", dist("g3", decoding="greedy", batch_size=1))
    res["distill_sampling_chunk8_vs_chunk4"] = compare_rows(tmp / "s1", dist("s3", decoding="authors", chunk_size=4))
    res["distill_sampling_batch4_vs_batch2"] = compare_rows(tmp / "s1", dist("s4", decoding="authors", batch_size=2))
    res["distill_sampling_deterministic_rerun"] = compare_rows(dist("d1", decoding="authors", deterministic=True),
                                                               dist("d2", decoding="authors", deterministic=True))
    res["distill_sampling_deterministic_chunk8_vs_chunk4"] = compare_rows(
        tmp / "d1", dist("d3", decoding="authors", deterministic=True, chunk_size=4))
    res["distill_sampling_deterministic_batch4_vs_batch2"] = compare_rows(
        tmp / "d1", dist("d4", decoding="authors", deterministic=True, batch_size=2))
    res["distill_seconds"] = round(time.perf_counter() - t0, 1)

    def tr(name: str, threads: int | None = None) -> Path:
        out = tmp / name
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            train(TrainConfig(data=str(tmp / "s1"), out=str(out), model=str(model), max_steps=4, save_steps=50,
                              per_device_batch_size=2, gradient_accumulation_steps=1, learning_rate=5e-3), log=quiet)
        finally:
            torch.set_num_threads(old)
        return out

    t0 = time.perf_counter()
    res["train_rerun"] = compare_adapters(tr("t1"), tr("t2"))
    res["train_threads"] = torch.get_num_threads()
    res["train_1_thread_vs_default"] = compare_adapters(tmp / "t1", tr("t3", threads=1))
    for name in ("t1", "t2"):
        m = json.loads((tmp / name / "manifest.json").read_text())
        res.setdefault("train_loss_last", []).append(m["loss_last"])
    res["train_seconds"] = round(time.perf_counter() - t0, 1)

    def ev(name: str) -> Path:
        out = tmp / name
        evaluate(EvalConfig(out=str(out), tasks=("gsm8k", "advbench"), model=str(model), adapter=str(tmp / "t1"),
                            backend="hf", limit=4, max_new_tokens=16), progress=False, log=quiet)
        return out

    t0 = time.perf_counter()
    e1, e2 = ev("e1"), ev("e2")
    res["eval_rerun"] = {t: {"scores": [json.loads((e / t / "results.json").read_text())["score"] for e in (e1, e2)],
                             "samples_identical": (e1 / t / "samples.jsonl").read_bytes()
                             == (e2 / t / "samples.jsonl").read_bytes()} for t in ("gsm8k", "advbench")}
    res["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return res


def _smollm2_distill(tmp: Path, name: str, backend: str, *, deterministic: bool = False, batch_size: int = 8,
                     rows: int = 8, max_new_tokens: int = 64, threads: int | None = None) -> tuple[Path, float]:
    from sdft.config import DistillConfig
    from sdft.distillation.distill import distill

    out = tmp / name
    t0 = time.perf_counter()
    distill(DistillConfig(data="gsm8k_train", out=str(out), task="gsm8k", model="smollm2", backend=backend,
                          decoding="greedy", max_new_tokens=max_new_tokens, limit=rows, batch_size=batch_size,
                          chunk_size=rows, threads=threads), progress=False, log=quiet, deterministic=deterministic)
    return out, round(time.perf_counter() - t0, 1)


def first_difference(a: Path, b: Path) -> list:
    ra = {r["index"]: r["distilled"] for r in rows_of(a)}
    rb = {r["index"]: r["distilled"] for r in rows_of(b)}
    out = []
    for i in sorted(ra):
        x, y = ra[i], rb.get(i, "")
        if x != y:
            k = next((j for j, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
            out.append({"index": i, "first_differing_char": k, "len": [len(x), len(y)]})
    return out


def part_llamacpp(tmp: Path, threads: int | None) -> dict:
    res: dict = {}
    p8a, s1 = _smollm2_distill(tmp, "l8a", "llamacpp", threads=threads)
    p8b, s2 = _smollm2_distill(tmp, "l8b", "llamacpp", threads=threads)
    p1a, s3 = _smollm2_distill(tmp, "l1a", "llamacpp", deterministic=True, threads=threads)
    p1b, s4 = _smollm2_distill(tmp, "l1b", "llamacpp", deterministic=True, threads=threads)
    res["seconds"] = [s1, s2, s3, s4]
    res["parallel8_rerun"] = {**compare_rows(p8a, p8b), "differences": first_difference(p8a, p8b)}
    res["parallel1_rerun"] = {**compare_rows(p1a, p1b), "differences": first_difference(p1a, p1b)}
    res["parallel8_vs_parallel1"] = [{**compare_rows(p, p1a), "differences": first_difference(p, p1a)}
                                     for p in (p8a, p8b)]
    return res


def part_hf(tmp: Path, threads: int | None) -> dict:
    b8, s1 = _smollm2_distill(tmp, "h8", "hf", threads=threads)
    b1, s2 = _smollm2_distill(tmp, "h1", "hf", deterministic=True, threads=threads)
    return {"seconds": [s1, s2], "batch8_vs_batch1": {**compare_rows(b8, b1), "differences": first_difference(b8, b1)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="tiny,llamacpp,hf")
    ap.add_argument("--threads", type=int, default=None, help="generation threads for the SmolLM2 parts")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import platform

    import torch

    out: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                             "cpus": len(os.sched_getaffinity(0)), "cuda": torch.cuda.is_available()}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for part in args.parts.split(","):
            t0 = time.perf_counter()
            if part == "tiny":
                out["tiny"] = part_tiny(tmp)
            elif part == "llamacpp":
                out["llamacpp"] = part_llamacpp(tmp, args.threads)
            elif part == "hf":
                out["hf"] = part_hf(tmp, args.threads)
            else:
                raise SystemExit(f"unknown part {part}")
            print(f"{part}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            print(json.dumps(out[part], indent=1), file=sys.stderr)
            if args.json:  # after every part, so a failure later keeps what was measured
                args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
