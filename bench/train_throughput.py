"""Training throughput: `sdft train` vs a plain TRL `SFTTrainer` run on the same rows and settings, in one run.

    python bench/train_throughput.py --model smollm2-135m --rows 64 --epochs 2

(tiny check: ``--rows 8 --epochs 1 --threads 1``, one optimizer step each.)

Every run is a fresh Python process (this script re-invoked with ``--arm``), as a user's run would be: a process's
one-time costs (oneDNN kernels built for each new sequence-length shape on the first pass, lazy imports) land on
both arms alike instead of on whichever arm ran first in a shared process (measured: ~25% slower first run).
``--repeats 2`` runs the arms in ABBA order (ours, plain, plain, ours) and reports the ratio of the summed
tokens over the summed seconds, so a slow drift of the machine's speed does not favour either arm.

Both runs: LoRA r 8 / alpha 16 on q_proj,v_proj, lr 1e-4 cosine, batch 2 x 4, float32, no gradient checkpointing
(TRL's SFTConfig turns on bf16 autocast and gradient checkpointing by default; the plain run switches both off, as
bf16 is emulated on CPUs without bf16 instructions: ~14x slower here), the same 64 GSM8K rows
(vanilla targets, math-train template in the chat format), loss on the response only. Tokens/s counts the
non-padding tokens of every training sequence times the epochs run, over the trainer's own train_runtime.
Ours runs with `sdft train`'s defaults, including ``cpu_malloc`` (glibc keeps freed activation memory for reuse;
``--no-cpu-malloc`` turns it off); the plain run is what a user writes by hand, with glibc's default allocator.
Prints both, the ratio ours/plain (target >= 1.0) and whether our loss went down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def plain_sft(model_dir: Path, tokenizer, rows, epochs: float, out: Path, seed: int) -> dict:
    """What a user would write by hand: prompt/completion text, TRL tokenizes and masks the prompt."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from sdft.templates import TEMPLATES, render

    data = [{"prompt": render(TEMPLATES["math-train"], r.instruction, prompt_format="chat", tokenizer=tokenizer),
             "completion": r.output} for r in rows]
    ds = Dataset.from_list(data)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    args = SFTConfig(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=2,
                     gradient_accumulation_steps=4, learning_rate=1e-4, lr_scheduler_type="cosine", logging_steps=1,
                     save_strategy="no", report_to="none", seed=seed, max_length=512, use_cpu=True,
                     disable_tqdm=True, bf16=False, activation_checkpointing=False)  # TRL defaults both to on
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                         peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                                target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    t0 = time.perf_counter()
    res = trainer.train()
    wall = time.perf_counter() - t0
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"]) * trainer.state.epoch
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens_per_s": tokens / wall, "seconds": wall, "steps": trainer.state.global_step,
            "loss_first": losses[0], "loss_last": losses[-1], "runtime": res.metrics["train_runtime"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--arm", choices=["ours", "plain"], help=argparse.SUPPRESS)  # one run in this process
    ap.add_argument("--no-cpu-malloc", dest="cpu_malloc", action="store_false",
                    help="run ours without its glibc malloc tuning (sdft train --no-cpu-malloc)")
    ap.add_argument("--repeats", type=int, default=1, help="run each arm this many times, ABBA order")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    a = ap.parse_args()
    if a.arm is None:
        compare(a)
    else:
        run_one(a)


def run_one(a: argparse.Namespace) -> None:
    """One timed run of one arm (a child process)."""
    import torch

    torch.set_num_threads(a.threads)

    from sdft.config import TrainConfig
    from sdft.data import load_examples, resolve_source
    from sdft.models import load_tokenizer, resolve_model
    from sdft.distillation.tasks.gsm8k import normalize_answer
    from sdft.training import train
    from sdft.training.common import choose_targets

    ref = resolve_model(a.model)
    tok = load_tokenizer(ref)
    rows = load_examples(resolve_source("gsm8k_train", columns="instruction=question,output=answer"))[:a.rows]
    rows = [r.__class__(r.index, r.instruction, r.input, normalize_answer(r.output)) for r in rows]
    tmp = Path(tempfile.mkdtemp(prefix="sdft-bench-"))
    data = tmp / "gsm.json"
    data.write_text(json.dumps([{"question": r.instruction, "answer": r.output} for r in rows]))
    def run_ours(i: int) -> dict:
        m = train(TrainConfig(data=str(data), out=str(tmp / f"ours{i}"), method="vanilla", task="gsm8k",
                              model=a.model, epochs=a.epochs, cutoff_len=512, dtype="float32", save_steps=10_000,
                              seed=a.seed, cpu_malloc=a.cpu_malloc), log=lambda m: None).manifest
        return {"tokens_per_s": m["train_tokens_per_s"], "seconds": m["train_runtime_s"], "steps": m["steps"],
                "loss_first": m["loss_first"], "loss_last": m["loss_last"]}

    # The plain run gets the rows in the order `sdft train` trains on (its seeded permutation); both trainers then
    # shuffle with the same seed, so every batch pairs the same rows and pads the same way in both arms. Otherwise
    # the ratio mostly measures which arm happened to pair rows of similar length (padding is computed, not counted).
    pairs, _ = choose_targets([{"index": r.index, "instruction": r.instruction, "input": r.input,
                                "output": r.output, "original": r.output} for r in rows], "vanilla", None, None, a.seed)
    by_index = {r.index: r for r in rows}
    plain_rows = [by_index[row["index"]] for row, _ in pairs]

    def run_plain(i: int) -> dict:
        return plain_sft(ref.hf_dir, tok, plain_rows, a.epochs, tmp / f"plain{i}", a.seed)

    try:
        r = (run_ours if a.arm == "ours" else run_plain)(0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT " + json.dumps(r), flush=True)  # the parent reads this line


def compare(a: argparse.Namespace) -> None:
    """Run the arms in fresh processes, ABBA order; print both and the ratio."""
    order = []
    for i in range(a.repeats):  # ABBA: ours, plain, plain, ours, ...
        order += ["ours", "plain"] if i % 2 == 0 else ["plain", "ours"]
    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    base = [sys.executable, __file__, "--model", a.model, "--rows", str(a.rows), "--epochs", str(a.epochs),
            "--seed", str(a.seed), "--threads", str(a.threads)] + ([] if a.cpu_malloc else ["--no-cpu-malloc"])
    for arm in order:
        proc = subprocess.run(base + ["--arm", arm], capture_output=True, text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise SystemExit(f"{arm} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        r = json.loads(lines[-1][len("RESULT "):])
        runs[arm].append(r)
        print(f"  run {len(runs['ours']) + len(runs['plain'])}/{len(order)} ({arm}, own process): "
              f"{r['tokens_per_s']:.1f} tokens/s, {r['seconds']:.0f}s", flush=True)

    def pooled(rs: list[dict]) -> float:  # total tokens / total seconds
        return sum(r["tokens_per_s"] * r["seconds"] for r in rs) / sum(r["seconds"] for r in rs)

    def each(rs: list[dict]) -> str:
        return ", ".join(f"{r['tokens_per_s']:.1f}" for r in rs)

    ours, plain = runs["ours"][0], runs["plain"][0]
    print(f"model {a.model}, {a.rows} GSM8K rows, {a.epochs} epochs, LoRA r8 q/v, batch 2x4, fp32, "
          f"{a.threads} threads on {os.cpu_count()} CPUs, {a.repeats} run(s) per arm, one process per run, "
          f"ours cpu_malloc={'on' if a.cpu_malloc else 'off'}")
    print(f"(ours)  sdft train:        {pooled(runs['ours']):.1f} tokens/s "
          f"(runs: {each(runs['ours'])}), {ours['steps']} steps, "
          f"loss {ours['loss_first']:.3f} -> {ours['loss_last']:.3f}")
    print(f"(plain) TRL SFTTrainer:    {pooled(runs['plain']):.1f} tokens/s "
          f"(runs: {each(runs['plain'])}), {plain['steps']} steps, "
          f"loss {plain['loss_first']:.3f} -> {plain['loss_last']:.3f}")
    print(f"ratio ours/plain: {pooled(runs['ours']) / pooled(runs['plain']):.2f} (target >= 1.0); "
          f"our loss went down: {ours['loss_last'] < ours['loss_first'] if ours['steps'] > 1 else 'n/a (1 step)'}")


if __name__ == "__main__":
    main()
