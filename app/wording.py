"""Words shared by the CLI and the terminal app: counts with the right plural, network trouble in a person's
terms, and citation keys shown as the report's [n] numbers (a key like `textid7` is internal)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_IRREGULAR = {"passage": "passages", "search": "searches", "entry": "entries"}


def plural(count: int, noun: str) -> str:
    """`1 step`, `2 steps`, `0 searches`."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {_IRREGULAR.get(noun, noun + 's')}"


# (pattern over the raw error text, what it means for the person); the first that matches wins
_NETWORK = (
    (
        re.compile(r"dns|name resolution|resolv|getaddrinfo|nodename nor servname|name or service not known", re.I),
        "could not be reached: the address could not be looked up (no network, or DNS is down)",
    ),
    (re.compile(r"ratelimit|rate limit|\b429\b|too many requests", re.I), "is rate limiting; try again in a while"),
    (re.compile(r"timed? ?out|timeout", re.I), "did not answer in time"),
    (re.compile(r"ssl|tls|certificate", re.I), "could not be reached securely (a TLS or certificate error)"),
    (re.compile(r"refused|unreachable|connect|network|reset by peer", re.I), "could not be reached (no connection)"),
)


def network_error(raw: str) -> str:
    """What went wrong, without library names and repr noise; `raw` is an exception's text."""
    for pattern, meaning in _NETWORK:
        if pattern.search(raw):
            return meaning
    first = raw.strip().splitlines()[0] if raw.strip() else "failed"
    return f"failed ({first[:117] + '...' if len(first) > 120 else first})"


_SEARCH_FAILED = re.compile(r"web search failed \((.*)\)$", re.S)
_FETCH_FAILED = re.compile(r"could not fetch any of (\d+) pages \(first: (.*)\)$", re.S)
_ENGINE_ERROR = re.compile(r"^\s*([\w.-]+): (.*)$", re.S)


def search_problem(degraded: str) -> str:
    """A retriever's `degraded` text ("; "-joined problems) as one readable line."""
    return "; ".join(_one_problem(p) for p in _split_problems(degraded))


def _split_problems(text: str) -> list[str]:
    """Split on "; " outside parentheses (an engine's error text may hold its own "; ")."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and text.startswith("; ", i):
            parts.append(text[start:i])
            start = i + 2
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _one_problem(problem: str) -> str:
    failed = _SEARCH_FAILED.match(problem)
    if failed:
        engines = []
        for item in _split_problems(failed.group(1)):
            named = _ENGINE_ERROR.match(item)
            engines.append(f"{named.group(1)} {network_error(named.group(2))}" if named else network_error(item))
        return "web search failed: " + "; ".join(engines)
    fetch = _FETCH_FAILED.match(problem)
    if fetch:
        return f"could not read any of the {fetch.group(1)} pages found: the sites {network_error(fetch.group(2))}"
    if problem.startswith("search failed: "):
        return "web search " + network_error(problem.removeprefix("search failed: "))
    return problem


_GENERIC_CITE = re.compile(r"(?: with)? \\cite\{textidN\}")
_REMOVED = re.compile(r"removed ((?:textid\d+(?:, )?)+): not among the passages")
_KEY = re.compile(r"\[?\btextid(\d+)\b\]?")


def readable_keys(text: str, numbers: Mapping[str, int]) -> str:
    """Citation keys as the report's numbers: `textid7` → `[3]`; a key the report does not cite (yet)
    becomes "an uncited passage"; the format hint ` with \\cite{textidN}` is dropped."""
    text = _GENERIC_CITE.sub("", text)

    def removed(match: re.Match) -> str:
        return f"removed {plural(len(match.group(1).split(', ')), 'citation')} of passages it was not shown"

    def number(match: re.Match) -> str:
        key = f"textid{match.group(1)}"
        return f"[{numbers[key]}]" if key in numbers else "an uncited passage"

    return _KEY.sub(number, _REMOVED.sub(removed, text))
