"""Many registers selling at once, whatever carries their requests: each one's own check back,
and every post seeing every earlier one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

CARD = "6001000000000001"  # M1, GOLD, 120 points
DATE = "20261123"


class Requester(Protocol):
    async def request(self, *fields: str) -> list[str]: ...


async def one_sale_each(registers: Mapping[int, Requester]) -> None:
    """All at once, the register of each wsid identifies M1 and posts a check numbered and priced
    by its wsid (wsid 3: check 3 of 3.00)."""

    async def sale(wsid: int, ws: Requester) -> tuple[int, list[str], list[str]]:
        ident = await ws.request("IDENT", str(wsid), "1", str(wsid), CARD)
        total = f"{wsid}.00"
        post = await ws.request("POST", str(wsid), "1", str(wsid), DATE, "M1", total, total, "", "")
        return wsid, ident, post

    results = await asyncio.gather(*(sale(wsid, ws) for wsid, ws in registers.items()))
    for wsid, ident, post in results:
        assert ident[:2] == ["IDENT_OK", "M1"]
        assert post[0] == "POST_OK" and post[1] == str(wsid)  # this register's own check
    balances = sorted(int(post[2]) for _, _, post in results)
    # Every post saw every earlier one: running totals of 120 + 1 + 2 + ..., none repeated.
    assert len(set(balances)) == len(registers) and balances[-1] == 120 + sum(registers)
