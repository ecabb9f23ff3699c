"""llama.cpp backend: the in-process ``xllamacpp.Server`` with ``parallel`` slots and continuous batching.

Every prompt is a full raw text (chat template and pre-fill included). It is tokenized by the server's own
``/tokenize`` route (``add_special=False``: no BOS is added, whatever the GGUF's ``add_bos_token`` says;
``parse_special=True``: ``<|im_start|>`` and friends become special tokens) -- the same ids HF gets with
``add_special_tokens=False``. The ids are then sent to ``handle_completions`` (the raw-text completion route,
never the chat route), so a pre-filled assistant turn is continued exactly. Tokenizing first also lets us
reject a prompt that does not fit its slot before anything is sent.

Requests run on a thread pool of ``parallel`` workers; ``handle_completions`` releases the GIL and the server
batches the active slots into one decode per step.

Sampling, matched to :class:`~sdft.generation.hf.HFBackend`:

* greedy (``temperature == 0``): sampler chain ``penalties -> top_k`` with ``top_k = 1`` (arg-max).
* sampling: ``penalties -> temperature -> top_k -> top_p -> dist``, HF's order (repetition penalty, then
  temperature before top-k/top-p); ``top_k = 0`` is off in both; ``min_p = 0``, ``typical_p = 1``; DRY, XTC,
  mirostat, top-n-sigma, dynamic temperature, presence/frequency penalties are all off.
* ``repeat_penalty`` uses HF's formula (divide positive logits, multiply negative ones) over the whole slot
  context (prompt + generated), as HF does over ``input_ids``; checked at 1.5: the same greedy text as HF on
  4 prompts, the prompt's words included in the penalty (one of the 4 splits at a near-tie).
* seed: request ``i`` gets ``params.seed + i``, so a result depends on its position, not on scheduling.

Reproducibility: which tokens share a micro-batch depends on what the other slots are doing, and llama.cpp's
batched CPU kernels are not bit-identical across batch shapes. With its flash-attention kernel, greedy answers to
16 GSM8K prompts (128 tokens) differed between two identical runs at ``parallel=8`` (12/16 equal) and between
``parallel`` 1 and 8 (7/16). With flash attention off (the default here, ``flash_attn=False``) 63 of 64 answers
(4 runs at ``parallel=8``) equalled the ``parallel=1`` ones (one differed from its 20th token on). Greedy output
is therefore reproducible in practice but not guaranteed bit-exact under concurrency; ``parallel=1`` is exact.
(A unified KV cache, ``kv_unified``, made it much worse: 4/16 equal.)

Threads default to the cores this process may use (its CPU affinity, e.g. under ``taskset``). llama.cpp's worker threads spin at their barriers, so when another process is
busy on the same cores generation can slow down by orders of magnitude (seen once: 0.3 tok/s instead of ~90 on
2 shared cores); on a shared machine pass fewer threads (not measured here). Batching over slots helps less on
a 2-core CPU than on a GPU: decoding is compute-bound there (measured ~1.2-1.4x for 8 slots over 1).

What is *not* matched: the random streams (the same seed draws different samples than torch); the arithmetic
(llama.cpp multiplies the Q4_1 weights with 8-bit-quantised activations, HF the same weights de-quantised with
float32 ones: logits differ by up to ~0.2, so greedy paths split where the top two are that close); ties at the
top-p boundary; HF also penalises its left-padding tokens.

Prompt caching is off by default (``cache_prompt=False``) so that no result depends on which slot's leftover KV
cache served it. Measured with it on (SmolLM2, 24 GSM8K rows, Q8_0, 8 slots, streamed chunks): the shared system
turn and template prefix is re-used and generation takes 5% less time, but greedy answers then depend on the
order rows reach the slots (1 of 4 changed when the same prompts were sent in reverse order; with it off they do
not) -- not worth 5%.

LoRA: ``adapter`` is a GGUF LoRA file or a PEFT LoRA adapter folder (``sdft train`` output), which is converted
once by :func:`sdft.generation.gguf_lora.convert_lora` into ``<adapter>/adapter.gguf`` and applied at scale 1 on top of the
quantised base weights (llama.cpp adds ``(alpha/r)·B·(A·x)`` at run time; nothing is merged or re-quantised).
Measured on SmolLM2-135M with random LoRAs (q/v, and all-linear; ``tests/test_gguf_lora.py``): along HF's greedy
path the log-probs differ from HF's (float32 base + PEFT) by ~0.1 on average, as much as with no adapter on either
side (the Q4_1 arithmetic, not the adapter); llama.cpp's arg-max equalled HF's greedy token at 42/44 and 43/44
positions, the others near-ties (HF margin < 0.2), so free-running 12-token answers matched on 2/4 and 3/4 prompts.

``finish_reason`` comes from the server's native ``stop_type`` (asked for with ``verbose``): ``eos`` and
``word`` (a stop string) -> ``stop``; ``limit`` (``max_tokens`` reached, or the slot context filled up, then
``truncated`` is true) -> ``length``. Stop strings are sent as ``stop`` and the text is cut again with
:func:`cut_at_stop`. ``completion_tokens`` excludes the end-of-sequence token, like HF (the server counts it).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from sdft.generation.base import NO_LOGPROB, Completion, GenerationParams, cut_at_stop, first_token_ids

# every sampler and option HF does not have, switched off explicitly (the server's defaults are top_k 40, min_p 0.05)
_OFF = dict(min_p=0.0, typical_p=1.0, presence_penalty=0.0, frequency_penalty=0.0, dry_multiplier=0.0,
            xtc_probability=0.0, mirostat=0, top_n_sigma=-1.0, dynatemp_range=0.0, n_probs=0, ignore_eos=False)


LOGPROB_TOP_K = 50  # top log-probs asked first by next_token_logprobs (then the whole vocabulary if needed)


def lora_file(adapter: str | Path, base_gguf: Path) -> Path:
    """A GGUF LoRA file as it is; a PEFT adapter folder converted for ``base_gguf`` (once, cached next to it)."""
    a = Path(adapter)
    if a.is_dir():
        from sdft.generation.gguf_lora import convert_lora

        return convert_lora(a, base_gguf)
    if not a.is_file():
        raise FileNotFoundError(f"LoRA adapter not found: {adapter}")
    if a.suffix != ".gguf":
        raise ValueError(f"adapter {adapter} is neither a PEFT adapter folder nor a GGUF LoRA file")
    return a


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, gguf: str | Path, *, adapter: str | None = None, parallel: int = 8, n_ctx: int | None = None,
                 threads: int | None = None, flash_attn: bool = False, cache_prompt: bool = False, verbosity: int = 1,
                 deterministic: bool = False, **_):
        import xllamacpp

        if deterministic:  # one slot: no batch shape depends on what other requests are doing (bit-exact)
            parallel, flash_attn, cache_prompt = 1, False, False
        self.deterministic = deterministic

        gguf = Path(gguf)
        if not gguf.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {gguf}")
        p = xllamacpp.CommonParams()
        p.model.path = str(gguf)
        p.n_parallel = self.parallel = max(1, int(parallel))
        p.n_ctx = n_ctx or self.parallel * 2048  # total KV cache, split evenly over the slots
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads or usable_cpus()
        fa = xllamacpp.llama_flash_attn_type
        p.flash_attn_type = fa.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else fa.LLAMA_FLASH_ATTN_TYPE_DISABLED
        p.verbosity = verbosity  # 1: errors only (3 logs every slot event)
        p.ui = False
        if adapter:
            p.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(lora_file(adapter, gguf)), 1.0)]
        self.cache_prompt = cache_prompt
        self.server = xllamacpp.Server(p)
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        props = self._call("GET", "/props")
        self.n_ctx_slot = int(props["default_generation_settings"]["n_ctx"])  # per slot, after llama.cpp rounding
        self.stats = {"generated_tokens": 0, "prompt_tokens": 0, "seconds": 0.0}

    @classmethod
    def from_model(cls, model, *, weights: str = "native", cache_dir: str | None = None,
                   **kwargs) -> "LlamaCppBackend":
        """From a :class:`sdft.models.ResolvedModel`; ``weights``: the weight type to run
        (:mod:`sdft.generation.gguf_weights`: native, or a copy in q8_0 / f16 / f32 made once)."""
        if model.gguf is None:
            raise ValueError(f"model {model.name} has no GGUF file; use --backend hf")
        from sdft.generation.gguf_weights import weights_gguf

        return cls(str(weights_gguf(model.gguf, weights, cache_dir)), **kwargs)

    def _call(self, method: str, route: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server.listening_address + route, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with self._http.open(req, timeout=60) as r:
            return json.load(r)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` exactly as they are sent: special tokens parsed, no BOS added."""
        if not text:
            return []
        return self._call("POST", "/tokenize", {"content": text, "add_special": False, "parse_special": True})["tokens"]

    def _request(self, ids: list[int], params: GenerationParams, seed: int) -> dict:
        body = dict(_OFF, prompt=ids, max_tokens=params.max_new_tokens, seed=seed % 0xFFFFFFFF,  # 2^32-1 = random
                    repeat_penalty=params.repetition_penalty, repeat_last_n=self.n_ctx_slot,
                    stop=[s for s in params.stop if s], cache_prompt=self.cache_prompt, stream=False, verbose=True)
        if params.greedy:
            body.update(temperature=0.0, top_k=1, top_p=1.0, samplers=["penalties", "top_k"])
        else:
            body.update(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                        samplers=["penalties", "temperature", "top_k", "top_p"])
        return body

    def _complete(self, i: int, ids: list[int], params: GenerationParams, seed: int | None = None) -> Completion:
        if not ids:  # nothing to continue: an empty completion, not a crash
            return Completion("", "stop", 0, 0)
        r = self.server.handle_completions(self._request(ids, params, params.seed + i if seed is None else seed))
        if "error" in r:
            err = r["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise RuntimeError(f"llama.cpp failed on prompt {i}: {msg}")
        choice, native = r["choices"][0], r.get("__verbose", {})
        stop_type = native.get("stop_type")
        if stop_type in ("eos", "word"):
            finish = "stop"
        elif stop_type == "limit":
            finish = "length"
        else:
            finish = "length" if choice.get("finish_reason") == "length" else "stop"
        text, hit = cut_at_stop(choice.get("text") or "", params.stop)
        n_gen = int(r["usage"]["completion_tokens"]) - (stop_type == "eos")
        return Completion(text, "stop" if hit else finish, len(ids), max(n_gen, 0))

    def _encode_all(self, pool: ThreadPoolExecutor, prompts: Sequence[str]) -> list[list[int]]:
        enc = list(pool.map(self.tokenize, prompts))
        for i, ids in enumerate(enc):
            if len(ids) >= self.n_ctx_slot:
                raise ValueError(f"prompt {i} has {len(ids)} tokens but a llama.cpp slot holds {self.n_ctx_slot} "
                                 f"(n_ctx split over {self.parallel} slots); raise n_ctx or shorten the prompt")
        return enc

    def _account(self, comps: Sequence[Completion], seconds: float) -> None:
        self.stats["seconds"] += seconds
        self.stats["generated_tokens"] += sum(c.completion_tokens for c in comps)
        self.stats["prompt_tokens"] += sum(c.prompt_tokens for c in comps)

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(self.parallel) as pool:
            enc = self._encode_all(pool, prompts)
            out = list(pool.map(lambda i: self._complete(i, enc[i], params), range(len(prompts))))
        self._account(out, time.perf_counter() - t0)
        return out

    def generate_chunks(self, prompts: Sequence[str], params: GenerationParams, chunk_size: int,
                        seeds: Sequence[int] | None = None, per_row: bool = False):
        """:func:`sdft.generation.generate_in_chunks` with the slots kept busy across chunk boundaries: every
        prompt is queued at once (``parallel`` in flight), and each chunk is yielded, in order, as soon as its last
        row is done while the next chunk's rows already run. Chunk-by-chunk ``generate`` calls left slots idle
        at every chunk's tail. Each row gets the seed it gets there (``seeds[start] + i`` for row ``i`` of the
        chunk at ``start``; ``seeds[k]`` per row with ``per_row``), so results do not depend on the streaming.
        Stopping the iteration (an interrupt) cancels the rows not yet started."""
        n = len(prompts)
        base = list(seeds) if seeds is not None else [params.seed + k for k in range(n)]
        row_seed = base if per_row else [base[k - k % chunk_size] + k % chunk_size for k in range(n)]
        pool = ThreadPoolExecutor(self.parallel)
        try:
            enc = self._encode_all(pool, prompts)
            futures = [pool.submit(self._complete, k, enc[k], params, row_seed[k]) for k in range(n)]
            t_last = time.perf_counter()
            for start in range(0, n, chunk_size):
                comps = [f.result() for f in futures[start:start + chunk_size]]
                now = time.perf_counter()
                self._account(comps, now - t_last)
                yield start, comps, now - t_last
                t_last = time.perf_counter()  # the caller's time (writing results) is not generation time
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Log-probability of each candidate's first token after each prompt: a one-token completion with
        ``n_probs`` (llama.cpp's ``top_logprobs``, computed from the raw logits over the whole vocabulary, not
        after sampling). First the top ``LOGPROB_TOP_K``; a prompt whose candidates are not all among them is
        asked again for the whole vocabulary, so every value is exact."""
        cand = first_token_ids(self.tokenize, candidates)
        with ThreadPoolExecutor(self.parallel) as pool:
            enc = list(pool.map(self.tokenize, prompts))
            for i, ids in enumerate(enc):
                if not ids:
                    raise ValueError(f"prompt {i} is empty: there is no position to read log-probabilities at")
                if len(ids) >= self.n_ctx_slot:
                    raise ValueError(f"prompt {i} has {len(ids)} tokens but a llama.cpp slot holds {self.n_ctx_slot}")
            return list(pool.map(lambda i: self._logprobs(i, enc[i], cand, candidates), range(len(prompts))))

    def _logprobs(self, i: int, ids: list[int], cand: list[int], candidates: Sequence[str]) -> dict[str, float]:
        top: dict[int, float] = {}
        for n_probs in (LOGPROB_TOP_K, self._n_vocab()):
            body = dict(_OFF, prompt=ids, max_tokens=1, n_probs=n_probs, post_sampling_probs=False, temperature=0.0,
                        top_k=1, top_p=1.0, samplers=["top_k"], cache_prompt=self.cache_prompt, stream=False)
            r = self.server.handle_completions(body)
            if "error" in r:
                err = r["error"]
                msg = err.get("message", err) if isinstance(err, dict) else err
                raise RuntimeError(f"llama.cpp failed on prompt {i}: {msg}")
            top = {int(e["id"]): float(e["logprob"]) for e in r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}
            if all(t in top for t in cand):
                break
        return {c: top.get(t, NO_LOGPROB) for c, t in zip(candidates, cand)}

    def _n_vocab(self) -> int:
        if getattr(self, "_vocab", None) is None:
            try:
                self._vocab = int(self._call("GET", "/v1/models")["data"][0]["meta"]["n_vocab"])
            except (KeyError, IndexError, TypeError, ValueError, OSError):
                self._vocab = 1 << 18  # the server caps n_probs at the vocabulary size
        return self._vocab

    def close(self) -> None:
        self.server = None  # the destructor stops the server loop and frees the model


def usable_cpus() -> int:
    """The CPUs this process may run on (``taskset``/cgroup affinity), not all of the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
