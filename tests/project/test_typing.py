"""The public API is typed for users: py.typed ships, `mypy --strict` passes on a typed user
program (tests/typed/bank.py) against the *installed* package, misspelt options are type
errors (and ConfigErrors at run time), and every public method has a docstring."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventstore_actors
from eventstore_actors import ConfigError, Events, EventStore, RecordedEvent, Subscriber

ROOT = Path(__file__).resolve().parents[2]
BANK = Path(__file__).resolve().parents[1] / "typed" / "bank.py"
SUBSCRIBING = BANK.parent / "subscribing.py"

pytest.importorskip("mypy")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This checkout built as a wheel and installed into a folder of its own (no deps): mypy
    then sees it as an installed package, which it analyses only when py.typed is there."""
    tmp = tmp_path_factory.mktemp("typing")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {built.stderr[-500:]}")
    [wheel] = tmp.glob("eventstore_actors-*.whl")
    target = tmp / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield target


def mypy(installed: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    # mypy asks the interpreter for its search path, PYTHONPATH included: the installed copy
    # comes first, as site-packages would in a user's environment.
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            sys.executable,
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=files[0].parent,
        env=env,
        check=False,
    )


def test_mypy_strict_passes_on_a_typed_user_program(installed: Path) -> None:
    result = mypy(installed, BANK)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "py.typed" not in result.stdout


def test_a_misspelt_option_is_a_type_error(installed: Path, tmp_path: Path) -> None:
    program = tmp_path / "typo.py"
    program.write_text(
        "from eventstore_actors import EventStore, Events\n"
        "store = EventStore.start('postgresql://localhost/x', call_timout=5)\n"
        "store.subscribe_to_all_streams('name', object())\n"
        "def f(message: Events) -> None:\n"
        "    message.events[0].no_such_field\n"
    )
    result = mypy(installed, program)
    assert result.returncode == 1, result.stdout
    assert 'Unexpected keyword argument "call_timout"' in result.stdout
    assert 'did you mean "call_timeout"' in result.stdout
    assert '"object" has no attribute "tell"' in result.stdout or "Subscriber" in result.stdout
    assert '"RecordedEvent" has no attribute "no_such_field"' in result.stdout


def test_subscribe_options_and_batches_are_typed_in_both_apis(installed: Path) -> None:
    """Every subscribe option type-checks in the sync and asyncio APIs, and a batch is
    `list[RecordedEvent]` (also `Events` alone, and docs/getting-started.md's isinstance
    narrowing of a SubscriptionMessage) unless a mapper says otherwise; async streams are
    AsyncIterators."""
    result = mypy(installed, SUBSCRIBING)
    assert result.returncode == 0, result.stdout + result.stderr
    revealed = {}
    lines = SUBSCRIBING.read_text().splitlines()
    for line in result.stdout.splitlines():
        if "Revealed type is" in line:
            number = int(line.split(":")[1])
            mark = lines[number - 1].rpartition("# ")[2]
            revealed[mark] = line.partition("Revealed type is ")[2].strip('"')
    event = "eventstore_actors.events.RecordedEvent"
    assert revealed == {
        "R1": event,
        "R2": f"list[{event}]",
        "R3": f"list[{event}]",
        "R4": "list[int]",
        "R5": f"list[{event}]",
        "R6": f"typing.AsyncIterator[{event}]",
    }


def test_a_misspelt_subscribe_option_is_a_type_error_sync_and_async(
    installed: Path, tmp_path: Path
) -> None:
    program = tmp_path / "typo_options.py"
    program.write_text(
        "from eventstore_actors import EventStore, Subscriber\n"
        "from eventstore_actors.aio import AsyncEventStore\n"
        "def f(store: EventStore, sub: Subscriber) -> None:\n"
        "    store.subscribe_to_all_streams('n', sub, max_retrys=3)\n"
        "    store.subscribe_to_stream('s', 'n', sub, checkpoint_afer=1.0)\n"
        "    store.subscribe_to_stream('s', 'n', sub, stream_prefix='a')\n"
        "async def g(store: AsyncEventStore) -> None:\n"
        "    await store.subscribe_to_all_streams('n', buffer_sise=3)\n"
        "    await store.subscribe_to_stream('s', 'n', mapper=str, standbye=True)\n"
        "    await store.subscribe_to_all_streams('n', max_batch='many')\n"
        "    await store.subscribe('$all', selectr=None)\n"
    )
    result = mypy(installed, program)
    assert result.returncode == 1, result.stdout
    wrong = {int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line}
    assert wrong == {4, 5, 6, 8, 9, 10, 11}, result.stdout
    assert 'Unexpected keyword argument "max_retrys"' in result.stdout


def test_a_misspelt_subscribe_option_is_a_type_error_at_run_time(dsn: str, schema: str) -> None:
    with EventStore.start(dsn, schema=schema) as store:
        with pytest.raises(TypeError, match=r"'max_retrys' \(did you mean 'max_retries'\?\)"):
            store.subscribe_to_all_streams("n", object(), max_retrys=3)  # type: ignore[call-arg, arg-type]
        with pytest.raises(TypeError, match=r"subscribe_to_stream.*'standbye'"):
            store.subscribe_to_stream("s", "n", object(), standbye=True)  # type: ignore[call-arg, arg-type]
        assert store.subscriptions() == []


