"""`doctor --online` on a served model: it names the kind of server and the structured output it gets, and
sends one tiny constrained request to see whether the server honours it."""

from __future__ import annotations

from types import SimpleNamespace

from fake_openai import FakeOpenAI, free_port

from sala_report.app import doctor

GOOD = '<thought>one word</thought>\n<action>{"name": "search", "keywords": ["solar"]}</action>'


def model_settings(url: str, mode: str = "auto") -> SimpleNamespace:
    return SimpleNamespace(base_url=url, served_model="", api_key="", structured_output=mode)


def test_an_honoured_constraint_is_reported_with_what_the_probe_found():
    with FakeOpenAI(lambda body: GOOD, flavour="vllm", context=65536) as fake:
        check = doctor._probe_server(model_settings(fake.url), "server")
    assert check.status == doctor.OK, check
    assert "vLLM 0.11.0, grammar" in check.detail and "65536" in check.detail
    assert fake.bodies[-1]["structured_outputs"]["grammar"].startswith("root ::=")


def test_a_server_that_ignores_the_constraint_fails():
    """A plain server that takes the grammar field but answers off-format (as one ignoring it would)."""
    with FakeOpenAI(lambda body: "Sure! Here are some keywords: solar, wind.") as fake:
        check = doctor._probe_server(model_settings(fake.url, "grammar"), "server")
    assert check.status == doctor.FAIL and "did not honour the grammar constraint" in check.detail


def test_a_server_that_is_down_fails_with_a_hint():
    check = doctor._probe_server(model_settings(f"http://127.0.0.1:{free_port()}/v1"), "server")
    assert check.status == doctor.FAIL and check.fix
