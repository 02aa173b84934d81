"""The checkpoint's two rebalance guarantees, without a broker:

- a record fetched before a revoke is never tracked under a later assignment of its partition
  (the revoke-and-assign-back that can happen while one record waits out a Schema Registry
  outage: the old code tracked the rest of the stale batch under the new assignment, whose
  baseline then skipped the held record, and committed past it);
- a commit is issued only for partitions owned, in the same assignment, when it runs on the Kafka
  thread (the old code could commit a revoked partition after the revoke's final commit).
"""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from connector.checkpoint import Checkpoint, Committer
from connector.observability.metrics import Metrics
from connector.offsets import OffsetLedger
from connector.source.consumer import KafkaSource, owned_now

P = ("orders", 0)
Q = ("orders", 1)


async def _hook(keys: list[Any]) -> dict[Any, int]:
    return {}


class FakeConsumer:
    """Records what is committed; every partition's commit succeeds."""

    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        assert not asynchronous
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return offsets


def _source() -> tuple[KafkaSource, FakeConsumer]:
    source = KafkaSource(
        {"bootstrap.servers": "127.0.0.1:9", "group.id": "g"},
        ["orders"],
        on_assign=_hook,
        on_revoke=_hook,
        on_lost=_hook,
    )
    consumer = FakeConsumer()
    source._consumer = consumer  # type: ignore[assignment]  # what start() would make
    return source, consumer


def _assign(source: KafkaSource, checkpoint: Checkpoint, *keys: tuple[str, int]) -> None:
    """What KafkaSource's assign callback does on the Kafka thread, then its hook on the loop."""
    source.assignment.update(keys)
    for key in keys:
        source.generations[key] = source.generations.get(key, 0) + 1
    checkpoint.assigned(list(keys))


def _revoke(source: KafkaSource, checkpoint: Checkpoint, *keys: tuple[str, int]) -> None:
    checkpoint.revoked(list(keys))
    source.assignment.difference_update(keys)


async def test_a_record_fetched_before_a_revoke_is_never_tracked_under_the_next_assignment() -> (
    None
):
    source, _ = _source()
    checkpoint = Checkpoint(source, Metrics(process_metrics=False))
    _assign(source, checkpoint, P)
    fetched_at = checkpoint.epoch  # a batch of offsets 150..199 arrives
    held = checkpoint.track(P, 150, 1, fetched_at)
    assert held is not None  # 150 waits for the Schema Registry...

    # ...meanwhile the partition is revoked and assigned back to this instance.
    _revoke(source, checkpoint, P)
    _assign(source, checkpoint, P)

    # The rest of the stale batch belongs to the assignment that is over: not tracked.
    for offset in range(151, 200):
        assert checkpoint.track(P, offset, 1, fetched_at) is None
    assert checkpoint.ledger.committable() == {}
    held.release()  # 150 delivered later: lands on the detached tracker, moves nothing
    assert checkpoint.ledger.committable() == {}

    # The new assignment reads again from the committed offset, and tracks from there.
    refetched_at = checkpoint.epoch
    slots = [checkpoint.track(P, offset, 1, refetched_at) for offset in range(150, 200)]
    assert all(slot is not None for slot in slots)
    for slot in slots[1:]:
        assert slot is not None
        slot.release()
    assert checkpoint.ledger.committable() == {}  # 150 is not delivered in this assignment
    assert slots[0] is not None
    slots[0].release()
    assert checkpoint.ledger.committable() == {P: 200}


def test_the_ledger_refuses_a_stale_fetch_but_keeps_untouched_partitions() -> None:
    ledger = OffsetLedger()
    ledger.assign([P, Q])
    fetched_at = ledger.epoch
    ledger.revoke([P])
    ledger.assign([P])
    assert ledger.tracker_for(P, fetched_at) is None  # P was assigned anew since the fetch
    assert ledger.tracker_for(Q, fetched_at) is not None  # Q stayed: its records still count
    assert ledger.tracker_for(P, ledger.epoch) is not None


def test_only_offsets_of_partitions_owned_in_their_generation_are_committed() -> None:
    offsets = {P: (10, 1), Q: (20, 1), ("orders", 2): (30, 2)}
    assignment = {P, ("orders", 2)}
    generations = {P: 1, Q: 1, ("orders", 2): 3}
    # Q is no longer assigned; partition 2 was assigned again since its offset was computed.
    assert owned_now(offsets, assignment, generations) == {P: 10}


