"""GBNF, the grammar format that llama.cpp's server (`grammar`), SGLang (`ebnf`) and vLLM with xgrammar
(`structured_outputs.grammar`) all read, rendered from our own JSON schemas.

Only the subset grammar.py writes is handled: objects whose keys are all required and come in order,
`const`, string `enum`, arrays with item bounds, `anyOf`, and strings that are either free JSON text
with length bounds or match a `pattern` made of character classes, groups, spaces and quantifiers.
Patterns keep to what every engine reads the same way: no `\\s`, `\\d`, `\\p{…}` (llama.cpp refuses them,
xgrammar reads `\\p{L}` as the letters "p{L}"), and no backslash or quote inside a string, so the JSON
encoding of a value is the value itself.
"""

from __future__ import annotations

import json
from typing import Any

# One character of a JSON string: anything but a quote, a backslash or a control character, or an escape.
JSON_CHAR = r'[^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def pattern_rule(pattern: str) -> str:
    """A regex `pattern` (anchored with ^…$) as a GBNF expression: classes `[…]` are copied, since both
    syntaxes write them alike for the escapes we use (\\t \\n \\r \\\\ \\[ \\] \\"); groups, `|`,
    quantifiers and plain characters are translated. Anything else raises ValueError."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"expected a pattern anchored with ^ and $, got {pattern!r}")
    body, out, i = pattern[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "[":
            end = i + 1
            while body[end] != "]" or body[end - 1] == "\\" and body[end - 2] != "\\":
                end += 1
            cls = body[i : end + 1]
            if any(f"\\{e}" in cls.replace("\\\\", "") for e in "sSdDwWpP"):
                raise ValueError(f"class {cls} uses an escape GBNF does not have")
            out.append(cls)
            i = end + 1
        elif c in "()|*+?":
            out.append(f" {c} " if c in "()|" else c)
            i += 1
        elif c == "{":
            end = body.index("}", i)
            out.append(body[i : end + 1])
            i = end + 1
        elif c == "\\":
            raise ValueError(f"escape {body[i : i + 2]} outside a class is not portable")
        else:
            out.append(literal(c))
            i += 1
    return " ".join("".join(out).split())


def _letters(n: int) -> str:
    """1 -> "a", 27 -> "aa": rule names without digits, which some GBNF parsers do not take."""
    out = ""
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(97 + r) + out
    return out


class _Rules:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {"json-char": JSON_CHAR}

    def add(self, name: str, body: str) -> str:
        base, n = name, 0
        while name in self.rules and self.rules[name] != body:
            n += 1
            name = f"{base}-{_letters(n)}"
        self.rules[name] = body
        return name

    def value(self, schema: dict[str, Any], name: str) -> str:
        if "const" in schema:
            return literal(json.dumps(schema["const"], ensure_ascii=False))
        if "enum" in schema:
            return "(" + " | ".join(literal(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]) + ")"
        if "anyOf" in schema:
            names = [f"{name}-{_letters(i)}" for i in range(1, len(schema["anyOf"]) + 1)]
            return "(" + " | ".join(self.add(n, self.value(s, n)) for n, s in zip(names, schema["anyOf"])) + ")"
        kind = schema.get("type")
        if kind == "object":
            parts = []
            for n, (key, sub) in enumerate(schema["properties"].items()):
                rule = self.add(f"{name}-{key}", self.value(sub, f"{name}-{key}"))
                parts.append(literal(("" if n == 0 else ", ") + json.dumps(key) + ": ") + " " + rule)
            return '"{" ' + " ".join(parts) + ' "}"'
        if kind == "array":
            item = self.add(f"{name}-item", self.value(schema["items"], f"{name}-item"))
            low, high = schema.get("minItems", 0), schema.get("maxItems")
            more = f'(", " {item}){{{max(low - 1, 0)},{"" if high is None else high - 1}}}'
            return f'"[" {item} {more} "]"' if low >= 1 else f'"[" ({item} {more})? "]"'
        if kind == "string":
            if "pattern" in schema:
                return f'"\\"" {pattern_rule(schema["pattern"])} "\\""'
            low, high = schema.get("minLength", 0), schema.get("maxLength")
            return f'"\\"" json-char{{{low},{"" if high is None else high}}} "\\""'
        raise ValueError(f"schema not in the supported subset: {json.dumps(schema)[:120]}")


def json_rules(schema: dict[str, Any], name: str) -> dict[str, str]:
    """Rules for one JSON value of `schema` in the compact layout (", " and ": "), the value's rule named `name`."""
    rules = _Rules()
    rules.add(name, rules.value(schema, name))
    return rules.rules


def render(rules: dict[str, str]) -> str:
    return "".join(f"{name} ::= {body}\n" for name, body in rules.items())
