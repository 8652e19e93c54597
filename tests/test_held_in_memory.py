"""What every request reads is held in memory (the rules documents, the program switches, the
POS menu's categories): no SQL per request once loaded, and each write that changes one of them
is seen by the very next request. A real store on disk; the lookup connection's statements are
counted with SQLite's trace callback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import NOW, member_record

from gateway.domain.rules_doc import RulesDocument
from gateway.store.store import Store


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL the store's lookup connection runs meanwhile."""
    seen: list[str] = []
    lookup = store.connections.lookup
    lookup.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        lookup.set_trace_callback(None)


async def test_the_rules_in_force_are_read_once_and_replaced_when_a_document_arrives(
    store: Store,
) -> None:
    await store.add_rules(RulesDocument(version="v1"), source="test")
    assert store.active_rules(NOW) is not None
    with statements(store) as seen:
        for _ in range(5):
            found = store.active_rules(NOW)
            assert found is not None and found[0] == "v1"
    assert seen == []

    later = NOW + dt.timedelta(hours=1)
    await store.add_rules(RulesDocument(version="v2", effective_from=later), source="test")
    assert (store.active_rules(NOW) or ("", ""))[0] == "v1"  # v2 is not effective yet
    assert (store.active_rules(later) or ("", ""))[0] == "v2"
    await store.add_rules(RulesDocument(version="v3"), source="test")
    assert (store.active_rules(NOW) or ("", ""))[0] == "v3"  # received later, same effect


async def test_a_pause_reaches_the_next_lookup_without_a_query_per_request(store: Store) -> None:
    await store.upsert_members([member_record("M9", identifiers=["CARD-9"])])
    view = store.member_by_identifier("CARD-9")
    assert view is not None and not view.lottery_paused
    with statements(store) as seen:
        store.member_by_identifier("CARD-9")
    assert not [sql for sql in seen if "program_switches" in sql]

    await store.set_program_paused("lottery", True, by="test")
    view = store.member_by_identifier("CARD-9")
    assert view is not None and view.lottery_paused
    assert store.program_paused("lottery")
    await store.set_program_paused("lottery", False, by="test")
    view = store.member("M9")
    assert view is not None and not view.lottery_paused


async def test_the_menu_categories_are_held_and_replaced_with_the_menu(store: Store) -> None:
    await store.replace_products([(101, "Latte", "coffee", "drinks", True)])
    assert store.categories_for([101, 102]) == {101: "coffee"}
    with statements(store) as seen:
        assert store.categories_for([101]) == {101: "coffee"}
    assert seen == []
    await store.replace_products(
        [(101, "Latte", "hot drinks", "drinks", True), (102, "Bun", "food", "food", True)]
    )
    assert store.categories_for([101, 102, 103]) == {101: "hot drinks", 102: "food"}
