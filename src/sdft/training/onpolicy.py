"""``sdft train --method onpolicy``: TRL's on-policy self-distillation as a baseline (experiment method ``onpolicy``).

This is *not* the SDFT of this repository (Yang et al., ACL 2024: the seed model rewrites every response offline,
then ordinary SFT on the rewrites). It is the method of the same name by Shenfeld et al. 2026 ("Self-Distillation
Enables Continual Learning"), as shipped in ``trl.experimental.sdft`` (``SDFTTrainer``, TRL >= 1.16): at every
step the student *samples* its own answer to a training prompt, and a copy of the model that also sees a
demonstration in its prompt scores each sampled token; the student is moved towards that teacher's next-token
distribution on its own samples. Nothing is generated offline and no rewrite is checked.

Data mapping (one training example per row, from the same rows as vanilla/SDFT)
-------------------------------------------------------------------------------
- Rows: ``load_rows`` (a `sdft distill` folder, or plain data) and ``choose_targets`` with the same seed, so the
  onpolicy arm sees exactly the rows (seeded permutation, ``num_samples`` prefix) that vanilla and SDFT train on.
  The chosen *target* becomes the *demonstration*: the row's ``original`` response (``mix_ratio`` r, if given,
  makes the first round(r·n) rows of the permutation show the checked rewrite ``output`` instead; default 0).
- ``prompt`` (what the student sees and samples from) = ``render(train template, instruction, input, history,
  prompt_format, layout)``: byte for byte the prompt vanilla/SDFT train on and ``sdft eval`` asks (without the
  BOS text when the tokenizer adds BOS itself, because TRL tokenizes prompts with special tokens).
- ``privileged_context`` = the complete *teacher* prompt: the same template, system text, history and chat
  rendering, with the instruction replaced by Shenfeld et al.'s demonstration wording (``TEACHER_WORDING``)::

      {instruction}\\n\\nThis is an example for a response to the question:\\n{demonstration}\\n\\n
      Now answer with a response of your own, including the thinking process.

  (a non-empty ``input`` is joined to the instruction first, as the template would). TRL's own
  ``teacher_prompt_template.format(prompt=..., privileged_context=...)`` can only add text around the rendered
  student prompt, which would put the demonstration after the assistant header; so the trainer's teacher-context
  builder is wrapped (``TeacherPromptAsIs``) to take ``privileged_context`` as the whole teacher prompt.
- The completion is sampled by the student; the teacher forward is ``teacher prompt + the same completion``.

Budget and settings (``TrainConfig``; what vanilla/SDFT share is taken from there unchanged)
-------------------------------------------------------------------------------------------
- LoRA (``peft_config``: preset r/alpha/targets), learning rate, scheduler, warm-up, dtype, seed: as SFT.
- One sample per prompt (``num_generations=1``) and one fresh generation per optimizer step
  (``steps_per_generation`` = gradient accumulation): an optimizer step consumes per_device_batch_size ×
  gradient_accumulation_steps × processes distinct prompts, as an SFT step consumes that many rows, and every
  sample comes from the current weights (so TRL's importance-sampling correction never applies).
- Steps: ``max_steps`` if set, else exactly the number of optimizer steps SFT takes for ``epochs`` over the same
  rows (TRL's sampler drops the last incomplete generation batch of each epoch, so the count is set explicitly).
- ``max_completion_length``: sampled tokens per prompt (default: the longest demonstration + eos, at most
  ``cutoff_len``); prompts longer than ``cutoff_len`` are cut from the left by TRL (counted in the manifest).
- Sampling T = 1, top-p 1, no top-k (TRL's defaults: the student's own distribution).
- Teacher (``onpolicy_teacher``): ``base`` (default, TRL's default) = the LoRA adapter switched off, i.e. the
  frozen seed model, the same model that writes SDFT's rewrites; ``ema`` = a second LoRA adapter that tracks the
  student (rate 0.05; TRL averages LoRA A and B separately, not B·A; saved in ``teacher/``); ``live`` = the
  current student itself.
- Loss: TRL's defaults — divergence (alpha 0.5) between student and teacher over the student's top-100 tokens
  at each sampled position, averaged per sequence; dropout is off (TRL's ``disable_dropout``), so
  ``lora_dropout`` has no effect here. ``padding_free`` does not apply.

What differs from the paper's SDFT (Yang et al., the method of this repository)
-------------------------------------------------------------------------------
- No rewrite stage and no task check: the distillation folder only supplies the rows; rewrites are unused
  unless ``mix_ratio`` is set.
- Training signal: per-token distribution matching on the student's own samples (on-policy), not
  cross-entropy on one fixed target per row (off-policy). The logged loss is a divergence, not comparable to SFT's.
- The teacher sees the demonstration through Shenfeld et al.'s wording, not the distillation template
  (``refer``/``math-distill``) that SDFT's rewriter sees.
- Cost: every step samples up to ``max_completion_length`` tokens per prompt and runs a teacher forward.
And from Shenfeld et al.'s own setup: their teacher is an exponential moving average of the student (``ema``
approximates it for LoRA) and their KL runs over the full vocabulary; here LoRA and TRL's top-k default are used.

The output folder is a ``sdft train`` folder (adapter, ``config.json``, ``manifest.json``, ``loss.csv``/``png``,
``README.md``), so ``sdft eval --adapter``, the shift measures and the report take it as they are.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from sdft.config import TrainConfig

from sdft.options import to_dict
from sdft.store import atomic_write_json, atomic_write_text
from sdft.templates import Template, Turn, bos_prefix, render
from sdft.training.common import (TrainError, TrainResult, base_manifest, default_epochs, fmt_loss, peft_config,
                                  prepare_run, resolve_config, run_and_save)

TEACHER_WORDING = ("\n\nThis is an example for a response to the question:\n",
                   "\n\nNow answer with a response of your own, including the thinking process.")
TEACHERS = {"base": "the frozen seed model (adapter off)", "ema": "a moving average of the student (LoRA EMA)",
            "live": "the current student"}
DIVERGENCE = {"distillation_mode": "topk_logits", "distillation_topk": 100, "distillation_alpha": 0.5}  # TRL's


def teacher_instruction(template: Template, instruction: str, input: str, demonstration: str) -> tuple[str, str]:
    """(instruction, input) of the teacher prompt: the demonstration in Shenfeld et al.'s wording after the
    question. Plain concatenation: row text is never formatted."""
    if "{input}" not in template.user and input:
        instruction, input = f"{instruction}\n{input}", ""
    return instruction + TEACHER_WORDING[0] + demonstration + TEACHER_WORDING[1], input


def trl_text(tokenizer: Any) -> Callable[[str], str]:
    """Rendered prompt → the text to hand to TRL, which tokenizes with special tokens: drop the BOS text the
    tokenizer will add itself, so the token ids equal ``tokenizer(rendered, add_special_tokens=False)``."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    if full[len(full) - len(plain):] != plain:
        raise TrainError("--method onpolicy: this tokenizer appends special tokens to every text (e.g. an eos), "
                         "which TRL's on-policy trainer would put at the end of each prompt")
    bos = bos_prefix(tokenizer)
    return lambda text: text[len(bos):] if bos and text.startswith(bos) else text


