"""The acknowledgement watermark: nothing is committable past a record MoEngage has not accepted."""

from connector.offsets import OffsetLedger

TP = ("users", 0)


def _ledger() -> OffsetLedger:
    ledger = OffsetLedger()
    ledger.assign([TP])
    return ledger


def test_nothing_committable_before_any_record() -> None:
    assert _ledger().committable() == {}


def test_record_is_not_committable_while_its_element_is_unacknowledged() -> None:
    ledger = _ledger()
    slot = ledger.tracker(TP).track(0, 10)  # type: ignore[union-attr]
    slot.add_element()
    slot.release()
    assert ledger.committable() == {}


def test_record_becomes_committable_after_its_last_element_is_acknowledged() -> None:
    ledger = _ledger()
    slot = ledger.tracker(TP).track(5, 10)  # type: ignore[union-attr]
    slot.add_element()
    slot.add_element()
    slot.release()
    slot.ack()
    assert ledger.committable() == {}
    slot.ack()
    assert ledger.committable() == {TP: 6}


def test_a_later_acknowledgement_never_moves_the_watermark_past_an_earlier_failure() -> None:
    # Vector issue 24215: a sink that commits N+1 after N failed. Here N stays uncommitted.
    ledger = _ledger()
    tracker = ledger.tracker(TP)
    assert tracker is not None
    first, second = tracker.track(0, 1), tracker.track(1, 1)
    for s in (first, second):
        s.add_element()
        s.release()
    second.ack()
    assert ledger.committable() == {}
    first.ack()
    assert ledger.committable() == {TP: 2}


def test_filtered_record_is_committable_once_its_hold_is_released() -> None:
    ledger = _ledger()
    slot = ledger.tracker(TP).track(0, 1)  # type: ignore[union-attr]
    assert ledger.committable() == {}
    slot.release()
    assert ledger.committable() == {TP: 1}


def test_a_bad_record_that_keeps_its_hold_blocks_the_watermark_forever() -> None:
    ledger = _ledger()
    tracker = ledger.tracker(TP)
    assert tracker is not None
    bad = tracker.track(0, 1)
    good = tracker.track(1, 1)
    good.release()
    assert bad.remaining == 1
    assert ledger.committable() == {}


def test_offset_gaps_from_compaction_are_skipped() -> None:
    ledger = _ledger()
    tracker = ledger.tracker(TP)
    assert tracker is not None
    tracker.track(10, 1).release()
    tracker.track(15, 1).release()
    assert ledger.committable() == {TP: 16}


def test_committed_watermark_is_not_offered_again() -> None:
    ledger = _ledger()
    ledger.tracker(TP).track(0, 1).release()  # type: ignore[union-attr]
    ledger.mark_committed(TP, 1)
    assert ledger.committable() == {}


def test_buffered_totals_follow_records_in_and_out() -> None:
    ledger = _ledger()
    tracker = ledger.tracker(TP)
    assert tracker is not None
    a, b = tracker.track(0, 100), tracker.track(1, 50)
    assert (ledger.buffered_records, ledger.buffered_bytes) == (2, 150)
    a.release()
    assert (ledger.buffered_records, ledger.buffered_bytes) == (1, 50)
    b.release()
    assert (ledger.buffered_records, ledger.buffered_bytes) == (0, 0)


def test_revoke_returns_watermark_and_late_acks_do_not_touch_a_reassigned_partition() -> None:
    ledger = _ledger()
    old = ledger.tracker(TP)
    assert old is not None
    done, pending = old.track(0, 1), old.track(1, 1)
    done.release()
    pending.add_element()
    pending.release()
    assert ledger.revoke([TP]) == {TP: 1}
    assert ledger.buffered_records == 0
    ledger.assign([TP])
    new = ledger.tracker(TP)
    assert new is not None
    assert new is not old
    pending.ack()  # a request for the old owner's record answered late
    assert ledger.committable() == {}
    assert ledger.buffered_records == 0


def test_seek_back_forgets_slots_at_or_after_the_new_position() -> None:
    ledger = _ledger()
    tracker = ledger.tracker(TP)
    assert tracker is not None
    tracker.track(0, 1).release()
    tracker.track(1, 1)
    tracker.track(2, 1)
    tracker.track(1, 1)  # re-read from offset 1
    assert ledger.buffered_records == 1
    assert ledger.committable() == {TP: 1}


def test_the_starting_position_is_not_committed_again() -> None:
    ledger = _ledger()
    ledger.tracker(TP).track(42, 1)  # type: ignore[union-attr]
    assert ledger.committable() == {}


def test_pending_records_counts_only_unfinished_records() -> None:
    ledger = _ledger()
    tracker = ledger.tracker(TP)
    assert tracker is not None
    tracker.track(0, 1).release()
    tracker.track(1, 1)
    assert ledger.pending_records([TP]) == 1
    assert ledger.pending_records([("other", 0)]) == 0
