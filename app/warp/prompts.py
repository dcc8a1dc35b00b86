"""Prompts for each step, rendered from `assets/prompts/*.jinja` and fitted to the model's context.

Styles: "full", our own prompts for models that follow long instructions; "compact", for very small
models constrained by the grammar: the grammar enforces the answer format, so these prompts leave it out,
put the evidence first and end with one plain instruction, as small models copy whatever instruction
text they see; "agentcpm", for AgentCPM-Report, in the structure its released pipeline trained it on
(warp.md §1.4): no system prompt, the outline as `# Section-1 [title]: [OK] …` lines nested by four
spaces, passages as `bibkey:textidN` blocks, the released variable names (our own wording). With
`warp.prompt_dir` the person's own copies of the released templates are rendered instead, exactly as the
released renderer does (a plain `jinja2.Template`, the same variables, nothing added or trimmed).

Untrusted text (passages, their titles and locations) reaches the model only inside `<evidence>`
blocks, after `neutralize` has defused anything that looks like the contract's tags, a chat
template's special tokens or a citation key. When a prompt is too long, finished sections are
abbreviated to their first and last words, then to their titles, and only then is evidence dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import jinja2

from sala_report.app.errors import ConfigError
from sala_report.app.warp.citations import Entry, strip_cites
from sala_report.app.warp.state import Outline, walk

STYLES = ("full", "compact", "agentcpm")
# A style naming a folder of the person's templates (warp.prompt_dir): "dir:/path/to/templates".
DIR_PREFIX = "dir:"
# Our template -> (the released pipeline's file name, the variables its renderer passes).
RELEASED = {
    "search.jinja": ("surveycpm_search.jinja", ("user_query", "current_outline", "current_instruction")),
    "init_plan.jinja": ("surveycpm_init_plan.jinja", ("user_query", "current_information")),
    "write.jinja": (
        "surveycpm_write.jinja",
        ("user_query", "current_survey", "current_instruction", "current_information"),
    ),
    "extend_plan.jinja": ("surveycpm_extend_plan.jinja", ("user_query", "current_survey")),
}

# (words kept at the head, words kept at the tail) of written sections, from full text to none
DRAFT_LEVELS: tuple[tuple[int, int] | None, ...] = (None, (80, 30), (30, 10), (0, 0))


class PromptTooLong(ValueError):
    """Even the shortest form of the prompt does not fit the model's context."""


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    folder = files("sala_report.assets") / "prompts"
    loader = jinja2.FunctionLoader(lambda name: folder.joinpath(*name.split("/")).read_text(encoding="utf-8"))
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def released(style: str) -> bool:
    """Whether `style` uses the released pipeline's layouts (no system prompt, bibkey blocks)."""
    return style == "agentcpm" or style.startswith(DIR_PREFIX)


def released_values(name: str, values: dict) -> dict:
    """The variables the released renderer passes for our template `name`, from ours: the question, the
    outline (`draft`), the passages (`evidence`) and the cursor, read from `target` ("section-2.1 …" or
    the whole outline)."""
    target = str(values.get("target", ""))
    cursor = target.split()[0] if target.startswith("section-") else "outline"
    every = {
        "user_query": values["question"],
        "current_outline": values.get("draft", ""),
        "current_survey": values.get("draft", ""),
        "current_information": values.get("evidence", ""),
        "current_instruction": f"You need to update {cursor}",
    }
    return {key: every[key] for key in RELEASED[name][1]}


def render(template: str, **values) -> str:
    if template.startswith(DIR_PREFIX):
        folder, _, name = template[len(DIR_PREFIX) :].rpartition("/")
        return _render_user(folder, name, values)
    # the person's brief (brief.py), when they gave one
    values = {"instructions": "", "language": "", "clarified": "", **values}
    if template.startswith("agentcpm/"):
        values = {**values, **released_values(template.split("/", 1)[1], values)}
    text = _environment().get_template(template).render(**values)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _render_user(folder: str, name: str, values: dict) -> str:
    """The person's copy of a released template, rendered as the released renderer does: `jinja2.Template`
    with default options over the file's text, given exactly the released variables."""
    path = Path(folder) / RELEASED[name][0]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            f"cannot read the prompt template {path}: {e.strerror or e}",
            hint=f"warp.prompt_dir must hold {', '.join(f for f, _ in RELEASED.values())}.",
        ) from None
    try:
        return jinja2.Template(text).render(**released_values(name, values))
    except jinja2.TemplateError as e:
        raise ConfigError(
            f"the prompt template {path} does not render: {e}",
            hint="Fix the template, or unset warp.prompt_dir to use the built-in prompts.",
        ) from None


