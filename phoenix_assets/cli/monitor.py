"""`./phoenix monitor`: the live paper-trading page (issue 14) on http://127.0.0.1:8050.

    python -m phoenix_assets.cli.monitor [--port 8050] [--host 127.0.0.1] [--lake URI] [--strategy S]

One self-contained HTML page (inline CSS, JS and SVG: the trading machine may have no internet) at `/` that
polls `/api/state` every 2 s and shows the strategy's PnL, PnL today, drawdown, position, risk state and reason,
the record->decision and record->order latencies (p50/p99 over the last bars) and its PnL curve (`pnl_usd`: PnL
since the strategy started, not equity). The state is `phoenix_rl.live.monitor_state.monitor_state` over the
lake that `./phoenix paper` writes to, found like every other Phoenix process finds it (`--lake`, else
$PHOENIX_LAKE_URI, else <repo>/lake: `LakeResource`).
`/?strategy=S` (or `--strategy S`) pins a strategy; by default the page follows the one with the latest bar.
Read-only: it never writes to the lake. Stops cleanly on SIGINT and SIGTERM.

It answers only requests whose Host header names the address it listens on (`127.0.0.1:8050` or
`localhost:8050`; with `--host ADDR`, `ADDR:port`): anything else gets 421 and no state, so a web page whose
name an attacker re-points at 127.0.0.1 (DNS rebinding) cannot read `/api/state`. A thread per request, and a
client that stays silent for `_Handler.timeout` seconds is dropped; clients that hang up mid-request cost no
traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.monitor_state import DEFAULT_LATENCY_BARS, monitor_state

POLL_MS = 2000

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Phoenix paper monitor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#0f1419;color:#e6e6e6}
header{display:flex;gap:1.5rem;align-items:baseline;padding:.8rem 1.2rem;background:#1a2029;flex-wrap:wrap}
header h1{font-size:1.1rem;margin:0}
.muted{color:#8b949e;font-size:.85rem}
main{padding:1rem 1.2rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:.8rem}
.card{background:#1a2029;border-radius:6px;padding:.7rem .9rem}
.card .label{color:#8b949e;font-size:.75rem;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:1.45rem;font-variant-numeric:tabular-nums;margin-top:.2rem}
.pos{color:#3fb950}.neg{color:#f85149}
#risk-state{display:inline-block;padding:.15rem .6rem;border-radius:4px;font-weight:600;color:#0f1419}
.state-ACTIVE{background:#2ea043}.state-REDUCING{background:#d29922}.state-HALTED{background:#f85149}
.state-none{background:#484f58}
#message{padding:.6rem 1.2rem;background:#3d2e00;color:#f0c000;display:none}
#message.shown{display:block}
table{border-collapse:collapse;width:100%;font-size:.85rem}
td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #30363d}
section{margin-top:1rem}
section h2{font-size:.9rem;color:#8b949e;margin:.2rem 0 .4rem}
svg{width:100%;height:260px;background:#1a2029;border-radius:6px}
a{color:#58a6ff}
</style></head>
<body>
<header>
  <h1>Phoenix paper monitor</h1>
  <span>strategy <b id="strategy" data-testid="strategy">-</b></span>
  <span>session <b id="session-id" data-testid="session-id">-</b></span>
  <span>last bar <b id="last-bar" data-testid="last-bar">-</b></span>
  <span id="strategies" data-testid="strategies" class="muted"></span>
  <span class="muted">updated <span id="updated" data-testid="updated">never</span></span>
</header>
<div id="message" data-testid="message"></div>
<main>
<div class="grid">
  <div class="card"><div class="label">PnL</div><div class="value" id="pnl" data-testid="pnl">-</div>
    <div class="muted" id="return-pct" data-testid="return-pct"></div></div>
  <div class="card"><div class="label">PnL today</div>
    <div class="value" id="pnl-today" data-testid="pnl-today">-</div></div>
  <div class="card"><div class="label">Drawdown</div><div class="value" id="drawdown" data-testid="drawdown">-</div>
    <div class="muted" id="drawdown-pct" data-testid="drawdown-pct"></div></div>
  <div class="card"><div class="label">Max drawdown</div>
    <div class="value" id="max-drawdown" data-testid="max-drawdown">-</div>
    <div class="muted" id="max-drawdown-pct" data-testid="max-drawdown-pct"></div></div>
  <div class="card"><div class="label">Position</div><div class="value" id="position" data-testid="position">-</div>
    <div class="muted">target <span id="target" data-testid="target">-</span></div></div>
  <div class="card"><div class="label">Risk state</div>
    <div class="value"><span id="risk-state" data-testid="risk-state" class="state-none">-</span></div>
    <div class="muted" id="risk-reason" data-testid="risk-reason"></div></div>
</div>
<section><h2>Latency <span class="muted" id="latency-window" data-testid="latency-window"></span></h2>
<table data-testid="latency"><tr><th></th><th>p50</th><th>p99</th><th>bars measured</th></tr>
<tr><td>record &rarr; decision</td><td id="latency-decision-p50" data-testid="latency-decision-p50">-</td>
  <td id="latency-decision-p99" data-testid="latency-decision-p99">-</td>
  <td id="latency-decision-n" data-testid="latency-decision-n">-</td></tr>
<tr><td>record &rarr; order</td><td id="latency-order-p50" data-testid="latency-order-p50">-</td>
  <td id="latency-order-p99" data-testid="latency-order-p99">-</td>
  <td id="latency-order-n" data-testid="latency-order-n">-</td></tr>
</table></section>
<section><h2>PnL since start ($) <span class="muted" id="pnl-points" data-testid="pnl-points"></span></h2>
<svg id="pnl-chart" data-testid="pnl-chart" viewBox="0 0 1000 260" preserveAspectRatio="none">
  <line id="pnl-zero" x1="0" x2="1000" y1="130" y2="130" stroke="#484f58" stroke-dasharray="4 4"/>
  <polyline id="pnl-line" data-testid="pnl-line" fill="none" stroke="#58a6ff" stroke-width="1.5"
    vector-effect="non-scaling-stroke" points=""/>
  <text id="pnl-max" x="6" y="16" fill="#8b949e" font-size="13"></text>
  <text id="pnl-min" x="6" y="252" fill="#8b949e" font-size="13"></text>
</svg></section>
<section><h2>Orders and fills</h2><div data-testid="orders-fills">
orders <b id="orders" data-testid="orders">-</b> (today <span id="orders-today" data-testid="orders-today">-</span>,
unfilled <span id="orders-unfilled" data-testid="orders-unfilled">-</span>) &middot;
fills <b id="fills" data-testid="fills">-</b> (today <span id="fills-today" data-testid="fills-today">-</span>)
&middot; last order reason <span id="order-reason" data-testid="order-reason">-</span></div></section>
<section><h2>Risk events</h2>
<table><thead><tr><th>time (UTC)</th><th>state</th><th>reason</th><th>session</th></tr></thead>
<tbody id="risk-events" data-testid="risk-events"></tbody></table></section>
</main>
<script>
"use strict";
const POLL_MS = __POLL_MS__;
const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search).get("strategy");
const stateUrl = "api/state" + (query ? "?strategy=" + encodeURIComponent(query) : "");
const money = (x) => x === null || x === undefined ? "-" :
  (x < 0 ? "-$" : "$") + Math.abs(x).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
const pct = (x) => x === null || x === undefined ? "" : x.toFixed(2) + "% of capital";
const ms = (x) => x === null || x === undefined ? "-" : x.toFixed(1) + " ms";
function put(id, text, value) {
  const el = $(id);
  el.textContent = text;
  if (value !== undefined) el.dataset.value = value === null ? "" : String(value);
}
function signed(id, x) {
  put(id, money(x), x);
  $(id).className = "value" + (x > 0 ? " pos" : x < 0 ? " neg" : "");
}
function chart(series) {
  const line = $("pnl-line"), n = series ? series.pnl_usd.length : 0;
  line.dataset.points = String(n);
  if (!n) {
    line.setAttribute("points", ""); $("pnl-max").textContent = ""; $("pnl-min").textContent = ""; return;
  }
  const t = series.ts_ms, e = series.pnl_usd;
  const lo = Math.min(0, ...e), hi = Math.max(0, ...e), span = hi - lo || 1;
  const t0 = t[0], tspan = (t[n - 1] - t0) || 1;
  const y = (v) => (250 - 240 * (v - lo) / span).toFixed(1);
  line.setAttribute("points", e.map((v, i) => ((1000 * (t[i] - t0)) / tspan).toFixed(1) + "," + y(v)).join(" "));
  $("pnl-zero").setAttribute("y1", y(0)); $("pnl-zero").setAttribute("y2", y(0));
  $("pnl-max").textContent = money(hi); $("pnl-min").textContent = money(lo);
  const when = (x) => new Date(x).toISOString().slice(0, 16).replace("T", " ");
  put("pnl-points", series.points + " points of " + series.bars + " bars, " + when(t0) + " to " +
    when(t[n - 1]) + " UTC (bar start)");
}
function render(s) {
  const msg = $("message");
  msg.textContent = s.message || "";
  msg.className = s.message ? "shown" : "";
  document.body.dataset.status = s.status;
  put("strategies", (s.strategies || []).length > 1 ? "strategies: " : "");
  if ((s.strategies || []).length > 1) s.strategies.forEach((name) => {
    const a = document.createElement("a"); a.href = "?strategy=" + encodeURIComponent(name);
    a.textContent = name; $("strategies").append(a, " ");
  });
  if (s.status !== "ok") { put("strategy", s.strategy || "-"); chart(null); return; }
  put("strategy", s.strategy); put("session-id", s.session_id); put("last-bar", s.last_bar_ts);
  signed("pnl", s.pnl_usd); put("return-pct", pct(s.return_pct), s.return_pct);
  signed("pnl-today", s.pnl_today_usd);
  put("drawdown", money(s.drawdown_usd), s.drawdown_usd); put("drawdown-pct", pct(s.drawdown_pct), s.drawdown_pct);
  put("max-drawdown", money(s.max_drawdown_usd), s.max_drawdown_usd);
  put("max-drawdown-pct", pct(s.max_drawdown_pct), s.max_drawdown_pct);
  put("position", String(s.position), s.position); put("target", String(s.target), s.target);
  put("risk-state", s.risk_state); $("risk-state").className = "state-" + s.risk_state;
  $("risk-state").dataset.state = s.risk_state; put("risk-reason", s.risk_reason);
  const lat = s.latency;
  put("latency-window", "p50/p99 over the last " + lat.bars + " bars" +
    (lat.bars < lat.window_bars ? " (window " + lat.window_bars + ")" : ""));
  for (const leg of ["decision", "order"]) {
    const v = lat[leg + "_ms"];
    put("latency-" + leg + "-p50", ms(v.p50), v.p50); put("latency-" + leg + "-p99", ms(v.p99), v.p99);
    put("latency-" + leg + "-n", String(v.n), v.n);
  }
  put("orders", String(s.orders.total)); put("orders-today", String(s.orders.today));
  put("orders-unfilled", String(s.orders.unfilled));
  put("fills", String(s.fills.total)); put("fills-today", String(s.fills.today));
  put("order-reason", s.order_reason || "as asked");
  const body = $("risk-events"); body.replaceChildren();
  for (const ev of s.risk_events) {
    const tr = document.createElement("tr");
    for (const text of [ev.ts, ev.state, ev.reason, ev.session_id]) {
      const td = document.createElement("td"); td.textContent = text; tr.append(td);
    }
    tr.children[1].className = "state-" + ev.state; body.append(tr);
  }
  chart(s.pnl_series);
}
async function poll() {
  try {
    const response = await fetch(stateUrl, {cache: "no-store"});
    const s = await response.json();
    render(s);
    put("updated", (s.served_at || "").replace("T", " ").replace(/\\.\\d+Z$/, "Z"));
  } catch (err) {
    render({status: "error", message: "monitor not reachable: " + err});
  }
  setTimeout(poll, POLL_MS);
}
poll();
</script></body></html>
""".replace("__POLL_MS__", str(POLL_MS))


