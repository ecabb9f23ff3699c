"""HF transformers backend: batched ``generate`` with left padding and length-sorted batches.

``weights``: ``native`` runs the model's float weights in ``dtype`` (``auto``: float32 on a CPU, as the release's
loop; bfloat16 on a GPU that has it); ``bf16`` runs them in bfloat16 -- on a CPU with native bf16 matrix units
(AMX, AVX512-BF16) prompt processing measured ~3.6x and batched decoding ~2x float32's (SmolLM2-135M, 2 cores,
BENCHMARKS.md); on a CPU without them torch emulates it (slow). The arithmetic changes, so greedy answers can
differ from float32's at near-ties: the weight type is part of a run's fingerprint (``--weights auto`` measures).
In bfloat16 a row's rounding also depends on its batch's shape (padding, row count): greedy answers then move with
``batch_size`` and ``chunk_size`` at near-ties (float32 measured batch-invariant; docs/reproducibility.md).
``sdft distill --batch-size auto`` times the batch size (:mod:`sdft.generation.tuning`).
"""

from __future__ import annotations

import time
from typing import Sequence

from sdft.models import pick_dtype
from sdft.generation.base import Completion, GenerationParams, cut_at_stop, first_token_ids


HF_WEIGHT_TYPES = ("native", "bf16")
HF_KV_CACHES = ("dynamic", "static")  # transformers' default cache, and its StaticCache (``cache_implementation``)


class HFBackend:
    name = "hf"

    def __init__(self, model_dir: str, *, adapter: str | None = None, batch_size: int = 8, dtype: str = "auto",
                 device: str | None = None, trust_remote_code: bool = False, model=None, tokenizer=None,
                 threads: int | None = None, deterministic: bool = False, weights: str = "native",
                 kv_cache: str = "dynamic", **_):
        import torch

        if deterministic:  # one row per forward pass: no padding or batch shape changes a row's arithmetic
            batch_size = 1
        self.deterministic = deterministic

        if threads:
            torch.set_num_threads(threads)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        if model is None:
            if weights not in HF_WEIGHT_TYPES:
                raise ValueError(f"weights {weights!r}: the hf backend runs {' | '.join(HF_WEIGHT_TYPES)}")
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if weights == "bf16"
                                                         else pick_dtype(dtype),
                                                         trust_remote_code=trust_remote_code)
            if adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, adapter)
            model.to(self.device)
        self.model = model.eval()
        self.batch_size = batch_size
        if kv_cache not in HF_KV_CACHES:
            raise ValueError(f"kv_cache {kv_cache!r}: the hf backend runs {' | '.join(HF_KV_CACHES)}")
        self.kv_cache = kv_cache  # static: transformers' StaticCache, sized for each batch's prompt + new tokens
        self.stats = {"generated_tokens": 0, "prompt_tokens": 0, "seconds": 0.0}

    @classmethod
    def from_model(cls, model, **kwargs) -> "HFBackend":
        """From a :class:`sdft.models.ResolvedModel`."""
        return cls(str(model.hf_dir), **kwargs)

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
        ids.add(self.tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        import torch

        out: list[Completion | None] = [None] * len(prompts)
        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for i, ids in enumerate(enc):  # past the trained context a model runs on silently, producing junk
            if limit and len(ids) >= limit:
                raise ValueError(f"prompt {i} has {len(ids)} tokens but the model's context is {limit} "
                                 f"(max_position_embeddings); shorten it or raise the cutoff")
        order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
        eos = self._eos_ids()
        t0 = time.perf_counter()
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start:start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [enc[i] or [self.tokenizer.eos_token_id] for i in idx]},
                                       return_tensors="pt").to(self.device)
            kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                          repetition_penalty=params.repetition_penalty)
            if self.kv_cache == "static":
                kwargs["cache_implementation"] = "static"
            if params.greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                torch.manual_seed(params.seed + b)
                kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                              top_k=params.top_k or None)
            with torch.inference_mode():
                gen = self.model.generate(**batch, **kwargs)
            new = gen[:, batch["input_ids"].shape[1]:]
            for row, i in enumerate(idx):
                toks = new[row].tolist()
                hit_eos = next((k for k, t in enumerate(toks) if t in eos), None)
                if hit_eos is not None:
                    toks = toks[:hit_eos]
                text = self.tokenizer.decode(toks, skip_special_tokens=True)
                text, hit_stop = cut_at_stop(text, params.stop)
                finish = "stop" if hit_eos is not None or hit_stop else (
                    "length" if len(toks) >= params.max_new_tokens else "stop")
                out[i] = Completion(text, finish, len(enc[i]), len(toks))
                self.stats["generated_tokens"] += len(toks)
                self.stats["prompt_tokens"] += len(enc[i])
        self.stats["seconds"] += time.perf_counter() - t0
        return out  # type: ignore[return-value]

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Log-probability of each candidate's first token after each prompt: one forward pass per batch
        (left-padded, with the attention mask and positions counted from each row's first real token),
        ``log_softmax`` of the float32 logits at the last position."""
        import torch

        cand = first_token_ids(lambda c: self.tokenizer(c, add_special_tokens=False)["input_ids"], candidates)
        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] or [self.tokenizer.eos_token_id]
               for p in prompts]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for i, ids in enumerate(enc):
            if limit and len(ids) > limit:
                raise ValueError(f"prompt {i} has {len(ids)} tokens but the model's context is {limit}")
        out: list[dict[str, float]] = [{}] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt").to(self.device)
            mask = batch["attention_mask"]
            with torch.inference_mode():
                logits = self.model(input_ids=batch["input_ids"], attention_mask=mask,
                                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1, :]
            lp = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(idx):
                out[i] = {c: float(lp[row, t]) for c, t in zip(candidates, cand)}
        return out

    def close(self) -> None:
        self.model = None
