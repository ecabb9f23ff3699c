"""Generation at scale: any backend as a Ray Data pipeline (``--executor ray``; ``pip install sdft[ray]``).

:class:`RayDataBackend` keeps the :class:`~sdft.generation.base.Backend` protocol, so ``sdft distill`` and ``sdft
eval`` still write their rows to the same resumable ``rows.jsonl`` / ``generations.jsonl`` chunk by chunk, and the
task checks and the scoring stay where they are. Only where the tokens are made changes:

- **vLLM's processor** (``--backend vllm``, a GPU cluster): :func:`ray.data.llm.build_processor` with a
  :class:`ray.data.llm.vLLMEngineProcessorConfig` (``concurrency`` engines, each ``tensor_parallel_size`` GPUs).
  Rows carry the prompt's token ids (our tokenizer, no special tokens added: the ids every other backend sees),
  their sampling parameters (:func:`sdft.generation.vllm.sampling_kwargs`, the same per-prompt seeds as the vllm
  backend) and, for an adapter, ``model``: the LoRA folder, loaded per request by the engine (``enable_lora``),
  so many arms can share one base model's engines. Written against Ray's documented API; **not run here** (no
  GPU on this project's machines): see docs/scaling-out.md.
- **An actor pool of our own backends** (every other backend, CPU or GPU): ``ds.map_batches(GeneratorActor,
  compute=ActorPoolStrategy(size=concurrency), batch_size=1)``; one dataset row is one chunk of prompts, which
  an actor generates with exactly the call the local loop would make (same prompts, same seed), so greedy and
  seeded sampling give the local backend's results.

Chunks come back as they finish (not in prompt order; callers key rows by ``start``). Ray is imported only when
a pipeline runs; a local cluster is started when none is running (and stopped by :meth:`RayDataBackend.close`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sdft.generation.base import Completion, GenerationParams, cut_at_stop

GPU_BACKENDS = ("hf", "vllm")  # backends that use a GPU when the actor has one


def chunk_jobs(prompts: Sequence[str], params: GenerationParams, chunk_size: int, seeds: Sequence[int] | None,
               per_row: bool) -> list[dict[str, Any]]:
    """The chunks :func:`sdft.generation.generate_in_chunks` would make, with the seed(s) it would use."""
    jobs = []
    for start in range(0, len(prompts), chunk_size):
        chunk = list(prompts[start:start + chunk_size])
        if per_row:
            row_seeds = list(seeds[start:start + len(chunk)]) if seeds is not None else \
                list(range(params.seed + start, params.seed + start + len(chunk)))
            jobs.append({"start": start, "prompts": chunk, "seed": None, "row_seeds": row_seeds})
        else:
            jobs.append({"start": start, "prompts": chunk, "seed": seeds[start] if seeds is not None
                         else params.seed + start, "row_seeds": None})
    return jobs


def run_job(backend: Any, job: dict[str, Any], params: GenerationParams) -> list[Completion]:
    """One chunk, generated as the local loop does it (one call, or one call per row in per-row mode)."""
    if job["row_seeds"] is not None:
        return [c for p, s in zip(job["prompts"], job["row_seeds"]) for c in backend.generate([p], params.with_seed(s))]
    return list(backend.generate(job["prompts"], params.with_seed(job["seed"])))


def params_from(d: dict[str, Any]) -> GenerationParams:
    return GenerationParams(**{**d, "stop": tuple(d.get("stop") or ())})


class GeneratorActor:
    """A Ray Data actor holding one of our backends (built once per actor by ``factory``)."""

    def __init__(self, factory: Callable[[], Any]):
        self.backend = factory()

    def __call__(self, batch: dict, params: dict) -> dict:
        import numpy as np

        gp = params_from(params)
        starts, results = [], []
        for start, raw in zip(batch["start"], batch["job"]):
            t0 = time.perf_counter()
            comps = run_job(self.backend, json.loads(raw), gp)
            starts.append(int(start))
            results.append(json.dumps({"seconds": time.perf_counter() - t0, "completions": [
                [c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens] for c in comps]}))
        return {"start": np.array(starts), "result": np.array(results, dtype=object)}


def _env(name: str, cast: Callable[[str], Any], default: Any) -> Any:
    raw = os.environ.get(f"SDFT_VLLM_{name}")
    return cast(raw) if raw else default


class RayDataBackend:
    """A backend whose chunks run on a Ray cluster; ``factory()`` builds the wrapped backend inside each actor."""

    def __init__(self, factory: Callable[[], Any], *, inner: str, model_dir: str | None = None,
                 adapter: str | None = None, tokenizer: Any = None, address: str | None = None,
                 concurrency: int | None = None, threads: int | None = None, trust_remote_code: bool = False,
                 log: Callable[[str], None] = print):
        self.factory, self.inner, self.model_dir, self.adapter = factory, inner, model_dir, adapter
        self.tokenizer, self.address, self.concurrency, self.threads = tokenizer, address, concurrency, threads
        self.trust_remote_code, self.log = trust_remote_code, log
        self.name = f"ray-data+{inner}"
        self.started = False
        self.stats = {"generated_tokens": 0, "prompt_tokens": 0, "seconds": 0.0}

    # ---- cluster -------------------------------------------------------------------------------------------
    def _ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=True)
            else:
                ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, object_store_memory=1 << 30)
            self.started = True
        return ray

    def _gpus(self, ray: Any) -> float:
        return float(ray.cluster_resources().get("GPU", 0))

    # ---- the Backend protocol ------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        """One batch, as one chunk (one actor, or the vLLM engines), returned in prompt order."""
        if not prompts:
            return []
        ((_, comps, _),) = list(self.generate_chunks(prompts, params, len(prompts), [params.seed]))
        return comps

    def generate_chunks(self, prompts: Sequence[str], params: GenerationParams, chunk_size: int,
                        seeds: Sequence[int] | None = None, per_row: bool = False
                        ) -> Iterator[tuple[int, list[Completion], float]]:
        """``(start, completions, seconds)`` per chunk as chunks finish (what ``generate_in_chunks`` yields)."""
        jobs = chunk_jobs(prompts, params, chunk_size, seeds, per_row)
        if not jobs:
            return
        ray = self._ray()
        run = self._vllm if self.inner == "vllm" else self._actors
        t_last = time.perf_counter()
        for start, comps in run(ray, jobs, params):
            now = time.perf_counter()
            self.stats["seconds"] += now - t_last
            self.stats["generated_tokens"] += sum(c.completion_tokens for c in comps)
            self.stats["prompt_tokens"] += sum(c.prompt_tokens for c in comps)
            yield start, comps, now - t_last
            t_last = time.perf_counter()

    def _actors(self, ray: Any, jobs: list[dict], params: GenerationParams) -> Iterator[tuple[int, list]]:
        gpus = 1.0 if self.inner in GPU_BACKENDS and self._gpus(ray) > 0 else 0.0
        size = self.concurrency or (max(1, int(self._gpus(ray))) if gpus else 1)
        size = min(size, len(jobs))
        ds = ray.data.from_items([{"start": j["start"], "job": json.dumps(j)} for j in jobs],
                                 override_num_blocks=len(jobs))
        ds = ds.map_batches(GeneratorActor, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=size),
                            fn_constructor_kwargs={"factory": self.factory}, fn_kwargs={"params": params.to_dict()},
                            num_cpus=float(self.threads or 1), num_gpus=gpus)
        for row in ds.iter_rows():
            res = json.loads(row["result"])
            yield int(row["start"]), [Completion(t, f, int(p), int(n)) for t, f, p, n in res["completions"]]

    # ---- vLLM's Ray Data processor (GPU clusters) ----------------------------------------------------------
    def processor_config(self) -> Any:
        """The :class:`ray.data.llm.vLLMEngineProcessorConfig` of this backend (the documented API)."""
        from ray.data.llm import vLLMEngineProcessorConfig

        engine = {"tensor_parallel_size": _env("TENSOR_PARALLEL_SIZE", int, 1),
                  "gpu_memory_utilization": _env("GPU_MEMORY_UTILIZATION", float, 0.9),
                  "dtype": _env("DTYPE", str, "auto"), "trust_remote_code": self.trust_remote_code,
                  "enable_lora": bool(self.adapter)}
        if self.adapter:
            engine["max_lora_rank"] = 64
        max_len = _env("MAX_MODEL_LEN", int, None)
        if max_len:
            engine["max_model_len"] = max_len
        return vLLMEngineProcessorConfig(model_source=str(self.model_dir), engine_kwargs=engine,
                                         concurrency=self.concurrency or 1, batch_size=64,
                                         chat_template_stage=False, tokenize_stage=False, detokenize_stage=False)

    def vllm_rows(self, jobs: list[dict], params: GenerationParams) -> list[dict[str, Any]]:
        """One processor row per non-empty prompt: token ids, per-prompt sampling parameters, the adapter."""
        from sdft.generation.vllm import sampling_kwargs

        tok = self._tokenizer()
        rows = []
        for job in jobs:
            for j, p in enumerate(job["prompts"]):
                ids = tok(p, add_special_tokens=False)["input_ids"] if p else []
                if not ids:
                    continue
                seed = job["row_seeds"][j] if job["row_seeds"] is not None else job["seed"] + j
                sp = {k: v for k, v in sampling_kwargs(params, seed).items() if v is not None}
                row = {"start": job["start"], "j": j, "tokenized_prompt": ids, "sampling_params": sp}
                if self.adapter:
                    row["model"] = str(self.adapter)  # a LoRA request: the folder is read by every engine
                rows.append(row)
        return rows

    def _vllm(self, ray: Any, jobs: list[dict], params: GenerationParams) -> Iterator[tuple[int, list]]:
        import ray.data.llm as llm

        build = getattr(llm, "build_processor", None) or llm.build_llm_processor  # the name before Ray 2.5x
        processor = build(self.processor_config(), postprocess=_vllm_out)
        want = {job["start"]: len(job["prompts"]) for job in jobs}
        got: dict[int, dict[int, Completion]] = {s: {} for s in want}
        eos = self._eos_ids()
        for job in jobs:  # empty prompts get an empty completion, as with the vllm backend
            got[job["start"]].update({j: Completion("", "stop") for j, p in enumerate(job["prompts"]) if not p})
        rows = self.vllm_rows(jobs, params)
        n_prompt = {(r["start"], r["j"]): len(r["tokenized_prompt"]) for r in rows}
        if rows:
            for row in processor(ray.data.from_items(rows)).iter_rows():
                s, j = int(row["start"]), int(row["j"])
                got[s][j] = _completion(row, params, eos, n_prompt[(s, j)])
                if len(got[s]) == want[s]:
                    yield s, [got[s][k] for k in range(want[s])]
        for s, n in want.items():  # chunks of empty prompts only
            if len(got[s]) == n and not any((s, j) in n_prompt for j in range(n)):
                yield s, [got[s][k] for k in range(n)]

    def _tokenizer(self) -> Any:
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir),
                                                           trust_remote_code=self.trust_remote_code)
        return self.tokenizer

    def _eos_ids(self) -> set[int]:
        ids = {self._tokenizer().eos_token_id}
        gen = Path(str(self.model_dir)) / "generation_config.json"
        if gen.exists():
            e = json.loads(gen.read_text()).get("eos_token_id")
            ids.update(e if isinstance(e, list) else [e])
        return {i for i in ids if i is not None}

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def _vllm_out(row: dict) -> dict:
    """The processor's postprocess: keep our keys and what the engine made."""
    toks = list(row.get("generated_tokens") or [])
    return {"start": row["start"], "j": row["j"], "text": row.get("generated_text") or "",
            "n": int(row.get("num_generated_tokens") or len(toks)), "last": int(toks[-1]) if toks else -1}


def _completion(row: dict, params: GenerationParams, eos: set[int], prompt_tokens: int) -> Completion:
    """A :class:`Completion` from a processor row: the processor reports no finish reason, so it is read from the
    tokens (ended on an end-of-sequence token, or reached ``max_new_tokens``), as the vllm backend counts them."""
    text, hit = cut_at_stop(row["text"], params.stop)
    n = int(row["n"])
    if n and int(row["last"]) in eos:
        return Completion(text, "stop", prompt_tokens, n - 1)
    return Completion(text, "length" if n >= params.max_new_tokens and not hit else "stop", prompt_tokens, n)
