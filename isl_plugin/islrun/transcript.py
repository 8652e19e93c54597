"""The readable transcript of a run: what the cashier did and saw, what went over the wire,
what the script did to the check and its receipt lines."""

from __future__ import annotations

from collections.abc import Iterable

LABELS = {
    "step": "==",
    "check": "check",
    "ring": "ring",
    "void": "void",
    "tender": "tender",
    "input": "input",
    "connected": "link",
    "down": "LINK DOWN",
    "sent": "->",
    "unsent": "-> (lost)",
    "received": "<-",
    "late": "<- late",
    "bad": "<- bad",
    "timeout": "timeout",
    "event": "event",
    "info": "info",
    "error": "ERROR",
    "prompt": "prompt",
    "waiting": "waiting",
    "macro": "macro",
    "chkinfo": "chkinfo",
    "window": "window",
    "display": "display",
    "touchscreen": "touch",
    "file": "file",
    "dll": "dll",
    "net": ".net",
    "print": "print",
    "sysvar": "sysvar",
    "exit": "exit",
    "warning": "WARNING",
    "FAILED": "FAILED",
}


def format_trace(trace: Iterable[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for kind, text in trace:
        if kind == "step":
            lines.append(f"== {text}")
            continue
        lines.append(f"   {LABELS.get(kind, kind):<10} {text}")
    return lines
