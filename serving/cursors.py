"""List cursors: where a row stands in a list's order (its group, its time and its id),
handed out with each row and passed back as ``after`` for the page that follows it.

A cursor reads ``GROUP.MICROSECONDS.ID`` (the time as microseconds since the epoch,
UTC, exact). It says nothing a row does not show; a value that is not one gets a 422
that says where to take it from.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import HTTPException

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def make(group: int, at: datetime, row_id: int) -> str:
    return f"{group}.{(at - EPOCH) // MICROSECOND}.{row_id}"


def parse(value: str, groups: int = 2) -> tuple[int, tuple[datetime, int]]:
    """(group, (time, id)) of a cursor, or a 422 naming ``after``."""
    parts = value.strip().split(".")
    try:
        group, micros, row_id = (int(p) for p in parts)
        at = EPOCH + micros * MICROSECOND
    except (ValueError, OverflowError):
        group = -1
    if len(parts) != 3 or not 0 <= group < groups or row_id < 1:
        raise HTTPException(
            422, detail="after: not a cursor of this list (pass a row's `cursor` as it is)"
        )
    return group, (at, row_id)
