"""Snapshot retention as a pure function: which keys go, which stay, and what is never touched."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from vaultdr.agents.snapshot import (
    apply_retention,
    cluster_prefix,
    format_stamp,
    next_due,
    parse_key_time,
    snapshot_key,
)

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.UTC)
PREFIX = "snapshots/cluster-a/"


def at(days: float = 0, hours: float = 0, minutes: float = 0) -> dt.datetime:
    """A moment before NOW."""
    return NOW - dt.timedelta(days=days, hours=hours, minutes=minutes)


def key(moment: dt.datetime, prefix: str = PREFIX) -> str:
    return f"{prefix}{format_stamp(moment)}.snap"


def objects(*keys: str) -> list[dict[str, Any]]:
    return [{"key": k, "size": 1, "last_modified": NOW} for k in keys]


def retain(
    keys: list[str], *, last: int, daily: int, now: dt.datetime = NOW, prefix: str = PREFIX
) -> list[str]:
    return apply_retention(objects(*keys), prefix=prefix, last=last, daily=daily, now=now)


# --- names ---------------------------------------------------------------------------------


def test_key_is_prefix_cluster_id_and_utc_microsecond_stamp() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    assert snapshot_key("snapshots", "cid", moment) == "snapshots/cid/20260102T030405.678901Z.snap"
    assert (
        snapshot_key("/snapshots/", "cid", moment) == "snapshots/cid/20260102T030405.678901Z.snap"
    )
    assert snapshot_key("", "cid", moment) == "cid/20260102T030405.678901Z.snap"


def test_key_stamp_is_utc_whatever_the_input_zone() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2026, 1, 2, 3, 0, 0, tzinfo=plus2)
    assert format_stamp(moment) == "20260102T010000.000000Z"


def test_key_time_round_trips_and_rejects_other_names() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    assert parse_key_time(snapshot_key("p", "c", moment)) == moment
    assert parse_key_time("p/c/notes.txt") is None
    assert parse_key_time("p/c/20260102T030405Z.snap") is None
    assert parse_key_time("p/c/20260102T030405.000006Z.snap.part") is None


def test_cluster_prefix_ends_with_a_slash() -> None:
    assert cluster_prefix("snapshots", "cid") == "snapshots/cid/"
    assert cluster_prefix("a/b/", "cid") == "a/b/cid/"


# --- keep last N -----------------------------------------------------------------------


def test_keeps_the_newest_last_and_deletes_the_rest_oldest_first() -> None:
    keys = [key(at(minutes=m)) for m in range(5)]  # keys[0] is the newest
    assert retain(keys, last=2, daily=0) == [keys[4], keys[3], keys[2]]


def test_input_order_does_not_matter() -> None:
    keys = [key(at(minutes=m)) for m in range(5)]
    shuffled = [keys[2], keys[0], keys[4], keys[1], keys[3]]
    assert retain(shuffled, last=2, daily=0) == retain(keys, last=2, daily=0)


def test_ordering_is_by_the_time_in_the_key_not_the_upload_time() -> None:
    old, new = key(at(days=3)), key(at(minutes=1))
    listed = [
        {"key": old, "last_modified": NOW},  # uploaded late (a re-upload, say)
        {"key": new, "last_modified": NOW - dt.timedelta(days=10)},
    ]
    assert apply_retention(listed, prefix=PREFIX, last=1, daily=0, now=NOW) == [old]


def test_microseconds_order_snapshots_within_one_second() -> None:
    base = at(minutes=1)
    first, second = key(base), key(base + dt.timedelta(microseconds=1))
    assert retain([second, first], last=1, daily=0) == [first]


def test_fewer_snapshots_than_last_deletes_nothing() -> None:
    keys = [key(at(minutes=m)) for m in range(3)]
    assert retain(keys, last=10, daily=7) == []


def test_nothing_listed_deletes_nothing() -> None:
    assert retain([], last=1, daily=0) == []


def test_repeated_listing_entries_are_counted_once() -> None:
    keys = [key(at(minutes=m)) for m in range(3)]
    assert retain([*keys, *keys], last=2, daily=0) == [keys[2]]


# --- never the newest ------------------------------------------------------------------


@pytest.mark.parametrize("daily", [0, 3])
def test_the_newest_is_kept_even_with_last_zero(daily: int) -> None:
    keys = [key(at(days=d * 10, minutes=1)) for d in range(4)]
    deleted = retain(keys, last=0, daily=daily)
    assert keys[0] not in deleted
    assert set(deleted) == set(keys[1:])


def test_a_single_snapshot_is_never_deleted() -> None:
    only = key(at(days=400))
    assert retain([only], last=0, daily=0) == []


def test_a_snapshot_from_the_future_counts_as_the_newest() -> None:
    future, present = key(NOW + dt.timedelta(hours=1)), key(at(minutes=1))
    assert retain([present, future], last=1, daily=0) == [present]


# --- daily buckets ---------------------------------------------------------------------


def test_keeps_the_newest_of_each_of_the_last_daily_days() -> None:
    today = [key(at(hours=h)) for h in (1, 2)]  # 11:00, 10:00 today
    yesterday = [key(at(days=1, hours=h)) for h in (1, 2, 3)]
    two_days_ago = [key(at(days=2, hours=h)) for h in (1, 2)]
    deleted = retain(today + yesterday + two_days_ago, last=1, daily=3)
    kept = set(today + yesterday + two_days_ago) - set(deleted)
    assert kept == {today[0], yesterday[0], two_days_ago[0]}


def test_days_are_counted_back_from_now_with_today_included() -> None:
    keys = [key(at(days=d, hours=1)) for d in range(5)]
    deleted = retain(keys, last=1, daily=2)  # today and yesterday
    assert deleted == [keys[4], keys[3], keys[2]]


def test_days_are_utc_calendar_days_not_24_hour_windows() -> None:
    now = dt.datetime(2026, 11, 22, 0, 30, tzinfo=dt.UTC)
    just_after_midnight = key(dt.datetime(2026, 11, 22, 0, 10, tzinfo=dt.UTC))
    late_yesterday = key(dt.datetime(2026, 11, 21, 23, 50, tzinfo=dt.UTC))
    early_yesterday = key(dt.datetime(2026, 11, 21, 0, 40, tzinfo=dt.UTC))
    deleted = retain(
        [just_after_midnight, late_yesterday, early_yesterday], last=1, daily=2, now=now
    )
    assert deleted == [early_yesterday]


def test_now_in_another_zone_is_read_as_utc() -> None:
    minus5 = dt.timezone(dt.timedelta(hours=-5))
    now = dt.datetime(2026, 11, 21, 20, 0, tzinfo=minus5)  # 2026-11-22 01:00 UTC
    today_utc = key(dt.datetime(2026, 11, 22, 0, 30, tzinfo=dt.UTC))
    yesterday_utc = key(dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC))
    older = key(dt.datetime(2026, 11, 21, 11, 0, tzinfo=dt.UTC))
    assert retain([today_utc, yesterday_utc, older], last=1, daily=2, now=now) == [older]


def test_days_without_snapshots_are_not_filled_from_older_days() -> None:
    recent = key(at(hours=1))
    old = [key(at(days=d, hours=1)) for d in (10, 11, 12)]
    assert retain([recent, *old], last=1, daily=7) == [old[2], old[1], old[0]]


def test_last_and_daily_overlap_rather_than_add_up() -> None:
    keys = [key(at(hours=h)) for h in (1, 2, 3)]  # all today
    assert retain(keys, last=2, daily=1) == [keys[2]]


def test_daily_zero_keeps_only_the_last() -> None:
    keys = [key(at(days=d, hours=1)) for d in range(3)]
    assert retain(keys, last=1, daily=0) == [keys[2], keys[1]]


# --- scope: nothing outside the cluster's prefix ----------------------------------------


def test_other_clusters_keys_are_never_deleted() -> None:
    mine = [key(at(minutes=m)) for m in range(3)]
    theirs = [key(at(days=30, minutes=m), "snapshots/cluster-b/") for m in range(3)]
    deleted = retain(mine + theirs, last=1, daily=0)
    assert deleted == [mine[2], mine[1]]


def test_a_cluster_whose_id_extends_mine_is_not_mine() -> None:
    mine = [key(at(minutes=m)) for m in range(2)]
    lookalike = [key(at(days=30), "snapshots/cluster-a-2/")]
    deleted = retain(mine + lookalike, last=1, daily=0, prefix="snapshots/cluster-a")
    assert deleted == [mine[1]]


def test_unknown_and_nested_keys_under_the_prefix_are_left_alone() -> None:
    mine = [key(at(minutes=m)) for m in range(2)]
    others = [
        f"{PREFIX}README.txt",
        f"{PREFIX}{format_stamp(at(days=9))}.snap.part",
        f"{PREFIX}nested/{format_stamp(at(days=9))}.snap",
    ]
    assert retain(mine + others, last=1, daily=0) == [mine[1]]


@pytest.mark.parametrize("prefix", ["", "/"])
def test_an_empty_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        retain([key(at())], last=1, daily=0, prefix=prefix)


# --- arguments ---------------------------------------------------------------------------


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        retain([], last=-1, daily=0)
    with pytest.raises(ValueError, match="negative"):
        retain([], last=1, daily=-1)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        retain([], last=1, daily=0, now=NOW.replace(tzinfo=None))


def test_it_is_pure_the_input_is_not_changed() -> None:
    listed = objects(*[key(at(minutes=m)) for m in range(4)])
    before = [dict(item) for item in listed]
    apply_retention(listed, prefix=PREFIX, last=1, daily=0, now=NOW)
    assert listed == before


# --- the loop's schedule -------------------------------------------------------------


def test_next_due_keeps_a_fixed_rate_and_skips_missed_ticks() -> None:
    assert next_due(100.0, 10.0, 101.0) == 110.0
    assert next_due(100.0, 10.0, 110.0) == 110.0
    assert next_due(100.0, 10.0, 125.0) == 130.0
