"""One GET to a search API with httpx, with HTTP trouble mapped onto the engine errors.

Redirects are not followed: an engine answers at the address the person configured or not at all, so a
compromised or misconfigured engine cannot bounce the app to another host. No proxy from the environment
either, as for page fetching: queries go only where the settings say.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

import httpx

from sala_report.retrieval.engines.base import EngineError, EngineTimeout, RateLimited

MAX_ANSWER_BYTES = 5_000_000


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: httpx.Headers
    content: bytes


def get(
    url: str, params: dict[str, str | int], *, engine: str, timeout_s: float, user_agent: str, accept: str
) -> Answer:
    """The engine's answer, read whole up to MAX_ANSWER_BYTES. Raises RateLimited (429, 503), EngineTimeout,
    and EngineError (unreachable, a redirect, too large); other statuses are the engine's to judge."""
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            request = client.build_request(
                "GET", url, params=params, headers={"User-Agent": user_agent, "Accept": accept}
            )
            response = client.send(request, stream=True)
            try:
                body = bytearray()
                for piece in response.iter_bytes():
                    body += piece
                    if len(body) > MAX_ANSWER_BYTES:  # stop reading: the rest never reaches memory
                        raise EngineError(f"{engine} answered with more than {MAX_ANSWER_BYTES:,} bytes")
            finally:
                response.close()
    except httpx.TimeoutException as e:
        raise EngineTimeout(f"no answer within {timeout_s:g} s ({type(e).__name__})") from e
    except httpx.HTTPError as e:
        raise EngineError(f"cannot reach {engine} at {url}: {type(e).__name__}: {e}") from e
    # the body as decoded (gzip undone); a new httpx.Response would decode it a second time
    answer = Answer(response.status_code, response.headers, bytes(body))
    if answer.status_code in (429, 503):
        raise RateLimited(f"HTTP {answer.status_code} from {engine}", retry_after(answer))
    if 300 <= answer.status_code < 400:
        target = answer.headers.get("location", "?")
        raise EngineError(f"{engine} at {url} redirects to {target}; set its address to where it answers")
    return answer


def retry_after(response: Answer) -> float | None:
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
