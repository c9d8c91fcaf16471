"""One pre-flight check's verdict, as `doctor` shows it: pass, fail, warn or skip, with the fix."""

from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"


@dataclass(frozen=True)
class Finding:
    name: str
    status: str
    detail: str
    fix: str | None = None
