"""OpenAI-compatible server backend: any server with ``/v1/completions`` (``vllm serve``, llama.cpp's
``llama-server``, SGLang, TGI, LM Studio, ...), driven with the standard library only.

**Raw completions, never chat.** Prompts arrive fully rendered (chat template and pre-fill included) and are
sent as text to the *completions* route, so a pre-filled assistant turn is continued exactly; the chat route
would wrap them in the server's template a second time. ``add_special_tokens: false`` asks vLLM not to add a
BOS token (llama.cpp's server ignores the field and adds BOS only when the GGUF says so; the embedded models
have none). The local model (``--model``) still renders the prompts, so it must have the served model's
tokenizer and chat template.

**Model name.** ``api_model`` is the name the server serves. By default the backend asks ``/v1/models``: the
local model's name if the server lists it, else the only model served; several served models and none named
alike is an error that lists them. A server without ``/v1/models`` is sent the local model's name. With an
``adapter``, the server must serve it (e.g. ``vllm serve ... --lora-modules NAME=PATH``) and ``api_model``
must name it: the backend refuses to silently answer with the base model.

**API key.** Read from the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``; unset means no
key, fine for a local server) or from the file ``api_key_file`` (first line). It is only ever put in the
``Authorization: Bearer`` header: never in ``repr``, :meth:`identity`, log lines, error messages, records or
manifests (configs hold the variable's name or the file's path, not the key).

**Decoding** (:class:`~sdft.generation.base.GenerationParams` -> request): ``max_new_tokens`` -> ``max_tokens``;
greedy is ``temperature 0``; sampling sends ``temperature``, ``top_p``, ``top_k`` (``-1`` = off when 0: vLLM's
and llama.cpp's "disabled") and ``min_p 0`` (llama.cpp's server defaults to 0.05); ``repetition_penalty`` (vLLM)
and ``repeat_penalty`` (llama.cpp) only when it is not 1; ``seed``: request ``i`` gets ``params.seed + i`` (as
the llamacpp backend), so a result depends on its position in the call, not on scheduling; ``stop`` as sent and
the text is cut again with :func:`~sdft.generation.base.cut_at_stop`. ``cache_prompt: false`` turns off
llama.cpp's prompt cache: a prompt whose prefix is served from a slot's leftover KV cache is computed in other
batch shapes, and the small numerical differences flip near-ties (measured: the same greedy prompt gave another
answer after a request sharing its system prompt; the same seed sampled another story), as in the llamacpp
backend. ``top_k``, ``min_p``, the penalties, ``add_special_tokens`` and ``cache_prompt`` are extensions that
self-hosted servers accept or ignore (vLLM logs the fields it ignores; OpenAI's own API rejects them);
``extra_body`` adds fields or, with a value of ``None``, removes one (e.g. ``{"cache_prompt": None}`` for speed
over reproducibility). Fields not sent take the server's defaults.

**Results.** ``finish_reason`` is ``length`` when the server says so, else ``stop`` (end of sequence or a stop
string). ``prompt_tokens``/``completion_tokens`` come from the response's ``usage`` (0 when absent), counted as
the server counts them (llama.cpp's server counts the end-of-sequence token, HF does not). An empty prompt is
not sent: it gets an empty ``stop`` completion, as with the llamacpp backend. A prompt longer than the
server's context is rejected by the server (HTTP 400): that is raised as :class:`ServerError` naming the
prompt and quoting the server's message (e.g. llama.cpp: "request (3001 tokens) exceeds the available context
size (512 tokens)").

**Concurrency and failures.** ``concurrency`` requests are in flight at once (a thread pool; the server batches
them). HTTP 429 and 5xx, time-outs, refused and reset connections are retried ``max_retries`` times with
exponential back-off (``backoff * 2**k`` seconds, or the server's ``Retry-After`` when given, at most 60 s);
after that, or on any other HTTP error, :class:`ServerError` names the URL and the prompt. The server is asked
for ``/v1/models`` when the backend is built, so an unreachable server fails before any work starts.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

from sdft.generation.base import NO_LOGPROB, Completion, GenerationParams, cut_at_stop

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_TRANSIENT = (TimeoutError, socket.timeout, ConnectionError, http.client.RemoteDisconnected,
              http.client.IncompleteRead, urllib.error.URLError)


class ServerError(RuntimeError):
    """The server could not be reached, or refused a request; the message names the URL (never the key).
    ``status`` is the HTTP status, None when the server could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _HTTPStatus(Exception):
    def __init__(self, code: int, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {code}: {message}")
        self.code, self.message, self.retry_after = code, message, retry_after


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; a URL with a path (``.../v1``, ``.../openai/v1``) is kept."""
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--base-url {url!r}: expected http(s)://host:port[/v1]")
    return url if parts.path else url + "/v1"


def read_api_key(env: str | None = "OPENAI_API_KEY", file: str | Path | None = None) -> str | None:
    """The key from ``file`` (first line) when given, else from the environment variable ``env`` (None if unset)."""
    if file:
        p = Path(file).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"API key file not found: {p}")
        lines = p.read_text(encoding="utf-8").strip().splitlines()
        return lines[0].strip() if lines else None
    return (os.environ.get(env) or None) if env else None


def _error_message(body: bytes) -> str:
    try:
        err = json.loads(body).get("error", body.decode(errors="replace"))
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:500]
    return str(err.get("message", err) if isinstance(err, dict) else err)[:500]


class OpenAICompatBackend:
    name = "openai"

    def __init__(self, base_url: str, *, model: str | None = None, fallback_model: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", api_key_file: str | None = None, concurrency: int = 8,
                 max_retries: int = 5, backoff: float = 0.5, timeout: float = 600.0,
                 extra_body: dict[str, Any] | None = None, logprobs_k: int = 20, **_):
        self.base_url = normalize_base_url(base_url)
        self.__key = read_api_key(api_key_env, api_key_file)  # name-mangled; see __repr__
        self.api_key_source = f"file {api_key_file}" if api_key_file else f"${api_key_env}" if api_key_env else None
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.timeout = float(timeout)
        self.extra_body = dict(extra_body or {})
        self.logprobs_k = max(1, int(logprobs_k))
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server, never a proxy
        self.stats = {"generated_tokens": 0, "prompt_tokens": 0, "seconds": 0.0, "retries": 0}
        self.model = model or self._served_model(fallback_model)

    @classmethod
    def from_model(cls, model, *, base_url: str | None = None, api_model: str | None = None,
                   adapter: str | None = None, concurrency: int | None = None, batch_size: int | None = None,
                   **kwargs) -> "OpenAICompatBackend":
        """From a :class:`sdft.models.ResolvedModel` (used for its name only: the server holds the weights).
        ``concurrency`` defaults to ``batch_size`` (``--batch-size``), else 8."""
        if not base_url:
            raise ValueError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        if adapter and not api_model:
            raise ValueError(f"--backend openai cannot load the adapter {adapter}: serve it (e.g. vllm serve ... "
                             "--enable-lora --lora-modules NAME=PATH) and pass --api-model NAME")
        return cls(base_url, model=api_model, fallback_model=getattr(model, "name", None),
                   concurrency=concurrency or batch_size or 8, **kwargs)

    def __repr__(self) -> str:
        return (f"OpenAICompatBackend(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key={'set' if self.__key else 'none'}, concurrency={self.concurrency})")

    def identity(self) -> dict[str, Any]:
        """What may be recorded about this backend (no key)."""
        return {"backend": self.name, "base_url": self.base_url, "model": self.model}

    # ------------------------------------------------------------------------------------------------- HTTP
    def _once(self, method: str, route: str, body: dict | None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + route, data=data, method=method, headers=headers)
        try:
            with self._http.open(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            retry_after = e.headers.get("Retry-After") if e.headers else None
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            raise _HTTPStatus(e.code, _error_message(e.read()), wait) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerError(f"{self.base_url + route}: not a JSON response: {raw[:200]!r}", 200) from None

    def _call(self, method: str, route: str, body: dict | None = None, what: str = "") -> dict:
        url = self.base_url + route
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                return self._once(method, route, body)
            except _HTTPStatus as e:
                if e.code in (401, 403):
                    raise ServerError(f"{url} refused the API key ({e}); set {self.api_key_source or 'a key'}",
                                      e.code) from None
                if e.code not in RETRY_STATUS or last:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise ServerError(f"{url}{what}: {e}{tries}", e.code) from None
                wait, reason = e.retry_after, str(e)
            except _TRANSIENT as e:
                reason = getattr(e, "reason", None) or e or type(e).__name__
                if last:
                    raise ServerError(f"cannot reach the OpenAI-compatible server at {url}{what} after "
                                      f"{attempt + 1} attempt(s): {reason}") from None
                wait = None
            wait = min(60.0, wait if wait is not None else self.backoff * 2 ** attempt)
            log.warning("%s%s: %s; retry %d/%d in %.1fs", url, what, reason, attempt + 1, self.max_retries, wait)
            self.stats["retries"] += 1
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _served_model(self, fallback: str | None) -> str:
        try:
            served = [m["id"] for m in self._call("GET", "/models").get("data", []) if "id" in m]
        except ServerError as e:
            if e.status in (None, 401, 403) or not fallback:
                raise
            return fallback  # a server without /v1/models
        if fallback in served:
            return fallback
        if len(served) == 1:
            return served[0]
        if not served and fallback:
            return fallback
        raise ValueError(f"{self.base_url}/models serves {', '.join(served) or 'no model'}; choose one with "
                         "--api-model")

    # ------------------------------------------------------------------------------------------- generation
    def request_body(self, prompt: str, params: GenerationParams, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = dict(model=self.model, prompt=prompt, max_tokens=params.max_new_tokens, n=1,
                                    stream=False, seed=seed % 0xFFFFFFFF, add_special_tokens=False, cache_prompt=False)
        if params.greedy:
            body.update(temperature=0.0, top_p=1.0)
        else:
            body.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1, min_p=0.0)
        if params.repetition_penalty != 1.0:
            body.update(repetition_penalty=params.repetition_penalty, repeat_penalty=params.repetition_penalty)
        stop = [s for s in params.stop if s]
        if stop:
            body["stop"] = stop
        body.update(self.extra_body)
        return {k: v for k, v in body.items() if v is not None}

    def _complete(self, i: int, prompt: str, params: GenerationParams) -> Completion:
        if not prompt:  # nothing to continue: an empty completion, not a request
            return Completion("", "stop", 0, 0)
        r = self._call("POST", "/completions", self.request_body(prompt, params, params.seed + i),
                       what=f" (prompt {i})")
        try:
            choice = r["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.base_url}/completions (prompt {i}): unexpected response {str(r)[:300]}",
                              200) from None
        text, hit = cut_at_stop(choice.get("text") or "", params.stop)
        finish = "stop" if hit or choice.get("finish_reason") != "length" else "length"
        usage = r.get("usage") or {}
        return Completion(text, finish, int(usage.get("prompt_tokens") or 0),
                          int(usage.get("completion_tokens") or 0))

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        t0 = time.perf_counter()
        prompts = list(prompts)
        with ThreadPoolExecutor(min(self.concurrency, max(1, len(prompts)))) as pool:
            futures = [pool.submit(self._complete, i, p, params) for i, p in enumerate(prompts)]
            try:
                out = [f.result() for f in futures]
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # fail fast: queued prompts are not sent
                raise
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["generated_tokens"] += sum(c.completion_tokens for c in out)
        self.stats["prompt_tokens"] += sum(c.prompt_tokens for c in out)
        return out

    # ------------------------------------------------------------------------------------------ log-probs
    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Log-probability of each candidate's first token after each prompt: a one-token greedy completion
        with ``logprobs: logprobs_k`` (the top-k alternatives at that position). A candidate is matched by its
        text against the returned tokens; one that is not among the top ``logprobs_k`` gets ``-inf`` (its true
        log-probability is below the k-th listed one). Servers cap k (OpenAI 5, vLLM ``--max-logprobs`` 20)."""
        prompts = list(prompts)

        def one(i: int, prompt: str) -> dict[str, float]:
            if not prompt:
                raise ValueError(f"prompt {i} is empty: there is no position to read log-probabilities at")
            body: dict[str, Any] = dict(model=self.model, prompt=prompt, max_tokens=1, n=1, stream=False,
                                        temperature=0.0, top_p=1.0, logprobs=self.logprobs_k,
                                        add_special_tokens=False, cache_prompt=False)
            body.update(self.extra_body)
            r = self._call("POST", "/completions", {k: v for k, v in body.items() if v is not None},
                           what=f" (prompt {i})")
            top = top_logprobs(r)
            if top is None:
                raise ServerError(f"{self.base_url}/completions (prompt {i}): the server returned no token "
                                  f"log-probabilities: {str(r)[:300]}", 200)
            return {c: top.get(c, NO_LOGPROB) for c in candidates}

        with ThreadPoolExecutor(min(self.concurrency, max(1, len(prompts)))) as pool:
            return list(pool.map(one, range(len(prompts)), prompts))

    def close(self) -> None:
        self._http = None  # type: ignore[assignment]


def top_logprobs(response: Mapping[str, Any]) -> dict[str, float] | None:
    """``{token text: log-prob}`` at the first generated position of a completions response: OpenAI's legacy
    format (``logprobs.top_logprobs[0]``, also vLLM's) or llama.cpp's (``logprobs.content[0].top_logprobs``)."""
    try:
        lp = response["choices"][0].get("logprobs")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("top_logprobs"), list) and lp["top_logprobs"] and isinstance(lp["top_logprobs"][0], dict):
        return {str(k): float(v) for k, v in lp["top_logprobs"][0].items()}
    content = lp.get("content")
    if isinstance(content, list) and content and isinstance(content[0].get("top_logprobs"), list):
        return {str(e["token"]): float(e["logprob"]) for e in content[0]["top_logprobs"]}
    return None
