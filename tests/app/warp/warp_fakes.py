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
    body = action if isinstance(action, str) else json.dumps(action, ensure_ascii=False)  # as a model writes it
    return f"<thought>{thought}</thought>\n<action>{body}</action>"


SECTIONS = [
    ("Solar power", "How solar generation grew"),
    ("Storage", "How batteries balance supply"),
    ("Policy", "Which policies helped"),
]
ZH_SECTIONS = [("太阳能发电", "太阳能发电如何增长"), ("储能", "电池如何平衡供需"), ("能源政策", "哪些政策起了作用")]
ZH_ORDINALS = "一二三四五六七八九十"

# How each prompt style asks for a report language: "Write in Chinese, whatever ..." (full, agentcpm),
# "..., in Chinese." and "titled in Chinese" (compact).
_ASKS_CHINESE = re.compile(r"(?:Write|,(?: titled)?) in Chinese\b")


def asks_chinese(request: GenRequest) -> bool:
    """Whether the prompt asks for the report in Chinese, as a model that obeys it would read it."""
    return bool(_ASKS_CHINESE.search(request.prompt))


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
        chinese = asks_chinese(request)
        sections = [{"title": t, "plan": p} for t, p in (ZH_SECTIONS if chinese else self.sections)]
        title = "可再生能源的现状" if chinese else "Renewable energy today"
        return answer("plan", {"name": "init-plan", "title": title, "sections": sections})

    def write(self, request: GenRequest) -> str:
        passages = shown_passages(request)
        if asks_chinese(request):
            if not passages:
                return answer("no evidence", "这一部分只作概括说明，因为没有找到与它相关的资料。")
            said = [
                f"第{ZH_ORDINALS[i]}份资料说明，这一领域近年来发展迅速，成本、规模和政策都发生了明显的变化 \\cite{{{key}}}。"
                for i, key in enumerate(passages)
            ]
            closing = "总体来看，这些资料共同说明可再生能源正在深刻地改变电力系统的运行方式。"
            return answer("use the passages", f"关于{target_title(request)}：" + "".join(said[:2]) + closing)
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
        if asks_chinese(request):
            subs = [{"title": "成本", "plan": "成本如何变化"}, {"title": "普及", "plan": "谁在使用它"}]
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
