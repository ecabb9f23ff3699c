"""``sdft train``: vanilla or SDFT fine-tuning — TRL's ``SFTTrainer`` with PEFT LoRA, configured, not forked.

Vanilla and SDFT read the same `sdft distill` folder and differ only in the targets: vanilla trains on
``original``, SDFT on ``output`` (the checked rewrite, or the original where the rewrite was rejected).
``mix_ratio`` r (paper Figs. 7-8) takes one seeded permutation of the rows; the first round(r·n) use ``output``,
the rest ``original``. ``num_samples`` N (Figs. 5-6) keeps the first N of the same permutation, so a bigger run
contains a smaller one. Prompts come from the same template code as distillation; the loss covers the response
tokens only (TRL builds labels from our ``completion_mask``; padding is masked by position, never by token id —
SmolLM2 pads with its eos token).
"""

from __future__ import annotations

from typing import Callable

from sdft.config import TrainConfig

from sdft.options import to_dict
from sdft.store import atomic_write_json, atomic_write_text
from sdft.training.common import (TrainError, TrainResult, base_manifest, default_epochs, fmt_loss, model_card, peft_config,
                                  prepare_run, resolve_config, run_and_save, tokenize, tune_malloc)


def train_sft(cfg: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Vanilla and SDFT: supervised fine-tuning on the chosen targets."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from sdft.models import pick_dtype

    cfg = resolve_config(cfg)
    out, rows, data_path, task, template, model_ref, tokenizer, fmt, pairs, mix_stats = prepare_run(cfg, log)
    feats, tok_stats = tokenize(pairs, tokenizer, template, fmt, cfg.layout, cfg.cutoff_len)
    dataset = Dataset.from_list(feats)
    eval_dataset = None
    if cfg.eval_split > 0:
        split = dataset.train_test_split(test_size=cfg.eval_split, seed=cfg.seed)
        dataset, eval_dataset = split["train"], split["test"]
    epochs = cfg.epochs if cfg.epochs is not None else default_epochs(task.name)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", to_dict(cfg))

    dtype = pick_dtype(cfg.dtype)
    if cfg.cpu_malloc and not torch.cuda.is_available() and tune_malloc():
        log("glibc malloc: freed tensor memory is kept for reuse (cpu_malloc: false turns this off)")
    model = AutoModelForCausalLM.from_pretrained(str(model_ref.hf_dir), dtype=dtype,
                                                 trust_remote_code=cfg.trust_remote_code)
    lora = peft_config(cfg)
    if cfg.finetuning == "qlora":
        if not torch.cuda.is_available():
            raise TrainError("--finetuning qlora needs a CUDA GPU and bitsandbytes; use lora on this machine")
    args = SFTConfig(
        output_dir=str(out / "checkpoints"), num_train_epochs=epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed, data_seed=cfg.seed, report_to=cfg.report_to,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, activation_checkpointing=cfg.gradient_checkpointing,
        padding_free=cfg.padding_free, max_length=cfg.cutoff_len, completion_only_loss=True, packing=False,
        eval_strategy="epoch" if eval_dataset is not None else "no", ddp_backend=cfg.ddp_backend,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=False, dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                         processing_class=tokenizer, peft_config=lora)
    run = run_and_save(trainer, tokenizer, out, cfg.resume, merge=cfg.merge and lora is not None, log=log)
    if run is None:
        return TrainResult(out, {})
    wall = run.wall
    trained_tokens = sum(len(f["input_ids"]) for f in dataset) * (trainer.state.epoch or 0)
    manifest = base_manifest(cfg, task, template, fmt, model_ref, data_path, rows, mix_stats, tok_stats, epochs,
                             trainer.state.global_step, run)
    manifest["train_tokens_per_s"] = round(trained_tokens / wall, 2) if wall else None
    atomic_write_json(out / "manifest.json", manifest)
    atomic_write_text(out / "README.md", model_card(manifest))
    log(f"trained {manifest['steps']} steps: loss {fmt_loss(manifest['loss_first'])} → {fmt_loss(manifest['loss_last'])}, "
        f"{manifest['train_tokens_per_s']} tokens/s, {mix_stats['share_changed']:.0%} of targets rewritten → {out}")
    return TrainResult(out, manifest)
