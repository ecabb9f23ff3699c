"""The ``openai`` backend against a real OpenAI-compatible server: llama.cpp's HTTP server (xllamacpp, in this
process, on a local port) serving the embedded SmolLM2 GGUF and requiring an API key. The error paths (503 then
200, a 400, an unreachable or silent server) use a small scripted stdlib server."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from pathlib import Path

import pytest

from server_helpers import ScriptedServer, completion_json, free_port, llama_server, smollm2_model
from sdft.generation import GenerationParams, make_backend
from sdft.generation.openai_compat import OpenAICompatBackend, ServerError, normalize_base_url

KEY = "sk-sdft-test-" + secrets.token_hex(8)  # unguessable: any occurrence in a file or log is a leak


def chat(question: str, prefill: str = "") -> str:
    return ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{prefill}")


PROMPTS = [chat("Explain photosynthesis in one sentence."), chat("List three colors.")]
GREEDY = GenerationParams(max_new_tokens=16)


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_model()


@pytest.fixture(scope="module")
def server(smollm2):
    s = llama_server(smollm2.gguf, parallel=2, n_ctx=1024, api_keys=(KEY,))
    yield s
    del s


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("key") / "api-key.txt"
    p.write_text(KEY + "\n")
    return p


@pytest.fixture(scope="module")
def backend(server, smollm2, key_file):
    b = make_backend("openai", smollm2, base_url=server.listening_address, api_key_file=str(key_file),
                     batch_size=2, max_retries=1)
    yield b
    b.close()


# ------------------------------------------------------------------------------------------- the real server
def test_served_model_is_found_and_prompts_are_sent_as_raw_text(backend, server, smollm2):
    from transformers import AutoTokenizer

    assert backend.base_url == server.listening_address + "/v1"
    assert backend.model.endswith("model.gguf")  # the one model /v1/models lists (not the local alias)
    assert backend.concurrency == 2  # from --batch-size
    tok = AutoTokenizer.from_pretrained(smollm2.hf_dir)
    out = backend.generate(PROMPTS, GREEDY)
    assert [c.prompt_tokens for c in out] == [len(tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
    assert all(c.text.strip() and 0 < c.completion_tokens <= 16 for c in out)
    assert "<|im_start|>" not in out[0].text and out[0].text.startswith("Photosynthesis")


def test_same_greedy_text_as_the_in_process_llamacpp_backend(backend, smollm2):
    """One prompt at a time: with several in flight, which tokens share a micro-batch depends on timing, and
    llama.cpp's kernels are not bit-identical across batch shapes (a near-tie in "List three colors." flips)."""
    from sdft.generation.llamacpp import LlamaCppBackend

    ref = LlamaCppBackend(smollm2.gguf, parallel=2, n_ctx=1024, threads=1)
    try:
        for p in PROMPTS:
            assert backend.generate([p], GREEDY)[0].text == ref.generate([p], GREEDY)[0].text
    finally:
        ref.close()


def test_prefill_is_continued_not_restarted(backend):
    prefill = "Great! Let's think step by step. "
    got = backend.generate([chat("Tom has 3 apples and buys 5 more. How many apples does he have?", prefill)],
                           GREEDY)[0]
    assert got.text.strip() and not got.text.lstrip().startswith("Great")
    assert "step by step" not in got.text and "<|im_start|>" not in got.text


def test_seeds_are_per_position(backend):
    p = chat("Tell me a story.")
    s = GenerationParams(max_new_tokens=12, temperature=1.0, seed=5)
    a = backend.generate([p, p], s)
    assert backend.generate([p, p], s) == a
    assert a[0].text != a[1].text
    assert backend.generate([p], s.with_seed(6))[0].text == a[1].text


def test_too_long_prompt_is_a_clear_error(backend):
    with pytest.raises(ServerError, match=r"/v1/completions \(prompt 1\): HTTP 400: .*exceeds the available context"):
        backend.generate([PROMPTS[0], "word " * 3000], GREEDY)


def test_api_key_from_environment_variable(server, monkeypatch):
    monkeypatch.setenv("SDFT_TEST_API_KEY", KEY)
    b = OpenAICompatBackend(server.listening_address, api_key_env="SDFT_TEST_API_KEY")
    assert b.generate([PROMPTS[1]], GenerationParams(max_new_tokens=4))[0].completion_tokens > 0


