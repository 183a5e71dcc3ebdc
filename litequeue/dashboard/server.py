"""The dashboard's HTTP server: routing, access checks, static files and the serve loop.

It is http.server's ThreadingHTTPServer, one thread per request. Request threads share one
:class:`~litequeue.dashboard.api.Api` and therefore one queue connection, which runs one
short read transaction at a time and keeps none open between requests.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import socketserver
import sqlite3
import sys
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Dict, Iterable, List, Optional, Tuple

from ..cli_format import to_json
from ..connection import is_busy_error
from ..errors import InvalidOptionError
from ..version import __version__
from .api import Api, ApiError

logger = logging.getLogger(__name__)

TOKEN_HEADER = "X-Litequeue-Token"
TOKEN_ENVIRONMENT_VARIABLE = "LITEQUEUE_DASHBOARD_TOKEN"
# A token chosen by the user must be at least this long; a generated one has 32 characters.
MIN_TOKEN_LENGTH = 16

# How long a request thread waits for a slow client before it drops the connection. A stop
# waits for the requests in progress, so this also bounds how long a stop can take.
REQUEST_TIMEOUT_S = 10.0
# How often the serve loop checks whether SIGINT or SIGTERM asked it to stop.
STOP_CHECK_INTERVAL_S = 0.2
# Actions take no request body; a client that sends a larger one than this gets 413.
MAX_BODY_BYTES = 64 * 1024

SECURITY_HEADERS = (
    # The page loads only the dashboard's own files, and no other site may frame it, since
    # with --allow-actions its buttons cancel and requeue tasks.
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
JSON_TYPE = "application/json; charset=utf-8"

# Each route: the method, the path (its group, if any, is a task id) and the Api method.
_TASK = r"/api/tasks/([^/]+)"
ROUTES: List[Tuple[str, "re.Pattern[str]", str]] = [
    ("GET", re.compile(r"/api/overview"), "overview"),
    ("GET", re.compile(r"/api/stats"), "stats"),
    ("GET", re.compile(r"/api/tasks"), "tasks"),
    ("GET", re.compile(_TASK), "task"),
    ("GET", re.compile(r"/api/workers"), "workers"),
    ("GET", re.compile(r"/api/throughput"), "throughput"),
    ("POST", re.compile(_TASK + "/cancel"), "cancel"),
    ("POST", re.compile(_TASK + "/requeue"), "requeue"),
]
ACTIONS = frozenset({"cancel", "requeue"})


def load_static_files() -> Dict[str, Tuple[bytes, str]]:
    """Read the page's files from the package into memory, keyed by the URL path that serves
    them. Only these paths are served, so a request cannot name any other file."""
    files = {}
    for entry in (resources.files(__package__) / "static").iterdir():
        content_type = CONTENT_TYPES.get(os.path.splitext(entry.name)[1])
        if content_type is not None and entry.is_file():
            files["/static/" + entry.name] = (entry.read_bytes(), content_type)
    files["/"] = files["/static/index.html"]
    return files


def resolve_token(environ=os.environ) -> Tuple[str, bool]:
    """Return the token that actions need, and whether it came from LITEQUEUE_DASHBOARD_TOKEN.

    Raises:
        InvalidOptionError: The variable is set but shorter than MIN_TOKEN_LENGTH.
    """
    token = environ.get(TOKEN_ENVIRONMENT_VARIABLE)
    if token is None or token == "":
        return secrets.token_urlsafe(24), False
    if len(token) < MIN_TOKEN_LENGTH:
        raise InvalidOptionError(
            f"invalid {TOKEN_ENVIRONMENT_VARIABLE}: it has {len(token)} characters and needs at least "
            f"{MIN_TOKEN_LENGTH}; set a longer random value, or unset it to get a generated token"
        )
    return token, True


def is_loopback(host: str) -> bool:
    """Return whether ``host`` names a loopback address, so only this machine can connect."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """Return ``host`` as it is written in a URL: an IPv6 address goes in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class AccessPolicy:
    """Checks the Host and Origin headers of each request, and the token of each action.

    Args:
        host: The address the server is bound to.
        port: The port it is bound to.
        token: The token that actions need, or None when actions are off.
    """

    def __init__(self, host: str, port: int, token: Optional[str]):
        self.port = port
        self.token = token
        # A loopback server accepts only the loopback names in Host. That stops DNS rebinding:
        # a page on another site that resolves its own name to 127.0.0.1 sends that name in
        # Host, so it cannot read the API. A server bound to another address cannot know
        # every name it is reached by, so it accepts any Host.
        self.host_names = ({"localhost", "127.0.0.1", "[::1]", url_host(host).lower()}
                           if is_loopback(host) else None)

    def check_host(self, host_header: Optional[str]) -> None:
        """Raise ApiError (403) unless the Host header names this server."""
        if self.host_names is None or host_header is None:
            return
        name, port = _split_host(host_header)
        port_matches = port == str(self.port) or (port == "" and self.port == 80)
        if name not in self.host_names or not port_matches:
            raise ApiError(403, f"Host {host_header!r} is not this dashboard's; open it at "
                                f"http://127.0.0.1:{self.port}/")

    def check_origin(self, origin: Optional[str], host_header: Optional[str]) -> None:
        """Raise ApiError (403) when an Origin header is present and is not this server's.

        Browsers send Origin with cross-site requests and with every POST, so a page on
        another site cannot use the API through the visitor's browser.
        """
        if origin is None:
            return
        if host_header is None or origin.lower() != f"http://{host_header.lower()}":
            raise ApiError(403, f"cross-origin request from {origin!r} rejected; the dashboard "
                                "answers only its own page")

    def check_token(self, sent_token: Optional[str]) -> None:
        """Raise ApiError (403) unless actions are on and ``sent_token`` equals the token."""
        if self.token is None:
            raise ApiError(403, "actions are disabled; start the dashboard with --allow-actions "
                                "to cancel and requeue tasks")
        # compare_digest takes as long for every wrong token, so timing reveals no prefix.
        if sent_token is None or not hmac.compare_digest(sent_token.encode("utf-8", "replace"),
                                                         self.token.encode("utf-8")):
            raise ApiError(403, f"missing or invalid {TOKEN_HEADER} header; send the token that "
                                "the dashboard printed at start-up")


def _split_host(host_header: str) -> Tuple[str, str]:
    """Split a Host header into its lower-case name and port ("" when it has none):
    "[::1]:8080" gives ("[::1]", "8080")."""
    header = host_header.strip().lower()
    if header.startswith("["):
        name, _, rest = header.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else ""
    name, _, port = header.partition(":")
    return name, port


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server, with the Api, access policy and static files its handlers use."""

    # server_close() waits for the request threads, so the queue is closed only after the
    # last request used it. REQUEST_TIMEOUT_S bounds that wait.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: Tuple[str, int], api: Api, token: Optional[str],
                 static_files: Dict[str, Tuple[bytes, str]]):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.api = api
        self.static_files = static_files
        self.stop_requested = False
        self.timeout = STOP_CHECK_INTERVAL_S
        super().__init__(address, DashboardHandler)
        self.policy = AccessPolicy(address[0], self.server_address[1], token)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's full name, a DNS query that can stall
        # start-up for seconds on a machine without network. The name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        # Called for an exception raised outside DashboardHandler._respond, such as a client
        # that closed its connection before the response was written.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            logger.debug("connection from %s ended early: %r", client_address[0], error)
        else:
            logger.error("request from %s failed", client_address[0], exc_info=True)


class DashboardHandler(BaseHTTPRequestHandler):
    """Handles one request: serves a static file, a JSON document or an action, or a JSON error."""

    server: DashboardServer
    server_version = f"litequeue-dashboard/{__version__}"
    timeout = REQUEST_TIMEOUT_S

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def _respond(self, method: str) -> None:
        try:
            status, body, content_type = self._dispatch(method)
            self._send(status, body, content_type)
        except ApiError as exc:
            if exc.status == 403:
                logger.warning("rejected %s %s from %s: %s", method, self.path, self.client_address[0], exc)
            self._send_json(exc.status, {"error": str(exc)}, exc.headers)
        except sqlite3.OperationalError as exc:
            if not is_busy_error(exc):
                self._send_internal_error(method)
                return
            logger.warning("%s %s: database busy: %s", method, self.path, exc)
            self._send_json(503, {"error": f"database is busy ({exc}); try again"}, {"Retry-After": "1"})
        except (ConnectionError, TimeoutError):
            raise  # the client went away; DashboardServer.handle_error logs it
        except Exception:
            self._send_internal_error(method)

    def _dispatch(self, method: str) -> Tuple[int, bytes, str]:
        if method == "POST":
            self._discard_body()
        policy = self.server.policy
        policy.check_host(self.headers.get("Host"))
        policy.check_origin(self.headers.get("Origin"), self.headers.get("Host"))

        url = urllib.parse.urlsplit(self.path)
        static = self.server.static_files.get(url.path) if method == "GET" else None
        if static is not None:
            return (200, *static)

        name, arguments = _find_route(method, url.path)
        if name in ACTIONS:
            policy.check_token(self.headers.get(TOKEN_HEADER))
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        document = getattr(self.server.api, name)(*arguments, query)
        if name in ACTIONS:
            logger.info("task %s: %s done, requested by %s", arguments[0], name, self.client_address[0])
        return 200, (to_json(document) + "\n").encode("utf-8"), JSON_TYPE

    def _discard_body(self) -> None:
        # Closing a connection with unread data resets it, and the client could then miss the
        # response, so the body is read, and dropped, before anything else.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header; send a non-negative integer") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise ApiError(413, f"request body of {length} bytes rejected; actions take no body")
        self.rfile.read(length)

    def _send_internal_error(self, method: str) -> None:
        logger.error("%s %s failed", method, self.path, exc_info=True)
        self._send_json(500, {"error": "internal server error; the dashboard's log on stderr has the details"})

    def _send_json(self, status: int, document: dict, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, (to_json(document) + "\n").encode("utf-8"), JSON_TYPE, (headers or {}).items())

    def _send(self, status: int, body: bytes, content_type: str, headers: Iterable[Tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (*SECURITY_HEADERS, *headers):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Send a JSON error, like every other error, for a request that http.server rejects
        itself (a malformed request line, an unsupported method)."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self._send_json(code, {"error": message or HTTPStatus(code).phrase})

    def log_message(self, format: str, *args) -> None:
        # Every request is logged at DEBUG: the page polls every second.
        logger.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def _find_route(method: str, path: str) -> Tuple[str, tuple]:
    allowed = []
    for route_method, pattern, name in ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        if route_method == method:
            return name, match.groups()
        allowed.append(route_method)
    if allowed:
        raise ApiError(405, f"{method} is not allowed on {path}; use {' or '.join(allowed)}",
                       {"Allow": ", ".join(allowed)})
    raise ApiError(404, f"not found: {path}; the endpoints are listed in docs/dashboard.md")


def create_server(api: Api, host: str, port: int, token: Optional[str]) -> DashboardServer:
    """Bind the dashboard to ``host`` and ``port`` (0 picks a free port).

    ``token`` is the token that actions need, or None when actions are off.

    Raises:
        OSError: The address cannot be bound (in use, not an address of this machine).
    """
    server = DashboardServer((host, port), api, token, load_static_files())
    if not is_loopback(host):
        logger.warning(
            "dashboard listens on %s port %d, which is not a loopback address: anyone who can reach "
            "it can read every task's args, result, output and log%s",
            host or "every address", server.server_address[1],
            ", and cancel and requeue tasks with the token" if token is not None else "",
        )
    return server


def serve(server: DashboardServer) -> None:
    """Serve requests until SIGINT or SIGTERM, then wait for the requests in progress.

    Must run in the main thread, which receives the signals.
    """
    def request_stop(signum, frame) -> None:
        server.stop_requested = True

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not server.stop_requested:
            server.handle_request()  # returns after server.timeout when no request arrives
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.server_close()
