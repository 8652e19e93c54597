"""The SIM hot path over a real socket: a command answered from memory (IDENT, PING) is answered
inside the read callback, without a task; only an answer that waits for a commit gets one; and
while a workstation's POST waits for its commit, that workstation's next frame waits behind it
and every other workstation is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import RunningGateway
from sales import CARD, DATE
from sim_wire import read_frames
from write_lock import write_lock_held

from pos_adapters.sim.codec import encode_frame


@contextmanager
def counting_tasks() -> Iterator[list[str]]:
    """The coroutines the project's code wraps in tasks meanwhile (the test's own waits are
    tasks too, and are left out)."""
    loop = asyncio.get_running_loop()
    made: list[str] = []
    before = loop.get_task_factory()

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        if "/tests/" not in coro.cr_code.co_filename and "asyncio" not in coro.cr_code.co_filename:
            made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        yield made
    finally:
        loop.set_task_factory(before)


def ident(wsid: int, seq: int) -> bytes:
    return encode_frame(f"{wsid:>4}LOYAL".encode(), seq, ["IDENT", str(wsid), "1", "7", CARD])


def post(wsid: int, seq: int, check: int) -> bytes:
    fields = ["POST", str(wsid), "1", str(check), DATE, "M1", "4.00", "4.00", "1*101*4.00", ""]
    return encode_frame(f"{wsid:>4}LOYAL".encode(), seq, fields)


async def test_idents_are_answered_without_a_task_posts_with_one_each(
    gateway: RunningGateway,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        with counting_tasks() as made:
            writer.write(b"".join(ident(1 + n % 4, n % 100) for n in range(50)))
            replies = await read_frames(reader, 50)
        assert [r.fields[0] for r in replies] == ["IDENT_OK"] * 50
        assert made == []

        with counting_tasks() as made:
            writer.write(b"".join(post(1 + n % 4, n % 100, 100 + n) for n in range(8)))
            replies = await read_frames(reader, 8)
        assert [r.fields[0] for r in replies] == ["POST_OK"] * 8
        answers = [name for name in made if "answer_later" in name]
        assert len(answers) == 8
    finally:
        writer.close()


async def test_a_workstation_waits_behind_its_commit_and_no_other_does(
    gateway: RunningGateway,
) -> None:
    first, first_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    other, other_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        async with write_lock_held(gateway.store.path):  # the POST's commit cannot start
            # Workstation 1: a POST, then an IDENT right behind it on the same connection.
            first_writer.write(post(1, 1, 501) + ident(1, 2))
            # Workstation 2, meanwhile: answered while workstation 1's POST waits.
            other_writer.write(ident(2, 1))
            (answer,) = await read_frames(other, 1)
            assert answer.fields[0] == "IDENT_OK"
            waiting = asyncio.ensure_future(read_frames(first, 2))
            await asyncio.sleep(0.2)  # the behaviour under test: nothing comes meanwhile
            assert not waiting.done()
        got = await waiting
        assert [(f.seq, f.fields[0]) for f in got] == [(1, "POST_OK"), (2, "IDENT_OK")]
    finally:
        first_writer.close()
        other_writer.close()


async def test_a_reply_that_cannot_be_built_costs_one_answer_not_the_workstation(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    responder = gateway.responder
    encode = responder._encode
    broken = iter([True])

    def encode_once_broken(source_id: bytes, seq: int, fields: list[str]) -> bytes:
        if fields[0] == "POST_OK" and next(broken, False):
            raise ValueError("a bug in building the reply")
        return encode(source_id, seq, fields)

    monkeypatch.setattr(responder, "_encode", encode_once_broken)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        # The POST's reply fails to build; the IDENT queued behind it must still be answered.
        writer.write(post(1, 1, 601) + ident(1, 2))
        replies = await read_frames(reader, 2)
        assert [(r.seq, r.fields[:2]) for r in replies] == [
            (1, ("ERROR", "UNAVAILABLE")),
            (2, ("IDENT_OK", "M1")),
        ]
        writer.write(post(1, 3, 602))  # and the workstation goes on
        (reply,) = await read_frames(reader, 1)
        assert reply.fields[0] == "POST_OK"
    finally:
        writer.close()
    assert responder.stats.internal_errors == 1
