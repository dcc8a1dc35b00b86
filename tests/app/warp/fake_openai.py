"""A small OpenAI-compatible server on loopback: GET /v1/models and POST /v1/chat/completions, streamed
(SSE) or not, answering with a policy, and misbehaving on request (error codes, dropped connections,
slow answers) so the HTTP generator's retries are tested against real sockets."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


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

    def __init__(self, answer: Callable[[dict], str], *, model: str = "served-model", context: int = 8192):
        self.answer = answer
        self.model = model
        self.context = context
        self.faults: list = []
        self.bodies: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/v1/models":
                    return self._json(404, {"error": {"message": "not found"}})
                self._json(200, {"object": "list", "data": [{"id": server.model, "object": "model",
                                                              "max_model_len": server.context}]})  # fmt: skip

            def do_POST(self):
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up (a cancelled or timed-out request)

            def _answer(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                fault = server.faults.pop(0) if server.faults else "ok"
                if isinstance(fault, tuple) and fault[0] == "status":
                    headers = {"Retry-After": str(fault[2])} if len(fault) > 2 else {}
                    return self._json(fault[1], {"error": {"message": f"fault {fault[1]}"}}, headers)
                if isinstance(fault, tuple) and fault[0] == "slow":
                    time.sleep(fault[1])
                text = server.answer(body)
                if "response_format" in body:
                    text = as_json_mode(text, body)
                if not body.get("stream"):
                    return self._json(200, {"object": "chat.completion", "model": server.model,
                                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                         "finish_reason": "stop"}],
                                            "usage": {"prompt_tokens": 11, "completion_tokens": 7}})  # fmt: skip
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

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
