"""Prompts for each step, rendered from `assets/prompts/*.jinja` and fitted to the model's context.

Two styles: "full", the released prompts (for models that follow long instructions), and "compact",
for very small models constrained by the grammar: the grammar enforces the answer format, so these
prompts leave it out, put the evidence first and end with one plain instruction, as small models copy
whatever instruction text they see.

Untrusted text (passages, their titles and locations) reaches the model only inside `<evidence>`
blocks, after `neutralize` has defused anything that looks like the contract's tags, a chat
template's special tokens or a citation key. When a prompt is too long, finished sections are
abbreviated to their first and last words, then to their titles, and only then is evidence dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Callable

import jinja2

from sala_report.app.warp.citations import Entry, strip_cites
from sala_report.app.warp.state import Outline, walk

STYLES = ("full", "compact")

# (words kept at the head, words kept at the tail) of written sections, from full text to none
DRAFT_LEVELS: tuple[tuple[int, int] | None, ...] = (None, (80, 30), (30, 10), (0, 0))


class PromptTooLong(ValueError):
    """Even the shortest form of the prompt does not fit the model's context."""


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    folder = files("sala_report.assets") / "prompts"
    loader = jinja2.FunctionLoader(lambda name: folder.joinpath(*name.split("/")).read_text(encoding="utf-8"))
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)  # fmt: skip


def render(template: str, **values) -> str:
    text = _environment().get_template(template).render(**values)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def template(name: str, style: str = "full") -> str:
    """The template file for `name` ("write.jinja") in `style`."""
    if style not in STYLES:
        raise ValueError(f"prompt style must be one of {', '.join(STYLES)}, got {style!r}")
    return name if style == "full" else f"{style}/{name}"


def system_prompt(style: str = "full") -> str:
    return render(template("system.jinja", style))


_TAGLIKE = re.compile(r"[<>]")
_KEYLIKE = re.compile(r"(?i)text\s*id\s*(\d+)|bib\s*key")


def neutralize(text: str) -> str:
    """Evidence text that cannot pass for our tags, special tokens (`<|im_end|>`), or citation keys."""
    text = _TAGLIKE.sub(lambda m: "‹" if m.group(0) == "<" else "›", text)
    text = text.replace("\\cite", "cite").replace("\\", "/")
    return _KEYLIKE.sub(lambda m: f"passage {m.group(1)}" if m.group(1) else "reference", text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shown(text: str) -> str:
    """Model-written text (titles, plans, sections) on one line, neutralised like evidence: a served model
    that ignores the grammar could otherwise plant tags or special tokens in every later prompt."""
    return _one_line(neutralize(text))


def _abbreviate(text: str, head: int, tail: int) -> str:
    words = text.split()
    if head == 0:
        return "(written)"
    if len(words) <= head + tail + 5:
        return " ".join(words)
    return " ".join(words[:head]) + " … " + " ".join(words[len(words) - tail :])


def draft_text(outline: Outline, level: tuple[int, int] | None = None, *, keep_full: frozenset[int] = frozenset()) -> str:
    """The outline with each node's text ([OK]) or plan ([PLAN]), one line per node (warp.md §1.3).
    Citations are left out: they cost tokens and tempt the model to copy keys it was not shown."""
    if not outline.sections:
        return "There is no report yet."
    lines = [f"Title: {_shown(outline.title)}"]
    for loc in walk(outline):
        node = loc.node
        indent = "  " * (loc.depth - 1)
        if node.content is not None:
            body = _shown(strip_cites(node.content))
            if level is not None and node.id not in keep_full:
                body = _abbreviate(body, *level)
            mark = f"[OK] {body}"
        else:
            mark = f"[PLAN] {_shown(node.plan)}" + (" (left unwritten)" if node.skipped else "")
        lines.append(f"{indent}{loc.position} [{_shown(node.title)}]: {mark}")
    return "\n".join(lines)


def evidence_text(entries: list[Entry], max_chars: int, *, locations: bool = True) -> str:
    """The passages as `<evidence>` blocks; without `locations` a source is named by its title only."""
    if not entries:
        return "(no passages were found)"
    blocks = []
    for entry in entries:
        text = neutralize(entry.text.strip())
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] + " …"
        named = f"{entry.title} — {entry.location}" if locations else entry.title or entry.location
        source = neutralize(_one_line(named)).replace('"', "'")
        blocks.append(f'<evidence key="{entry.key}" source="{source}">\n{text}\n</evidence>')
    return "\n".join(blocks)


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    evidence: tuple[Entry, ...]  # the passages actually shown (their keys are the ones to cite)
    draft_level: int


def fit(build: Callable[[str, str, list[Entry]], str], outline: Outline, entries: list[Entry], *, count: Callable[[str], int],
        budget: int, passage_chars: int, keep_full: frozenset[int] = frozenset(), style: str = "full") -> Prompt:  # fmt: skip
    """The longest prompt that fits `budget` tokens. `build(draft, evidence, shown)` renders the template
    (`shown`: the passages in `evidence`, whose keys the prompt may offer for citing).

    Order of shrinking: abbreviate finished sections (three levels), then drop the lowest-ranked
    passages, then shorten the passages that remain."""
    system = system_prompt(style)
    overhead = count(system) + 32  # chat-template tokens around the two messages
    chars = passage_chars
    shown = list(entries)
    while True:
        for i, level in enumerate(DRAFT_LEVELS):
            evidence = evidence_text(shown, chars, locations=style == "full")
            user = build(draft_text(outline, level, keep_full=keep_full), evidence, shown)
            if count(user) + overhead <= budget:
                return Prompt(system, user, tuple(shown), i)
        if len(shown) > 1:
            shown = shown[: max(1, len(shown) * 2 // 3)]
        elif shown and chars > 200:
            chars //= 2
        else:
            raise PromptTooLong(f"the prompt needs more than {budget} tokens even with the draft abbreviated; "
                                "use a model with a longer context or a lower warp.max_tokens")  # fmt: skip


_EVIDENCE_BLOCK = re.compile(r"<evidence\b.*?</evidence>", re.S)


def instruction_text(prompt: Prompt, values: list[str]) -> list[str]:
    """The prompt's own wording, in pieces: the system prompt, and the user message without its evidence
    blocks and without `values` (the question, titles, plans: text the answer may well repeat)."""
    user = _EVIDENCE_BLOCK.sub("\0", prompt.user)
    for value in sorted((v for v in values if v and v.strip()), key=len, reverse=True):
        user = user.replace(value, "\0")
    return [piece.strip() for piece in (prompt.system, *user.split("\0")) if piece.strip()]