def template(name: str, style: str = "full") -> str:
    """The template file for `name` ("write.jinja") in `style`."""
    if style.startswith(DIR_PREFIX):
        return f"{style}/{name}"
    if style not in STYLES:
        raise ValueError(f"prompt style must be one of {', '.join(STYLES)}, got {style!r}")
    return name if style == "full" else f"{style}/{name}"


def system_prompt(style: str = "full") -> str:
    """No system prompt for AgentCPM-Report: its pipeline sends none."""
    return "" if released(style) else render(template("system.jinja", style))


def auto_style(generator) -> str:
    """The style for warp.prompt_style "auto": AgentCPM-Report (known by its name or path) gets its own,
    models that say they are small (LocalGenerator.small_model) the compact one, others the full one."""
    if "agentcpm" in str(getattr(generator, "name", "")).lower().replace("-", "").replace("_", ""):
        return "agentcpm"
    return "compact" if getattr(generator, "small_model", False) else "full"


def user_style(prompt_dir: str) -> str:
    """The style that renders the person's templates in `prompt_dir` (checked now, so a wrong folder is
    one clear error before the run starts)."""
    folder = Path(prompt_dir).expanduser()
    missing = [f for f, _ in RELEASED.values() if not (folder / f).is_file()]
    if missing:
        raise ConfigError(
            f"warp.prompt_dir {folder} lacks {', '.join(missing)}",
            hint="Point it at a folder holding the four surveycpm_*.jinja templates.",
        )
    return DIR_PREFIX + str(folder)


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


def draft_text(
    outline: Outline, level: tuple[int, int] | None = None, *, keep_full: frozenset[int] = frozenset()
) -> str:
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


def released_outline(
    outline: Outline, level: tuple[int, int] | None = None, *, keep_full: frozenset[int] = frozenset()
) -> str:
    """The outline as the released pipeline prints it: `# Title: [OK] …`, then `# Section-1 [title]: [OK] text`
    or `[PLAN] plan`, deeper levels as `## Section-1.1` after four spaces a level, a newline after each line.
    Like draft_text, the text is neutralised and without citations, and abbreviated at `level`."""
    if not outline.sections:
        return "There is no survey."
    lines = [f"# Title: [OK] {_shown(outline.title)}"]
    for loc in walk(outline):
        node = loc.node
        if node.content is not None:
            body = _shown(strip_cites(node.content))
            if level is not None and node.id not in keep_full:
                body = _abbreviate(body, *level)
            mark = f"[OK] {body}"
        else:
            mark = f"[PLAN] {_shown(node.plan)}"
        number = loc.position.removeprefix("section-")
        lines.append(f"{'    ' * (loc.depth - 1)}{'#' * loc.depth} Section-{number} [{_shown(node.title)}]: {mark}")
    return "\n".join(lines) + "\n"


def released_evidence(entries: list[Entry], max_chars: int) -> str:
    """The passages as the released pipeline packs them: `bibkey:textidN`, a newline, the (neutralised)
    text; blocks apart by a blank line; nothing at all when none were found."""
    blocks = []
    for entry in entries:
        text = neutralize(entry.text.strip())
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] + " …"
        blocks.append(f"bibkey:{entry.key}\n{text}")
    return "\n\n".join(blocks)


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


def fit(
    build: Callable[[str, str, list[Entry]], str],
    outline: Outline,
    entries: list[Entry],
    *,
    count: Callable[[str], int],
    budget: int,
    passage_chars: int,
    keep_full: frozenset[int] = frozenset(),
    style: str = "full",
) -> Prompt:
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
            if released(style):
                evidence = released_evidence(shown, chars)
                draft = released_outline(outline, level, keep_full=keep_full)
            else:
                evidence = evidence_text(shown, chars, locations=style == "full")
                draft = draft_text(outline, level, keep_full=keep_full)
            user = build(draft, evidence, shown)
            if count(user) + overhead <= budget:
                return Prompt(system, user, tuple(shown), i)
        if len(shown) > 1:
            shown = shown[: max(1, len(shown) * 2 // 3)]
        elif shown and chars > 200:
            chars //= 2
        else:
            raise PromptTooLong(
                f"the prompt needs more than {budget} tokens even with the draft abbreviated; "
                "use a model with a longer context or a lower warp.max_tokens"
            )


_EVIDENCE_BLOCK = re.compile(r"<evidence\b.*?</evidence>", re.S)


def instruction_text(prompt: Prompt, values: list[str]) -> list[str]:
    """The prompt's own wording, in pieces: the system prompt, and the user message without its evidence
    blocks and without `values` (the question, titles, plans: text the answer may well repeat)."""
    user = _EVIDENCE_BLOCK.sub("\0", prompt.user)
    for value in sorted((v for v in values if v and v.strip()), key=len, reverse=True):
        user = user.replace(value, "\0")
    return [piece.strip() for piece in (prompt.system, *user.split("\0")) if piece.strip()]
