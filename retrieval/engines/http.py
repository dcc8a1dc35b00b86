"""One GET to a search API with httpx, with HTTP trouble mapped onto the engine errors.

Redirects are not followed: an engine answers at the address the person configured or not at all, so a
compromised or misconfigured engine cannot bounce the app to another host. No proxy from the environment
either, as for page fetching: queries go only where the settings say.
"""

from __future__ import annotations

import email.utils
import time

import httpx

from sala_report.retrieval.engines.base import EngineError, EngineTimeout, RateLimited

MAX_ANSWER_BYTES = 5_000_000


def get(
    url: str, params: dict[str, str | int], *, engine: str, timeout_s: float, user_agent: str, accept: str
) -> httpx.Response:
    try:
        response = httpx.get(url, params=params, timeout=timeout_s, follow_redirects=False, trust_env=False,
                             headers={"User-Agent": user_agent, "Accept": accept})
    except httpx.TimeoutException as e:
        raise EngineTimeout(f"no answer within {timeout_s:g} s ({type(e).__name__})") from e
    except httpx.HTTPError as e:
        raise EngineError(f"cannot reach {engine} at {url}: {type(e).__name__}: {e}") from e
    if response.status_code in (429, 503):
        raise RateLimited(f"HTTP {response.status_code} from {engine}", retry_after(response))
    if 300 <= response.status_code < 400:
        target = response.headers.get("location", "?")
        raise EngineError(f"{engine} at {url} redirects to {target}; set its address to where it answers")
    if len(response.content) > MAX_ANSWER_BYTES:
        raise EngineError(f"{engine} answered with {len(response.content):,} bytes, over the {MAX_ANSWER_BYTES:,} limit")
    return response


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (a number, or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def clean(text: object) -> str:
    return " ".join(str(text or "").split())