async def test_a_commit_queued_behind_a_rebalance_never_commits_the_revoked_partition() -> None:
    source, consumer = _source()
    checkpoint = Checkpoint(source, Metrics(process_metrics=False))
    _assign(source, checkpoint, P, Q)
    fetched_at = checkpoint.epoch
    for key in (P, Q):
        for offset in range(5):
            slot = checkpoint.track(key, offset, 1, fetched_at)
            assert slot is not None
            slot.release()
    ledger = checkpoint.ledger
    computed = {
        key: (off, ledger.partitions[key].generation) for key, off in ledger.committable().items()
    }
    assert computed == {P: (5, 1), Q: (5, 1)}

    # Before the commit reaches the Kafka thread, P is revoked there (its final commit is the
    # revoke's) and assigned back: the queued commit must leave P alone.
    _revoke(source, checkpoint, P)
    _assign(source, checkpoint, P)
    source._loop = asyncio.get_running_loop()  # what start() would set
    done = await source.commit(computed)
    assert done == {Q: 5}
    assert consumer.commits == [[("orders", 1, 5)]]
    source._executor.shutdown(wait=True)


class MetadataCountingConsumer(FakeConsumer):
    """Counts metadata requests, and says whether one came from inside a rebalance callback."""

    def __init__(self, source: KafkaSource) -> None:
        super().__init__()
        self.source = source
        self.in_callback = False
        self.metadata_in_callback = 0
        self.metadata = 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        self.metadata += 1
        self.metadata_in_callback += self.in_callback
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))  # no broker here

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        self.in_callback = True  # librdkafka serves rebalance callbacks inside consume
        try:
            self.source._assign_cb(self, [TopicPartition("orders", 0)])  # type: ignore[arg-type]
        finally:
            self.in_callback = False
        return []


async def test_no_metadata_request_is_made_inside_a_rebalance_callback() -> None:
    """A metadata request nested in a rebalance callback left confluent-kafka's per-thread call
    state cleared, and the next callback of the same consume call aborted the process (SIGABRT).
    The partition total is counted before consume instead."""
    source, _ = _source()
    consumer = MetadataCountingConsumer(source)
    source._consumer = consumer  # type: ignore[assignment]
    source._loop = asyncio.get_running_loop()
    source._run_on_loop = lambda hook, keys: {}  # type: ignore[method-assign]
    await source.consume(10, 0)
    await source.consume(10, 0)
    assert consumer.metadata_in_callback == 0
    assert consumer.metadata >= 2  # counted again after the assignment, outside the callback
    assert source.assignment == {("orders", 0)}
    source._executor.shutdown(wait=True)


async def test_the_committer_commits_at_once_then_at_most_once_per_gap() -> None:
    """A poke (an accepted request) commits at once when the committer is idle; pokes during the
    gap after a commit make one more commit when the gap is over, with everything done by then."""
    source, consumer = _source()
    checkpoint = Checkpoint(source, Metrics(process_metrics=False))
    _assign(source, checkpoint, P)
    fetched_at = checkpoint.epoch
    gaps: list[float] = []
    gap_over = asyncio.Event()

    async def sleep(seconds: float) -> None:
        gaps.append(seconds)
        await gap_over.wait()
        gap_over.clear()

    async def until(cond: Any) -> None:  # polls an observable condition, bounded
        for _ in range(500):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached")

    def deliver(offset: int) -> None:
        slot = checkpoint.track(P, offset, 1, fetched_at)
        assert slot is not None
        slot.release()

    source._loop = asyncio.get_running_loop()  # what start() would set
    committer = Committer(checkpoint, 0.05, sleep=sleep)
    task = asyncio.create_task(committer.run())
    try:
        deliver(0)
        committer.poke()
        await until(lambda: gaps)  # committed, now in its gap
        assert consumer.commits == [[("orders", 0, 1)]]
        deliver(1)
        committer.poke()
        deliver(2)
        committer.poke()
        assert len(consumer.commits) == 1  # nothing more during the gap
        gap_over.set()
        await until(lambda: len(gaps) == 2)
        assert consumer.commits == [[("orders", 0, 1)], [("orders", 0, 3)]]
        assert gaps == [0.05, 0.05]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
