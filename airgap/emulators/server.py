"""Shared HTTP plumbing of the emulators: request and response records, latency, faults, TLS, stats.

An emulator is an `App`: one `handle(Request) -> Response` method plus `stats()`. `EmulatorServer`
serves an app over real HTTP on 127.0.0.1, so the clients' `requests` stack is exercised as well.
Vendor behaviour lives in the apps; this module knows nothing about Cisco or BIG-IQ.

An app that stands for many hosts (a fleet of emulated devices) is served on several listening
ports at once, one per host: `EmulatorServer(app, listeners=N)`. Every request says which
listener it arrived on (`Request.listener`), and one thread accepts on all of them, so a
thousand devices cost a thousand sockets, not a thousand threads.

Paths under `/_emulator/` are the emulator's own control surface. They bypass latency and faults:

- `GET /_emulator/stats`: `app.stats()` plus `"faults"`, the count of injected faults by kind.
- `POST /_emulator/faults` `{"path_contains": "...", "status": 429 | "reset"}`: arm a one-shot
  fault, like `Faults.fail_next`, for tests that run the emulator in another process. Optional
  `"listener": N` aims it at one emulated host, `"body_contains": "..."` at one kind of request.
- Any other `/_emulator/...` path goes to the app's `control(route, request)` method if it has
  one (a fleet emulator arms faults of its own there); otherwise it is a 404.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import logging
import random
import selectors
import socket
import ssl
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Protocol, TypeAlias
from urllib.parse import parse_qs, urlsplit

from airgap.errors import ConfigError

_logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator/"
MAX_BODY_BYTES = 64 * 1024 * 1024  # bytes; larger bodies are refused with 400
IDLE_TIMEOUT = 30.0  # seconds an idle keep-alive connection is kept open
STOP_JOIN_TIMEOUT = 5.0  # seconds stop() waits for handler threads to end


class BadRequest(Exception):
    """Raised by an app (or `Request.json`) to answer 400 with `{"error": message}`."""


@dataclass(frozen=True)
class Request:
    """One HTTP request as an app sees it."""

    method: str  # "GET", "POST", ...
    path: str  # raw path as received, without the query string (may begin with "//")
    query: dict[str, list[str]]  # urllib.parse.parse_qs(keep_blank_values=True)
    headers: dict[str, str]  # keys lower-cased; repeated headers joined with ", "
    body: bytes
    listener: int = 0  # which of the server's listening ports it came in on (0 for the first)

    def json(self) -> Any:
        """Parse the body as JSON.

        Raises:
            BadRequest: the body is empty or not valid JSON.

        Returns:
            The decoded JSON value.
        """
        if not self.body:
            raise BadRequest("request body is empty; expected JSON")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from exc


@dataclass
class Response:
    """One HTTP response; `Content-Length` is always set by the server."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls,
        status: int,
        obj: Any,
        *,
        compact: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Build a JSON response.

        Args:
            status: HTTP status code.
            obj: the JSON value; Python ints of any size are written exactly.
            compact: no whitespace after `:` and `,`, as the vendors send it.
            headers: extra headers; `Content-Type: application/json` is always set.

        Returns:
            The response.
        """
        text = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj, indent=2)
        merged = {"Content-Type": "application/json"}
        merged.update(headers or {})
        return cls(status, text.encode("utf-8"), merged)


def basic_credentials(header: str, *, validate: bool = True) -> tuple[str | None, str | None]:
    """Read the user and password of an HTTP Basic `Authorization` header (RFC 7617).

    Args:
        header: the `Authorization` header value, e.g. `Basic YWRtaW46czNjcmV0`; may be empty.
        validate: refuse base64 with characters outside its alphabet; when False they are
            skipped, as `base64.b64decode` does by default.

    Returns:
        `(user, password)`, or `(None, None)` if the header is not Basic, its base64 or UTF-8 is
        bad, or the decoded text has no `:`.
    """
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=validate).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


class App(Protocol):
    """What an emulator implements; `EmulatorServer` does the HTTP around it."""

    def handle(self, request: Request) -> Response:
        """Answer one vendor request. May raise `BadRequest`."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for `/_emulator/stats`: `{"calls": {...}, "mutations": {...}}`."""
        ...


class ControlApp(App, Protocol):
    """An app that also serves control paths of its own under `/_emulator/`."""

    def control(self, route: str, request: Request) -> Response | None:
        """Answer `/_emulator/<route>`, or None for a route the app does not know."""
        ...


