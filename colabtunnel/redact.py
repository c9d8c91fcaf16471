"""Tokens: generation and masking. Every log line and error that could carry a token passes mask()."""

from __future__ import annotations

import re
import secrets

_registered: set[str] = set()
# Jupyter prints `token=...` in its banner and URLs; mask any such value, known to us or not.
_TOKEN_QUERY = re.compile(r"(token=)[A-Za-z0-9_\-.~%]+")


def new_token() -> str:
    """32 random bytes, URL-safe (43 characters)."""
    token = secrets.token_urlsafe(32)
    register(token)
    return token


def register(secret: str) -> None:
    """Remember a secret so mask() hides it wherever it appears."""
    if secret:
        _registered.add(secret)


def mask(text: str) -> str:
    for secret in _registered:
        if secret in text:
            text = text.replace(secret, "***")
    return _TOKEN_QUERY.sub(r"\1***", text)
