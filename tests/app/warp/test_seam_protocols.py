"""The protocols at the engine's seams describe the real parts: the Retriever protocol is what
retrieval's Retriever offers, and the app's RunningEngine is what the engine offers (same names,
parameters, defaults and annotations), so a fake written to a protocol also fits the real thing."""

from __future__ import annotations

import inspect

import pytest

from sala_report.app.tui.services import RunningEngine
from sala_report.app.warp.engine import Engine
from sala_report.app.warp.retriever import Retriever
from sala_report.retrieval.research import Retriever as RealRetriever


def _shape(function) -> list[tuple[str, object, object, object]]:
    return [(p.name, p.kind, p.default, p.annotation) for p in inspect.signature(function).parameters.values()]


def _methods(protocol: type) -> list[str]:
    return sorted(
        name for name, value in vars(protocol).items() if inspect.isfunction(value) and not name.startswith("_")
    )


def test_the_retriever_protocol_is_the_real_retrievers_gather():
    assert _methods(Retriever) == ["gather"]
    assert _shape(Retriever.gather) == _shape(RealRetriever.gather)
    assert (
        inspect.signature(Retriever.gather).return_annotation
        == inspect.signature(RealRetriever.gather).return_annotation
    )


@pytest.mark.parametrize("name", _methods(RunningEngine))
def test_the_app_asks_of_the_engine_only_what_it_has(name):
    assert _shape(getattr(RunningEngine, name)) == _shape(getattr(Engine, name))
    assert (
        inspect.signature(getattr(RunningEngine, name)).return_annotation
        == inspect.signature(getattr(Engine, name)).return_annotation
    )


def test_the_protocols_name_the_methods_the_engine_and_the_screen_call():
    assert _methods(RunningEngine) == ["cancel", "pause", "resume_run", "run", "submit", "subscribe"]
