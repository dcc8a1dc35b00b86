"""What kind of OpenAI-compatible server answers at a base URL, how long its context is, and which
structured-output field it reads: found once, from `/v1/models`, `/version`, llama.cpp's `/props`,
Ollama's `/api/version` and `/api/show`, and the `Server` header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

KINDS = ("vllm", "sglang", "llamacpp", "ollama", "openai")
NAMES = {"vllm": "vLLM", "sglang": "SGLang", "llamacpp": "llama.cpp server", "ollama": "Ollama", "openai": "server"}
# Ollama keeps a KV cache of num_ctx tokens: ask for the model's context, but not for more than this.
OLLAMA_MAX_CTX = 32768


@dataclass(frozen=True)
class ServerInfo:
    kind: str  # one of KINDS ("openai": unknown, plain OpenAI protocol)
    version: str
    context: int  # tokens; 0 when the server does not say
    entry: dict[str, Any]  # the served model's entry in /v1/models

    @property
    def auto_mode(self) -> str:
        """Tags with a grammar where the server takes one; a JSON schema where it only takes that; else none."""
        return {"vllm": "grammar", "sglang": "grammar", "llamacpp": "grammar", "ollama": "json_schema"}.get(
            self.kind, "none"
        )

    def describe(self, mode: str) -> str:
        version = f" {self.version}" if self.version else ""
        return f"{NAMES[self.kind]}{version}, {mode}"


def _get(client: httpx.Client, url: str) -> httpx.Response | None:
    try:
        response = client.get(url, timeout=5.0)
    except httpx.HTTPError:
        return None
    return response if response.status_code == 200 else None


def _json(response: httpx.Response | None) -> dict[str, Any]:
    if response is None:
        return {}
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def probe(client: httpx.Client, base_url: str, entry: dict[str, Any], models_response: httpx.Response) -> ServerInfo:
    """`entry`: the served model's entry in /v1/models; `models_response`: that listing's response."""
    root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
    owner = str(entry.get("owned_by") or "").lower()
    server = models_response.headers.get("server", "").lower()
    context = int(entry.get("max_model_len") or entry.get("context_length") or 0)
    if owner in ("vllm", "sglang"):
        return ServerInfo(owner, str(_json(_get(client, root + "/version")).get("version") or ""), context, entry)
    if owner == "llamacpp" or "llama.cpp" in server:
        props = _json(_get(client, root + "/props"))
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx") or 0
        return ServerInfo("llamacpp", str(props.get("build_info") or ""), int(n_ctx) or context, entry)
    ollama = _json(_get(client, root + "/api/version"))
    if ollama.get("version") or owner in ("library", "ollama"):
        return ServerInfo("ollama", str(ollama.get("version") or ""), _ollama_context(client, root, entry), entry)
    version = _json(_get(client, root + "/version")).get("version")
    return ServerInfo("vllm" if version else "openai", str(version or ""), context, entry)


def _ollama_context(client: httpx.Client, root: str, entry: dict[str, Any]) -> int:
    """The model's trained context (`<arch>.context_length` in /api/show), capped at OLLAMA_MAX_CTX."""
    try:
        response = client.post(root + "/api/show", json={"model": entry.get("id", "")}, timeout=10.0)
        info = _json(response if response.status_code == 200 else None).get("model_info") or {}
    except httpx.HTTPError:
        info = {}
    lengths = [int(v) for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int)]
    return min(lengths[0], OLLAMA_MAX_CTX) if lengths else 0


def version_at_least(version: str, wanted: tuple[int, ...]) -> bool:
    """True also for versions we cannot read (a development build is newer than any release)."""
    parts = []
    for piece in version.split(".")[: len(wanted)]:
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            return True
        parts.append(int(digits))
    return tuple(parts) >= wanted
