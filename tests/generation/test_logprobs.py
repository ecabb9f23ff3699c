"""``next_token_logprobs`` on every backend that can run here: hf (tiny random Llama) against a hand computation,
llama.cpp (SmolLM2 GGUF) exact also for tokens outside the first top-k, the OpenAI-compatible backend against a
real llama.cpp server and scripted servers in both response formats; vLLM only with a GPU."""

from __future__ import annotations

import importlib.util
import math

import pytest

from server_helpers import ScriptedServer, llama_server, smollm2_model
from sdft.generation.base import first_token_ids
from sdft.generation.openai_compat import OpenAICompatBackend, ServerError, top_logprobs

PROMPTS = ["Which is best, Output (a) or Output (b)? Answer: Output (", "Hi there. Output ("]


def test_first_token_ids_must_be_distinct():
    enc = {"a": [5], "b": [6, 7], "ab": [5, 6]}.__getitem__
    assert first_token_ids(enc, ["a", "b"]) == [5, 6]
    with pytest.raises(ValueError, match="distinct"):
        first_token_ids(enc, ["a", "ab"])
    with pytest.raises(ValueError, match="no tokens"):
        first_token_ids(enc, [""])


def test_hf_equals_an_unpadded_forward_pass(tiny_model_dir, tokenizer):
    import torch

    from sdft.generation.hf import HFBackend

    be = HFBackend(str(tiny_model_dir), batch_size=2, device="cpu")
    got = be.next_token_logprobs(PROMPTS, ["a", "b"])  # one batch: the shorter prompt is left-padded
    for prompt, lp in zip(PROMPTS, got):
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            ref = torch.log_softmax(be.model(ids).logits[0, -1].float(), -1)
        for c in ("a", "b"):
            assert lp[c] == pytest.approx(float(ref[tokenizer(c, add_special_tokens=False)["input_ids"][0]]),
                                          abs=1e-4)
    be.close()


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_model()


def test_llamacpp_is_exact_outside_the_top_k(smollm2):
    from sdft.generation import llamacpp
    from sdft.generation.llamacpp import LlamaCppBackend

    be = LlamaCppBackend(smollm2.gguf, parallel=1, n_ctx=1024, threads=1)
    common = be.next_token_logprobs(PROMPTS[:1], ["a", "b"])[0]
    rare = be.next_token_logprobs(PROMPTS[:1], ["a", "zebra"])[0]  # " zebra"'s first token is far down the list
    assert common["a"] > common["b"] > -20 and math.isfinite(rare["zebra"]) and rare["zebra"] < common["b"]
    assert rare["a"] == pytest.approx(common["a"], abs=1e-6)
    old = llamacpp.LOGPROB_TOP_K
    try:  # with a top-1 first request, "b" needs the whole-vocabulary retry and still comes out the same
        llamacpp.LOGPROB_TOP_K = 1
        assert be.next_token_logprobs(PROMPTS[:1], ["a", "b"])[0]["b"] == pytest.approx(common["b"], abs=1e-6)
    finally:
        llamacpp.LOGPROB_TOP_K = old
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        be.next_token_logprobs([""], ["a", "b"])
    be.close()


def test_openai_backend_matches_llamacpp_through_a_real_server(smollm2):
    from sdft.generation.llamacpp import LlamaCppBackend

    server = llama_server(smollm2.gguf, parallel=1, n_ctx=1024)
    be = OpenAICompatBackend(server.listening_address, concurrency=1, max_retries=1)
    via_http = be.next_token_logprobs(PROMPTS, ["a", "b"])
    local = LlamaCppBackend(smollm2.gguf, parallel=1, n_ctx=1024, threads=1)
    in_process = local.next_token_logprobs(PROMPTS, ["a", "b"])
    assert all(math.isfinite(v) for v in via_http[0].values())  # both verdict letters are in the top 20 here
    for h, p in zip(via_http, in_process):
        for c in ("a", "b"):  # the server lists its top 20 only: a token below them is -inf (documented)
            assert h[c] == pytest.approx(p[c], abs=1e-3) if math.isfinite(h[c]) else p[c] < h["a"]
    local.close()
    be.close()
    del server


def test_top_logprobs_reads_both_response_formats():
    legacy = {"choices": [{"text": "a", "logprobs": {"tokens": ["a"], "top_logprobs": [{"a": -0.5, "b": -1.5}]}}]}
    native = {"choices": [{"text": "a", "logprobs": {"content": [{"token": "a", "logprob": -0.5, "top_logprobs": [
        {"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.5}]}]}}]}
    assert top_logprobs(legacy) == top_logprobs(native) == {"a": -0.5, "b": -1.5}
    assert top_logprobs({"choices": [{"text": "a"}]}) is None


def test_openai_candidate_outside_top_k_is_minus_infinity_and_no_logprobs_is_an_error():
    body = {"choices": [{"text": "a", "finish_reason": "length",
                         "logprobs": {"top_logprobs": [{"a": -0.1, "c": -3.0}]}}]}
    with ScriptedServer([(200, body)]) as srv:
        be = OpenAICompatBackend(srv.url, max_retries=0, logprobs_k=5)
        out = be.next_token_logprobs(["x"], ["a", "b"])
        assert out == [{"a": -0.1, "b": -math.inf}]
        sent = srv.requests[-1]["body"]
        assert sent["max_tokens"] == 1 and sent["logprobs"] == 5 and sent["temperature"] == 0.0
    with ScriptedServer([(200, {"choices": [{"text": "a", "finish_reason": "length"}]})]) as srv:
        with pytest.raises(ServerError, match="no token log-probabilities"):
            OpenAICompatBackend(srv.url, max_retries=0).next_token_logprobs(["x"], ["a", "b"])


def test_vllm_reads_its_top_logprobs():
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        gpu = False
    if not gpu or importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm backend: needs a CUDA GPU and vLLM")
    from sdft.generation.vllm import VLLMBackend  # pragma: no cover - GPU only

    be = VLLMBackend(str(smollm2_model().hf_dir), gpu_memory_utilization=0.3, max_model_len=1024)
    out = be.next_token_logprobs(PROMPTS, ["a", "b"])
    assert all(math.isfinite(o["a"]) for o in out)
    be.close()
