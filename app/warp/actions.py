"""The action contract (warp.md §1.4): `<thought>…</thought><action>…</action>`, and the actions it carries.

Parsing only splits the answer into its two blocks; validate.py decides whether the action is acceptable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ActionError(ValueError):
    """The model's answer broke the contract; the message is shown to the model on its next try."""


@dataclass(frozen=True)
class Response:
    thought: str | None  # a missing thought is tolerated, as in the released pipeline
    action: str


@dataclass(frozen=True)
class SearchAction:
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class PlanSection:
    title: str
    plan: str


@dataclass(frozen=True)
class InitPlan:
    title: str
    sections: tuple[PlanSection, ...]


@dataclass(frozen=True)
class ExtendPlan:
    position: str  # "section-2" or "section-2.1"
    subsections: tuple[PlanSection, ...]


@dataclass(frozen=True)
class Nop:
    """TERMINATE: the draft needs no further deepening."""


@dataclass(frozen=True)
class WriteAction:
    content: str  # Markdown without headings, citing `\cite{textidN}`
    removed: tuple[str, ...]  # cited keys that were not in the registry and were taken out


_THINK = re.compile(r"<think>.*?</think>", re.S)
_THOUGHT = re.compile(r"<thought>(.*?)</thought>", re.S)
_ACTION = re.compile(r"<action>(.*?)(?:</action>|$)", re.S)


def parse_response(text: str) -> Response:
    """The first thought and the first action block. An action cut off by the token limit (no closing
    tag) is still returned, so the validator can say what is wrong with it."""
    text = _THINK.sub("", text)
    action = _ACTION.search(text)
    if action is None:
        raise ActionError("the answer has no <action>...</action> block")
    thought = _THOUGHT.search(text[: action.start()])
    return Response(thought.group(1).strip() if thought else None, action.group(1).strip())
