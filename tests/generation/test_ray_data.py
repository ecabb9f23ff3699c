"""Generation as a Ray Data pipeline (``--executor ray``): the actor pool of our own backends gives the local
backend's rows on the tiny model (greedy); the vLLM processor path is built against Ray's documented API and runs
only where there is a GPU and vLLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdft.config import DistillConfig, EvalConfig

from sdft.options import build
from sdft.generation import executor_options
from sdft.generation.base import Completion, GenerationParams
from sdft.generation.ray_data import RayDataBackend, chunk_jobs, run_job
from sdft.generation.vllm import sampling_kwargs

GSM = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\nThe answer is {2 * i}."} for i in range(7)]


class Echo:
    name = "echo"

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params.seed))
        return [Completion(p[::-1], "stop", 1, 1) for p in prompts]


def test_chunks_and_seeds_are_the_local_loops():
    from sdft.generation import generate_in_chunks

    prompts = [f"p{i}" for i in range(5)]
    params = GenerationParams(seed=7)
    for seeds, per_row in ((None, False), ([10, 11, 12, 13, 14], False), ([10, 11, 12, 13, 14], True)):
        local, remote = Echo(), Echo()
        list(generate_in_chunks(local, prompts, params, 2, seeds, per_row))
        for job in chunk_jobs(prompts, params, 2, seeds, per_row):
            run_job(remote, job, params)
        assert remote.calls == local.calls


def test_options_are_run_only_and_best_of_n_is_refused():
    cfg = build(DistillConfig, {"data": "d", "out": "o", "executor": "ray", "concurrency": 4})
    assert executor_options(cfg) == {"executor": "ray", "ray_address": None, "concurrency": 4}
    assert executor_options(build(EvalConfig, {"out": "o"}))["executor"] == "local"
    with pytest.raises(ValueError, match="best-of-n"):
        executor_options(build(DistillConfig, {"data": "d", "out": "o", "executor": "ray", "num_candidates": 2}))


def test_vllm_processor_rows_and_config_follow_the_documented_api(tokenizer, tmp_path):
    pytest.importorskip("ray.data.llm")
    be = RayDataBackend(lambda: None, inner="vllm", model_dir=str(tmp_path), adapter="/runs/arm/adapter",
                        tokenizer=tokenizer, concurrency=4)
    params = GenerationParams(max_new_tokens=32, temperature=0.95, top_p=0.7, top_k=50, seed=3)
    jobs = chunk_jobs(["Hello there", "", "Two"], params, 2, None, False)
    rows = be.vllm_rows(jobs, params)
    assert [(r["start"], r["j"]) for r in rows] == [(0, 0), (2, 0)]  # the empty prompt is not sent
    assert rows[0]["tokenized_prompt"] == tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    assert rows[0]["sampling_params"]["seed"] == sampling_kwargs(params, 3)["seed"]  # chunk seed + offset
    assert rows[1]["sampling_params"]["seed"] == params.seed + 2 and rows[1]["model"] == "/runs/arm/adapter"
    cfg = be.processor_config()
    assert cfg.model_source == str(tmp_path) and cfg.concurrency == 4
    assert cfg.engine_kwargs["enable_lora"] is True and cfg.engine_kwargs["tensor_parallel_size"] == 1


def _distill_rows(tmp_path, tiny_model_dir, name, **extra):
    from sdft.distillation.distill import distill

    data = tmp_path / "gsm.json"
    data.write_text(json.dumps(GSM))
    cfg = build(DistillConfig, {"data": str(data), "out": str(tmp_path / name), "task": "gsm8k",
                                "model": str(tiny_model_dir), "backend": "hf", "max_new_tokens": 8,
                                "decoding": "greedy", "chunk_size": 2, "batch_size": 2, **extra})
    res = distill(cfg, progress=False, log=lambda m: None)
    rows = [json.loads(line) for line in (Path(cfg.out) / "rows.jsonl").read_text().splitlines()]
    return res, {r["index"]: (r["distilled"], r["finish_reason"], r["completion_tokens"]) for r in rows}


def test_ray_data_actor_pool_distillation_matches_the_local_backend(tmp_path, tiny_model_dir):
    pytest.importorskip("ray")
    _, local = _distill_rows(tmp_path, tiny_model_dir, "local")
    res, remote = _distill_rows(tmp_path, tiny_model_dir, "ray", executor="ray", concurrency=2)
    assert remote == local and len(remote) == len(GSM)
    assert res.manifest["backend"] == "ray-data+hf"
    import ray

    assert not ray.is_initialized()  # the local cluster it started is stopped again


def test_vllm_processor_path_on_a_gpu(tmp_path, tiny_model_dir):
    """Runs only with a CUDA GPU, vLLM and ray[data] (not on this project's machines)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    pytest.importorskip("vllm")
    pytest.importorskip("ray.data.llm")
    _, local = _distill_rows(tmp_path, tiny_model_dir, "local-vllm", backend="vllm")
    _, remote = _distill_rows(tmp_path, tiny_model_dir, "ray-vllm", backend="vllm", executor="ray")
    assert set(remote) == set(local)
    assert sum(remote[i] == local[i] for i in local) >= len(local) - 1  # greedy; GPU kernels are not bit-exact
