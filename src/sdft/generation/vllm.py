"""vLLM backend: offline batched generation with ``vllm.LLM`` on one or more GPUs (``pip install -e .[vllm]``).

Imported only when chosen (``--backend vllm``, or ``auto`` on a machine with a CUDA GPU and vLLM installed).

**Prompts.** Each full raw text (chat template and pre-fill included) is tokenized with the model's own
tokenizer without adding special tokens (the ids HF gets with ``add_special_tokens=False``) and sent as a
``TokensPrompt``, so vLLM continues exactly the same ids as the other backends and never adds a BOS of its own.
An empty prompt is not sent: it gets an empty ``stop`` completion (as with the llamacpp backend). A prompt that
does not fit ``max_model_len`` (prompt + at least one new token) raises a ``ValueError`` naming it before
anything is generated.

**Decoding** (:class:`~sdft.generation.base.GenerationParams` -> ``SamplingParams``, one per prompt):
``max_new_tokens`` -> ``max_tokens``; greedy is ``temperature 0``; ``top_k`` 0 -> -1 (off); ``min_p 0``;
``repetition_penalty`` (HF's formula, over prompt and output); ``seed``: prompt ``i`` gets ``params.seed + i``
(a per-request generator, so a result does not depend on its batch neighbours' random draws); ``stop`` strings
are excluded from the text, which is cut again with :func:`~sdft.generation.base.cut_at_stop`.
``finish_reason`` is vLLM's (``length`` or ``stop``); ``completion_tokens`` excludes the end-of-sequence token
(as HF) when generation ended on one. GPU kernels and batch shapes make greedy output reproducible in practice
but not bit-exact across batch compositions.

**Tensor parallelism.** ``tensor_parallel_size=N`` shards every layer's weights over N GPUs of one node
(vLLM starts one worker per GPU and all-reduces activations each layer): use it when the model does not fit one
GPU, or to lower latency; for throughput on a model that fits one GPU, N independent runs on disjoint
``CUDA_VISIBLE_DEVICES`` with ``--shard i/N`` (then ``sdft merge``) scale better. N must divide the model's
number of attention heads. ``gpu_memory_utilization`` (default 0.9) is the share of each GPU's memory vLLM may
take for weights and KV cache; lower it when other processes share the GPUs. ``dtype`` is passed to vLLM
(``auto``: the checkpoint's, bfloat16/float16). ``max_model_len`` caps the context (and the KV cache needed).
``sdft distill``/``sdft eval`` have no vLLM options: from the command line these settings come from the
environment, ``SDFT_VLLM_TENSOR_PARALLEL_SIZE``, ``SDFT_VLLM_GPU_MEMORY_UTILIZATION``, ``SDFT_VLLM_DTYPE`` and
``SDFT_VLLM_MAX_MODEL_LEN`` (keyword arguments win); they do not enter run fingerprints.

**Adapters.** A PEFT LoRA folder is applied per request (``enable_lora``); its rank must be at most
``max_lora_rank`` (default 64).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from sdft.generation.base import NO_LOGPROB, Completion, GenerationParams, cut_at_stop, first_token_ids


def sampling_kwargs(params: GenerationParams, seed: int) -> dict:
    """``vllm.SamplingParams`` keyword arguments for one prompt (kept separate so it is testable without vLLM)."""
    kw = dict(n=1, max_tokens=params.max_new_tokens, seed=seed, stop=[s for s in params.stop if s] or None,
              repetition_penalty=params.repetition_penalty, min_p=0.0, skip_special_tokens=True,
              include_stop_str_in_output=False)
    if params.greedy:
        kw.update(temperature=0.0, top_p=1.0, top_k=-1)
    else:
        kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k if params.top_k > 0 else -1)
    return kw


def _setting(value: Any, env: str, cast: Callable[[str], Any], default: Any) -> Any:
    """The keyword argument when given, else ``$SDFT_VLLM_<env>``, else ``default``."""
    if value is not None:
        return value
    raw = os.environ.get(f"SDFT_VLLM_{env}")
    if not raw:
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"SDFT_VLLM_{env}={raw!r} is not a valid value") from None


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_dir: str, *, adapter: str | None = None, tensor_parallel_size: int | None = None,
                 gpu_memory_utilization: float | None = None, dtype: str | None = None,
                 max_model_len: int | None = None, max_lora_rank: int = 64, trust_remote_code: bool = False,
                 enforce_eager: bool = False, **_):
        tensor_parallel_size = _setting(tensor_parallel_size, "TENSOR_PARALLEL_SIZE", int, 1)
        gpu_memory_utilization = _setting(gpu_memory_utilization, "GPU_MEMORY_UTILIZATION", float, 0.9)
        dtype = _setting(dtype, "DTYPE", str, "auto")
        max_model_len = _setting(max_model_len, "MAX_MODEL_LEN", int, None)
        try:
            from vllm import LLM
        except ImportError as e:
            raise ValueError(f"backend 'vllm' is not usable here: {e} (install it with pip install -e '.[vllm]'; "
                             "it needs a CUDA GPU)") from None
        kwargs = dict(model=str(model_dir), tokenizer=str(model_dir), tensor_parallel_size=int(tensor_parallel_size),
                      gpu_memory_utilization=float(gpu_memory_utilization), dtype=dtype,
                      trust_remote_code=trust_remote_code, enforce_eager=enforce_eager)
        if max_model_len:
            kwargs["max_model_len"] = int(max_model_len)
        if adapter:
            kwargs.update(enable_lora=True, max_lora_rank=int(max_lora_rank))
        self.llm = LLM(**kwargs)
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("sdft-adapter", 1, str(adapter))
        self.tokenizer = self.llm.get_tokenizer()
        config = getattr(self.llm.llm_engine, "model_config", None)
        self.max_model_len = int(getattr(config, "max_model_len", 0) or max_model_len or 0) or None
        self.stats = {"generated_tokens": 0, "prompt_tokens": 0, "seconds": 0.0}

    @classmethod
    def from_model(cls, model, **kwargs) -> "VLLMBackend":
        """From a :class:`sdft.models.ResolvedModel` (its HF folder)."""
        return cls(str(model.hf_dir), **kwargs)

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] if p else [] for p in prompts]
        for i, ids in enumerate(enc):
            if self.max_model_len and len(ids) >= self.max_model_len:
                raise ValueError(f"prompt {i} has {len(ids)} tokens but vLLM's max_model_len is {self.max_model_len}; "
                                 "raise max_model_len or shorten the prompt")
        todo = [i for i, ids in enumerate(enc) if ids]
        out: list[Completion] = [Completion("", "stop", 0, 0)] * len(prompts)  # empty prompts stay empty
        t0 = time.perf_counter()
        results = self.llm.generate([TokensPrompt(prompt_token_ids=enc[i]) for i in todo],
                                    [SamplingParams(**sampling_kwargs(params, params.seed + i)) for i in todo],
                                    use_tqdm=False, lora_request=self.lora) if todo else []
        for i, res in zip(todo, results):
            o = res.outputs[0]
            text, hit = cut_at_stop(o.text, params.stop)
            n = len(o.token_ids)
            if o.finish_reason == "stop" and o.stop_reason is None and n:  # ended on an end-of-sequence token
                n -= 1
            finish = "stop" if hit or o.finish_reason != "length" else "length"
            out[i] = Completion(text, finish, len(enc[i]), n)
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["generated_tokens"] += sum(c.completion_tokens for c in out)
        self.stats["prompt_tokens"] += sum(c.prompt_tokens for c in out)
        return out

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str],
                            top_k: int = 20) -> list[dict[str, float]]:
        """Log-probability of each candidate's first token after each prompt: a one-token greedy generation with
        ``SamplingParams(logprobs=top_k)`` (vLLM's top-k log-probs of the raw distribution; capped by the
        engine's ``max_logprobs``, 20 by default). A candidate outside the top-k gets ``-inf``."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        cand = first_token_ids(lambda c: self.tokenizer(c, add_special_tokens=False)["input_ids"], candidates)
        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] if p else [] for p in prompts]
        for i, ids in enumerate(enc):
            if not ids:
                raise ValueError(f"prompt {i} is empty: there is no position to read log-probabilities at")
            if self.max_model_len and len(ids) >= self.max_model_len:
                raise ValueError(f"prompt {i} has {len(ids)} tokens but vLLM's max_model_len is {self.max_model_len}")
        params = SamplingParams(n=1, max_tokens=1, temperature=0.0, logprobs=top_k)
        results = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in enc], params, use_tqdm=False,
                                    lora_request=self.lora) if enc else []
        out = []
        for res in results:
            lp = res.outputs[0].logprobs[0]  # token id -> Logprob at the first generated position
            out.append({c: float(lp[t].logprob) if t in lp else NO_LOGPROB for c, t in zip(candidates, cand)})
        return out

    def close(self) -> None:
        self.llm = None
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
