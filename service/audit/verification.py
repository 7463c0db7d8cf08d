"""Chain verification: recompute each stream's hash chain and hold its head against the state table."""
from __future__ import annotations

from typing import Callable, Iterator

from sqlalchemy import Engine, func, select

from service.events.chain import ChainCheck, check_chain
from service.events.store import EventStore
from service.events.tables import case_studies, events


class Verification:
    """Checks that the stored streams are what was written."""

    def __init__(self, engine: Engine, store: EventStore):
        self.engine = engine
        self.store = store

    def verify(self, stream_id: str, *, stream: list | None = None) -> ChainCheck | None:
        """Recompute one stream's chain and hold its head against the state table's (``stream``: its
        events, when the caller has already read them all)."""
        heads = self._state_heads(stream_id)
        stream = self.store.load(stream_id) if stream is None else stream
        if not stream and stream_id not in heads:
            return None
        return _against_state(check_chain(stream_id, stream), heads.get(stream_id))

    def verify_all(self, *, progress: Callable[[int], None] | None = None) -> Iterator[ChainCheck]:
        """Recompute every stream's chain, one stream at a time (``progress`` gets events done), and
        hold each head against the state table's; a record whose events are all gone is reported too."""
        heads = self._state_heads()
        for stream_id, stream in self.store.streams():
            yield _against_state(check_chain(stream_id, stream), heads.pop(stream_id, None))
            if progress:
                progress(len(stream))
        for stream_id, (version, head) in sorted(heads.items()):
            yield _against_state(check_chain(stream_id, []), (version, head))

    def event_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(events)).scalar_one()

    def _state_heads(self, stream_id: str | None = None) -> dict[str, tuple[int, str]]:
        """The state table's version and head hash, by record (all records, or one)."""
        query = select(case_studies.c.id, case_studies.c.version, case_studies.c.head_hash)
        if stream_id is not None:
            query = query.where(case_studies.c.id == stream_id)
        with self.engine.connect() as conn:
            return {row.id: (row.version, row.head_hash) for row in conn.execute(query)}


def _against_state(check: ChainCheck, state: tuple[int, str] | None) -> ChainCheck:
    """A chain that checks out must also end where the state table says the record is."""
    if not check.intact or state is None:
        return check
    version, head = state
    if version != check.version:
        return ChainCheck(check.stream_id, False, check.events, check.version, check.head_hash, check.version + 1,
                          f"events are missing: the record is at version {version}, the stream ends at "
                          f"{check.version}", head, check.head_hash)
    if head != check.head_hash:
        return ChainCheck(check.stream_id, False, check.events, check.version, check.head_hash, check.version,
                          "the state table's head hash differs from the chain's", check.head_hash, head)
    return check
