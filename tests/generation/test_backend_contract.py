"""One behavioural contract, run on every generation backend that can run here.

* ``hf`` on the tiny random Llama of ``conftest.py`` (the real SmolLM2 tokenizer);
* ``llamacpp`` in process and ``openai`` over HTTP (llama.cpp's server) on the embedded SmolLM2 GGUF;
* ``vllm`` on SmolLM2's HF folder, only with a CUDA GPU and vLLM installed (skipped otherwise, with the reason).

The contract: a list of :class:`Completion` in prompt order; ``prompt_tokens`` counts the prompt's ids without
special tokens added; the same seed reproduces a sample; a stop string ends the text before it
(``finish_reason`` ``stop``); ``max_new_tokens`` is honoured (``length``). Where backends differ, the test says
so and the backend's docstring documents it:

* **empty prompt**: llamacpp, openai and vllm return ``Completion("", "stop", 0, 0)`` without generating; hf
  continues a lone end-of-sequence token (a well-formed completion). Never a crash of the batch.
* **prompt longer than the context**: llamacpp (``ValueError``: the slot size), openai (``ServerError``: the
  server's HTTP 400 message) and vllm (``ValueError``: ``max_model_len``) raise a clear error for the whole
  call, before or without generating the others; hf checks nothing and runs past the model's trained context
  (an expected failure below).
* **seeds**: llamacpp, openai and vllm seed request ``i`` with ``seed + i`` (a sample depends on its position
  only); hf seeds each batch (a sample also depends on its batch neighbours).
"""

from __future__ import annotations

import importlib.util

import pytest

from server_helpers import llama_server, smollm2_model
from sdft.generation import Completion, GenerationParams

THREADS = 1  # llama.cpp spins on shared cores


def chat(question: str) -> str:
    return ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")


# distinct token lengths, so hf's length-sorted batches do not depend on the input order
PROMPTS = [chat("Explain photosynthesis in one sentence."), chat("List three colors."),
           chat("Write a haiku about the sea, please, with a title."), chat("Hi")]
GREEDY = GenerationParams(max_new_tokens=16)
SAMPLE = GenerationParams(max_new_tokens=12, temperature=1.0, seed=11)
TOO_LONG = "word " * 3000  # > 512 (a llama.cpp slot here), > 1024 (vllm's max_model_len here), > 2048 (hf tiny)


def _gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def _make_hf(request):
    from sdft.generation.hf import HFBackend

    return HFBackend(str(request.getfixturevalue("tiny_model_dir")), batch_size=2, device="cpu"), None


def _make_llamacpp(request):
    from sdft.generation.llamacpp import LlamaCppBackend

    return LlamaCppBackend(smollm2_model().gguf, parallel=2, n_ctx=1024, threads=THREADS), None


def _make_openai(request):
    from sdft.generation.openai_compat import OpenAICompatBackend

    server = llama_server(smollm2_model().gguf, parallel=2, n_ctx=1024)  # kept alive with the backend
    return OpenAICompatBackend(server.listening_address, concurrency=2, max_retries=1), server


def _make_vllm(request):
    if not _gpu():
        pytest.skip("vllm backend: no CUDA GPU on this machine")
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm backend: vLLM is not installed (pip install -e .[vllm])")
    from sdft.generation.vllm import VLLMBackend

    return VLLMBackend(str(smollm2_model().hf_dir), gpu_memory_utilization=0.3, max_model_len=1024), None


MAKERS = {"hf": _make_hf, "llamacpp": _make_llamacpp, "openai": _make_openai, "vllm": _make_vllm}
PER_POSITION_SEEDS = {"llamacpp", "openai", "vllm"}
EMPTY_IS_NOT_SENT = {"llamacpp", "openai", "vllm"}
TOO_LONG_ERROR = {"hf": (ValueError, r"prompt 1 has \d+ tokens but the model's context is \d+"),
                  "llamacpp": (ValueError, r"prompt 1 has \d+ tokens but a llama.cpp slot holds 512"),
                  "openai": ("ServerError", r"\(prompt 1\): HTTP 400: .*exceeds the available context size"),
                  "vllm": (ValueError, r"prompt 1 has \d+ tokens but vLLM's max_model_len is 1024")}


