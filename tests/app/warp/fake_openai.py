"""A small OpenAI-compatible server on loopback: GET /v1/models and POST /v1/chat/completions, streamed
(SSE) or not, answering with a policy, and misbehaving on request (error codes, dropped connections,
slow answers) so the HTTP generator's retries are tested against real sockets.

`flavour` makes it answer as one real server does: "vllm" and "sglang" (model entries owned by them,
`/version`, the grammar in `structured_outputs.grammar` / `ebnf`, applied with xgrammar as both do by
default), "llamacpp" (`Server: llama.cpp`, `/props` with n_ctx, `grammar`), "ollama" (no context in
/v1/models, `/api/version`, `/api/show`, native NDJSON `/api/chat` with `format` and `options.num_ctx`; its
OpenAI endpoint cuts the prompt at 2048 tokens as Ollama does). A grammar or schema the engine cannot
compile is refused with HTTP 400, and an answer it does not accept with HTTP 500, so a test fails loudly."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OWNERS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llamacpp", "ollama": "library", "plain": "system"}


def constraint_refusal(body: dict, answer: str) -> tuple[int, str] | None:
    """(HTTP status, why) when the request's grammar or schema does not compile in xgrammar, or does not
    accept `answer` (what a constrained server could never emit); None when fine or unconstrained."""
    import xgrammar
    from xgrammar.testing import _is_grammar_accept_string

    grammar = (
        (body.get("structured_outputs") or {}).get("grammar")
        or body.get("ebnf")
        or body.get("grammar")
        or body.get("guided_grammar")
    )
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema") or body.get("format")
    try:
        if grammar:
            compiled = xgrammar.Grammar.from_ebnf(grammar)
        elif schema:
            compiled = xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
        else:
            return None
    except Exception as e:  # xgrammar raises RuntimeError or its own error types
        return 400, f"grammar does not compile: {e}"
    if not _is_grammar_accept_string(compiled, answer):
        return 500, f"the constraint does not accept the answer {answer[:200]!r}"
    return None


def as_json_mode(text: str, body: dict) -> str:
    """What a server under `response_format` json_schema returns for a tag-format answer."""
    thought = re.search(r"<thought>(.*?)</thought>", text, re.S)
    action = re.search(r"<action>(.*?)</action>", text, re.S).group(1)
    name = body["response_format"]["json_schema"]["name"]
    payload = {"thought": thought.group(1) if thought else ""}
    if name == "warp_write":
        payload["text"] = action
    else:
        payload["action"] = json.loads(action)
    return json.dumps(payload)


class FakeOpenAI:
    """`faults` is a queue of what to do with the next chat requests: "ok", ("status", code[, retry_after]),
    "drop" (close the socket mid-stream), ("slow", seconds)."""

    def __init__(
        self, answer: Callable[[dict], str], *, model: str = "served-model", context: int = 8192, flavour: str = "plain"
    ):
        self.answer = answer
        self.model = model
        self.context = context
        self.flavour = flavour
        self.paths: list[str] = []
        self.faults: list = []
        self.bodies: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.paths.append(self.path)
                flavour = server.flavour
                entry = {"id": server.model, "object": "model", "owned_by": OWNERS[flavour]}
                if flavour in ("vllm", "sglang", "plain"):
                    entry["max_model_len"] = server.context
                headers = {"Server": "llama.cpp"} if flavour == "llamacpp" else {}
                if self.path == "/v1/models":
                    return self._json(200, {"object": "list", "data": [entry]}, headers)
                if self.path == "/version" and flavour in ("vllm", "sglang"):
                    return self._json(200, {"version": "0.11.0" if flavour == "vllm" else "0.5.4"})
                if self.path == "/props" and flavour == "llamacpp":
                    return self._json(
                        200, {"default_generation_settings": {"n_ctx": server.context}, "build_info": "b6000"}
                    )
                if self.path == "/api/version" and flavour == "ollama":
                    return self._json(200, {"version": "0.12.3"})
                self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up (a cancelled or timed-out request)

            def _answer(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.paths.append(self.path)
                if server.flavour == "ollama" and self.path == "/api/show":
                    return self._json(
                        200,
                        {"model_info": {"general.architecture": "minicpm", "minicpm.context_length": server.context}},
                    )
                server.bodies.append(body)
                if server.flavour == "ollama" and self.path == "/api/chat":
                    return self._ollama(body)
                if server.flavour == "ollama":  # its OpenAI endpoint keeps only the last 2048 tokens of the prompt
                    for message in body["messages"]:
                        message["content"] = message["content"][-2048 * 3 :]
                fault = server.faults.pop(0) if server.faults else "ok"
                if isinstance(fault, tuple) and fault[0] == "status":
                    headers = {"Retry-After": str(fault[2])} if len(fault) > 2 else {}
                    return self._json(fault[1], {"error": {"message": f"fault {fault[1]}"}}, headers)
                if isinstance(fault, tuple) and fault[0] == "slow":
                    time.sleep(fault[1])
                text = server.answer(body)
                if "response_format" in body:
                    text = as_json_mode(text, body)
                if server.flavour != "plain":
                    refusal = constraint_refusal(body, text)
                    if refusal:
                        return self._json(refusal[0], {"error": {"message": refusal[1]}})
                if not body.get("stream"):
                    return self._json(
                        200,
                        {
                            "object": "chat.completion",
                            "model": server.model,
                            "choices": [
                                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                            ],
                            "usage": {"prompt_tokens": 11, "completion_tokens": 7},
                        },
                    )
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                pieces = [text[i : i + 12] for i in range(0, len(text), 12)]
                for n, piece in enumerate(pieces):
                    self._event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                    if fault == "drop" and n == len(pieces) // 2:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self._event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}})
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _ollama(self, body: dict) -> None:
                """Native /api/chat: the prompt must fit options.num_ctx, which defaults to 4096 if not sent."""
                prompt = sum(len(m["content"]) for m in body["messages"]) // 3
                if prompt > (body.get("options") or {}).get("num_ctx", 4096):
                    return self._json(500, {"error": "prompt longer than num_ctx: it would be truncated"})
                text = server.answer({**body, "max_tokens": body["options"].get("num_predict")})
                if "format" in body:
                    text = as_json_mode(text, {"response_format": {"json_schema": {"name": _schema_name(body)}}})
                refusal = constraint_refusal(body, text)
                if refusal:
                    return self._json(refusal[0], {"error": refusal[1]})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(text), 12):
                    line = {
                        "model": server.model,
                        "message": {"role": "assistant", "content": text[i : i + 12]},
                        "done": False,
                    }
                    self._chunk((json.dumps(line) + "\n").encode())
                last = {
                    "model": server.model,
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "stop",
                    "prompt_eval_count": prompt,
                    "eval_count": len(text) // 3,
                }
                self._chunk((json.dumps(last) + "\n").encode())
                self._chunk(b"")

            def _event(self, data: dict) -> None:
                self._chunk(f"data: {json.dumps(data)}\n\n".encode())

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _schema_name(body: dict) -> str:
    """The JSON-mode answer's shape for Ollama's `format`, which carries no name: WRITE's has a "text"."""
    return "warp_write" if "text" in body["format"].get("properties", {}) else "warp_action"


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def point_app_at(monkeypatch, fake: FakeOpenAI, *, expands: int | None = None) -> None:
    """The app's settings for a small run against `fake`: its URL as the served model, 3 sections, and `expands`
    expansions (None: the settings' own)."""
    monkeypatch.setenv("SALA_REPORT_MODEL__BACKEND", "openai")
    monkeypatch.setenv("SALA_REPORT_MODEL__BASE_URL", fake.url)
    monkeypatch.setenv("SALA_REPORT_WARP__MAX_SECTIONS", "3")
    if expands is not None:
        monkeypatch.setenv("SALA_REPORT_WARP__MAX_EXPANDS", str(expands))


def write_docs(tmp_path: Path, docs: dict[str, str]) -> Path:
    """A folder `docs` under tmp_path holding each (name, text) of `docs` as a file."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder
