"""Fixtures for the WARP tests: a real SQLite store with a few sources, and the scripted generator."""

from __future__ import annotations

import pytest
from warp_fakes import ScriptedGenerator, make_store, settings

from sala_report.app.warp import Engine

QUESTION = "How is renewable energy changing electricity?"


@pytest.fixture
def corpus():
    store, retriever, ids = make_store()
    yield store, retriever, ids
    store.close()


@pytest.fixture
def start(corpus):
    """start(generator=None, **settings) -> (engine, events list)"""
    store, retriever, ids = corpus

    def make(generator=None, question=QUESTION, **changes):
        engine = Engine.start(
            store, generator or ScriptedGenerator(), retriever, settings(**changes), question, docs_source_ids=ids
        )
        seen: list = []
        engine.subscribe(seen.append)
        return engine, seen

    return make
