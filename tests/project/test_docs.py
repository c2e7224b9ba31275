"""The documentation a user reads first stays true: the options table of
docs/getting-started.md lists every option of `EventStore.start`, the install lines of the
README and docs/ work from a checkout, the silent `count` cap of reads is documented
(docs/streams.md), `EventData.event_type`'s default is what the store does, and the README's
front page says, next to the test command, which database the tests use and how long they
take. (Every subscribe option's docstring line: tests/project/test_typing.py.)"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventstore_actors import EventData, EventStore, JsonSerializer
from eventstore_actors.aio import AsyncEventStore
from eventstore_actors.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
GETTING_STARTED = (ROOT / "docs" / "getting-started.md").read_text()
STREAMS = (ROOT / "docs" / "streams.md").read_text()
#: Everything a user reads: the front page and every guide.
ALL_DOCS = "\n".join([README, *(page.read_text() for page in sorted((ROOT / "docs").glob("*.md")))])


def _options_table() -> set[str]:
    """The option names in the first column of the table of start options (getting started)."""
    start = GETTING_STARTED.index("Options (the seed's connection keys are accepted too):")
    table = GETTING_STARTED[start:].split("\n\n")[1]
    names: set[str] = set()
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        names.update(re.findall(r"`(\w+)`", first))
    return names


def test_every_settings_option_is_in_the_options_table() -> None:
    listed = _options_table()
    missing = [f.name for f in dataclasses.fields(Settings) if f.name not in listed]
    assert missing == [], f"options missing from docs/getting-started.md's table: {missing}"


def test_the_docs_install_extras_from_the_checkout() -> None:
    """The package is installed from a checkout: `pip install 'eventstore-actors[x]'` fails."""
    assert re.findall(r"pip install '?eventstore-actors\[", ALL_DOCS) == []
    assert "pip install '.[embedded]'" in README
    for extra in ("metrics", "eventsourcing", "embedded", "otel"):
        assert f"pip install '.[{extra}]'" in ALL_DOCS, extra


@pytest.mark.parametrize(
    "name",
    [
        "read_stream_forward",
        "read_stream_backward",
        "read_all_streams_forward",
        "read_all_streams_backward",
    ],
)
def test_the_count_cap_of_reads_is_documented(name: str) -> None:
    for cls in (EventStore, AsyncEventStore):
        method = getattr(cls, name)
        default = inspect.signature(method).parameters["count"].default
        doc = inspect.getdoc(method) or ""
        assert f"`count` defaults to {default}" in doc, (cls.__name__, name)
        assert "without a word" in doc, (cls.__name__, name)
    assert "`count` defaults to 1,000" in STREAMS


def test_readme_says_which_database_the_tests_use_and_how_long_they_take() -> None:
    """On the front page, right before the test command (and so before the first heading)."""
    start = README.index("Tests (they use")
    tests = README[start : README.index("pip install -e '.[dev]' && python -m pytest -q")]
    assert "## " not in tests
    assert "the database `test`" in tests
    assert "postgresql://postgres@127.0.0.1:5432/test" in tests
    assert re.search(r"\d+-\d+ minutes", tests)


@dataclass(frozen=True)
class Registered:
    n: int


@dataclass(frozen=True)
class Unregistered:
    n: int


def test_event_type_default_is_what_the_docstring_says(dsn: str, schema: str) -> None:
    doc = inspect.getdoc(EventData) or ""
    assert "registered" in doc and "module" in doc and "builtins.dict" in doc
    serializer = JsonSerializer(types={"shop.Registered": Registered})
    with EventStore.start(dsn, schema=schema, serializer=serializer) as store:
        store.append_to_stream(
            "s", 0, [EventData(Registered(1)), EventData(Unregistered(2)), EventData({"n": 3})]
        )
        types = [e.event_type for e in store.read_stream_forward("s")]
    assert types == [
        "shop.Registered",
        f"{__name__}.Unregistered",
        "builtins.dict",
    ]
