"""Requests judged at the socket, as soon as their headers are in, for `manage.py serve`.

daphne (on Twisted) receives a request's whole body, spooled to a temporary file, before it calls the
application, so no limit or credential check in the application can spare the upload: a 1 GiB body to a route
that takes 256 KiB, or an upload without credentials, was received in full before its 413 or 401. Here a
declared Content-Length over the route's limit gets 413 at once, a chunked body stops being stored at the limit
(413), and a request with a body to a route that needs credentials gets 401 before its body is read when it
carries none, or, for a large or chunked body, when those it carries are not valid (checked on the HTTP pool's
threads, with the connection paused meanwhile). A refusal is answered, the connection half-closed and what the
client still sends discarded for a moment, so it reads the answer rather than a reset.

It also names the status codes Twisted has no reason phrase for (423 goes out as "Locked", not "Unknown Status").
The limits and the routes that need credentials are `sparkcontrol.bodylimit`'s; the ASGI-level checks stay as a
second line and for other servers (uvicorn, runserver).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import socket
from http import HTTPStatus
from importlib import import_module
from typing import Any
from urllib.parse import unquote

from daphne.server import Server  # isort: skip - installs the asyncio reactor before anything imports one
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.conf import settings
from django.contrib.auth import get_user
from django.db import close_old_connections
from django.http import HttpRequest
from twisted.internet import reactor, tcp
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.web.http import (  # not through the module: twisted.web.http is a (slow) deprecation proxy
    RESPONSES,
    HTTPChannel,
    _GenericHTTPChannelProtocol,
)

from realtime.layers import Inbox
from sparkcontrol.bodylimit import edge_body_limit, edge_credentials_needed, edge_too_large, edge_unauthenticated
from sparkcontrol.serving import ThreadPool

logger = logging.getLogger(__name__)

# A body up to this size (about one socket read) is received while its credentials are checked by the route
# itself; a larger or chunked one waits, unread, for the check at the edge.
EDGE_TRUSTED_BODY_BYTES = 64 * 1024
# After a refusal the connection is half-closed and what the client still sends is discarded for this long, so
# the client reads the answer instead of a reset; then it is dropped.
EDGE_LINGER_SECONDS = 2.0


def edge_credentials_valid(authorization: str, session_key: str) -> bool:
    """Whether a request's bearer token or session cookie names a live token or an active user (one query or two).

    Run in a pool thread. Scopes are left to the route (403 there): the edge only keeps out the unknown.
    """
    from accounts.tokens import apitoken_verify

    close_old_connections()
    if authorization:
        kind, _, value = authorization.partition(" ")
        return kind.lower() == "bearer" and bool(value.strip()) and apitoken_verify(plain=value.strip()) is not None
    if not session_key:
        return False
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request)
    return bool(user.is_authenticated and user.is_active)


class EdgeRequest(WebRequest):
    """daphne's request, judged when its headers are in (see the module docstring) rather than after its body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Twisted parses a POSTed form or multipart body into `request.args` by default (a Content-Type parse through
        # the email package on every POST with a body, a whole multipart parse on every upload, and its own bare 400
        # when that fails). daphne hands the raw body to the application and never reads `args`.
        self._parsePOSTFormSubmission = False
        self.edge_state = "open"  # "checking" while credentials are checked, "refused" once answered here
        self.edge_path = ""
        self.edge_limit: int | None = None
        self.edge_received = 0
        self.edge_expect = False
        self.edge_held: tuple[bytes, bytes, bytes] | None = None

    def process(self) -> Any:
        """daphne's; after a websocket upgrade, the HTTP channel also lets go of the connection. Twisted registered
        the channel as the connection's producer (for back-pressure) and daphne's hand-over leaves it there, so the
        finished upgrade request, its headers and its channel lived as long as the socket (~3 KiB each, measured
        with tracemalloc over 200 dashboard sockets)."""
        transport = self.transport
        outcome = super().process()
        channel = self.channel
        if self.transport is None and channel is not None and getattr(transport, "producer", None) is channel:
            transport.unregisterProducer()
            channel.requests.clear()
        return outcome

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:  # noqa: N802 - Twisted's name
        if message is None and code not in RESPONSES:
            try:
                message = HTTPStatus(code).phrase.encode()
            except ValueError:
                pass
        super().setResponseCode(code, message)

    def handle_reply(self, message: dict[str, Any]) -> None:
        """Twisted buffers what a request writes and sends it when the loop next finds the socket writable: per
        write, a writer registered and removed again (two epoll calls) and one more pass of the loop. A body
        message (a whole answer's, or one chunk of a streamed one) is sent at once instead, from here, when nothing
        is queued before it, so a streamed token leaves when the application hands it over; what the socket does
        not take, and a connection closing after the answer, are left to Twisted as before."""
        transport = self.channel.transport if self.channel is not None else None
        if message.get("type") != "http.response.body" or not _eager(transport):
            super().handle_reply(message)
            return
        transport.startWriting = _discard  # shadows the method while the answer is written: nothing registered
        try:
            super().handle_reply(message)
        finally:
            del transport.startWriting
        _flush(transport)

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        super().gotLength(length)
        if length == 0:
            return
        raw_path = self.channel._path.split(b"?", 1)[0]
        self.edge_path = path = unquote(raw_path.decode("ascii", "replace"))
        self.edge_limit = edge_body_limit(path)
        if length is not None and length > self.edge_limit:
            self._edge_refuse(413, edge_too_large(path, self.edge_limit, length))
            return
        if not edge_credentials_needed(path):
            return
        authorization = (self.requestHeaders.getRawHeaders(b"Authorization") or [b""])[0].decode("latin-1")
        session_key = self.received_cookies.get(settings.SESSION_COOKIE_NAME.encode(), b"").decode("latin-1")
        if not authorization and not session_key:
            self._edge_refuse(401, edge_unauthenticated(path), [(b"WWW-Authenticate", b"Bearer")])
        elif length is None or length > EDGE_TRUSTED_BODY_BYTES:
            self._edge_check(authorization, session_key)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.edge_state == "refused":
            return
        self.edge_received += len(data)
        if self.edge_limit is not None and self.edge_received > self.edge_limit:
            self._edge_refuse(413, edge_too_large(self.edge_path, self.edge_limit, None))
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.edge_state == "refused":
            return
        if self.edge_state == "checking":
            self.edge_held = (command, path, version)
            return
        super().requestReceived(command, path, version)

    def _edge_hold_expect(self) -> None:
        # Twisted answers "Expect: 100-continue" right after gotLength; the client must not be invited to send
        # a body that is refused or not yet allowed.
        if self.requestHeaders.hasHeader(b"Expect"):
            self.edge_expect = True
            self.requestHeaders.removeHeader(b"Expect")

    def _edge_check(self, authorization: str, session_key: str) -> None:
        self.edge_state = "checking"
        self._edge_hold_expect()
        self.channel.transport.pauseProducing()
        future = self.server.edge_pool.run(edge_credentials_valid, authorization, session_key)
        future.add_done_callback(self._edge_checked)

    def _edge_checked(self, future: asyncio.Future) -> None:
        if self.channel is None or self.edge_state != "checking":
            return  # the client went away meanwhile
        valid = not future.cancelled() and future.exception() is None and future.result()
        if future.exception() is not None:
            logger.warning("credential check at the edge failed: %r", future.exception())
        if not valid:
            self._edge_refuse(401, edge_unauthenticated(self.edge_path), [(b"WWW-Authenticate", b"Bearer")])
            return
        self.edge_state = "open"
        channel = self.channel
        if self.edge_expect and self.clientproto != b"HTTP/1.0":
            channel._send100Continue()
        channel.transport.resumeProducing()
        if self.edge_held is not None:
            held, self.edge_held = self.edge_held, None
            super().requestReceived(*held)

    def _edge_refuse(self, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
        """Answer now, stop storing the body, half-close, and drop the connection after a short linger."""
        was_checking = self.edge_state == "checking"
        self.edge_state = "refused"
        self._edge_hold_expect()
        channel = self.channel
        transport = channel.transport
        payload = json.dumps(body).encode()
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode(),
            b"Content-Type: application/json",
            b"Content-Length: " + str(len(payload)).encode(),
            b"Connection: close",
            *(name + b": " + value for name, value in headers),
        ]
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        channel.setTimeout(None)
        channel.dataReceived = _discard  # nothing more from this client is parsed or stored
        if was_checking:
            transport.resumeProducing()  # read (and discard) so the client sees the answer, not a stalled send
        transport.loseWriteConnection()
        reactor.callLater(EDGE_LINGER_SECONDS, transport.abortConnection)
        logger.info("refused %s %s at the edge: %s", self.channel._command.decode("latin-1"), self.edge_path, status)