_FAULT_KINDS = ("429", "500", "reset", "slow")
_SPEC_KEYS = {
    "429": "rate_429",
    "500": "rate_500",
    "reset": "rate_reset",
    "slow": "rate_slow",
    "slow_seconds": "slow_seconds",
    "seed": "seed",
}


@dataclass(frozen=True)
class _Armed:
    """One fault armed by `Faults.fail_next`, waiting for a request it matches."""

    path_contains: str
    status: int | str
    listener: int | None = None
    body_contains: bytes | None = None

    def targeted(self) -> bool:
        return self.listener is not None or self.body_contains is not None

    def matches(self, path: str, listener: int, body: bytes) -> bool:
        return (
            self.path_contains in path
            and (self.listener is None or self.listener == listener)
            and (self.body_contains is None or self.body_contains in body)
        )


# What Faults.draw decides for one request: an HTTP status to answer without calling the app,
# "reset" (call the app, then drop the connection), "slow" (sleep, then handle) or None.
FaultDecision: TypeAlias = int | str | None


@dataclass
class Faults:
    """Random and one-shot fault injection, applied per vendor request. Thread-safe.

    Rates are probabilities in [0, 1] whose sum is at most 1; one uniform draw per request picks
    at most one fault. `injected` counts the faults actually applied, by kind.
    """

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_reset: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 2.0  # seconds a "slow" request sleeps before it is handled
    seed: int | None = None
    injected: dict[str, int] = field(init=False)
    _pending: list[_Armed] = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rates = {
            "429": self.rate_429,
            "500": self.rate_500,
            "reset": self.rate_reset,
            "slow": self.rate_slow,
        }
        for kind, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(
                    f"fault rate {kind}={rate} is not between 0 and 1",
                    hint="Rates are probabilities, e.g. --faults 429=0.1,reset=0.02.",
                )
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ConfigError(
                "fault rates add up to more than 1",
                hint="At most one fault is drawn per request; lower the rates.",
            )
        if self.slow_seconds < 0:
            raise ConfigError(f"slow_seconds={self.slow_seconds} is negative")
        self.injected = dict.fromkeys(_FAULT_KINDS, 0)
        self._pending = []
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Parse a `--faults` spec such as `429=0.1,500=0.05,reset=0.02,slow=0.1`.

        `slow_seconds=S` and `seed=N` are accepted as well. An empty spec means no faults.

        Args:
            spec: comma-separated `kind=value` pairs.

        Raises:
            ConfigError: unknown kind, repeated kind, a value that is not a number, a rate
                outside [0, 1] or rates adding up to more than 1.

        Returns:
            The parsed faults.
        """
        hint = "Use e.g. --faults 429=0.1,500=0.05,reset=0.02,slow=0.1"
        values: dict[str, Any] = {}
        for raw in spec.split(","):
            part = raw.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in _SPEC_KEYS:
                raise ConfigError(f"bad fault {part!r} in {spec!r}", hint=hint)
            name = _SPEC_KEYS[key]
            if name in values:
                raise ConfigError(f"fault {key!r} given twice in {spec!r}", hint=hint)
            try:
                values[name] = int(value) if name == "seed" else float(value)
            except ValueError:
                raise ConfigError(
                    f"fault {key!r} has a value that is not a number: {value!r}", hint=hint
                ) from None
        return cls(**values)

    def fail_next(
        self,
        path_contains: str,
        status: int | str,
        *,
        listener: int | None = None,
        body_contains: str | None = None,
    ) -> None:
        """Arm a one-shot fault: the next vendor request whose path contains the string fails.

        Args:
            path_contains: a substring of the raw request path, e.g. "authrequest".
            status: an HTTP status (400-599) to answer without calling the app, or "reset"
                to call the app and then drop the connection without an answer.
            listener: only a request that arrived on this listener (one emulated host) fires it.
            body_contains: only a request whose body contains this text fires it, e.g. the
                one command of several that share a path.

        Raises:
            ConfigError: the status is neither an HTTP error status nor "reset", or the
                listener is not a whole number >= 0.
        """
        if isinstance(status, bool) or not (
            (isinstance(status, int) and 400 <= status <= 599) or status == "reset"
        ):
            raise ConfigError(f"fail_next status must be 400-599 or 'reset', not {status!r}")
        if listener is not None and (
            isinstance(listener, bool) or not isinstance(listener, int) or listener < 0
        ):
            raise ConfigError(f"fail_next listener must be a whole number >= 0, not {listener!r}")
        body = body_contains.encode("utf-8") if body_contains is not None else None
        with self._lock:
            self._pending.append(_Armed(path_contains, status, listener, body))

    def take_targeted(self, path: str, listener: int, body: bytes) -> FaultDecision:
        """Fire a one-shot fault armed with `listener` or `body_contains`, if one matches.

        The server asks this before `draw`, which keeps the signature subclasses override.

        Args:
            path: the raw request path.
            listener: the listener the request arrived on.
            body: the request body.

        Returns:
            The armed status or "reset", or None when no targeted fault matches.
        """
        with self._lock:
            for index, armed in enumerate(self._pending):
                if armed.targeted() and armed.matches(path, listener, body):
                    del self._pending[index]
                    self._count(str(armed.status))
                    return armed.status
            return None

    def draw(self, path: str) -> FaultDecision:
        """Decide the fault for one vendor request and count it in `injected`.

        One-shot faults armed without a listener or body come first, then the random draw.

        Args:
            path: the raw request path.

        Returns:
            An HTTP status to answer without calling the app, "reset", "slow" or None.
        """
        with self._lock:
            for index, armed in enumerate(self._pending):
                if not armed.targeted() and armed.path_contains in path:
                    del self._pending[index]
                    self._count(str(armed.status))
                    return armed.status
            draw = self._rng.random()
            for kind, rate in (
                ("429", self.rate_429),
                ("500", self.rate_500),
                ("reset", self.rate_reset),
                ("slow", self.rate_slow),
            ):
                if draw < rate:
                    self._count(kind)
                    return int(kind) if kind.isdigit() else kind
                draw -= rate
            return None

    def snapshot(self) -> dict[str, int]:
        """A copy of `injected`, taken under the lock."""
        with self._lock:
            return dict(self.injected)

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1


class _BodyError(Exception):
    """The request body could not be read; the connection cannot be reused."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The stdlib default backlog of 5 makes the kernel reset connections when a client opens
    # dozens at once (concurrency tests and benchmarks do).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer, listener: int) -> None:
        self.emulator = emulator
        self.listener = listener
        self.ssl_context: ssl.SSLContext | None = None
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS look-up that can stall
        # for seconds on hosts without working DNS; we only ever bind an IP address.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # The handshake then runs on the first read in the handler thread, so one client
            # that stalls during the handshake cannot block accept() for everyone else.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def accept_one(self) -> None:
        """Accept one waiting connection and hand it to a new handler thread.

        What `serve_forever` does for a socket that is ready, written with the public methods
        so that one thread can accept for several servers.
        """
        try:
            request, client_address = self.get_request()
        except OSError:
            return  # the client went away between select() and accept()
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-request, failed TLS handshakes and the like are normal for a
        # test server; the default prints a traceback to stderr for each.
        _logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "airgap-emulator/1"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per response on Linux).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self._emulator().track(self.connection, threading.current_thread())

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._emulator().untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib answers malformed requests and unknown methods with an HTML page; the
        # vendors' clients expect JSON, so keep every answer JSON.
        short = self.responses.get(code, ("Error", ""))[0]
        body = json.dumps({"error": message or short}, separators=(",", ":")).encode("utf-8")
        self.send_response(code, short)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _emulator(self) -> EmulatorServer:
        server = self.server
        assert isinstance(server, _HTTPServer)
        return server.emulator

    def _listener(self) -> int:
        server = self.server
        assert isinstance(server, _HTTPServer)
        return server.listener

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            self._send(Response.json(400, {"error": str(exc)}, headers={"Connection": "close"}))
            return
        path, _, query = self._raw_target().partition("?")
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            name = key.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = Request(
            method=self.command,
            path=path,
            query=parse_qs(query, keep_blank_values=True),
            headers=headers,
            body=body,
            listener=self._listener(),
        )
        response = self._emulator().respond(request)
        if response is None:
            self._drop_connection()
        else:
            self._send(response)

    def _raw_target(self) -> str:
        # BaseHTTPRequestHandler rewrites a leading "//" to "/" (gh-87389), but Cisco's own
        # samples call "//services/api/...", so take the target from the raw request line.
        words = self.requestline.split()
        target = words[1] if len(words) >= 2 else self.path
        if target.startswith(("http://", "https://")):
            parts = urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        return target

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise _BodyError(f"bad Content-Length {raw_length!r}") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise _BodyError(f"Content-Length {length} is out of range")
        data = self.rfile.read(length)
        if len(data) != length:
            raise _BodyError("request body ended before Content-Length bytes")
        return data

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError("bad chunk size in chunked body") from None
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError("chunked body is too large")
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _BodyError("chunked body ended early")
            chunks.append(chunk)
            self.rfile.readline(1024)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _drop_connection(self) -> None:
        # SO_LINGER with a zero timeout makes the final close send RST instead of FIN: the client
        # gets a reset with no response bytes after the app has already changed its state.
        # The fd really closes when finish() closes the socket's file objects.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


