"""The OpenAI-compatible generator against a real HTTP server on loopback: streaming and not,
structured-output fields, retries with backoff, dropped connections, timeouts, errors, a dead server."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, free_port
from warp_fakes import Policy, check_report, kind_of, settings

from sala_report.app.errors import BackendUnavailable
from sala_report.app.warp import Engine, WarpStore
from sala_report.app.warp.generator import GenRequest
from sala_report.app.warp.grammar import search_constraint, write_constraint
from sala_report.app.warp.openai_http import OpenAIGenerator
from sala_report.app.warp.validate import Limits

SEARCH_ANSWER = '<thought>look</thought>\n<action>{"name": "search", "keywords": ["solar"]}</action>'


def policy_answer(body: dict) -> str:
    request = SimpleNamespace(prompt=body["messages"][-1]["content"])
    return Policy(expands=0)(kind_of(request), request)


def request(constraint=None, prompt="Task: choose web and library search queries.\nQuestion") -> GenRequest:
    return GenRequest("system text", prompt, constraint, max_tokens=64, temperature=0.0, top_p=1.0, seed=3)


@pytest.fixture
def server():
    with FakeOpenAI(lambda body: SEARCH_ANSWER) as fake:
        yield fake


def generator(url, **kw):
    sleeps: list[float] = []
    return OpenAIGenerator(url, **{"backoff_s": 0.5, "sleep": sleeps.append, **kw}), sleeps


def test_streaming_answer_with_json_schema_output(server):
    gen, _ = generator(server.url, structured_output="json_schema")
    deltas: list[str] = []
    result = gen.generate(request(search_constraint(Limits())), on_delta=deltas.append)
    assert result.text == SEARCH_ANSWER  # rebuilt from the server's {"thought", "action"} JSON
    assert len(deltas) > 1 and result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == (11, 7)
    body = server.bodies[-1]
    assert body["model"] == "served-model" and body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["seed"] == 3
    schema = body["response_format"]["json_schema"]
    assert schema["name"] == "warp_search" and schema["strict"]
    assert schema["schema"]["properties"]["action"]["properties"]["keywords"]["maxItems"] == 5
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert gen.context_tokens() == 8192


def test_not_streaming(server):
    gen, _ = generator(server.url, stream=False, structured_output="json_schema")
    deltas: list[str] = []
    result = gen.generate(request(search_constraint(Limits())), on_delta=deltas.append)
    assert result.text == SEARCH_ANSWER and len(deltas) == 1  # the raw JSON-mode answer, as it came
    assert not server.bodies[-1]["stream"] and "stream_options" not in server.bodies[-1]


def test_grammar_modes_send_gbnf_or_lark(server):
    constraint = write_constraint(Limits(), ["textid1"])
    for mode, grammar in (("grammar", constraint.gbnf), ("lark", constraint.lark)):
        gen, _ = generator(server.url, structured_output=mode)
        gen.generate(request(constraint))
        body = server.bodies[-1]
        assert body["structured_outputs"] == {"grammar": grammar} and "response_format" not in body


def test_auto_on_an_unknown_server_sends_no_constraint(server):
    gen, _ = generator(server.url)
    gen.generate(request(search_constraint(Limits())))
    assert not {"structured_outputs", "response_format", "grammar", "ebnf"} & set(server.bodies[-1])
    assert gen.name.endswith("(server, none)")


FIELDS = {
    "vllm": lambda body: body["structured_outputs"]["grammar"],
    "sglang": lambda body: body["ebnf"],
    "llamacpp": lambda body: body["grammar"],
    "ollama": lambda body: body["format"],
}
NAMES = {
    "vllm": "(vLLM 0.11.0, grammar)",
    "sglang": "(SGLang 0.5.4, grammar)",
    "llamacpp": "(llama.cpp server b6000, grammar)",
    "ollama": "(Ollama 0.12.3, json_schema)",
}


@pytest.mark.parametrize("flavour", list(FIELDS))
def test_a_cited_report_from_each_kind_of_server(corpus, flavour):
    """ "auto" probes the server and sends the constraint in the field it reads; the fake applies it with
    xgrammar (vLLM's and SGLang's engine; llama.cpp's GBNF and Ollama's schema read the same), refusing
    what does not compile or does not accept the answer. Ollama gets its native API with num_ctx."""
    store, retriever, ids = corpus
    with FakeOpenAI(policy_answer, flavour=flavour, context=16384) as fake:
        gen, _ = generator(fake.url)
        engine = Engine.start(
            store,
            gen,
            retriever,
            settings(context_tokens=0, max_expands=0),
            "How is solar changing?",
            docs_source_ids=ids,
        )
        result = engine.run()
    assert result.status == "done", result
    assert all(FIELDS[flavour](body) for body in fake.bodies)
    assert WarpStore(store).session(result.session_id).model.endswith(NAMES[flavour])
    assert gen.context_tokens() == 16384
    if flavour == "ollama":
        assert {b["options"]["num_ctx"] for b in fake.bodies} == {16384} and "/v1/chat/completions" not in fake.paths
    markdown = check_report(store, result.session_id)
    assert "## References" in markdown and "[1]" in markdown


def test_none_mode_sends_no_constraint(server):
    gen, _ = generator(server.url, structured_output="none", model="served-model")
    assert gen.generate(request(search_constraint(Limits()))).text == SEARCH_ANSWER
    assert "response_format" not in server.bodies[-1] and "structured_outputs" not in server.bodies[-1]


def test_server_errors_are_retried_with_backoff(server):
    server.faults = [("status", 503), ("status", 500), "ok"]
    gen, sleeps = generator(server.url, model="served-model")
    assert gen.generate(request()).text == SEARCH_ANSWER
    assert sleeps == [0.5, 1.0] and len(server.bodies) == 3


def test_rate_limit_honours_retry_after(server):
    server.faults = [("status", 429, 2)]
    gen, sleeps = generator(server.url, model="served-model")
    assert gen.generate(request()).text == SEARCH_ANSWER
    assert sleeps == [2.0]


def test_a_dropped_stream_restarts_the_answer(server):
    server.faults = ["drop"]
    gen, sleeps = generator(server.url, model="served-model")
    deltas: list[str] = []
    restarts: list[bool] = []
    result = gen.generate(request(), on_delta=deltas.append, on_restart=lambda: restarts.append(True))
    assert result.text == SEARCH_ANSWER and restarts == [True] and len(sleeps) == 1
    assert "".join(deltas).endswith(SEARCH_ANSWER)


def test_a_slow_answer_times_out_and_is_retried(server):
    server.faults = [("slow", 1.0)]
    gen, sleeps = generator(server.url, model="served-model", timeout_s=0.3)
    assert gen.generate(request()).text == SEARCH_ANSWER and len(sleeps) == 1


@pytest.mark.parametrize("code, hint", [(400, "structured_output"), (401, "api_key"), (404, "base_url")])
def test_client_errors_fail_at_once_with_a_hint(server, code, hint):
    server.faults = [("status", code)]
    gen, sleeps = generator(server.url, model="served-model")
    with pytest.raises(BackendUnavailable, match=f"HTTP {code}") as failure:
        gen.generate(request())
    assert hint in failure.value.hint and sleeps == []


def test_persistent_errors_end_in_backend_unavailable(server):
    server.faults = [("status", 502)] * 4
    gen, sleeps = generator(server.url, model="served-model", max_retries=3)
    with pytest.raises(BackendUnavailable, match="failed 4 times"):
        gen.generate(request())
    assert sleeps == [0.5, 1.0, 2.0]


def test_a_server_that_is_down_is_backend_unavailable():
    url = f"http://127.0.0.1:{free_port()}/v1"
    gen, sleeps = generator(url, max_retries=1)
    with pytest.raises(BackendUnavailable, match="cannot reach the model server"):
        gen.context_tokens()
    gen, sleeps = generator(url, model="m", max_retries=1, structured_output="none")
    with pytest.raises(BackendUnavailable, match="cannot reach the model server"):  # the probe comes first
        gen.generate(request())


def test_unknown_served_model_is_named(server):
    gen, _ = generator(server.url, model="other")
    with pytest.raises(BackendUnavailable, match="does not serve 'other'"):
        gen.context_tokens()


def test_cancel_stops_the_stream(server):
    cancel = threading.Event()
    gen, _ = generator(server.url, model="served-model")
    result = gen.generate(request(), on_delta=lambda text: cancel.set(), cancel=cancel)
    assert result.finish_reason == "cancelled"


def test_cancel_stops_waiting_for_a_whole_answer(server):
    """Not streaming, a pause or cancel must not wait for the server's whole answer."""
    server.faults.append(("slow", 5.0))
    cancel = threading.Event()
    gen, _ = generator(server.url, model="served-model", stream=False)
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    result = gen.generate(request(), cancel=cancel)
    assert result.finish_reason == "cancelled" and result.text == ""
    assert time.perf_counter() - started < 3.0


@pytest.mark.parametrize("mode", ["json_schema", "grammar"])
def test_the_engine_runs_against_the_server(corpus, mode):
    store, retriever, ids = corpus
    with FakeOpenAI(policy_answer) as fake:
        gen, _ = generator(fake.url, structured_output=mode)
        engine = Engine.start(
            store,
            gen,
            retriever,
            settings(context_tokens=0, max_expands=0),
            "How is solar changing?",
            docs_source_ids=ids,
        )
        result = engine.run()
    assert result.status == "done" and result.steps == 8
    assert WarpStore(store).session(result.session_id).prompt_tokens == 11 * 8
    check_report(store, result.session_id)
