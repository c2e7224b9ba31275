"""One function per page: the dict of `data` rendered as HTML (everything escaped by `html`)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from .html import escape, event_card, facts, layout, link, pager, stream_href, table

__all__ = [
    "error",
    "overview",
    "parked",
    "replayed",
    "stream",
    "streams",
    "subscriptions",
    "tail",
]


def overview(base: str, d: dict[str, Any], *, read_only: bool) -> str:
    summary = facts(
        [
            ("schema", d["schema"]),
            ("schema version", d["schema_version"]),
            ("head event_id", d["head"]),
            ("events per second (last minute)", d["events_per_second"]),
            ("streams", d["streams"]),
            ("subscriptions", d["subscriptions"]),
        ]
    )
    instances = table(
        ["store instance", "pid", "subscriptions held"],
        (
            [
                escape(i["instance"]) + (" <em>(this console)</em>" if i["this_process"] else ""),
                escape(i["pid"]),
                escape(i["subscriptions"]),
            ]
            for i in d["instances"]
        ),
        id="instances",
    )
    body = (
        f"{summary}<h2>Store instances</h2>"
        "<p class=note>Every store instance holding a subscription now, and this console's "
        f"own process.</p>{instances}"
    )
    return layout(base, "overview", "Overview", body, read_only=read_only)


def streams(base: str, d: dict[str, Any], *, read_only: bool) -> str:
    form = (
        f'<form method=get action="{link(base, "/streams")}" class=search>'
        f'<label>Stream name starts with <input name=prefix value="{escape(d["prefix"])}" '
        "autocomplete=off></label> <button type=submit>Search</button></form>"
    )
    rows = (
        [
            f'<a href="{stream_href(base, s["stream_uuid"])}">{escape(s["stream_uuid"])}</a>',
            escape(s["stream_version"]),
            escape(s["status"]),
            escape(short_time(s["created_at"])),
            escape(short_time(s["deleted_at"])),
        ]
        for s in d["streams"]
    )
    listing = table(["stream", "version", "status", "created_at", "deleted_at"], rows, id="streams")
    total = (
        f"<p class=note>{escape(d['total_entries'])} streams, page {escape(d['page'])} of "
        f"{escape(d['total_pages'])}</p>"
        if d["total_entries"] is not None
        else f"<p class=note>page {escape(d['page'])}</p>"
    )
    nav = pager(
        base,
        "/streams",
        {"prefix": d["prefix"]},
        {"page": d["page"] - 1} if d["page"] > 1 else None,
        {"page": d["page"] + 1} if d["has_next"] else None,
    )
    all_link = f'<p><a href="{stream_href(base, "$all")}">Every event ($all), newest first</a></p>'
    body = f"{form}{all_link}{total}{listing}{nav}"
    return layout(base, "streams", "Streams", body, read_only=read_only)


def stream(base: str, d: dict[str, Any], *, read_only: bool) -> str:
    info = d["stream"]
    name = info["stream_uuid"]
    details = facts(
        [
            ("stream", name),
            ("version", info["stream_version"]),
            ("status", info["status"]),
            ("created_at", info["created_at"]),
            ("deleted_at", info["deleted_at"]),
            ("first readable version", info["first_version"]),
            ("retention: max events", info["max_count"]),
            ("retention: max age (s)", info["max_age_seconds"]),
        ]
    )
    if d["deleted"]:
        events = "<p class=mark>This stream is deleted: its events are not readable here.</p>"
    elif not d["events"]:
        events = "<p class=note>No events here.</p>"
    else:
        events = "".join(event_card(base, e) for e in d["events"])
    path = "/streams/" + quote(name, safe="")
    nav = pager(
        base,
        path,
        {},
        None,
        {"before": d["next_before"]} if d["next_before"] is not None else None,
        labels=("", "older events →"),
    )
    body = f"{details}<h2>Events, newest first</h2><div id=events>{events}</div>{nav}"
    return layout(base, "streams", f"Stream {name}", body, read_only=read_only)


def _compact(event: dict[str, Any]) -> str:
    if event["forgotten"]:
        return "<span class=mark>forgotten</span>"
    if event.get("unreadable"):
        return "<span class=mark>encrypted</span>"
    text = json.dumps(event["data"], ensure_ascii=False)
    if len(text) > 200:
        text = text[:199] + "…"
    return f"<code>{escape(text)}</code>"


def short_time(iso: str | None) -> str | None:
    """An ISO timestamp as `2026-01-31 12:00:00.123` (UTC, short enough for the tables)."""
    return None if iso is None else iso[:23].replace("T", " ")


def tail_row(base: str, e: dict[str, Any]) -> list[str]:
    return [
        escape(e["event_id"]),
        f'<a href="{stream_href(base, e["stream_uuid"])}">{escape(e["stream_uuid"])}</a>',
        escape(e["stream_version"]),
        escape(e["event_type"]),
        escape(short_time(e["created_at"])),
        _compact(e),
    ]


def tail(base: str, d: dict[str, Any], *, read_only: bool) -> str:
    rows = [tail_row(base, e) for e in reversed(d["events"])]  # newest on top
    listing = table(
        ["event_id", "stream", "version", "type", "created_at", "data"], rows, id="tail"
    )
    # The script reads where to listen from these attributes (no inline script).
    listing = listing.replace(
        '<table id="tail">',
        f'<table id="tail" data-source="{link(base, "/api/tail/events")}" '
        f'data-after="{escape(d["last_event_id"])}" data-base="{escape(base)}">',
        1,
    )
    body = (
        "<p class=note>New events of every stream appear on top as they are appended "
        "(server-sent events). <span id=tail-status class=status>connecting…</span></p>"
        f"{listing}"
    )
    return layout(base, "tail", "$all tail", body, script=True, read_only=read_only)


def subscriptions(base: str, d: dict[str, Any], *, read_only: bool) -> str:
    def row(s: dict[str, Any]) -> list[str]:
        parked = escape(s["parked"])
        if s["parked"]:
            where = {"subscription": s["subscription_name"], "stream": s["stream_uuid"]}
            href = link(base, "/parked", where)
            parked = f'<a href="{href}">{parked}</a>'
        lag_seconds = s["lag_seconds"]
        return [
            escape(s["subscription_name"]),
            escape(s["stream_uuid"]),
            escape(s["partition"]),
            escape(s["checkpoint"]),
            escape(s["head"]),
            escape(s["lag"]),
            escape(None if lag_seconds is None else round(float(lag_seconds), 3)),
            f'<span class="state {escape(s["state"] or "")}">{escape(s["state"])}</span>',
            escape(s["last_ack_at"]),
            escape(s["holder"]),
            parked,
        ]

    headers = [
        "subscription",
        "stream",
        "partition",
        "checkpoint",
        "head",
        "lag",
        "lag (s)",
        "state",
        "last ack",
        "holder",
        "parked",
    ]
    if d["subscriptions"]:
        body = table(headers, (row(s) for s in d["subscriptions"]), id="subscriptions")
    else:
        body = "<p class=note>No durable subscriptions.</p>"
    return layout(base, "subscriptions", "Subscriptions", body, read_only=read_only)


def parked(base: str, d: dict[str, Any], *, read_only: bool) -> str:
    name, stream_uuid = d["subscription_name"], d["stream_uuid"]
    cards = []
    for p in d["parked"]:
        reason = facts(
            [("reason", p["reason"]), ("retries", p["retries"]), ("parked_at", p["parked_at"])]
        )
        cards.append(f"<section class=parked>{reason}{event_card(base, p['event'])}</section>")
    listing = "".join(cards) or "<p class=note>No parked events.</p>"
    form = ""
    if not read_only and d["parked"]:
        form = "".join(
            f'<form method=post action="{link(base, path)}" class=replay>'
            f'<input type=hidden name=subscription value="{escape(name)}">'
            f'<input type=hidden name=stream value="{escape(stream_uuid)}">'
            "<label>Token <input type=password name=token autocomplete=off required></label> "
            f"<button type=submit>{label}</button></form>"
            for path, label in (
                ("/parked/replay", "Replay parked events"),
                ("/parked/forget", "Forget parked events"),
            )
        )
    title = f"Parked events of {name} on {stream_uuid}"
    return layout(base, "subscriptions", title, f"{form}{listing}", read_only=read_only)


def replayed(base: str, d: dict[str, Any], *, read_only: bool) -> str:
    back = link(
        base, "/parked", {"subscription": d["subscription_name"], "stream": d["stream_uuid"]}
    )
    forgot = "forgotten" in d
    count = d["forgotten"] if forgot else d["replayed"]
    done = "taken off the list for good" if forgot else "queued again"
    body = (
        f"<p>{escape(count)} parked events of {escape(d['subscription_name'])} were "
        f'{done}.</p><p><a href="{back}">Back to the parked events</a></p>'
    )
    title = "Forgotten" if forgot else "Replayed"
    return layout(base, "subscriptions", title, body, read_only=read_only)


def error(base: str, code: int, text: str, *, read_only: bool) -> str:
    body = f"<p class=mark>{escape(text)}</p>"
    return layout(base, "", f"Error {code}", body, read_only=read_only)
