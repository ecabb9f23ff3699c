"""Test helpers: a real OpenAI-compatible server (llama.cpp's, in process via xllamacpp, listening on a local
HTTP port) on the embedded SmolLM2 GGUF, and a tiny scripted stdlib server for the error paths."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def smollm2_model():
    """The embedded SmolLM2-135M (GGUF + HF folder, converted once into the cache), or skip."""
    try:
        from sdft.models import resolve_model

        m = resolve_model("smollm2-135m", log=lambda *_: None)
    except Exception as e:  # noqa: BLE001 - any failure to prepare the model is a reason to skip
        pytest.skip(f"smollm2-135m cannot be resolved: {e}")
    if m.gguf is None or not m.gguf.is_file():
        pytest.skip("smollm2-135m has no GGUF file")
    return m


def llama_server(gguf, *, parallel: int = 2, n_ctx: int = 1024, api_keys: tuple[str, ...] = ()):
    """llama.cpp's HTTP server (``/v1/completions``, ``/v1/models`` ...) on ``127.0.0.1:<free port>``: one thread,
    ``parallel`` slots sharing ``n_ctx``. Keep a reference: the server stops when the object is freed."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_parallel = parallel
    p.n_ctx = n_ctx
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
    p.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.verbosity = 0
    p.ui = False
    if api_keys:
        p.api_keys = list(api_keys)
    return xllamacpp.Server(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedServer:
    """Answers POST /v1/completions with the next scripted ``(status, json body)`` (the last one repeats; an
    entry may also be a function of the request body returning one) and records each request's headers and
    body; GET /v1/models lists ``models``."""

    def __init__(self, script: list, models: tuple[str, ...] = ("scripted",)):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status in (429, 503):
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                got = json.loads(self.rfile.read(n) or b"{}")
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": got})
                entry = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                status, body = entry(got) if callable(entry) else entry
                self._send(status, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion_json(text: str, finish: str = "stop", prompt_tokens: int = 3, completion_tokens: int = 2) -> dict:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}