def _discard(*args: Any) -> None:
    return None


def _eager(transport: Any) -> bool:
    """Whether an answer may be sent at once: a plain TCP connection, open, with nothing queued."""
    return (
        isinstance(transport, tcp.Server)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    )


def _flush(transport: Any) -> None:
    """Send what an answer queued on `transport` (see `EdgeRequest.handle_reply`); register the writer, as Twisted's
    own write would have, for what is left, an error, or a close."""
    if not transport.connected:
        return
    closing = transport.disconnecting or transport._writeDisconnecting
    if transport._tempDataBuffer and not closing and transport.doWrite():
        transport.startWriting()  # an error: the reactor's doWrite reports it again and drops the connection
        return
    if closing or transport._tempDataBuffer or transport.offset < len(transport.dataBuffer):
        transport.startWriting()


class EdgeHTTPChannel(HTTPChannel):
    """Twisted's HTTP/1.1 connection, which asks its transport again for every request what does not change while
    the connection lasts: whether it is TLS (an interface adaptation, ~3% of the serving loop's time with keep-alive
    clients), and its two addresses (a `getsockname` system call for one). Here each is asked once."""

    def isSecure(self) -> bool:  # noqa: N802 - Twisted's name
        secure = self.__dict__.get("edge_secure")
        if secure is None:
            secure = self.edge_secure = super().isSecure()
        return secure

    def getHost(self) -> Any:  # noqa: N802 - Twisted's name
        host = self.__dict__.get("edge_host")
        if host is None:
            host = self.edge_host = super().getHost()
        return host

    def getPeer(self) -> Any:  # noqa: N802 - Twisted's name
        peer = self.__dict__.get("edge_peer")
        if peer is None:
            peer = self.edge_peer = super().getPeer()
        return peer


def _edge_channel_protocol(factory: HTTPFactory) -> Any:
    """What Twisted's HTTPFactory builds per connection (`_genericHTTPChannelProtocolFactory`), around an
    `EdgeHTTPChannel`."""
    return _GenericHTTPChannelProtocol(EdgeHTTPChannel())


class EdgeHTTPFactory(HTTPFactory):
    """daphne's HTTP factory, building `EdgeHTTPChannel`s and `EdgeRequest`s."""

    protocol = _edge_channel_protocol

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted's name
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = EdgeRequest
        return protocol

    def log(self, request: Any) -> None:
        """The access log line, written only where Twisted's log goes somewhere: daphne sends it nowhere at the
        verbosity `serve` runs with (formatting the line cost ~5% of the serving loop's time)."""
        if self.server.verbosity > 1:
            super().log(request)


class EdgeWebSocketProtocol(WebSocketProtocol):
    """daphne's websocket protocol, which lets go of the opening handshake's request once the socket is open.

    autobahn keeps the parsed request (its raw bytes, the headers lower-cased and stripped, the query) on the
    connection, and daphne the request object holding those headers, for as long as the socket is open; neither
    reads them after the handshake (the application's scope has its own copy of the headers). ~1.5 KiB a socket."""

    def onOpen(self) -> None:  # noqa: N802 - autobahn's name
        super().onOpen()
        self.http_request_data = b""
        self.http_headers = {}
        self.http_request_params = {}
        self.request.headers = {}
        self.request.params = {}


class EdgeWebSocketFactory(WebSocketFactory):
    """daphne's websocket factory, whose protocols read its options from their class instead of each a copy.

    autobahn copies every protocol option (~40) from the factory onto each new connection, unless the protocol
    already has it: with 200 dashboards open that was 200 copies of the same values, the larger part of each
    socket's ~3 KiB protocol dictionary. Here, whenever the options are set, a protocol class is made that holds
    them; every connection reads the very values the factory holds.
    """

    def setProtocolOptions(self, **options: Any) -> None:  # noqa: N802 - autobahn's name
        super().setProtocolOptions(**options)
        values = {name: _class_value(getattr(self, name)) for name in WebSocketProtocol.CONFIG_ATTRS}
        self.protocol = type("EdgeWebSocketProtocol", (EdgeWebSocketProtocol,), values)


def _class_value(value: Any) -> Any:
    """`value` as a class attribute that reads back as itself: a function (an option may be a callback) would
    otherwise come back bound to the connection."""
    return staticmethod(value) if inspect.isfunction(value) else value


ADOPT_PREFIX = "fd:fileno="  # daphne's description of a listening socket handed over by its descriptor


def _adopts(description: str) -> bool:
    return description.startswith(ADOPT_PREFIX) and description[len(ADOPT_PREFIX) :].isdigit()


class EdgeServer(Server):
    """daphne's server with `EdgeHTTPFactory` and `EdgeWebSocketFactory`; `edge_pool` runs the credential checks (the
    HTTP pool's threads)."""

    def __init__(self, *, edge_pool: ThreadPool, **kwargs: Any) -> None:
        self.edge_pool = edge_pool
        super().__init__(**kwargs)

    @property
    def http_factory(self) -> HTTPFactory:
        return self._edge_http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        # daphne's run() builds its own factory in place; this server puts the edge-checking one there instead.
        self._edge_http_factory = factory if isinstance(factory, EdgeHTTPFactory) else EdgeHTTPFactory(self)

    @property
    def ws_factory(self) -> WebSocketFactory:
        return self._edge_ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: WebSocketFactory) -> None:
        # As for HTTP: daphne's run() makes its factory, then sets its options on whatever this property returns.
        if not isinstance(factory, EdgeWebSocketFactory):
            factory = EdgeWebSocketFactory(self, server=self.server_name)
        self._edge_ws_factory = factory

    def run(self) -> None:
        """daphne's, but a listening socket handed over by its descriptor (`fd:fileno=N`, as `serve` always does for
        IPv4) is adopted here instead of through Twisted's endpoint plugins: finding the `fd` parser loads every
        plugin that parses endpoint strings (autobahn's, and Twisted's TLS, HAProxy, stdio and systemd ones), ~30
        modules kept for the process's life. Adopted just before the reactor starts, where daphne listens too."""
        adopted = [int(description[len(ADOPT_PREFIX) :]) for description in self.endpoints if _adopts(description)]
        self.endpoints = [description for description in self.endpoints if not _adopts(description)]
        ready = self.ready_callable

        def listen_then_ready() -> None:
            for fileno in adopted:
                listening = AdoptedStreamServerEndpoint(reactor, fileno, socket.AF_INET).listen(self.http_factory)
                listening.addCallback(self.listen_success)
                listening.addErrback(self.listen_error)
                self.listeners.append(listening)
            if ready is not None:
                ready()

        self.ready_callable = listen_then_ready
        super().run()

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        """daphne's, with an `Inbox` for the application's incoming messages, and the finished request forgotten as
        soon as its application ends (`_edge_forget`).

        daphne gives each application an `asyncio.Queue` (four deques, ~2 KiB); a dashboard socket keeps its queue
        as long as it is open, mostly empty. An inbox makes its deque when a message first arrives.
        """
        details = self.connections.get(protocol)
        if details is None:
            return None
        assert "application_instance" not in details, "one application per connection"
        inbox = Inbox()
        scope.setdefault("asgi", {"version": "3.0"})
        instance = asyncio.ensure_future(
            self.application(scope=scope, receive=inbox.get, send=functools.partial(self.handle_reply, protocol))
        )
        details["application_instance"] = instance
        instance.add_done_callback(functools.partial(self._edge_forget, protocol))
        return inbox

    def _edge_forget(self, protocol: Any, instance: asyncio.Future) -> None:
        """Drop a request whose answer is finished and whose application ended cleanly from daphne's connection
        table, as daphne's `application_checker` would: that sweep runs once a second over every request finished
        since, and with ~1,000 of them a second it held the loop for tens of milliseconds at a time (the requests'
        objects are freed there too). A request still open, or an application that failed or was cancelled, is left
        to the sweep, which logs the failure."""
        details = self.connections.get(protocol)
        if details is None or details.get("application_instance") is not instance or "disconnected" not in details:
            return
        if instance.cancelled() or instance.exception() is not None:
            return
        del self.connections[protocol]
