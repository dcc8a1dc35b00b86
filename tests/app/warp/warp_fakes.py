"""Fakes for the WARP tests: a scripted Generator (the real protocol) and a small real store of sources."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sala_report.app.settings import WarpSettings
from sala_report.app.warp import render_markdown
from sala_report.app.warp.generator import GenRequest, GenResult
from sala_report.retrieval import Retriever, SourceRecord, Store

KINDS = {
    "Task: choose web": "search",
    "Task: draft the first outline": "init-plan",
    "Task: write one section": "write",
    "Task: decide whether": "extend",
}

CORPUS = {
    "solar.md": (
        "Solar power",
        [
            "Solar photovoltaic capacity grew quickly because module prices fell by about ninety percent over a decade.",
            "Rooftop solar panels let households generate electricity and sell surplus power back to the grid.",
        ],
    ),
    "batteries.md": (
        "Battery storage",
        [
            "Lithium-ion battery packs store surplus solar electricity and release it in the evening peak.",
            "Battery costs dropped sharply as factories scaled up production of lithium-ion cells.",
        ],
    ),
    "wind.md": (
        "Wind energy",
        [
            "Offshore wind turbines are larger than onshore turbines and benefit from steadier sea winds.",
            "Wind farms need grid connections and storage to balance their variable output.",
        ],
    ),
    "policy.md": (
        "Energy policy",
        [
            "Feed-in tariffs and auctions helped renewable energy projects secure long-term revenue.",
            "Carbon pricing makes fossil electricity more expensive relative to solar and wind power.",
        ],
    ),
}


def add_sources(store: Store, corpus: dict[str, tuple[str, list[str]]] = CORPUS, folder: str = "/docs") -> set[int]:
    ids = set()
    for name, (title, chunks) in corpus.items():
        text = "\n\n".join(chunks)
        digest = hashlib.sha256(text.encode()).hexdigest()
        source_id, _ = store.put_source(SourceRecord(f"{folder}/{name}", "file", title, text, digest, chunks))
        ids.add(source_id)
    return ids


def make_store(path=":memory:") -> tuple[Store, Retriever, set[int]]:
    store = Store.open(path)
    ids = add_sources(store)
    return store, Retriever(store), ids


def settings(**changes) -> WarpSettings:
    base = dict(
        max_steps=60,
        max_expands=2,
        max_retries=2,
        temperature=0.0,
        max_tokens=512,
        context_tokens=8192,
        max_sections=3,
        passages_for_plan=6,
        passages_per_search=3,
    )
    base.update(changes)
    return WarpSettings(**base)


# The compact prompts (assets/prompts/compact/) start with the question or the evidence: known by their last line.
COMPACT_KINDS = {
    "search keywords for": "search",
    "\nSections:\n": "extend",
    "sections that answer the question": "init-plan",
    "short paragraph about": "write",
}


def kind_of(request: GenRequest) -> str:
    released = [kind for start, kind in KINDS.items() if request.prompt.startswith(start)]
    return released[0] if released else next(kind for text, kind in COMPACT_KINDS.items() if text in request.prompt)


def shown_keys(request: GenRequest) -> list[str]:
    return re.findall(r'<evidence key="(textid\d+)"', request.prompt)


def shown_passages(request: GenRequest) -> dict[str, str]:
    return dict(re.findall(r'<evidence key="(textid\d+)" source="[^"]*">\n(.*?)\n</evidence>', request.prompt, re.S))


def target_title(request: GenRequest) -> str:
    m = re.search(r'section-[\d.]+ "([^"]+)"', request.prompt)
    return m.group(1) if m else "renewable energy"


def answer(thought: str, action) -> str:
    body = action if isinstance(action, str) else json.dumps(action)
    return f"<thought>{thought}</thought>\n<action>{body}</action>"


SECTIONS = [
    ("Solar power", "How solar generation grew"),
    ("Storage", "How batteries balance supply"),
    ("Policy", "Which policies helped"),
]


@dataclass
class Policy:
    """Sensible default answers for each step kind; `expands` expand decisions say yes, then nop."""

    expands: int = 1
    sections: list = field(default_factory=lambda: list(SECTIONS))

    def __call__(self, kind: str, request: GenRequest) -> str:
        return getattr(self, kind.replace("-", "_"))(request)

    def search(self, request: GenRequest) -> str:
        return answer("find facts", {"name": "search", "keywords": [target_title(request), "renewable energy"]})

    def init_plan(self, request: GenRequest) -> str:
        sections = [{"title": t, "plan": p} for t, p in self.sections]
        return answer("plan", {"name": "init-plan", "title": "Renewable energy today", "sections": sections})

    def write(self, request: GenRequest) -> str:
        passages = shown_passages(request)
        if not passages:
            return answer(
                "no evidence", "This part is described only in general terms, since no sources were found for it."
            )
        firsts = [(key, " ".join(text.replace("#", " ").split(".")[0].split())) for key, text in passages.items()]
        sentences = [f"{first} \\cite{{{key}}}." for key, first in firsts[:2]]
        return answer("use the passages", f"About {target_title(request)}: " + " ".join(sentences))

    def extend(self, request: GenRequest) -> str:
        if self.expands <= 0:
            return answer("deep enough", {"name": "nop"})
        self.expands -= 1
        position = re.search(r'"position": "(section-[\d.]+)"|^(section-[\d.]+): ', request.prompt, re.M)
        position = position.group(1) or position.group(2)
        subs = [{"title": "Costs", "plan": "How costs changed"}, {"title": "Adoption", "plan": "Who adopted it"}]
        return answer("needs depth", {"name": "extend-plan", "position": position, "subsections": subs})


class ScriptedGenerator:
    """Answers each step from `script[kind]` (a queue of strings or callables taking the request) and
    falls back to `policy`. Streams each answer in small deltas; records every request."""

    name = "scripted"

    def __init__(
        self,
        script: dict[str, list] | None = None,
        *,
        policy: Callable | None = None,
        context: int = 8192,
        delay_s: float = 0.0,
        small_model: bool = False,
    ):
        self.small_model = small_model  # as LocalGenerator says of a model under 1B parameters
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.policy = policy or Policy()
        self.context = context
        self.delay_s = delay_s
        self.requests: list[tuple[str, GenRequest]] = []
        self.lock = threading.Lock()

    def context_tokens(self) -> int:
        return self.context

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def generate(self, request: GenRequest, *, on_delta=None, cancel=None, on_restart=None) -> GenResult:
        kind = kind_of(request)
        with self.lock:
            self.requests.append((kind, request))
            queue = self.script.get(kind)
            item = queue.pop(0) if queue else None
        text = (item(request) if callable(item) else item) if item is not None else self.policy(kind, request)
        for i in range(0, len(text), 16):
            if cancel is not None and cancel.is_set():
                return GenResult(text[:i], "cancelled", 10, i // 4, 0.0)
            if self.delay_s:
                time.sleep(self.delay_s)
            if on_delta is not None:
                on_delta(text[i : i + 16])
        return GenResult(text, "stop", self.count_tokens(request.prompt), len(text) // 4 + 1, 0.001)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.requests]


def check_report(store, session_id: str) -> str:
    """The report contract: every [n] resolves to a listed reference and every reference is cited."""
    markdown = render_markdown(store, session_id)
    body, _, refs = markdown.partition("\n## References\n")
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", body)}
    listed = [int(n) for n in re.findall(r"(?m)^\[(\d+)\] ", refs)]
    assert cited == set(listed), (cited, listed)
    assert listed == list(range(1, len(listed) + 1))
    for line in refs.strip().splitlines():
        if line.strip():
            location = line.rsplit(" — ", 1)[1]
            assert store.source_by_location(location) is not None, location
    return markdown
