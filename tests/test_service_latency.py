"""Every command's service call is timed into the latency histogram the metrics export: a call
answered at once (IDENT) and one that waits for its commit (POST) alike, a refusal included."""

from __future__ import annotations

from service_requests import ident, post_req

from gateway.domain.names import CommandName
from gateway.service import Gateway


async def test_calls_answered_at_once_and_after_a_commit_are_both_timed(service: Gateway) -> None:
    await service.identify(ident("6001000000000001"))
    service.identify_now(ident("NO-SUCH-CARD"))  # a refusal is timed too
    await service.post_check(post_req(1))
    latency = service.stats.latency
    assert sum(latency[CommandName.IDENT].counts) == 2
    assert sum(latency[CommandName.POST].counts) == 1
    assert latency[CommandName.POST].total_s > 0
    assert set(latency) == {CommandName.IDENT, CommandName.POST}