def build_examples(pairs: list[tuple[dict, str]], tokenizer: Any, template: Template, prompt_format: str,
                   layout: str, cutoff_len: int) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Pure: ``{"prompt": student prompt, "privileged_context": teacher prompt}`` per (row, demonstration)."""
    to_trl = trl_text(tokenizer)
    eos = tokenizer.eos_token or ""
    examples, stats = [], {"prompt_tokens": 0, "teacher_prompt_tokens": 0, "target_tokens": 0,
                           "longest_target": 0, "truncated_rows": 0}
    for row, demo in pairs:
        hist = tuple(Turn(u, a) for u, a in row.get("history", []))
        kw = dict(history=hist, prompt_format=prompt_format, layout=layout, tokenizer=tokenizer)
        student = render(template, row["instruction"], row.get("input", ""), **kw)
        t_instr, t_input = teacher_instruction(template, row["instruction"], row.get("input", ""), demo)
        teacher = render(template, t_instr, t_input, **kw)
        n_p, n_t = (len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in (student, teacher))
        n_d = len(tokenizer(demo + eos, add_special_tokens=False)["input_ids"])
        stats["prompt_tokens"] += n_p
        stats["teacher_prompt_tokens"] += n_t
        stats["target_tokens"] += n_d
        stats["longest_target"] = max(stats["longest_target"], n_d)
        stats["truncated_rows"] += n_t > cutoff_len
        examples.append({"prompt": to_trl(student), "privileged_context": to_trl(teacher)})
    return examples, stats


class TeacherPromptAsIs:
    """Stands in for the trainer's teacher-context builder: the teacher prompt is the row's
    ``privileged_context`` as rendered by :func:`build_examples`. It delegates tokenizing and padding to TRL's
    own builder, called with that prompt and an empty context under the template ``{prompt}{privileged_context}``."""

    TEMPLATE = "{prompt}{privileged_context}"

    def __init__(self, stock: Any):
        self.stock = stock

    def select_generation_prompts(self, prompts: list, contexts: list) -> list:
        return list(contexts)

    def build(self, prompts: list, contexts: list, completion_ids: Any, completion_mask: Any) -> dict:
        return self.stock.build(list(contexts), [""] * len(contexts), completion_ids, completion_mask)


def sft_steps(rows: int, epochs: float, per_device: int, accumulation: int, processes: int) -> int:
    """Optimizer steps the SFT trainer takes for ``epochs`` over ``rows`` (transformers' own arithmetic)."""
    batches = math.ceil(math.ceil(rows / per_device) / processes)
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return math.ceil(epochs * per_epoch)


def _trl_sdft() -> tuple[Any, Any]:
    try:
        from trl.experimental.sdft import SDFTConfig, SDFTTrainer
    except ImportError as e:
        from importlib.metadata import version

        raise TrainError(f"--method onpolicy needs TRL's `trl.experimental.sdft` (SDFTTrainer, TRL >= 1.16); the "
                         f"installed TRL {version('trl')} lacks it ({e})") from None
    return SDFTConfig, SDFTTrainer


def run_onpolicy(cfg: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from sdft.models import pick_dtype

    SDFTConfig, SDFTTrainer = _trl_sdft()
    cfg = resolve_config(cfg)
    if cfg.onpolicy_teacher not in TEACHERS:
        raise TrainError(f"--onpolicy-teacher '{cfg.onpolicy_teacher}': use one of {', '.join(TEACHERS)}")
    if cfg.max_completion_length is not None and cfg.max_completion_length < 1:
        raise TrainError(f"--max-completion-length {cfg.max_completion_length}: must be at least 1")
    if cfg.finetuning == "qlora" and not torch.cuda.is_available():
        raise TrainError("--finetuning qlora needs a CUDA GPU and bitsandbytes; use lora on this machine")
    out, rows, data_path, task, template, model_ref, tokenizer, fmt, pairs, mix_stats = prepare_run(cfg, log)
    examples, tok_stats = build_examples(pairs, tokenizer, template, fmt, cfg.layout, cfg.cutoff_len)
    if tok_stats["truncated_rows"]:
        log(f"warning: {tok_stats['truncated_rows']} teacher prompt(s) exceed cutoff_len {cfg.cutoff_len} and "
            "lose their beginning")
    if cfg.padding_free:
        log("note: --padding-free does not apply to onpolicy training; ignored")
    dataset = Dataset.from_list(examples)
    eval_dataset = None
    if cfg.eval_split > 0:  # the same split (size, seed) as SFT: the same rows are held out
        split = dataset.train_test_split(test_size=cfg.eval_split, seed=cfg.seed)
        dataset, eval_dataset = split["train"], split["test"]
    epochs = cfg.epochs if cfg.epochs is not None else default_epochs(task.name)
    completion_len = cfg.max_completion_length or min(tok_stats["longest_target"], cfg.cutoff_len)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", to_dict(cfg))

    dtype = pick_dtype(cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(str(model_ref.hf_dir), dtype=dtype,
                                                 trust_remote_code=cfg.trust_remote_code)
    try:
        args = SDFTConfig(
            output_dir=str(out / "checkpoints"), num_train_epochs=epochs, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.per_device_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, logging_steps=cfg.logging_steps,
            save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed, data_seed=cfg.seed,
            report_to=cfg.report_to, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
            activation_checkpointing=cfg.gradient_checkpointing, ddp_backend=cfg.ddp_backend,
            eval_strategy="epoch" if eval_dataset is not None else "no", per_device_eval_batch_size=1,
            use_cpu=not torch.cuda.is_available(), disable_tqdm=False, dataloader_num_workers=0,
            trust_remote_code=cfg.trust_remote_code, num_generations=1, max_prompt_length=cfg.cutoff_len,
            max_completion_length=completion_len, temperature=1.0, teacher_model_kind=cfg.onpolicy_teacher,
            teacher_prompt_template=TeacherPromptAsIs.TEMPLATE, **DIVERGENCE,
        )
    except TypeError as e:  # a TRL whose SDFTConfig lacks a field used here
        raise TrainError(f"--method onpolicy: the installed TRL's SDFTConfig does not take this setup ({e})") from None
    if len(dataset) < args.generation_batch_size:
        raise TrainError(f"--method onpolicy: {len(dataset)} training rows, but one step samples "
                         f"{args.generation_batch_size} prompts (batch × accumulation × processes); use more rows "
                         "or a smaller batch")
    steps = cfg.max_steps if cfg.max_steps > 0 else sft_steps(
        len(dataset), epochs, cfg.per_device_batch_size, cfg.gradient_accumulation_steps, args.world_size)
    args.max_steps = steps
    trainer = SDFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                          processing_class=tokenizer, peft_config=peft_config(cfg))
    if not hasattr(trainer, "teacher_context_builder"):
        raise TrainError("--method onpolicy: the installed TRL's SDFTTrainer has no `teacher_context_builder`, "
                         "the hook that lets the teacher prompt carry the demonstration inside the user turn")
    trainer.teacher_context_builder = TeacherPromptAsIs(trainer.teacher_context_builder)
    start = max((int(p.name.rsplit("-", 1)[-1]) for p in (out / "checkpoints").glob("checkpoint-*")),
                default=0) if cfg.resume else 0  # a resumed run continues from this step
    run = run_and_save(trainer, tokenizer, out, cfg.resume, merge=cfg.merge and cfg.finetuning in {"lora", "qlora"},
                       log=log)
    if run is None:
        return TrainResult(out, {})
    history, wall = trainer.state.log_history, run.wall
    per_step = args.generation_batch_size // args.num_generations  # distinct prompts per optimizer step
    generated, prev = 0.0, start
    for h in history:  # one generation per optimizer step; the metric is the mean since the last log
        if "completions/mean_length" in h and "loss" in h and h["step"] > start:
            generated += h["completions/mean_length"] * per_step * (h["step"] - prev)
            prev = h["step"]
    done = trainer.state.global_step
    ran = done - start  # steps of this session (a resumed run continues from `start`)
    student_tokens = ran * per_step * tok_stats["prompt_tokens"] / max(len(examples), 1) + generated
    tok_stats["generated_tokens"] = round(generated)
    manifest = base_manifest(cfg, task, template, fmt, model_ref, data_path, rows,
                             {**mix_stats, "note": "targets are the teacher's in-context demonstrations, never "
                                                   "trained on"}, tok_stats, epochs, done, run)
    manifest.update({
        "seconds_per_step": round(wall / ran, 3) if ran else None,
        "train_tokens_per_s": round(student_tokens / wall, 2) if wall else None,
        "onpolicy": {"trainer": "trl.experimental.sdft.SDFTTrainer", "teacher": cfg.onpolicy_teacher,
                     "teacher_wording": "".join(TEACHER_WORDING), "num_generations": args.num_generations,
                     "prompts_per_step": per_step, "max_completion_length": completion_len,
                     "max_prompt_length": cfg.cutoff_len, "temperature": args.temperature, **DIVERGENCE}})
    atomic_write_json(out / "manifest.json", manifest)
    atomic_write_text(out / "README.md", model_card(manifest))
    log(f"trained {done} on-policy steps: loss {fmt_loss(manifest['loss_first'])} → {fmt_loss(manifest['loss_last'])}, "
        f"{manifest['seconds_per_step']} s/step, {tok_stats['generated_tokens']} tokens sampled → {out}")
    return TrainResult(out, manifest)


def train_onpolicy(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train the onpolicy baseline; returns the output folder (a ``sdft train`` folder)."""
    return run_onpolicy(replace(cfg, method="onpolicy"), log).out


def model_card(m: dict[str, Any]) -> str:
    c, o = m["config"], m["onpolicy"]
    return (f"# ONPOLICY fine-tune of {m['model']['name']}\n\n"
            f"Made with `sdft train --method onpolicy`: TRL's on-policy self-distillation (`{o['trainer']}`, "
            f"Shenfeld et al. 2026), a baseline for Self-Distillation Fine-Tuning (Yang et al., ACL 2024).\n\n"
            f"- the student samples its own answer (up to {o['max_completion_length']} tokens) to each of "
            f"{m['targets']['rows']} training prompts; the teacher, {TEACHERS[o['teacher']]}, sees the original "
            f"response as an in-context demonstration and scores every sampled token ({o['distillation_mode']}, "
            f"top {o['distillation_topk']}, alpha {o['distillation_alpha']}); "
            f"{m['targets']['share_changed']:.1%} of demonstrations are the seed model's rewrites\n"
            f"- task / template / prompt format: {m['task']} / {m['template']} / {m['prompt_format']}\n"
            f"- fine-tuning: {c['finetuning']} (r {c['lora_r']}, alpha {c['lora_alpha']}, targets "
            f"{c['lora_targets']}), lr {c['learning_rate']} {c['lr_scheduler']}, batch "
            f"{c['per_device_batch_size']}×{c['gradient_accumulation_steps']}, {m['epochs']} epochs, "
            f"{m['steps']} steps, seed {c['seed']}\n"
            f"- loss (a divergence, not a cross-entropy): {fmt_loss(m['loss_first'])} → {fmt_loss(m['loss_last'])}; "
            f"{m['seconds_per_step']} s/step\n"
            f"- data: `{m['data']['path']}` (sha256 {m['data']['sha256'][:16]}…)\n")