# A client that went away while we read its request or wrote the reply (a closed tab, a reset connection, one
# silent past the handler's timeout): nothing to report. Any other exception in a handler still prints.
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`name` as an IP address ("127.0.0.1", "::1" or "[::1]"), else None (a host name)."""
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _split_host(host: str) -> tuple[str, str]:
    """A Host header as (name, port), lower case; no port is 80. IPv6 literals are bracketed ("[::1]:8050"); an
    unbracketed one, or anything else malformed, gives ("", "")."""
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, rest = host.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", ""
        return name + "]", rest[1:] if rest else "80"
    name, colon, port = host.partition(":")
    return ("", "") if ":" in port else (name, port if colon else "80")


class MonitorServer(ThreadingHTTPServer):
    """The page and its JSON state for one lake; `state(strategy)` is called once per poll.

    `address[0]` may be an IPv4 or IPv6 address or a name ("localhost"); only requests whose Host header names
    it answer (`host_allowed`).
    """

    daemon_threads = True
    request_queue_size = 128  # listen backlog (default 5): a burst of connections is not met by dropped SYNs

    def __init__(self, address: tuple[str, int], state: Callable[[str | None], dict[str, Any]]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.state = state
        bound = ipaddress.ip_address(self.server_address[0])
        self._any_address = bound.is_unspecified  # --host 0.0.0.0 or ::: every address of this machine
        names = {f"[{bound}]" if bound.version == 6 else str(bound)}
        if bound.is_loopback or bound.is_unspecified:
            names.add("localhost")
        if address[0] and _ip(address[0]) is None:  # --host given as a name: that name too
            names.add(address[0].lower())
        self._names = frozenset(names)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def host_allowed(self, host: str | None) -> bool:
        """Whether a Host header names this server: one of its names and its port (no port: only if that is 80).
        Listening on every address (0.0.0.0, ::), any IP literal with the port passes too; a DNS-rebinding page
        sends a name of its own, which never does."""
        name, port = _split_host(host or "")
        if not name or port != str(self.server_address[1]):
            return False
        return name in self._names or (self._any_address and _ip(name) is not None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for clients that hung up (`CLIENT_GONE`); the usual traceback on stderr for anything else."""
        if isinstance(sys.exc_info()[1], CLIENT_GONE):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: MonitorServer
    timeout = 30  # seconds a client may stay silent (reading its request, taking our reply) before it is dropped

    def do_GET(self) -> None:
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not self.server.host_allowed(hosts[0]):
            text = f"misdirected request: this is the Phoenix monitor at {self.server.url}; use that address\n"
            self._send(HTTPStatus.MISDIRECTED_REQUEST, "text/plain; charset=utf-8", text.encode())
            return
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode())
        elif url.path == "/api/state":
            strategy = parse_qs(url.query).get("strategy", [None])[0]
            status = HTTPStatus.OK
            try:
                state = self.server.state(strategy)
            except Exception as exc:  # the lake unreachable or a table half-written: say so, keep serving
                status = HTTPStatus.SERVICE_UNAVAILABLE
                state = {"status": "error", "message": f"reading the lake failed: {type(exc).__name__}: {exc}"}
            state["served_at"] = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
            body = json.dumps(state, allow_nan=False).encode()
            self._send(status, "application/json", body)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found: the page is at /, its data at /api/state\n")

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a poll every 2 s per open page would flood the terminal."""


def resolve_lake(uri: str | None) -> Lake:
    """The lake every Phoenix process uses: `uri`, else $PHOENIX_LAKE_URI, else <repo>/lake (LakeResource)."""
    from phoenix_assets.defs.resources import LakeResource  # dagster import: only when the monitor starts

    return LakeResource(uri=uri).lake()


def serve(server: MonitorServer) -> None:
    """Serve until SIGINT or SIGTERM, then close the socket and return."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = threading.Thread(target=server.serve_forever, name="monitor-http", daemon=True)
    worker.start()
    try:
        while not stop.wait(0.5):
            if not worker.is_alive():
                raise RuntimeError("the monitor's HTTP server stopped by itself")
    finally:
        server.shutdown()
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phoenix monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8050, help="port (0: any free one); default 8050")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; default 127.0.0.1")
    parser.add_argument("--lake", default=None, help="lake root; default $PHOENIX_LAKE_URI, else <repo>/lake")
    parser.add_argument("--strategy", default=None, help="strategy to show; default the one with the latest bar")
    parser.add_argument(
        "--latency-bars", type=int, default=DEFAULT_LATENCY_BARS, help="latency p50/p99 over this many last bars"
    )
    args = parser.parse_args(argv)
    if args.latency_bars < 1:
        parser.error(f"--latency-bars must be >= 1, got {args.latency_bars}")
    lake = resolve_lake(args.lake)

    def state(strategy: str | None) -> dict[str, Any]:
        return monitor_state(lake, strategy or args.strategy, latency_bars=args.latency_bars)

    try:
        server = MonitorServer((args.host, args.port), state)
    except OSError as exc:
        print(f"phoenix monitor: cannot listen on {args.host}:{args.port}: {exc}; try --port", file=sys.stderr)
        return 1
    print(f"phoenix monitor: {server.url}  (lake {lake.root}; Ctrl-C stops)", flush=True)
    serve(server)
    print("phoenix monitor: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
