"""A Generator over an OpenAI-compatible server: vLLM, SGLang, llama.cpp's server or Ollama, serving
MiniCPM-SALA, AgentCPM-Report or another model.

Each step is one streamed `POST {base_url}/chat/completions` (for Ollama, its native `/api/chat`, the only
endpoint that honours `num_ctx`: its OpenAI endpoint cuts prompts at its default context, silently).
What we send besides the usual fields:
- `chat_template_kwargs: {"enable_thinking": false}`, as the released WARP pipeline does;
- `stream_options: {"include_usage": true}`, for token counts;
- the step's constraint, chosen by `structured_output`:
  - "auto" (default): the server is probed once (served.py) and gets "grammar" where it takes one (vLLM,
    SGLang, llama.cpp), "json_schema" where it takes only that (Ollama), "none" otherwise;
  - "grammar": the tag format as GBNF, in the field the server reads: vLLM `structured_outputs.grammar`
    (`guided_grammar` before 0.10.2), SGLang `ebnf`, llama.cpp `grammar`;
  - "lark": the same as llguidance Lark (vLLM or SGLang started with the guidance/llguidance backend);
  - "json_schema": `response_format = {"type": "json_schema", "json_schema": {"name": "warp_<kind>",
    "schema": ..., "strict": true}}` (Ollama: `format`). The server then returns `{"thought": ...,
    "action": {...}}` (or `{"thought": ..., "text": ...}` for WRITE), turned back into tags before parsing;
  - "none": nothing; the validators and retries do all the work.
Connection failures, timeouts, 429 and 5xx answers, and streams that drop are retried with exponential
backoff; when the retries are used up, BackendUnavailable says what to check.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from sala_report.app.errors import BackendUnavailable
from sala_report.app.warp.generator import GenRequest, GenResult, OnDelta
from sala_report.app.warp.served import ServerInfo, probe, version_at_least

MODES = ("auto", "grammar", "lark", "json_schema", "none")
DEFAULT_CONTEXT = 32768  # a server that does not say (Ollama without /api/show: 8192, as we set num_ctx)
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class _Retry(Exception):
    def __init__(self, message: str, delay: float | None = None):
        super().__init__(message)
        self.delay = delay


class OpenAIGenerator:
    def __init__(
        self,
        base_url: str,
        model: str = "",
        *,
        api_key: str = "",
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        structured_output: str = "auto",
        max_retries: int = 3,
        backoff_s: float = 1.0,
        context_tokens: int = 0,
        stream: bool = True,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if structured_output not in MODES:
            raise ValueError(f"structured_output must be one of {', '.join(MODES)}, got {structured_output!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.structured_output = structured_output
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.stream = stream  # False for servers or proxies that cannot stream (no deltas are shown then)
        self._context = context_tokens
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s), headers=headers, transport=transport
        )
        self._label = f"{model or 'served model'} at {self.base_url}"
        self._info: ServerInfo | None = None

    @property
    def name(self) -> str:
        """The model and server, with what the probe found and the structured output chosen (the session
        records this name); without the probe when the server cannot be reached yet."""
        try:
            info = self.server()
        except BackendUnavailable:
            return self._label
        served = self.model or info.entry.get("id") or "served model"
        return f"{served} at {self.base_url} ({info.describe(self.mode)})"

    def server(self) -> ServerInfo:
        """What the server is, probed once."""
        if self._info is None:
            entry, response = self._model_entry()
            self._info = probe(self.client, self.base_url, entry, response)
        return self._info

    @property
    def mode(self) -> str:
        """The structured output in use: `structured_output`, or for "auto" what the server takes."""
        return self.server().auto_mode if self.structured_output == "auto" else self.structured_output

    def close(self) -> None:
        self.client.close()

    def context_tokens(self) -> int:
        if not self._context:
            info = self.server()
            self._context = info.context or (8192 if info.kind == "ollama" else DEFAULT_CONTEXT)
        return self._context

    def count_tokens(self, text: str) -> int:
        # No tokenizer here: about 4 bytes a token for English, so 3 errs on the safe side.
        return math.ceil(len(text.encode("utf-8")) / 3)

    def generate(
        self,
        request: GenRequest,
        *,
        on_delta: OnDelta | None = None,
        cancel: threading.Event | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> GenResult:
        body = self._body(request)
        start = time.perf_counter()
        last = ""
        for attempt in range(self.max_retries + 1):
            streamed = [False]

            def emit(text: str, streamed: list[bool] = streamed) -> None:
                streamed[0] = True
                if on_delta is not None:
                    on_delta(text)

            try:
                if self.server().kind == "ollama":
                    text, finish, usage = self._ollama(body, emit, cancel)
                else:
                    text, finish, usage = (
                        self._stream(body, emit, cancel) if self.stream else self._complete(body, emit, cancel)
                    )
            except _Retry as e:
                last = str(e)
                if attempt == self.max_retries:
                    break
                if streamed[0] and on_restart is not None:
                    on_restart()
                self._sleep(e.delay if e.delay is not None else self.backoff_s * 2**attempt)
                continue
            if request.constraint is not None and self.mode == "json_schema":
                text = request.constraint.from_json(text)
            prompt_tokens = usage.get("prompt_tokens") or self.count_tokens(request.system + request.prompt)
            completion_tokens = usage.get("completion_tokens") or self.count_tokens(text)
            return GenResult(text, finish, int(prompt_tokens), int(completion_tokens), time.perf_counter() - start)
        raise BackendUnavailable(
            f"the model server at {self.base_url} failed {self.max_retries + 1} times: {last}",
            hint="Check that vLLM/SGLang is running and reachable (model.base_url), "
            "then `sala-report resume` the session.",
        )

    def _body(self, request: GenRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model or self.server().entry["id"],
            # No system turn when there is no system prompt (AgentCPM-Report's pipeline sends none)
            "messages": ([{"role": "system", "content": request.system}] if request.system else [])
            + [{"role": "user", "content": request.prompt}],
            "stream": self.stream,
            **({"stream_options": {"include_usage": True}} if self.stream else {}),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            **({"seed": request.seed} if request.seed is not None else {}),
            **({"repetition_penalty": request.repetition_penalty} if request.repetition_penalty != 1.0 else {}),
            "chat_template_kwargs": {"enable_thinking": False},
        }
        constraint, mode, info = request.constraint, self.mode, self.server()
        if constraint is None or mode == "none":
            return body
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "warp_" + constraint.kind.replace("-", "_"),
                    "schema": constraint.json_schema,
                    "strict": True,
                },
            }
        elif mode == "lark":
            body["structured_outputs"] = {"grammar": constraint.lark}
        elif info.kind == "sglang":
            body["ebnf"] = constraint.gbnf
        elif info.kind == "llamacpp":
            body["grammar"] = constraint.gbnf
        elif info.kind == "vllm" and not version_at_least(info.version, (0, 10, 2)):
            body["guided_grammar"] = constraint.gbnf
        else:
            body["structured_outputs"] = {"grammar": constraint.gbnf}
        return body

    def _ollama(self, body: dict[str, Any], emit: OnDelta, cancel: threading.Event | None) -> tuple[str, str, dict]:
        """Ollama's native chat: `options.num_ctx` sets the context (its OpenAI endpoint ignores it), `format`
        takes the JSON schema, and the answer streams as one JSON object a line."""
        native = {
            "model": body["model"],
            "messages": body["messages"],
            "stream": self.stream,
            "think": False,
            "options": {
                "num_ctx": self.context_tokens(),
                "num_predict": body["max_tokens"],
                "temperature": body["temperature"],
                "top_p": body["top_p"],
                **({"seed": body["seed"]} if "seed" in body else {}),
                **({"repeat_penalty": body["repetition_penalty"]} if "repetition_penalty" in body else {}),
            },
        }
        if "response_format" in body:
            native["format"] = body["response_format"]["json_schema"]["schema"]
        url = self.base_url.removesuffix("/v1") + "/api/chat"
        parts: list[str] = []
        with (
            _retryable("the connection dropped mid-answer", "the server sent a malformed line"),
            self.client.stream("POST", url, json=native) as response,
        ):
            self._check(response)
            for line in response.iter_lines():
                if cancel is not None and cancel.is_set():
                    return "".join(parts), "cancelled", {}
                if not line.strip():
                    continue
                chunk = json.loads(line)
                if chunk.get("error"):
                    raise _Retry(f"Ollama: {chunk['error']}")
                text = (chunk.get("message") or {}).get("content") or ""
                if text:
                    parts.append(text)
                    emit(text)
                if chunk.get("done"):
                    finish = "length" if chunk.get("done_reason") == "length" else "stop"
                    usage = {
                        "prompt_tokens": chunk.get("prompt_eval_count"),
                        "completion_tokens": chunk.get("eval_count"),
                    }
                    return "".join(parts), finish, usage
        raise _Retry("the answer ended before its last line (done: true)")

    def _stream(self, body: dict[str, Any], emit: OnDelta, cancel: threading.Event | None) -> tuple[str, str, dict]:
        parts: list[str] = []
        finish, usage = "stop", {}
        with (
            _retryable("the connection dropped mid-answer", "the server sent a malformed event"),
            self.client.stream("POST", self.base_url + "/chat/completions", json=body) as response,
        ):
            self._check(response)
            for line in response.iter_lines():
                if cancel is not None and cancel.is_set():
                    return "".join(parts), "cancelled", usage
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return "".join(parts), finish, usage
                chunk = json.loads(data)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        parts.append(text)
                        emit(text)
                    finish = choice.get("finish_reason") or finish
            raise _Retry("the stream ended before its [DONE] event")

    def _complete(self, body: dict[str, Any], emit: OnDelta, cancel: threading.Event | None) -> tuple[str, str, dict]:
        # A whole answer can take minutes and a blocking request cannot be interrupted, so it runs on its own
        # thread and a pause or cancel returns at once; the abandoned answer is dropped when it comes.
        done: dict[str, Any] = {}

        def call() -> None:
            try:
                done["response"] = self.client.post(self.base_url + "/chat/completions", json=body)
            except BaseException as e:  # handed to the waiting thread below
                done["error"] = e

        worker = threading.Thread(target=call, name="openai-request", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.05)
            if cancel is not None and cancel.is_set():
                return "", "cancelled", {}
        with _retryable("the connection dropped", "the server sent malformed JSON"):
            if "error" in done:
                raise done["error"]
            response = done["response"]
            self._check(response)
            data = response.json()
        choice = (data.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        if text:
            emit(text)
        return text, choice.get("finish_reason") or "stop", data.get("usage") or {}

    def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        detail = response.read().decode("utf-8", "replace")[:300]
        if response.status_code in _RETRY_STATUS:
            retry_after = response.headers.get("retry-after")
            delay = float(retry_after) if retry_after and retry_after.isdigit() and int(retry_after) <= 60 else None
            raise _Retry(f"HTTP {response.status_code}: {detail}", delay)
        hints = {
            401: "Set model.api_key to the server's key.",
            403: "Set model.api_key to a key the server accepts.",
            404: "Check model.base_url (it ends in /v1) and model.served_model.",
        }
        hint = hints.get(
            response.status_code,
            f"The server refused structured output '{self.mode}'; set "
            "model.structured_output to 'grammar', 'lark', 'json_schema' or 'none'.",
        )
        raise BackendUnavailable(
            f"the model server refused the request: HTTP {response.status_code}: {detail}", hint=hint
        )

    def _model_entry(self) -> tuple[dict[str, Any], httpx.Response]:
        """The served model's entry in GET /models (vLLM reports `max_model_len` there), and the response."""
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.get(self.base_url + "/models")
                if response.status_code in _RETRY_STATUS and attempt < self.max_retries:
                    self._sleep(self.backoff_s * 2**attempt)
                    continue
                response.raise_for_status()
                models = response.json().get("data") or []
                break
            except (httpx.TransportError, httpx.HTTPStatusError, ValueError) as e:
                if attempt == self.max_retries:
                    raise BackendUnavailable(
                        f"cannot reach the model server at {self.base_url}: {e}",
                        hint="Start vLLM or SGLang, or fix model.base_url.",
                    ) from None
                self._sleep(self.backoff_s * 2**attempt)
        for entry in models:
            if not self.model or entry.get("id") == self.model:
                return entry, response
        raise BackendUnavailable(
            f"the server at {self.base_url} does not serve '{self.model}'",
            hint="Set model.served_model to one of: " + ", ".join(m.get("id", "?") for m in models),
        )


@contextmanager
def _retryable(dropped: str, malformed: str) -> Iterator[None]:
    """Network trouble and unreadable answers as _Retry, worded for the person (`dropped`, `malformed`)."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        raise _Retry(f"cannot connect ({e})") from None
    except httpx.TimeoutException as e:
        raise _Retry(f"timed out ({type(e).__name__})") from None
    except (httpx.RemoteProtocolError, httpx.ReadError) as e:
        raise _Retry(f"{dropped} ({e})") from None
    except ValueError as e:  # json.JSONDecodeError included
        raise _Retry(f"{malformed} ({e})") from None