@pytest.fixture(scope="module", params=list(MAKERS))
def backend(request):
    b, keep = MAKERS[request.param](request)
    yield b
    b.close()
    del keep


@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer  # the SmolLM2 tokenizer (tests/fixtures), shared by all four backends' models


def test_well_formed_in_order(backend, tok):
    out = backend.generate(PROMPTS, GREEDY)
    assert isinstance(out, list) and len(out) == len(PROMPTS)
    for p, c in zip(PROMPTS, out):
        assert isinstance(c, Completion) and isinstance(c.text, str)
        assert c.finish_reason in ("stop", "length")
        assert c.prompt_tokens == len(tok(p, add_special_tokens=False)["input_ids"])
        assert 0 <= c.completion_tokens <= GREEDY.max_new_tokens
        assert "<|im_start|>" not in c.text
    back = backend.generate(PROMPTS[::-1], GREEDY)[::-1]
    assert [c.prompt_tokens for c in back] == [c.prompt_tokens for c in out]
    assert [c.text for c in back] == [c.text for c in out]  # greedy: the same answers, whatever the order


def test_same_seed_reproduces_a_sample(backend):
    p = chat("Tell me a story.")
    a = backend.generate([p, p], SAMPLE)
    assert backend.generate([p, p], SAMPLE) == a
    assert a[0].text != a[1].text  # two draws, not one copied
    assert backend.generate([p, p], SAMPLE.with_seed(12345))[0].text != a[0].text
    if backend.name in PER_POSITION_SEEDS:
        assert backend.generate([p], SAMPLE.with_seed(SAMPLE.seed + 1))[0].text == a[1].text


def test_stop_string_ends_the_text_before_it(backend):
    free = backend.generate([PROMPTS[0]], GREEDY)[0]
    assert len(free.text) >= 8, free
    k = len(free.text) // 2
    stop = free.text[k:k + 3]  # a piece from the middle of the greedy answer
    cut = free.text.index(stop)
    got = backend.generate([PROMPTS[0]], GenerationParams(max_new_tokens=16, stop=("<never>", stop)))[0]
    assert got.finish_reason == "stop"
    assert got.text == free.text[:cut] and stop not in got.text


def test_max_new_tokens_gives_length(backend):
    got = backend.generate([chat("Write a long essay about the history of Rome.")], GenerationParams(max_new_tokens=6))
    assert got[0].finish_reason == "length" and got[0].completion_tokens == 6


def test_empty_prompt_does_not_crash_the_batch(backend):
    params = GenerationParams(max_new_tokens=8)
    out = backend.generate(["", PROMPTS[1]], params)
    assert len(out) == 2 and all(isinstance(c, Completion) for c in out)
    assert out[0].prompt_tokens == 0 and out[1].completion_tokens > 0
    if backend.name in EMPTY_IS_NOT_SENT:
        assert out[0] == Completion("", "stop", 0, 0)
        assert out[1].text == backend.generate([PROMPTS[1]], params)[0].text
    else:  # hf: continues a lone end-of-sequence token
        assert out[0].finish_reason in ("stop", "length")


def test_prompt_longer_than_the_context(backend, request):
    exc, pattern = TOO_LONG_ERROR[backend.name]
    if isinstance(exc, str):
        from sdft.generation.openai_compat import ServerError as exc  # noqa: N813
    with pytest.raises(exc, match=pattern):
        backend.generate([PROMPTS[1], TOO_LONG], GenerationParams(max_new_tokens=4))
    assert backend.generate([PROMPTS[1]], GenerationParams(max_new_tokens=4))[0].completion_tokens > 0  # still usable
