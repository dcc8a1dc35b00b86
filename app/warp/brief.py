"""The person's report instructions (issue 15): length, report language, free-text instructions, their
own outline and plan review. Stored in the session's options, so a resumed run keeps them."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sala_report.app.errors import UsageError
from sala_report.app.settings import WarpSettings
from sala_report.app.warp.budget import planned_steps
from sala_report.app.warp.state import Node, Outline

LENGTHS = ("short", "standard", "long")
INSTRUCTION_CHARS = 4000  # a page of instructions; more would crowd the evidence out of a small context
# Codes people type for the languages most asked for; any other value is passed to the model as written.
LANGUAGE_NAMES = {
    "ar": "Arabic",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "tr": "Turkish",
    "zh": "Chinese",
}


@dataclass(frozen=True)
class Brief:
    length: str = "standard"
    language: str = ""  # "" : the language of the question
    instructions: str = ""
    review_plan: bool = False
    clarify: bool = False  # ask the person up to three questions about scope before searching (clarify.py)
    questions: tuple[str, ...] | None = None  # those asked; None: not asked yet
    answers: tuple[str, ...] | None = None  # one per question ("": left unanswered); None: not answered yet

    def __post_init__(self):
        if self.length not in LENGTHS:
            raise ValueError(f"length must be one of {', '.join(LENGTHS)}, got {self.length!r}")
        for name in ("questions", "answers"):  # lists when read back from the stored JSON
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))

    def to_options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Brief:
        data = options.get("brief") or {}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def waiting_for_answers(self) -> bool:
        """Questions were asked and the person has not answered (nor skipped) them yet."""
        return bool(self.questions) and self.answers is None

    @property
    def clarified(self) -> list[tuple[str, str]]:
        """(question, answer) for each question the person answered."""
        answers = self.answers or ()
        return [(q, a) for q, a in zip(self.questions or (), answers) if a.strip()]

    @property
    def language_name(self) -> str:
        """ "Chinese" for "zh"; other values as the person wrote them."""
        return LANGUAGE_NAMES.get(self.language.strip().lower(), self.language.strip())


def sized(warp: WarpSettings, length: str) -> WarpSettings:
    """`warp` with its section, expand and step budgets scaled for `length`. Applied on top of whatever the
    budgets already are (the person's settings, or those derived for a small model), so the two compose."""
    if length not in LENGTHS:
        raise ValueError(f"length must be one of {', '.join(LENGTHS)}, got {length!r}")
    if length == "standard":
        return warp
    if length == "short":
        sections = max(2, math.ceil(warp.max_sections / 2))
        expands = 0
        # half the steps, but enough for the shorter report; never more than the budget given
        steps = min(warp.max_steps, max(math.ceil(planned_steps(sections, 0) * 1.5), math.ceil(warp.max_steps / 2)))
    else:
        sections = min(20, math.ceil(warp.max_sections * 1.5))
        expands = max(1, warp.max_expands * 2)
        steps = max(math.ceil(planned_steps(sections, expands) * 1.5), warp.max_steps * 2)
    return dataclasses.replace(warp, max_sections=sections, max_expands=expands, max_steps=steps)


def read_instructions(value: str) -> str:
    """`--instructions TEXT`, or `@FILE` for a file's text; one clear error for a file that cannot be read
    or instructions too long to leave room for the evidence."""
    text = value
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(
                f"cannot read the instructions file {path}: {getattr(e, 'strerror', None) or e}",
                hint="Give --instructions TEXT, or @FILE naming a UTF-8 text file.",
            ) from None
    text = text.strip()
    if len(text) > INSTRUCTION_CHARS:
        raise UsageError(
            f"the instructions are {len(text)} characters; at most {INSTRUCTION_CHARS} are allowed",
            hint="Say what the report should cover and for whom in a few paragraphs.",
        )
    return text


_HEADING = re.compile(r"^(#{1,3})[ \t]+(.+?)[ \t#]*$")


def parse_outline(text: str, *, max_depth: int = 3) -> Outline:
    """An outline from Markdown headings: with a single `#` heading it is the title and `##`/`###` are the
    sections and subsections; otherwise `#`, `##`, `###` are sections, subsections and theirs. The first
    paragraph under a heading is its plan. Raises ValueError saying what is wrong."""
    headings: list[tuple[int, str, list[str]]] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:  # code in the outline is neither a heading nor a plan
            continue
        m = _HEADING.match(line)
        if m:
            headings.append((len(m.group(1)), m.group(2).strip(), []))
        elif headings and line.strip():
            headings[-1][2].append(line.strip())
    if not headings:
        raise ValueError("expected Markdown headings (# Title, ## Section, ### Subsection), found none")
    title = ""
    if sum(1 for level, _, _ in headings if level == 1) == 1 and headings[0][0] == 1 and len(headings) > 1:
        title = headings[0][1]
        headings = [(level - 1, t, body) for level, t, body in headings[1:]]
    outline = Outline(title)
    stack: list[Node] = []
    for level, heading, body in headings:
        if level > len(stack) + 1:
            raise ValueError(f'expected heading "{heading}" at most one level below the one before it')
        if level > max_depth:
            raise ValueError(f'expected at most {max_depth} levels of sections, "{heading}" is at level {level}')
        node = outline.new_node(heading, " ".join(body)[:300])
        del stack[level - 1 :]
        (stack[-1].children if stack else outline.sections).append(node)
        stack.append(node)
    if not outline.title:
        outline.title = outline.sections[0].title if len(outline.sections) == 1 else ""
    return outline


def read_outline(path: Path, *, max_depth: int = 3) -> Outline:
    """The person's outline file, or one clear error naming the file and the problem."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the outline {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return parse_outline(text, max_depth=max_depth)
    except ValueError as e:
        raise UsageError(
            f"the outline {path} cannot be used: {e}",
            hint="Write one '## Section' heading per section (### for subsections), optionally under one '# Title'.",
        ) from None


_LANGUAGE = re.compile(r"[^\W\d_][\w ()-]{0,39}")  # a name or code: "zh", "German", "Portuguese (Brazil)"


def brief_from(
    warp: WarpSettings,
    length: str | None = None,
    language: str | None = None,
    instructions: str | None = None,
    outline_file: Path | str | None = None,
    review_plan: bool = False,
    clarify: bool = False,
    answers: tuple[str, ...] | None = None,
) -> tuple[Brief, Outline | None]:
    """The person's brief from the flags or the start screen, falling back on `[warp]`; with their outline when
    they gave a file. An unreadable file, or a language that is no name, is one clear UsageError. `answers`
    (given before the questions are asked, for scripts) answer them in order, and so imply `clarify`."""
    language = (warp.language if language is None else language).strip()
    if language and not _LANGUAGE.fullmatch(language):
        raise UsageError(f"--language must be a language name or code such as zh or German, got {language!r}")
    text = read_instructions(warp.instructions if instructions is None else instructions)
    path = outline_file if outline_file else warp.outline
    outline = read_outline(Path(path), max_depth=warp.max_depth) if path else None
    clarify = clarify or warp.clarify or answers is not None
    brief = Brief(length or warp.length, language, text, review_plan or warp.review_plan, clarify, answers=answers)
    return brief, outline
