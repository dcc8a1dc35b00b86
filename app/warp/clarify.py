"""Clarifying questions (issue 15): before any search, one model call asks the person up to three short
questions about the scope of their research question; the answers they give reach every later prompt as
their own words (brief.py keeps both with the session). Also the `--answers FILE` format."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sala_report.app.errors import UsageError
from sala_report.app.settings import WarpSettings
from sala_report.app.warp import gbnf
from sala_report.app.warp.actions import ActionError, parse_response
from sala_report.app.warp.brief import Brief
from sala_report.app.warp.choice_grammar import THOUGHT, literal, ordered_choice
from sala_report.app.warp.decoding import Decoding
from sala_report.app.warp.filler import filler_phrase
from sala_report.app.warp.generator import Generator, GenRequest
from sala_report.app.warp.grammar import CAPITALS, Constraint
from sala_report.app.warp.prompts import fit, neutralize, render
from sala_report.app.warp.state import Outline
from sala_report.app.warp.steps import Cancelled, prompt_style, writing
from sala_report.app.warp.validate import load_json

MAX_QUESTIONS = 3
QUESTION_CHARS = 120  # one short sentence
ANSWER_CHARS = 500  # a few sentences: answers share the prompt with the evidence
THOUGHT_CHARS = 300
# What a model that chooses rather than writes (evidence mode: the embedded 135M model) picks from: the
# scope questions the peers' users are asked most. There is no evidence yet to derive better ones from.
STOCK_QUESTIONS = (
    "Which aspects of the question matter most to you?",
    "Who is the report for?",
    "Which time period should the report cover?",
    "Which countries or regions should it focus on?",
    "Should it rely on research papers, official statistics or news?",
    "How technical should the report be?",
)

# One question: a capital, then no quote, backslash, "<", control character or question mark, then one
# question mark (ASCII or full-width). Written so that llguidance, xgrammar and llama.cpp read it alike.
QUESTION_PATTERN = f'^[{CAPITALS}][^<"\\\\\\x00-\\x1f?？]{{6,{QUESTION_CHARS - 2}}}[?？]$'
_JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_LARK_HEAD = 'start: "<thought>" THOUGHT "</thought>" /[ \\n]{0,2}/ "<action>" " "? action "</action>"\n'
_GBNF_ROOT = '"<thought>" thought "</thought>" [ \\n]{0,2} "<action>" " "? action "</action>"'
_CHATTER = re.compile(
    r"(?i)\b(?:any (?:other |more |further )?questions|can i help|anything else|how can i|"
    r"what (?:is|was) (?:the|your) (?:research )?question)\b"
)
_MARKUP = re.compile(r"(?i)[<>\\{}\[\]]|textid|\bcite\b")


@dataclass(frozen=True)
class Asked:
    """What one clarify call gave: the questions that passed (at most three) and why others were dropped."""

    questions: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _schema(items: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": "clarify"},
            "questions": {"type": "array", "items": items, "minItems": 1, "maxItems": MAX_QUESTIONS},
        },
        "required": ["name", "questions"],
        "additionalProperties": False,
    }


def _wrapped(schema: dict[str, Any]) -> dict[str, Any]:
    """`{thought, action}` for servers that take only a JSON schema (Ollama's `format`)."""
    return {
        "type": "object",
        "properties": {"thought": {"type": "string"}, "action": schema},
        "required": ["thought", "action"],
        "additionalProperties": False,
    }


def questions_constraint(thought_chars: int, *, fixed_thought: bool = False) -> Constraint:
    """1..3 questions the model writes, each matching QUESTION_PATTERN; `fixed_thought`: the thought is
    THOUGHT (small models get no room to think aloud)."""
    if thought_chars < 1:
        raise ValueError(f"expected thought_chars >= 1, got {thought_chars}")
    schema = _schema({"type": "string", "pattern": QUESTION_PATTERN})
    thought = re.escape(THOUGHT) if fixed_thought else f"[^<]{{1,{thought_chars}}}"
    lark = (
        _LARK_HEAD
        + f"THOUGHT: /{thought}/\n"
        + f"action: %json {json.dumps({'x-guidance': _JSON_LAYOUT, **schema}, ensure_ascii=False)}\n"
    )
    rules = {
        "root": _GBNF_ROOT,
        "thought": gbnf.literal(THOUGHT) if fixed_thought else thought,
        **gbnf.json_rules(schema, "action"),
    }
    return Constraint("clarify", lark, _wrapped(schema), gbnf.render(rules))


def choice_constraint(choices: list[str]) -> Constraint:
    """Evidence mode: 1..3 of `choices`, in the order given (so none twice)."""
    if not choices:
        raise ValueError("expected at least one question to choose from, got none")
    items = [f"q{i}" for i in range(len(choices))]
    lines = [
        f'start: "<thought>{THOUGHT}</thought>\\n<action>" body "</action>"',
        'body: "{\\"name\\": \\"clarify\\", \\"questions\\": [" chosen "]}"',
        *ordered_choice("chosen", items, 1, min(MAX_QUESTIONS, len(choices)), ", "),
        *(f"q{i}: {literal(json.dumps(c, ensure_ascii=False))}" for i, c in enumerate(choices)),
    ]
    schema = _schema({"enum": list(choices)})
    rules = {"root": _GBNF_ROOT, "thought": gbnf.literal(THOUGHT), **gbnf.json_rules(schema, "action")}
    return Constraint("clarify", "\n".join(lines) + "\n", _wrapped(schema), gbnf.render(rules))


def _folded(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def problem(text: str) -> str | None:
    """Why `text` is not a usable question about scope, or None."""
    if not text:
        return "is empty"
    if len(text) > QUESTION_CHARS:
        return f"is longer than {QUESTION_CHARS} characters"
    if not text.endswith(("?", "？")):
        return "does not end with a question mark"
    if text.count("?") + text.count("？") > 1:
        return "asks more than one thing"
    words = re.findall(r"[^\W\d_]{2,}", text)
    cjk = re.findall(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", text)
    if len(words) < 2 and len(cjk) < 4:
        return "has too few words"
    if _MARKUP.search(text):
        return "holds markup or a citation key"
    if filler_phrase(text) or _CHATTER.search(text):
        return "is talk, not a question about the report"
    return None


def usable(questions: list[Any], research_question: str) -> tuple[list[str], list[str]]:
    """(the questions kept, at most three; why each other one was dropped)."""
    kept: list[str] = []
    dropped: list[str] = []
    seen = {_folded(research_question)}
    for raw in questions:
        text = " ".join(str(raw).split()) if isinstance(raw, str) else ""
        why = problem(text) if isinstance(raw, str) else "is not text"
        if why is None and _folded(text) in seen:
            why = "repeats the research question" if _folded(text) == _folded(research_question) else "is asked twice"
        if why is None and len(kept) == MAX_QUESTIONS:
            why = f"is more than the {MAX_QUESTIONS} allowed"
        if why is None:
            kept.append(text)
            seen.add(_folded(text))
        else:
            dropped.append(f"{text[:80] or repr(raw)[:80]!r} {why}")
    return kept, dropped


def ask_questions(
    generator: Generator,
    settings: WarpSettings,
    question: str,
    brief: Brief | None = None,
    *,
    cancel: threading.Event | None = None,
) -> Asked:
    """One model call for up to three scope questions, constrained to the clarify action; only those that
    pass `usable` are kept. Raises Cancelled when `cancel` is set meanwhile."""
    cancel = cancel or threading.Event()
    brief = brief or Brief()
    seam = SimpleNamespace(settings=settings, generator=generator)
    evidence = writing(seam) == "evidence"
    compact = evidence or prompt_style(seam) == "compact"
    if evidence:
        name, constraint = "compact/clarify_evidence.jinja", choice_constraint(list(STOCK_QUESTIONS))
        max_tokens = sum(generator.count_tokens(q) + 4 for q in STOCK_QUESTIONS[:MAX_QUESTIONS]) + 32
    else:
        thought = min(settings.thought_chars, THOUGHT_CHARS)
        name = "compact/clarify.jinja" if compact else "clarify.jinja"
        constraint = questions_constraint(thought, fixed_thought=compact)
        max_tokens = (MAX_QUESTIONS * (QUESTION_CHARS + 4) + (0 if compact else thought)) // 3 + 40
    context = settings.context_tokens or generator.context_tokens()
    max_tokens = min(max_tokens, context // 2)

    def build(draft: str, shown_evidence: str, shown: list) -> str:
        return render(
            name,
            question=" ".join(question.split()),
            instructions=neutralize(brief.instructions),
            max_questions=MAX_QUESTIONS,
            choices=STOCK_QUESTIONS,
            feedback="",
        )

    prompt = fit(
        build,
        Outline(""),
        [],
        count=generator.count_tokens,
        budget=context - max_tokens,
        passage_chars=settings.passage_chars,
        style="compact" if compact else "full",
    )
    request = GenRequest(
        prompt.system,
        prompt.user,
        constraint if settings.constrained else None,
        max_tokens,
        settings.temperature,
        settings.top_p,
        settings.repetition_penalty,
        ("</action>",),
        seed=0,
        decoding=Decoding(fast_forward=evidence),
    )
    result = generator.generate(request, cancel=cancel)
    if result.finish_reason == "cancelled" or cancel.is_set():
        raise Cancelled()
    try:
        action = load_json(parse_response(result.text).action)
        raw = action.get("questions")
        if not isinstance(raw, list):
            raise ActionError('the action has no "questions" list')
    except ActionError as e:
        return Asked((), (f"the answer could not be read: {e}",), result.prompt_tokens, result.completion_tokens)
    kept, dropped = usable(raw, question)
    return Asked(tuple(kept), tuple(dropped), result.prompt_tokens, result.completion_tokens)


def fit_answers(answers: tuple[str, ...], count: int) -> tuple[str, ...]:
    """One answer per question: missing ones left empty, extra ones dropped."""
    return tuple((*answers, *[""] * count)[:count])


def with_questions(brief: Brief, questions: tuple[str, ...]) -> Brief:
    """`brief` once `questions` were asked: answers given beforehand (`run --answers`) pair with them in
    order; with no question there is nothing to wait for."""
    if brief.answers is not None or not questions:
        given = tuple(_plain(a)[:ANSWER_CHARS] for a in brief.answers or ())
        return replace(brief, questions=questions, answers=fit_answers(given, len(questions)))
    return replace(brief, questions=questions)


def answered(brief: Brief, answers: tuple[str, ...]) -> Brief:
    """`brief` with the person's `answers` to the questions it holds, in order."""
    return replace(brief, answers=fit_answers(tuple(one_answer(a) for a in answers), len(brief.questions or ())))


def one_answer(text: str) -> str:
    """An answer as stored: on one line, "-" meaning none; ValueError when it is too long."""
    text = _plain(text)
    if len(text) > ANSWER_CHARS:
        raise ValueError(f"expected an answer of at most {ANSWER_CHARS} characters, got {len(text)}")
    return text


def _plain(text: str) -> str:
    text = " ".join(text.split())
    return "" if text == "-" else text


_NUMBERED = re.compile(r"^\s*(\d{1,2})\s*[.)]\s*(.*)$")


def parse_answers(text: str) -> tuple[str, ...]:
    """Answers in order, one a line, or numbered `1. …` lines (in any order); an empty line or "-" leaves a
    question unanswered. Raises ValueError saying what is wrong."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    matches = [_NUMBERED.match(line) for line in lines]
    if not any(matches):
        if len(lines) > MAX_QUESTIONS:
            raise ValueError(f"expected at most {MAX_QUESTIONS} answers, one a line, got {len(lines)} lines")
        pairs = list(enumerate(lines, 1))
    else:
        pairs = []
        for i, (line, m) in enumerate(zip(lines, matches), 1):
            if not line.strip():
                continue
            if m is None:
                raise ValueError(
                    f"expected every line to start with its question's number, as '2. …'; line {i} does not"
                )
            pairs.append((int(m.group(1)), m.group(2)))
        numbers = [n for n, _ in pairs]
        if any(not 1 <= n <= MAX_QUESTIONS for n in numbers):
            raise ValueError(f"expected question numbers 1 to {MAX_QUESTIONS}, got {', '.join(map(str, numbers))}")
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"expected each question answered once, got numbers {', '.join(map(str, numbers))}")
    answers = [""] * max((n for n, _ in pairs), default=0)
    for n, value in pairs:
        try:
            answers[n - 1] = one_answer(value)
        except ValueError as e:
            raise ValueError(f"answer {n}: {e}") from None
    return tuple(answers)


def read_answers(path: Path | str) -> tuple[str, ...]:
    """The answers in `path`, or one clear UsageError naming the file and the problem."""
    path = Path(path).expanduser()
    hint = (
        "Write one answer per line in the order of the questions (or numbered '1. …' lines); "
        "an empty line or '-' leaves a question unanswered."
    )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(
            f"cannot read the answers file {path}: {getattr(e, 'strerror', None) or e}", hint=hint
        ) from None
    try:
        return parse_answers(text)
    except ValueError as e:
        raise UsageError(f"the answers file {path} cannot be used: {e}", hint=hint) from None


def questions_for(services: Any, request: Any) -> Asked:
    """`ask_questions` with a run service's parts (app/runs.py's LocalServices), for the terminal app, which
    asks before it starts the run: the model the request names, and the `[warp]` settings."""
    generator = services.generator(request.model)
    return ask_questions(generator, services.settings.warp, request.question, request.brief)
