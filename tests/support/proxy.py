"""A small TCP proxy for fault-injection tests: cut, freeze or black-hole a store's connections.

One selector thread forwards bytes between clients on 127.0.0.1:<free port> and a target on
127.0.0.1 (never anywhere else). Faults:

- `cut()`: every current connection is reset on both sides at once (SO_LINGER 0: RST).
- `freeze(ports=None)`: current connections (or those whose upstream local port, the server's
  `client_port`, is in `ports`) stay open but nothing is forwarded either way: a silent,
  half-open peer. New connections pass. `thaw()` resumes them.
- `blackhole(True)`: new connections are accepted and never forwarded nor answered, like a
  server that accepts and hangs. `blackhole(False)` ends it; held sockets stay until `cut()`.

Every command runs on the proxy thread and returns once done, so a test that calls `cut()`
knows the connections are gone. Used as a context manager; the thread is always joined.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg.conninfo

__all__ = ["FAST", "Proxy"]

#: Store options under which a silent connection is given up within about two seconds.
FAST = {"health_interval": 1.0, "health_timeout": 1.0, "connect_timeout": 2.0, "io_timeout": 2.0}

_HOST = "127.0.0.1"
_CHUNK = 65536
#: Bytes buffered for a slow side before the other side is no longer read (back-pressure).
_HIGH_WATER = 1 << 20


@dataclass(eq=False)
class _Pair:
    client: socket.socket
    upstream: socket.socket
    to_upstream: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    frozen: bool = False

    @property
    def upstream_port(self) -> int:
        return int(self.upstream.getsockname()[1])


class Proxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`; see the module docstring."""

    def __init__(self, target_port: int, target_host: str = _HOST) -> None:
        if target_host not in (_HOST, "localhost"):
            raise ValueError("the test proxy only connects to 127.0.0.1")
        self.target = (_HOST, target_port)
        self._listener = socket.create_server((_HOST, 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._commands: list[tuple[Callable[[], Any], threading.Event, list[Any]]] = []
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._held: list[socket.socket] = []
        self._blackhole = False
        self._running = True
        #: Connections accepted so far (forwarded or held).
        self.accepted = 0
        self._thread = threading.Thread(
            target=self._loop, name=f"test-proxy-{self.port}", daemon=True
        )

    # Public API -------------------------------------------------------------------------------
    @classmethod
    def for_dsn(cls, base_dsn: str) -> Proxy:
        """A proxy to the server of `base_dsn` (which must be on 127.0.0.1 or localhost)."""
        params = psycopg.conninfo.conninfo_to_dict(base_dsn)
        return cls(int(params.get("port") or 5432), str(params.get("host") or _HOST))

    def start(self) -> Proxy:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop forwarding, reset every connection and join the thread. Idempotent."""
        if self._thread.is_alive():
            self._call(self._shutdown)
            self._thread.join(timeout=10.0)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def dsn(self, base_dsn: str) -> str:
        """`base_dsn` with host and port replaced by this proxy's."""
        return psycopg.conninfo.make_conninfo(base_dsn, host=_HOST, port=str(self.port))

    def cut(self) -> int:
        """Reset every current connection (forwarded and held); returns how many."""
        return int(self._call(self._cut))

    def freeze(self, ports: Iterable[int] | None = None) -> int:
        """Stop forwarding on current connections (only those whose upstream local port is in
        `ports`, if given); returns how many were frozen."""
        wanted = None if ports is None else set(ports)
        return int(self._call(lambda: self._freeze(wanted, True)))

    def thaw(self) -> int:
        """Resume forwarding on every frozen connection; returns how many."""
        return int(self._call(lambda: self._freeze(None, False)))

    def blackhole(self, on: bool) -> None:
        """While on, new connections are accepted and left unanswered."""

        def set_it() -> None:
            self._blackhole = on

        self._call(set_it)

    def connections(self) -> int:
        """Forwarded connections currently open."""
        return int(self._call(lambda: len(self._pairs)))

    def upstream_ports(self) -> list[int]:
        """The upstream local ports (the server's `client_port`) of the open connections."""
        return list(self._call(lambda: [p.upstream_port for p in self._pairs]))

    # The proxy thread -------------------------------------------------------------------------
    def _call(self, command: Callable[[], Any], timeout: float = 10.0) -> Any:
        if not self._thread.is_alive():
            raise RuntimeError("the proxy is not running")
        done = threading.Event()
        result: list[Any] = []
        with self._lock:
            self._commands.append((command, done, result))
        self._wake_w.send(b"x")
        if not done.wait(timeout):
            raise RuntimeError("the proxy thread did not answer")
        if result and isinstance(result[0], BaseException):
            raise result[0]
        return result[0] if result else None

    def _loop(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while self._running:
                self._update_interest()
                for key, mask in self._selector.select(timeout=1.0):
                    self._dispatch(key.data, key.fileobj, mask)
        finally:
            self._reset_all()

    def _dispatch(self, data: Any, sock: Any, mask: int) -> None:
        if data == "accept":
            self._accept()
        elif data == "wake":
            self._run_commands()
        elif data == "held":
            self._drain_held(sock)
        else:
            pair, side = data
            if pair in self._pairs:
                self._pump(pair, side, mask)

    def _run_commands(self) -> None:
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass
        with self._lock:
            commands, self._commands = self._commands, []
        for command, done, result in commands:
            try:
                result.append(command())
            except BaseException as exc:  # handed back to the caller
                result.append(exc)
            done.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return
            self.accepted += 1
            client.setblocking(False)
            if self._blackhole:
                self._held.append(client)
                self._selector.register(client, selectors.EVENT_READ, "held")
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                _reset(client)
                continue
            upstream.setblocking(False)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            self._pairs.append(pair)
            self._selector.register(client, selectors.EVENT_READ, (pair, "client"))
            self._selector.register(upstream, selectors.EVENT_READ, (pair, "upstream"))

    def _drain_held(self, sock: socket.socket) -> None:
        """Read and discard what a held client sends; forget it once it hangs up."""
        try:
            if sock.recv(_CHUNK):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):  # cut() closed and forgot it meanwhile
            pass
        if sock in self._held:
            self._held.remove(sock)
        sock.close()

    def _pump(self, pair: _Pair, side: str, mask: int) -> None:
        sock = pair.client if side == "client" else pair.upstream
        outgoing = pair.to_client if side == "client" else pair.to_upstream
        incoming = pair.to_upstream if side == "client" else pair.to_client
        try:
            if mask & selectors.EVENT_WRITE and outgoing:
                sent = sock.send(outgoing)
                del outgoing[:sent]
            if mask & selectors.EVENT_READ:
                data = sock.recv(_CHUNK)
                if not data:
                    # An orderly close: pass on what this side sent last (say, the server's
                    # FATAL message), then close both sides.
                    other = pair.upstream if side == "client" else pair.client
                    try:
                        other.settimeout(1.0)
                        other.sendall(bytes(incoming))
                    except OSError:
                        pass
                    self._close_pair(pair, reset=False)
                    return
                incoming.extend(data)
        except BlockingIOError:
            pass
        except OSError:
            self._close_pair(pair, reset=True)

    def _update_interest(self) -> None:
        """Read a side unless frozen or its peer's buffer is full; write it while it has data.
        A socket with no interest is unregistered (a selector cannot wait for nothing)."""
        for pair in self._pairs:
            for side, sock, outgoing, other_out in (
                ("client", pair.client, pair.to_client, pair.to_upstream),
                ("upstream", pair.upstream, pair.to_upstream, pair.to_client),
            ):
                events = 0
                if not pair.frozen:
                    if len(other_out) < _HIGH_WATER:
                        events |= selectors.EVENT_READ
                    if outgoing:
                        events |= selectors.EVENT_WRITE
                try:
                    key: selectors.SelectorKey | None = self._selector.get_key(sock)
                except KeyError:
                    key = None
                if events == 0:
                    if key is not None:
                        self._selector.unregister(sock)
                elif key is None:
                    self._selector.register(sock, events, (pair, side))
                elif key.events != events:
                    self._selector.modify(sock, events, (pair, side))

    # Commands (run on the proxy thread) -------------------------------------------------------
    def _cut(self) -> int:
        count = len(self._pairs) + len(self._held)
        self._reset_all()
        return count

    def _freeze(self, ports: set[int] | None, frozen: bool) -> int:
        count = 0
        for pair in self._pairs:
            if pair.frozen != frozen and (ports is None or pair.upstream_port in ports):
                pair.frozen = frozen
                count += 1
        return count

    def _shutdown(self) -> None:
        self._running = False

    def _close_pair(self, pair: _Pair, reset: bool) -> None:
        self._pairs.remove(pair)
        for sock in (pair.client, pair.upstream):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            if reset:
                _reset(sock)
            else:
                sock.close()

    def _reset_all(self) -> None:
        for pair in list(self._pairs):
            self._close_pair(pair, reset=True)
        for sock in self._held:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            _reset(sock)
        self._held.clear()


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST at once, not an orderly FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