def test_every_subscribe_option_has_a_docstring_line_with_its_default() -> None:
    """Each option of the TypedDicts (and start_from, mapper, max_size) has a line saying its
    default and meaning, in the TypedDict's or the method's docstring, and help() on each
    subscribe method (sync and async) shows every one of them."""
    from eventstore_actors.aio import AsyncEventStore
    from eventstore_actors.subscriptions import options

    keys = options.AllStreamsSubscribeOptions.__optional_keys__
    assert set(keys) == set(options.DEFAULTS)
    assert options.SubscribeOptions.__optional_keys__ < keys
    common = options.SubscribeOptions.__optional_keys__
    for cls, own in (
        (options.SubscribeOptions, common),
        (options.AllStreamsSubscribeOptions, keys - common),
    ):
        doc = inspect.getdoc(cls) or ""
        for key in own:
            line = f"\n{key} (default {options.DEFAULTS[key]!r}): "
            assert line in doc, f"{cls.__name__}.{key} has no docstring line {line!r}"
    methods = [
        EventStore.subscribe_to_stream,
        EventStore.subscribe_to_all_streams,
        AsyncEventStore.subscribe_to_stream,
        AsyncEventStore.subscribe_to_all_streams,
    ]
    for method in methods:
        doc = inspect.getdoc(method) or ""
        for name in ("start_from", "mapper", "max_size"):
            assert f"\n{name} (default " in doc, (method.__qualname__, name)
        wanted = (
            keys
            if method.__name__ == "subscribe_to_all_streams"
            else options.SubscribeOptions.__optional_keys__
        )
        for key in wanted:
            assert f"\n{key} (default " in doc, (method.__qualname__, key)
    assert len(keys) + 3 == 18  # the 17 options of issue 17, and stall_after (issue 21)


def test_async_streams_show_async_iterator_in_help() -> None:
    import pydoc

    from eventstore_actors.aio import AsyncEventStore

    for name in ("stream_forward", "stream_backward", "stream_all_forward", "stream_all_backward"):
        method = getattr(AsyncEventStore, name)
        returned = inspect.signature(method).return_annotation
        assert "AsyncIterator" in str(returned), (name, returned)
        text = pydoc.render_doc(method, renderer=pydoc.plaintext)
        assert "AsyncIterator" in text and "-> Iterator" not in text, text


def test_the_typed_program_runs(dsn: str, schema: str) -> None:
    sys.path.insert(0, str(BANK.parent))
    try:
        import bank
    finally:
        sys.path.remove(str(BANK.parent))
    from decimal import Decimal

    assert bank.main(dsn, schema) == Decimal("100.00")


def test_a_misspelt_option_is_a_config_error_at_run_time(dsn: str, schema: str) -> None:
    with pytest.raises(ConfigError, match=r"call_timout \(did you mean call_timeout\?\)"):
        EventStore.start(dsn, schema=schema, call_timout=5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "option",
    [
        {"call_timeout": "abc"},
        {"restart_window": "abc"},
        {"tick_interval": 0},
        {"application_name": 5},
        {"pool_overflow": True},
        {"max_batch_events": "10"},
        {"io_timeout": None},
        {"port": 1.5},
    ],
)
def test_a_bad_option_value_is_a_config_error(
    dsn: str, schema: str, option: dict[str, object]
) -> None:
    with pytest.raises(ConfigError):
        EventStore.start(dsn, schema=schema, **option)  # type: ignore[arg-type]


def test_start_takes_every_settings_field_with_the_same_default() -> None:
    """A field added to Settings must be an option of start too (with the same default)."""
    import dataclasses

    from eventstore_actors.config import SEED_KEYS, Settings

    params = inspect.signature(EventStore.start).parameters
    for field in dataclasses.fields(Settings):
        assert field.name in params, f"EventStore.start has no option {field.name}"
        if field.name in ("dsn", "serializer"):
            continue
        assert params[field.name].default == field.default, field.name
        assert params[field.name].kind is inspect.Parameter.KEYWORD_ONLY, field.name
    for key in SEED_KEYS:
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_subscriber_protocol() -> None:
    class Plain:
        def tell(self, message: object) -> None:
            pass

    assert isinstance(Plain(), Subscriber)
    assert not isinstance(object(), Subscriber)
    assert "Subscriber" in eventstore_actors.__all__
    assert Events.__dataclass_fields__["events"].type == "list[E]"
    assert RecordedEvent.__name__ in str(Events.__parameters__[0].__default__)


def _public_members(obj: object) -> Iterator[tuple[str, object]]:
    for name, member in vars(obj).items():
        if name.startswith("_") and name not in ("__enter__", "__exit__"):
            continue
        if isinstance(member, (classmethod, staticmethod)):
            member = member.__func__
        if isinstance(member, property):
            member = member.fget
        if inspect.isfunction(member):
            yield name, member


def test_every_public_method_has_a_docstring() -> None:
    missing = []
    for name in eventstore_actors.__all__:
        obj = getattr(eventstore_actors, name)
        if inspect.ismodule(obj):
            for fname, fn in vars(obj).items():
                if (
                    inspect.isfunction(fn)
                    and not fname.startswith("_")
                    and fn.__module__ == obj.__name__
                ) and not (fn.__doc__ or "").strip():
                    missing.append(f"{name}.{fname}")
            continue
        if not inspect.isclass(obj):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        for mname, member in _public_members(obj):
            if not (getattr(member, "__doc__", None) or "").strip():
                missing.append(f"{name}.{mname}")
    assert missing == []
