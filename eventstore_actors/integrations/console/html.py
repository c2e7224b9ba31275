"""The console's HTML, rendered on the server from the same dicts as the JSON twins.

Every value that comes from the store (stream names, event types, data, metadata, reasons,
holder texts) is untrusted and goes through `escape` (text and attribute-safe); links are
built with `quote`. There is no inline script or style: the page loads /static/console.css
and, on the tail page only, /static/console.js, which the Content-Security-Policy allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape as _escape
from typing import Any
from urllib.parse import quote, urlencode

from .data import pretty

__all__ = ["escape", "layout"]

_NAV = (
    ("overview", "/", "Overview"),
    ("streams", "/streams", "Streams"),
    ("tail", "/tail", "$all tail"),
    ("subscriptions", "/subscriptions", "Subscriptions"),
)


def escape(value: Any) -> str:
    """`value` as HTML text, safe in element content and in quoted attributes."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _escape(str(value), quote=True)


def link(base: str, path: str, params: dict[str, Any] | None = None) -> str:
    """An escaped href: `base` + `path` (its segments already quoted) + query string."""
    query = urlencode({k: v for k, v in (params or {}).items() if v not in (None, "")})
    return escape(base + path + (f"?{query}" if query else ""))


def stream_href(base: str, stream_uuid: str) -> str:
    return link(base, "/streams/" + quote(stream_uuid, safe=""))


def layout(
    base: str, current: str, title: str, body: str, *, script: bool = False, read_only: bool
) -> str:
    """A whole page: header with navigation, `body` (already escaped HTML)."""
    nav = "".join(
        f'<a href="{link(base, path)}"{" class=current" if key == current else ""}>'
        f"{escape(text)}</a>"
        for key, path, text in _NAV
    )
    mode = "read-only" if read_only else "writes allowed (token required)"
    js = f'<script src="{link(base, "/static/console.js")}" defer></script>' if script else ""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · eventstore-actors console</title>"
        f'<link rel=stylesheet href="{link(base, "/static/console.css")}">{js}</head>'
        f"<body><header><span class=brand>eventstore-actors</span><nav>{nav}</nav>"
        f"<span class=mode>{escape(mode)}</span></header>"
        f"<main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, id: str = "") -> str:
    """A table; `rows` hold HTML already escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{escape(id)}"' if id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts(pairs: Iterable[tuple[str, Any]]) -> str:
    """A definition list of label: value (values escaped here)."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs)
    return f"<dl class=facts>{items}</dl>"


#: Characters of one value's JSON shown on a page (the JSON twin has all of it).
SHOWN = 20_000


def json_block(value: Any) -> str:
    text = pretty(value)
    if len(text) > SHOWN:
        rest = len(text) - SHOWN
        return (
            f"<pre class=json>{escape(text[:SHOWN])}</pre>"
            f"<p class=note>… {rest:,} more characters: see this page's JSON under /api/</p>"
        )
    return f"<pre class=json>{escape(text)}</pre>"


def event_card(base: str, event: dict[str, Any]) -> str:
    """One event: its positions, type and ids, then its data and metadata as indented JSON
    (or a mark that it was forgotten, or that its encrypted data cannot be read here)."""
    unreadable = event.get("unreadable", False)
    classes = "event forgotten" if event["forgotten"] or unreadable else "event"
    head = (
        f"<div class=event-head><span class=pos>#{escape(event['event_id'])}</span> "
        f'<a href="{stream_href(base, event["stream_uuid"])}">{escape(event["stream_uuid"])}</a>'
        f" v{escape(event['stream_version'])} "
        f"<span class=type>{escape(event['event_type'])}</span> "
        f"<time>{escape(event['created_at'])}</time></div>"
    )
    ids = facts(
        [
            ("event_uuid", event["event_uuid"]),
            ("correlation_id", event["correlation_id"]),
            ("causation_id", event["causation_id"]),
            ("subject", event["subject"]),
        ]
    )
    if event["forgotten"]:
        data = "<p class=mark>forgotten: this subject's data was erased</p>"
    elif unreadable:
        data = (
            "<p class=mark>encrypted: this console runs without the master key "
            "(EVENTSTORE_MASTER_KEY), so the data cannot be shown</p>"
        )
    else:
        data = f"<h3>data</h3>{json_block(event['data'])}"
    meta = f"<h3>metadata</h3>{json_block(event['metadata'])}"
    return f"<article class='{classes}'>{head}{ids}{data}{meta}</article>"


def pager(
    base: str,
    path: str,
    params: dict[str, Any],
    previous: dict[str, Any] | None,
    following: dict[str, Any] | None,
    labels: tuple[str, str] = ("← previous", "next →"),
) -> str:
    """Previous/next links; `previous` and `following` are the params of those pages or None."""
    parts = []
    if previous is not None:
        href = link(base, path, {**params, **previous})
        parts.append(f'<a rel=prev href="{href}">{escape(labels[0])}</a>')
    if following is not None:
        href = link(base, path, {**params, **following})
        parts.append(f'<a rel=next href="{href}">{escape(labels[1])}</a>')
    return f"<nav class=pager>{' '.join(parts)}</nav>" if parts else ""