def test_missing_or_wrong_key_is_refused_without_echoing_it(server, monkeypatch, tmp_path):
    url = server.listening_address
    monkeypatch.delenv("SDFT_UNSET_KEY", raising=False)
    with pytest.raises(ServerError, match=rf"{url}/v1/models refused the API key \(HTTP 401.*\$SDFT_UNSET_KEY"):
        OpenAICompatBackend(url, api_key_env="SDFT_UNSET_KEY")
    wrong = tmp_path / "wrong"
    wrong.write_text("sk-wrong-key-123")
    with pytest.raises(ServerError) as e:
        OpenAICompatBackend(url, api_key_file=str(wrong), model="m").generate([PROMPTS[1]], GREEDY)  # no probe
    assert e.value.status == 401 and "sk-wrong-key-123" not in str(e.value)


def test_key_absent_from_repr_identity_and_logs(backend, key_file, caplog):
    assert KEY not in repr(backend) and "api_key=set" in repr(backend)
    assert KEY not in json.dumps(backend.identity())
    with ScriptedServer([(503, {"error": {"message": "busy"}}), (200, completion_json("ok"))]) as srv, \
            caplog.at_level(logging.DEBUG):
        b = OpenAICompatBackend(srv.url, model="scripted", api_key_file=str(key_file), backoff=0.01)
        assert b.generate(["hi"], GREEDY)[0].text == "ok"
    assert [r["headers"]["Authorization"] for r in srv.requests] == [f"Bearer {KEY}"] * 2  # sent, each time
    assert "retry 1/5" in caplog.text and KEY not in caplog.text


def _leaks(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and KEY in p.read_text(errors="replace")]


def test_eval_and_distill_through_the_server_record_no_key(server, key_file, tmp_path):
    """The CLI's config fields reach the backend (``make_backend`` in evaluate/distill); outputs hold no key."""
    from sdft.config import DistillConfig, EvalConfig
    from sdft.distillation.distill import distill
    from sdft.evaluation.evaluate import evaluate

    url = server.listening_address
    res = evaluate(EvalConfig(out=str(tmp_path / "eval"), tasks=("gsm8k",), model="smollm2-135m", backend="openai",
                              base_url=url, api_key_file=str(key_file), limit=2, max_new_tokens=8, batch_size=2),
                   progress=False, log=lambda *_: None)
    assert res[0]["n"] == 2 and res[0]["backend"] == "openai"
    fp = json.loads((tmp_path / "eval" / "config.json").read_text())["fingerprint"]
    assert "base_url" not in fp and "api_key_file" not in fp and "api_model" not in fp

    data = tmp_path / "gsm.json"
    data.write_text(json.dumps([{"question": "What is 6 times 7?", "answer": "6*7=42\n#### 42"}]))
    r = distill(DistillConfig(data=str(data), out=str(tmp_path / "distill"), task="gsm8k", model="smollm2-135m",
                              backend="openai", base_url=url, api_key_file=str(key_file), max_new_tokens=8,
                              batch_size=2), progress=False, log=lambda *_: None)
    assert r.summary["rows"] == 1 and r.manifest["backend"] == "openai"
    assert r.manifest["config"]["api_key_file"] == str(key_file)  # where the key is, never the key
    assert _leaks(tmp_path) == []


# ------------------------------------------------------------------------------------------ error paths
def test_retries_503_then_succeeds():
    with ScriptedServer([(503, {"error": "loading"}), (503, {"error": "loading"}),
                         (200, completion_json("hello", "length", 4, 16))]) as srv:
        b = OpenAICompatBackend(srv.url, backoff=0.01)  # model name from /v1/models
        assert b.model == "scripted"
        got = b.generate(["hi"], GREEDY)[0]
    assert (got.text, got.finish_reason, got.prompt_tokens, got.completion_tokens) == ("hello", "length", 4, 16)
    assert len(srv.requests) == 3 and b.stats["retries"] == 2


def test_gives_up_after_max_retries_naming_the_url():
    with ScriptedServer([(500, {"error": {"message": "internal"}})]) as srv:
        b = OpenAICompatBackend(srv.url, model="m", max_retries=2, backoff=0.01)
        with pytest.raises(ServerError, match=rf"{srv.url}/completions \(prompt 0\): HTTP 500: internal after 3 attempts"):
            b.generate(["hi"], GREEDY)
    assert len(srv.requests) == 3


def test_client_error_is_not_retried():
    with ScriptedServer([(400, {"error": {"message": "bad prompt"}})]) as srv:
        b = OpenAICompatBackend(srv.url, model="m", backoff=0.01)
        with pytest.raises(ServerError, match=r"HTTP 400: bad prompt$"):
            b.generate(["hi"], GREEDY)
    assert len(srv.requests) == 1


