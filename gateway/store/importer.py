"""`edge-gateway import`: member and coupon records from JSON lines into the cache.

Each line is one record as in DESIGN.md section 3. A bad line is reported by its number and
skipped; the good ones are kept, written in batches so a running daemon keeps answering.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from gateway.domain.models import Coupon, Member
from gateway.store.store import Store

Kind = Literal["members", "coupons"]
BATCH = 2000


@dataclass
class ImportReport:
    imported: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def _reason(error: ValidationError) -> str:
    parts = []
    for problem in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in problem["loc"]) or "record"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


def _records(
    path: Path, model: type[BaseModel], report: ImportReport
) -> Iterator[tuple[int, BaseModel]]:
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            text = raw.strip()
            if not text or text.startswith(b"#"):
                continue
            try:
                yield len(raw), model.model_validate_json(text)
            except ValidationError as error:
                if any(p["type"] == "json_invalid" for p in error.errors()):
                    report.bad_lines.append((number, "not valid JSON"))
                else:
                    report.bad_lines.append((number, _reason(error)))
            except (UnicodeDecodeError, json.JSONDecodeError):
                report.bad_lines.append((number, "not valid UTF-8 JSON"))


async def import_file(
    store: Store,
    kind: Kind,
    path: Path,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import `path`; `progress` gets the bytes read since its last call."""
    report = ImportReport()
    model: type[BaseModel] = Member if kind == "members" else Coupon
    batch: list[BaseModel] = []
    read = 0

    async def flush() -> None:
        nonlocal read
        if kind == "members":
            await store.upsert_members([m for m in batch if isinstance(m, Member)])
        else:
            await store.upsert_coupons([c for c in batch if isinstance(c, Coupon)])
        report.imported += len(batch)
        batch.clear()
        if progress is not None:
            progress(read)
        read = 0

    for size, record in _records(path, model, report):
        batch.append(record)
        read += size
        if len(batch) >= BATCH:
            await flush()
    if batch:
        await flush()
    elif progress is not None:
        progress(read)
    return report
