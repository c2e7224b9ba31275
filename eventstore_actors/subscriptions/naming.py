"""How a consumer group's rows are named: each partition is a subscriptions row (and lock)
named after the group with a suffix no user name can carry (user names may not contain
`MARK`). Used by `group` (which makes them) and `info` (which shows them as the group's)."""

from __future__ import annotations

__all__ = ["MARK", "parse_row_name", "partition_row_name"]

#: Separates a group's name from its partition or member suffix (refused in user names).
MARK = "\x1f"


def partition_row_name(name: str, index: int, count: int) -> str:
    """The subscriptions row (and lock) name of one partition."""
    return f"{name}{MARK}partition {index} of {count}"


def parse_row_name(raw: str) -> tuple[str, int, int] | None:
    """(group name, index, count) of a partition row name; None for other names."""
    name, mark, rest = raw.partition(MARK)
    if not mark or not rest.startswith("partition "):
        return None
    try:
        index, _, count = rest[len("partition ") :].partition(" of ")
        return name, int(index), int(count)
    except ValueError:
        return None
