"""The `./phoenix monitor` HTTP server itself (issue 29): it answers only requests whose Host names the address it
is bound to (a DNS-rebinding page at evil.example cannot read `/api/state`), clients that vanish mid-request cost
no traceback, and a client that connects and says nothing is dropped instead of holding a thread forever.
In-process on an ephemeral port, with a stub state: the page and its numbers are tests/rl/live/test_monitor_state.py.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from phoenix_assets.cli import monitor
from phoenix_assets.cli.monitor import MonitorServer

SECRET = "position-and-pnl-of-the-paper-account"  # in every state; must never reach a refused client


def _state(strategy: str | None) -> dict[str, Any]:
    return {"status": "ok", "strategy": strategy, "message": SECRET}


@contextlib.contextmanager
def _serving(
    state: Callable[[str | None], dict[str, Any]] = _state, host: str = "127.0.0.1"
) -> Iterator[MonitorServer]:
    server = MonitorServer((host, 0), state)
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    worker.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        worker.join(timeout=5)


def _get(server: MonitorServer, path: str, host: str | None) -> tuple[int, str]:
    """GET `path` with exactly this Host header (None: none at all)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s"
        time.sleep(0.02)


# --- Host: only names of the bound address ----------------------------------------------------------------


def test_requests_naming_another_host_get_421_and_no_state() -> None:
    with _serving() as server:
        port = server.server_address[1]
        for path in ("/api/state", "/api/state?strategy=tuned_rule", "/", "/index.html", "/nope"):
            for host in (
                f"evil.example:{port}",  # DNS rebinding: evil.example resolved to 127.0.0.1 after the page loaded
                "evil.example",
                f"127.0.0.1.evil.example:{port}",
                f"localhost.evil.example:{port}",
                f"127.0.0.1:{port + 1}",  # same machine, another port: another origin
                "127.0.0.1",  # no port means 80
                "localhost",
                f"[::1]:{port}",  # bound to 127.0.0.1, not ::1
                "",
                None,  # HTTP/1.1 without Host
            ):
                status, body = _get(server, path, host)
                assert status == 421, (path, host, status, body)
                assert SECRET not in body and "Phoenix paper monitor" not in body, (path, host)
                assert body.startswith("misdirected request"), body


def test_requests_naming_the_bound_address_are_served() -> None:
    with _serving() as server:
        port = server.server_address[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            status, body = _get(server, "/api/state?strategy=tuned_rule", host)
            assert status == 200 and SECRET in body and '"strategy": "tuned_rule"' in body, (host, body)
            status, body = _get(server, "/", host)
            assert status == 200 and "Phoenix paper monitor" in body, host
            assert _get(server, "/nope", host)[0] == 404


def test_a_server_bound_to_another_address_answers_to_that_address() -> None:
    """`--host` names where it listens; bound to ::1 the Host is [::1]:port (or localhost:port)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server_cm = _serving(host="::1")
        server = server_cm.__enter__()
    except OSError as exc:  # IPv6 loopback switched off on this machine
        pytest.skip(f"cannot bind ::1: {exc}")
    try:
        port = server.server_address[1]
        assert server.url == f"http://[::1]:{port}"
        for host in (f"[::1]:{port}", f"localhost:{port}"):
            assert _get(server, "/api/state", host)[0] == 200, host
        for host in (f"127.0.0.1:{port}", f"evil.example:{port}", f"::1:{port}"):
            assert _get(server, "/api/state", host)[0] == 421, host
    finally:
        server_cm.__exit__(None, None, None)


def test_listening_on_every_address_takes_any_ip_literal_but_no_other_name() -> None:
    """`--host 0.0.0.0`: reached by any of the machine's addresses; still no name but localhost."""
    server = MonitorServer(("0.0.0.0", 0), _state)  # bound only: host_allowed needs no request
    try:
        port = server.server_address[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"192.168.1.5:{port}", f"[::1]:{port}"):
            assert server.host_allowed(host), host
        for host in (f"evil.example:{port}", f"192.168.1.5:{port + 1}", "192.168.1.5", f"::1:{port}", None):
            assert not server.host_allowed(host), host
    finally:
        server.server_close()


# --- clients that go away ------------------------------------------------------------------------------------


def _rst_close(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN, what a killed browser tab does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_300_clients_vanishing_mid_request_leave_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """Half the clients send a request and reset the connection while the server computes the state (so every
    reply is written to a dead socket: BrokenPipeError / ConnectionResetError), the other half reset it before
    sending anything; stderr stays clean and the server keeps answering."""
    n = 300
    arrived = threading.Semaphore(0)
    release = threading.Event()
    hold = threading.local()

    def slow_state(strategy: str | None) -> dict[str, Any]:
        if strategy == "held":
            arrived.release()
            hold.ok = release.wait(timeout=30)
        return _state(strategy)

    with _serving(slow_state) as server:
        address = server.server_address[:2]
        request = f"GET /api/state?strategy=held HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\n\r\n".encode()
        held = []
        started = time.monotonic()
        for _ in range(n // 2):
            sock = socket.create_connection(address, timeout=10)
            sock.sendall(request)
            held.append(sock)
        for _ in range(n // 2):
            _rst_close(socket.create_connection(address, timeout=10))
        connecting_s = time.monotonic() - started  # a listen backlog of 5 drops SYNs: 1 s, 3 s... retries, ~45 s
        assert connecting_s < 15, f"{n} connections took {connecting_s:.1f} s"
        for _ in range(n // 2):  # every held request is inside state(): its reply comes after the reset
            assert arrived.acquire(timeout=20), "the server did not read every request"
        for sock in held:
            _rst_close(sock)
        release.set()
        _wait_for(lambda: not _handler_threads(), "end of the handler threads", timeout_s=20)
        port = address[1]
        status, body = _get(server, "/api/state", f"127.0.0.1:{port}")
        assert status == 200 and SECRET in body
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "ConnectionResetError" not in err, err[-3000:]
    assert "Exception occurred during processing" not in err, err[-3000:]


def test_other_handler_errors_still_print_their_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """Only client disconnects are quiet: a bug in the handler still shows up on stderr."""
    with _serving() as server:
        port = server.server_address[1]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(monitor, "urlsplit", lambda _: 1 / 0)
            with contextlib.suppress(http.client.HTTPException, ConnectionError):
                _get(server, "/", f"127.0.0.1:{port}")
            _wait_for(lambda: not _handler_threads(), "end of the handler thread")
    err = capfd.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err, err[-3000:]


def test_a_client_that_connects_and_says_nothing_is_dropped_and_blocks_no_one(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A half-open connection does not stall the others (a thread per request) and is closed after the handler's
    socket timeout instead of holding its thread for ever."""
    assert monitor._Handler.timeout is not None and 0 < monitor._Handler.timeout <= 60  # the default is None: never
    monkeypatch.setattr(monitor._Handler, "timeout", 0.5)  # the same mechanism, quicker
    with _serving() as server:
        address = server.server_address[:2]
        idle = [socket.create_connection(address, timeout=10) for _ in range(20)]
        try:
            status, _ = _get(server, "/api/state", f"localhost:{address[1]}")
            assert status == 200  # served while 20 connections sit silent
            started = time.monotonic()
            for sock in idle:
                assert sock.recv(1) == b"", "the server wrote to a client that never asked"  # EOF: it hung up
            assert time.monotonic() - started < 5
        finally:
            for sock in idle:
                sock.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