class EmulatorServer:
    """Serve an `App` over HTTP(S) on 127.0.0.1 with latency, faults and a stats endpoint.

    The sockets are bound in the constructor, so `url` (and `urls`) are known before
    `start()`. Use it as a context manager in tests, or call `serve_forever()` from the CLI.
    """

    def __init__(
        self,
        app: App,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0,
        faults: Faults | None = None,
        tls: bool = False,
        cert_out: Path | None = None,
        listeners: int = 1,
    ) -> None:
        """Bind the server; nothing is served until `start()` or `serve_forever()`.

        Args:
            app: the vendor emulator.
            host: address to bind; keep the default so nothing outside this host can connect.
            port: TCP port of the first listener; 0 picks a free one. Further listeners always
                take free ports.
            latency_ms: milliseconds slept before each vendor request (not `/_emulator/*`).
            faults: fault injection; default none (still usable through `faults.fail_next`).
            tls: serve HTTPS with a fresh self-signed certificate for 127.0.0.1 and localhost.
            cert_out: where to write that certificate's PEM, for clients to verify against.
            listeners: how many ports to listen on (one per emulated host); requests carry the
                index of theirs in `Request.listener`.

        Raises:
            ConfigError: a negative latency, `cert_out` without `tls`, fewer than one listener,
                or a port cannot be bound.
        """
        if latency_ms < 0:
            raise ConfigError(f"latency {latency_ms} ms is negative")
        if listeners < 1:
            raise ConfigError(f"an emulator needs at least one listener, not {listeners}")
        if cert_out is not None and not tls:
            raise ConfigError("a certificate path was given without TLS", hint="Add --tls.")
        self.app = app
        self.faults = faults if faults is not None else Faults()
        self.latency_ms = latency_ms
        self.cert_path: Path | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()
        self._connections: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._serving = threading.Event()
        self._closed = False
        self._servers: list[_HTTPServer] = []
        try:
            for index in range(listeners):
                wanted = port if index == 0 else 0
                try:
                    self._servers.append(_HTTPServer((host, wanted), self, index))
                except OSError as exc:
                    raise ConfigError(
                        f"cannot listen on {host}:{wanted}: {exc.strerror or exc}",
                        hint="Pick another --port, or 0 for any free port.",
                    ) from exc
            scheme = "http"
            if tls:
                scheme = "https"
                context = self._make_tls_context(host, cert_out)
                for server in self._servers:
                    server.ssl_context = context
        except BaseException:
            for server in self._servers:
                server.server_close()
            raise
        self.ports: list[int] = [int(server.server_address[1]) for server in self._servers]
        self.urls: list[str] = [f"{scheme}://{host}:{bound}" for bound in self.ports]
        self.port: int = self.ports[0]
        self.url: str = self.urls[0]

    def start(self) -> EmulatorServer:
        """Serve in a daemon thread and return at once.

        Returns:
            self, so `server = EmulatorServer(app).start()` works.
        """
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve,
                    args=(0.02,),
                    name=f"emulator-{self.port}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until KeyboardInterrupt or `stop()` from another thread."""
        try:
            self._serve(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, close open connections, wait for handler threads and free the ports."""
        self._stopping.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        elif self._serving.is_set():
            # serve_forever() runs in another thread: it closes everything itself on its way
            # out; wait for that so the ports are free when stop() returns.
            deadline = time.monotonic() + STOP_JOIN_TIMEOUT
            while self._serving.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        self._close()

    def _serve(self, poll_interval: float) -> None:
        """Accept on every listener from this one thread; each connection gets its own."""
        self._serving.set()
        try:
            with selectors.DefaultSelector() as selector:
                for server in self._servers:
                    selector.register(server.socket, selectors.EVENT_READ, server)
                while not self._stopping.is_set():
                    for key, _events in selector.select(poll_interval):
                        server = key.data
                        assert isinstance(server, _HTTPServer)
                        server.accept_one()
                    for server in self._servers:
                        server.service_actions()
        finally:
            self._serving.clear()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def respond(self, request: Request) -> Response | None:
        """Answer one request with latency and faults applied; None means drop the connection.

        Args:
            request: the parsed request.

        Returns:
            The response to send, or None to close the connection without answering.
        """
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        if self.latency_ms > 0:
            time.sleep(self.latency_ms / 1000.0)
        decision = self.faults.take_targeted(request.path, request.listener, request.body)
        if decision is None:
            decision = self.faults.draw(request.path)
        if isinstance(decision, int):
            headers = {"Retry-After": "1"} if decision == 429 else {}
            reason = "Too Many Requests" if decision == 429 else "Injected fault"
            return Response.json(decision, {"error": reason, "status": decision}, headers=headers)
        if decision == "slow":
            time.sleep(self.faults.slow_seconds)
        response = self._call_app(request)
        if decision == "reset":
            return None
        return response

    def track(self, conn: socket.socket, thread: threading.Thread) -> None:
        """Remember an open connection so `stop()` can close it (called by the handler)."""
        with self._lock:
            self._connections[id(conn)] = (conn, thread)

    def untrack(self, conn: socket.socket) -> None:
        """Forget a connection once its handler has finished (called by the handler)."""
        with self._lock:
            self._connections.pop(id(conn), None)

    def _call_app(self, request: Request) -> Response:
        try:
            return self.app.handle(request)
        except BadRequest as exc:
            return Response.json(400, {"error": str(exc)})
        except Exception as exc:
            # An app bug must not kill the handler thread or spam stderr; the body says what
            # happened so a failing test shows it.
            _logger.debug(
                "emulator app failed on %s %s", request.method, request.path, exc_info=True
            )
            return Response.json(
                500, {"error": "internal emulator error", "detail": f"{type(exc).__name__}: {exc}"}
            )

    def _control(self, request: Request) -> Response:
        route = request.path[len(CONTROL_PREFIX) :].rstrip("/")
        if route == "stats" and request.method in ("GET", "HEAD"):
            try:
                stats = dict(self.app.stats())
            except Exception as exc:
                _logger.debug("emulator stats failed", exc_info=True)
                return Response.json(500, {"error": f"stats failed: {exc}"})
            stats["faults"] = self.faults.snapshot()
            return Response.json(200, stats)
        if route == "faults" and request.method == "POST":
            try:
                body = request.json()
                if not isinstance(body, dict):
                    raise BadRequest("expected a JSON object")
                body_contains = body.get("body_contains")
                self.faults.fail_next(
                    str(body["path_contains"]),
                    body["status"],
                    listener=body.get("listener"),
                    body_contains=None if body_contains is None else str(body_contains),
                )
            except BadRequest as exc:
                return Response.json(400, {"error": str(exc)})
            except (KeyError, ConfigError) as exc:
                return Response.json(400, {"error": f"bad fault request: {exc}"})
            return Response.json(200, {"armed": True})
        control = getattr(self.app, "control", None)
        if callable(control):
            try:
                answer = control(route, request)
            except BadRequest as exc:
                return Response.json(400, {"error": str(exc)})
            if isinstance(answer, Response):
                return answer
        return Response.json(404, {"error": f"Unknown path '{request.path}'"})

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections = list(self._connections.values())
        for conn, _thread in connections:
            # The plain socket's shutdown wakes a handler blocked reading a keep-alive
            # connection; it also works under TLS without touching the SSL object.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_JOIN_TIMEOUT
        for _conn, thread in connections:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        for server in self._servers:
            server.server_close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _make_tls_context(self, host: str, cert_out: Path | None) -> ssl.SSLContext:
        cert_pem, key_pem = _self_signed_certificate(host)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="airgap-emulator-")
        folder = Path(self._tmpdir.name)
        cert_path, key_path = folder / "cert.pem", folder / "key.pem"
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(cert_path, key_path)
        finally:
            # The key is only needed to load the context; do not leave it lying around.
            key_path.unlink()
        self.cert_path = cert_path
        if cert_out is not None:
            try:
                cert_out.parent.mkdir(parents=True, exist_ok=True)
                cert_out.write_bytes(cert_pem)
            except OSError as exc:
                raise ConfigError(f"cannot write the certificate to {cert_out}: {exc}") from exc
            self.cert_path = cert_out
        return context


def _self_signed_certificate(host: str) -> tuple[bytes, bytes]:
    """A fresh P-256 key and a self-signed certificate for host, 127.0.0.1 and localhost (PEM)."""
    # Imported here: cryptography's x509 module is slow to import and only TLS needs it.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airgap emulator")])
    alt_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    try:
        address = ipaddress.ip_address(host)
        if address != ipaddress.ip_address("127.0.0.1"):
            alt_names.append(x509.IPAddress(address))
    except ValueError:
        if host != "localhost":
            alt_names.append(x509.DNSName(host))
    now = datetime.now(UTC)
    # The certificate is its own trust anchor, so it is marked as a CA that may sign
    # certificates; OpenSSL does not treat it as self-issued otherwise and verification fails.
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem
