"""serve's websocket edge: every connection reads the server's websocket options from one place, and daphne's
per-connection input queue is an inbox."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport


def _factory():  # type: ignore[no-untyped-def]
    from sparkcontrol.edge import EdgeWebSocketFactory

    factory = EdgeWebSocketFactory(None, server="test")
    factory.setProtocolOptions(autoPingTimeout=7, allowNullOrigin=True, openHandshakeTimeout=3)
    return factory


def test_connections_read_the_options_the_factory_holds_without_a_copy_each():
    from daphne.ws_protocol import WebSocketProtocol

    factory = _factory()
    protocols = []
    for port in (50001, 50002):
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        protocol.makeConnection(StringTransport())
        protocols.append(protocol)
    for protocol in protocols:
        copied = [name for name in WebSocketProtocol.CONFIG_ATTRS if name in vars(protocol)]
        assert copied == []
        for name in WebSocketProtocol.CONFIG_ATTRS:
            assert getattr(protocol, name) is getattr(factory, name), name
    assert protocols[0].autoPingTimeout == 7 and protocols[0].openHandshakeTimeout == 3
    # A callback option reads back as the function the factory holds, not as a method of the connection.
    callbacks = [name for name in WebSocketProtocol.CONFIG_ATTRS if inspect.isfunction(getattr(factory, name))]
    assert callbacks, "autobahn's defaults include callback options"
    for name in callbacks:
        assert inspect.isfunction(getattr(protocols[0], name)), name


def test_options_set_again_reach_new_connections():
    factory = _factory()
    factory.setProtocolOptions(autoPingTimeout=11)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50003))
    protocol.makeConnection(StringTransport())
    assert protocol.autoPingTimeout == 11


def test_an_open_socket_lets_go_of_its_opening_handshake():
    from autobahn.websocket.types import ConnectionRequest

    protocol = _factory().buildProtocol(IPv4Address("TCP", "127.0.0.1", 50004))
    protocol.makeConnection(StringTransport())
    headers, params = {"host": "127.0.0.1", "cookie": "sessionid=abc"}, {"a": ["1"]}
    protocol.http_request_data = b"GET /ws/swaps/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    protocol.http_headers, protocol.http_request_params = headers, params
    protocol.request = ConnectionRequest(
        peer="tcp:127.0.0.1:50004",
        headers=headers,
        host="127.0.0.1",
        path="/ws/swaps/",
        params=params,
        version=13,
        origin=None,
        protocols=[],
        extensions=[],
    )
    logged: list[tuple] = []
    protocol.server = SimpleNamespace(log_action=lambda *args: logged.append(args))
    protocol.client_addr = ["127.0.0.1", 50004]

    protocol.onOpen()

    assert logged == [("websocket", "connected", {"path": "/ws/swaps/", "client": "127.0.0.1:50004"})]
    assert protocol.http_request_data == b"" and protocol.http_headers == {} and protocol.http_request_params == {}
    assert protocol.request.headers == {} and protocol.request.params == {}
    assert protocol.request.path == "/ws/swaps/"  # daphne logs the path when the socket closes