def test_unreachable_server_fails_fast_with_the_url():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(ServerError, match=rf"cannot reach the OpenAI-compatible server at {url}/v1/models after 3"):
        OpenAICompatBackend(url, max_retries=2, backoff=0.01)
    assert time.perf_counter() - t0 < 5


def test_silent_server_times_out_instead_of_hanging():
    with socket.socket() as s:  # accepts connections (the kernel's backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.perf_counter()
        with pytest.raises(ServerError, match=rf"cannot reach .* at {url}/v1/models after 2 attempt"):
            OpenAICompatBackend(url, max_retries=1, backoff=0.01, timeout=0.3)
        assert time.perf_counter() - t0 < 5


def test_request_mapping_seeds_order_and_local_stop_cut():
    """Request ``i`` carries ``seed + i``; answers come back in prompt order even when the server is slow on the
    first; a stop string the server ignored is still cut locally."""

    def answer(body):
        if body["prompt"] == "slow":
            time.sleep(0.3)
        return 200, completion_json(f"{body['prompt']}|seed={body['seed']} STOP tail", "length")

    params = GenerationParams(max_new_tokens=16, temperature=0.7, top_p=0.9, top_k=0, seed=100, stop=("", "STOP"))
    with ScriptedServer([answer]) as srv:
        b = OpenAICompatBackend(srv.url, model="m", concurrency=3)
        out = b.generate(["slow", "b", "", "d"], params)
    assert [c.text for c in out] == ["slow|seed=100 ", "b|seed=101 ", "", "d|seed=103 "]
    assert [c.finish_reason for c in out] == ["stop"] * 4  # the stop string was found
    assert out[2].prompt_tokens == 0 and len(srv.requests) == 3  # an empty prompt is not sent
    body = srv.requests[0]["body"]
    assert body["model"] == "m" and body["max_tokens"] == 16 and body["stop"] == ["STOP"]
    assert (body["temperature"], body["top_p"], body["top_k"], body["min_p"]) == (0.7, 0.9, -1, 0.0)
    assert "repetition_penalty" not in body and body["add_special_tokens"] is False


def test_request_body_greedy_penalty_and_extra_body():
    b = OpenAICompatBackend("http://127.0.0.1:9", model="m", extra_body={"add_special_tokens": None, "x": 1})
    greedy = b.request_body("p", GenerationParams(max_new_tokens=5, repetition_penalty=1.3), seed=7)
    assert greedy["temperature"] == 0.0 and "top_k" not in greedy and greedy["seed"] == 7
    assert greedy["repetition_penalty"] == greedy["repeat_penalty"] == 1.3
    assert "add_special_tokens" not in greedy and greedy["x"] == 1 and "stop" not in greedy
    assert b.request_body("p", GenerationParams(temperature=1.0, top_k=50), 0)["top_k"] == 50


def test_base_url_and_from_model_checks():
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert normalize_base_url("https://h/openai/v1") == "https://h/openai/v1"
    with pytest.raises(ValueError, match="expected http"):
        normalize_base_url("h:8000")
    with pytest.raises(ValueError, match="needs --base-url"):
        make_backend("openai", None)
    with pytest.raises(ValueError, match="--lora-modules NAME=PATH.*--api-model"):
        make_backend("openai", None, base_url="http://h:1", adapter="runs/adapter")
    with pytest.raises(FileNotFoundError, match="API key file not found"):
        OpenAICompatBackend("http://h:1", model="m", api_key_file="/nonexistent/key")


def test_several_served_models_need_api_model():
    with ScriptedServer([(200, completion_json("x"))], models=("a", "local")) as srv:
        assert OpenAICompatBackend(srv.url, fallback_model="local").model == "local"  # the local name, if served
        with pytest.raises(ValueError, match="serves a, local; choose one with --api-model"):
            OpenAICompatBackend(srv.url, fallback_model="other")
        assert OpenAICompatBackend(srv.url, model="a").model == "a"


def test_cli_has_the_server_options():
    from typer.testing import CliRunner

    from sdft.cli import app

    for cmd in ("distill", "eval"):
        text = CliRunner().invoke(app, [cmd, "--help"], env={"COLUMNS": "200"}).output
        for opt in ("--base-url", "--api-model", "--api-key-env", "--api-key-file"):
            assert opt in text, (cmd, opt)
