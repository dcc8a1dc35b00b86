"""Constrained decoding of whole answers: `<thought>` text of bounded length, then the action (JSON per
its schema, or for WRITE Markdown without `#` whose citations name only the passages shown).

One Constraint per step carries the shape three times: as an llguidance Lark grammar over the exact tag
format (in-process through the logits hook; vLLM's guidance backend), as a GBNF grammar of the same tag
format (llama.cpp's `grammar`, SGLang's `ebnf`, vLLM's default xgrammar backend), and as a JSON schema
of `{thought, action}` / `{thought, text}` for servers that only take a schema (Ollama's `format`).
Patterns keep to what llguidance, xgrammar and llama.cpp's GBNF read alike (gbnf.py says which).
In-process we use llguidance rather than xgrammar: it reads tokenizer.json directly (byte-level BPE and
SentencePiece byte-fallback alike) and builds a matcher without a per-grammar compile over the
vocabulary, which matters because the cited keys, and so the grammar, change at every WRITE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sala_report.app.warp import gbnf
from sala_report.app.warp.validate import Limits

# Text the writer may use under the strict style: no heading marks, no tags, no backslash except in \cite{...}.
_PROSE = r"[^#<\\]"
# Free text in a JSON schema: no minLength/maxLength, as xgrammar 0.2.9 then refuses every escape
# (a quote, a newline, the backslash of \cite); the validators check the lengths.
_FREE_TEXT = {"type": "string"}
# Compact, fixed JSON layout: no whitespace for a small model to loop in.
_JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Characters no JSON string field may hold raw: control characters, quotes and backslashes (so a value's
# JSON encoding is the value itself, and engines that match patterns on the encoded text agree).
_RAW = r'\x00-\x1f"\\'
# Letters and digits of the common scripts as ranges of raw characters: xgrammar reads `\\p{L}` as the
# letters "p{L}", llama.cpp refuses it, and llguidance's GBNF reader drops the zeros of `\\u00c0`.
# Latin (without × and ÷), Greek, Cyrillic, Hebrew, Arabic, Indic, Thai, Lao, kana, CJK and Hangul.
_SCRIPTS = [
    (0xC0, 0xD6),
    (0xD8, 0xF6),
    (0xF8, 0x24F),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x590, 0x6FF),
    (0x900, 0xEFF),
    (0x3040, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
]
# Upper-case Latin, Greek and Cyrillic, and the scripts without case.
_CAPITALS = [(0xC0, 0xD6), (0xD8, 0xDE), (0x391, 0x3A9), (0x400, 0x42F), *_SCRIPTS[5:]]


def _ranges(spans: list[tuple[int, int]]) -> str:
    return "".join(f"{chr(low)}-{chr(high)}" for low, high in spans)


_WORDLIKE = f"[0-9A-Za-z{_ranges(_SCRIPTS)}]"
CAPITALS = "A-Z" + _ranges(_CAPITALS)  # a character class body: letters that may open a title or a question
_CAPITAL = f"[0-9{CAPITALS}]"


@dataclass(frozen=True)
class Style:
    """How tight the WRITE grammar is. `open_prose`: `<`, `>` and `\\` may appear in prose except where
    they would open or close a tag or a citation ("COP < 2"); `span`: the most characters before the first
    citation and after each one, under the strict style (open prose has no such limit, as the released
    validator has none)."""

    open_prose: bool = False
    span: int = 1500  # unused with open_prose


STRICT = Style()
OPEN = Style(open_prose=True)


@dataclass(frozen=True)
class Constraint:
    kind: str  # "search" | "init-plan" | "extend" | "write"
    lark: str
    json_schema: dict[str, Any]
    gbnf: str = ""

    def from_json(self, text: str) -> str:
        """Rebuild the tag format from a JSON-mode answer; text that is not such JSON is returned as is."""
        try:
            obj = json.loads(text, strict=False)
        except json.JSONDecodeError:
            return text
        if not isinstance(obj, dict):
            return text
        thought = obj.get("thought", "")
        action = obj.get("text", "") if self.kind == "write" else json.dumps(obj.get("action"), ensure_ascii=False)
        return f"<thought>{thought}</thought>\n<action>{action}</action>"


def _pattern(first: str, rest: str, max_chars: int) -> dict[str, Any]:
    """A string of one `first` character then up to `max_chars - 1` of `rest`. The length is in the
    pattern, not in maxLength: llama.cpp's and xgrammar's converters ignore maxLength beside a pattern."""
    return {"type": "string", "pattern": f"^{first}{rest}{{0,{max_chars - 1}}}$"}


def _line(max_chars: int) -> dict[str, Any]:
    # One line, not starting with a space; no "<", so no string can pass for a closing tag.
    return _pattern(f"[^ <{_RAW}]", f"[^<{_RAW}]", max_chars)


def _title(max_chars: int, short: bool = False) -> dict[str, Any]:
    """A heading: starting with a letter or digit (validate.check_title rejects titles without one),
    without brackets, braces or backslashes, which small models fill with citation marks like "[n]" or
    "textid1}" (validate.clean_title drops a bare key; one spelled out of single letters is rejected).
    `short`: a phrase of at most seven words, not starting in lower case, without the punctuation of a
    sentence, a question or code (":", "?", "!", "*", "_"), which keeps a small model to naming a topic."""
    if short:
        word = rf"[^ <>\[\]{{}}:?!*_{_RAW}]"
        longest = max(2, (max_chars - 7) // 7)
        return {"type": "string", "pattern": rf"^{_CAPITAL}{word}{{0,{longest}}}( {word}{{1,{longest}}}){{0,6}}$"}
    return _pattern(_WORDLIKE, rf"[^<>\[\]{{}}{_RAW}]", max_chars)


def _sections_schema(low: int, high: int, limits: Limits, compact: bool = False) -> dict[str, Any]:
    """`compact`: short titles, and plans without brackets or braces (a small model's JSON loops)."""
    plan = _line(limits.plan_chars)
    if compact:
        plan = _pattern(rf"[^ <>\[\]{{}}{_RAW}]", rf"[^<>\[\]{{}}{_RAW}]", limits.plan_chars)
    item = {
        "type": "object",
        "properties": {"title": _title(limits.title_chars, compact), "plan": plan},
        "required": ["title", "plan"],
        "additionalProperties": False,
    }
    return {"type": "array", "items": item, "minItems": low, "maxItems": high}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _thought_gbnf(thought: str | None, limits: Limits) -> str:
    if thought is None:
        return f"[^<]{{1,{limits.thought_chars}}}"
    return gbnf.pattern_rule(f"^{thought}$")


# Between the tags: the released parser finds each block by regex, so a newline, or a space after
# "<action>", is the same answer; the grammars allow both, as the model was trained on either.
_LARK_HEAD = 'start: "<thought>" THOUGHT "</thought>" /[ \\n]{0,2}/ "<action>" " "? '
_GBNF_HEAD = 'root ::= "<thought>" thought "</thought>" [ \\n]{0,2} "<action>" " "? '


def _json_constraint(kind: str, schema: dict[str, Any], limits: Limits, thought: str | None = None) -> Constraint:
    """`thought`: a regex for the thought instead of any text of up to `limits.thought_chars`."""
    lark = (
        _LARK_HEAD + 'action "</action>"\n'
        f"THOUGHT: /{thought or f'[^<]{{1,{limits.thought_chars}}}'}/\n"
        f"action: %json {json.dumps({'x-guidance': _JSON_LAYOUT, **schema})}\n"
    )
    rules = {
        "root": _GBNF_HEAD[len("root ::= ") :] + 'action "</action>"',
        "thought": _thought_gbnf(thought, limits),
        **gbnf.json_rules(schema, "action"),
    }
    wrapped = _object({"thought": _FREE_TEXT, "action": schema})
    return Constraint(kind, lark, wrapped, gbnf.render(rules))


def search_constraint(limits: Limits) -> Constraint:
    keywords = {"type": "array", "items": _line(limits.keyword_chars), "minItems": 1, "maxItems": limits.max_keywords}
    return _json_constraint("search", _object({"name": {"const": "search"}, "keywords": keywords}), limits)


def init_plan_constraint(limits: Limits, *, compact: bool = False) -> Constraint:
    """`compact` (small models): short section titles, and a thought that is just a list of the topics,
    one per line ("- …", no Markdown), so the model names the topics before its JSON and can copy them."""
    title = _title(limits.title_chars)
    sections = _sections_schema(limits.min_sections, limits.max_sections, limits, compact)
    # Compact: the sections come first, while the listed topics are fresh; the report's title after them.
    order = {"sections": sections, "title": title} if compact else {"title": title, "sections": sections}
    schema = _object({"name": {"const": "init-plan"}, **order})
    topics = rf"[\n]{{0,2}}(- [^ \t\n\r<*#][^\n<*#]{{0,{limits.title_chars - 1}}}[\n]){{1,{limits.max_sections}}}"
    return _json_constraint("init-plan", schema, limits, topics if compact else None)


def topic_list_chars(limits: Limits) -> int:
    """The longest thought `init_plan_constraint(compact=True)` allows."""
    return 2 + limits.max_sections * (limits.title_chars + 3)


def extend_constraint(
    limits: Limits, positions: list[str], *, allow_nop: bool = True, compact: bool = False
) -> Constraint:
    """`positions`: the nodes that may be expanded now; with none, only nop remains."""
    options = []
    if positions:
        options.append(
            _object(
                {
                    "name": {"const": "extend-plan"},
                    "position": {"enum": positions},
                    "subsections": _sections_schema(limits.min_subsections, limits.max_subsections, limits, compact),
                }
            )
        )
    if allow_nop or not positions:
        options.append(_object({"name": {"const": "nop"}}))
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return _json_constraint("extend", schema, limits)


def write_constraint(limits: Limits, keys: list[str], *, style: Style = STRICT) -> Constraint:
    """Prose that opens with text and cites 1..max_citations times, each `\\cite{k[, k]}` naming only `keys`.
    Without keys (no evidence found) the prose carries no citations. The JSON schema (for servers that take
    no grammar) leaves the text free: a pattern could not say `\\cite` alike in every engine (xgrammar
    matches patterns on the escaped JSON text), so there the validator alone checks the citations."""
    thought_rule = f"[^<]{{1,{limits.thought_chars}}}"
    lark = _LARK_HEAD + 'body "</action>"\n' + f"THOUGHT: /{thought_rule}/\n"
    rules = {"root": _GBNF_HEAD[len("root ::= ") :] + 'body "</action>"', "thought": thought_rule}
    cite_lark = 'CITE: "\\\\cite{" KEY (", " KEY)* "}"\n' + "KEY: " + " | ".join(json.dumps(k) for k in keys) + "\n"
    cite_rules = {"cite": '"\\\\cite{" key (", " key)* "}"', "key": " | ".join(json.dumps(k) for k in keys)}
    if style.open_prose:
        # "<" before a space, "=" or a digit, "\\" before anything but the "c" of \\cite. Each is its own
        # lexeme: llguidance's lexer is greedy, so a run of text that could take a "\\" would swallow the
        # one that starts a citation (or the "<" of the closing tag) and fail on the next byte.
        lark += "prose: (CHUNK | LT | ESC)+\nCHUNK: /[^#<\\\\]+/\nLT: /<[ =0-9]/\nESC: /\\\\[^c#<\\\\]/\n" + (
            f"body: prose (CITE prose?){{1,{limits.max_citations}}}\n" + cite_lark if keys else "body: prose\n"
        )
        rules["prose"] = '([^#<\\\\] | "<" [ =0-9] | "\\\\" [^c#<\\\\])+'  # one character at a time: unambiguous
        rules |= (
            {"body": f"prose (cite prose?){{1,{limits.max_citations}}}", **cite_rules} if keys else {"body": "prose"}
        )
    elif keys:
        lead = max(1, limits.min_chars - 10)
        lark += (
            f"body: LEAD (CITE TEXT?){{1,{limits.max_citations}}}\n"
            + f"LEAD: /{_PROSE}{{{lead},{style.span}}}/\nTEXT: /{_PROSE}{{1,{style.span}}}/\n"
            + cite_lark
        )
        rules |= {
            "body": f"lead (cite text?){{1,{limits.max_citations}}}",
            "lead": f"{_PROSE}{{{lead},{style.span}}}",
            "text": f"{_PROSE}{{1,{style.span}}}",
            **cite_rules,
        }
    else:
        lark += f"body: /{_PROSE}{{{limits.min_chars + 1},{style.span * 2}}}/\n"
        rules["body"] = f"{_PROSE}{{{limits.min_chars + 1},{style.span * 2}}}"
    schema = _object({"thought": _FREE_TEXT, "text": _FREE_TEXT})
    return Constraint("write", lark, schema, gbnf.render(rules))
