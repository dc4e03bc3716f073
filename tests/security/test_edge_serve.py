"""`manage.py serve` judges a request when its headers are in: a body over the route's limit, or one sent without
valid credentials to a route that needs them, is refused before it is received (real server, raw sockets)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.security.serving import ServeProcess, raw_exchange

pytestmark = pytest.mark.integration

FAST = 1.0  # seconds: an answer that does not wait for the body


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    process = ServeProcess(tmp_path_factory.mktemp("edge"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def operate_token(server: ServeProcess) -> str:
    return server.token("edge-operate", "operate")


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(answer: bytes) -> tuple[int, bytes, bytes]:
    assert answer, "no answer before the client's timeout: the server waited for the body"
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), status_line, body


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server: ServeProcess) -> None:
    head = _head("POST", "/api/swap/lock", {"Content-Type": "application/json", "Content-Length": str(1 << 30)})
    answer, took = raw_exchange(server.port, head, b"{" + b" " * 1023)
    status, line, body = _status(answer)
    assert status == 413 and took < FAST, (answer[:300], took)
    assert line == b"HTTP/1.1 413 Content Too Large" or line.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body)["limit"] == 256 * 1024
    assert not any(server.data_dir.rglob("tmp*")), "nothing spooled"


def test_a_chunked_body_stops_being_read_at_the_limit(server: ServeProcess, operate_token: str) -> None:
    head = _head(
        "POST",
        "/api/swap/lock",
        {
            "Authorization": f"Bearer {operate_token}",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
    )
    chunk = b" " * 65536
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(5))  # 320 KiB, never terminated
    answer, took = raw_exchange(server.port, head, body)
    status, _, payload = _status(answer)
    assert status == 413 and took < FAST, (answer[:300], took)
    assert "over the limit" in json.loads(payload)["detail"]


def test_no_credentials_get_401_before_the_body(server: ServeProcess) -> None:
    head = _head("POST", "/api/swap/lock", {"Content-Type": "application/json", "Content-Length": "200000"})
    answer, took = raw_exchange(server.port, head)
    status, _, body = _status(answer)
    assert status == 401 and took < FAST, (answer[:300], took)
    assert b"WWW-Authenticate: Bearer" in answer
    assert "authentication required" in json.loads(body)["detail"]


def test_the_gateway_refuses_an_unauthenticated_upload_before_it_arrives(server: ServeProcess) -> None:
    declared = {"Content-Type": "application/json", "Content-Length": str(4 * 1024 * 1024)}
    answer, took = raw_exchange(server.port, _head("POST", "/v1/chat/completions", declared), b'{"model": ')
    status, _, body = _status(answer)
    assert status == 401 and took < FAST, (answer[:300], took)
    assert json.loads(body)["error"]["code"] == "unauthenticated"
    # An unknown token is checked before the body is read, too.
    forged = {**declared, "Authorization": "Bearer sct_000000000000_forged"}
    answer, took = raw_exchange(server.port, _head("POST", "/v1/chat/completions", forged), b'{"model": ')
    assert _status(answer)[0] == 401 and took < FAST, (answer[:300], took)
    # 150 MB is over the gateway's JSON limit: refused on the declared length.
    huge = {"Content-Type": "application/json", "Content-Length": str(150 * 1000 * 1000)}
    answer, took = raw_exchange(server.port, _head("POST", "/v1/chat/completions", huge), b'{"model": ')
    assert _status(answer)[0] == 413 and took < FAST, (answer[:300], took)


def test_expect_continue_is_not_answered_for_a_refused_body(server: ServeProcess) -> None:
    head = _head(
        "POST",
        "/api/swap/lock",
        {"Content-Type": "application/json", "Content-Length": "300", "Expect": "100-continue"},
    )
    answer, took = raw_exchange(server.port, head)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    assert b"100 Continue" not in answer


def test_valid_credentials_with_a_large_body_are_served(server: ServeProcess, operate_token: str) -> None:
    """A body over the edge's trusted size with a good token waits for the check, then reaches the route."""
    body = json.dumps({"holder": "edge-test", "ttl_seconds": 60}).encode() + b" " * 100_000
    with httpx.Client(base_url=server.url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {operate_token}"}
        response = client.post("/api/swap/lock", content=body, headers={**headers, "Content-Type": "application/json"})
        assert response.status_code == 201, response.text
        lock_token = response.json()["token"]

        def chunks():  # type: ignore[no-untyped-def]
            yield body[:50_000]
            time.sleep(0.05)
            yield body[50_000:]

        response = client.post("/api/swap/lock", content=chunks(), headers={**headers, "X-Swap-Lock-Token": lock_token})
        assert response.status_code == 200, response.text
        # Held by someone else: 423, with its reason phrase on the status line.
        answer, _ = raw_exchange(
            server.port,
            _head("POST", "/api/swap/lock", {**headers, "Content-Type": "application/json", "Content-Length": "21"}),
            b'{"holder": "another"}',
        )
        status, line, _ = _status(answer)
        assert status == 423 and line == b"HTTP/1.1 423 Locked", answer[:300]
        assert client.delete("/api/swap/lock", headers={**headers, "X-Swap-Lock-Token": lock_token}).status_code == 204


def test_every_api_route_but_the_public_ones_needs_credentials() -> None:
    """The edge's rule (401 for /api/ without credentials, but for PUBLIC_API_PATHS) holds for every operation."""
    from sparkcontrol.api import api
    from sparkcontrol.bodylimit import PUBLIC_API_PATHS, edge_credentials_needed

    public = set()
    for prefix, router in api._routers:
        for route, path_view in router.path_operations.items():
            for operation in path_view.operations:
                if not operation.auth_callbacks and operation.auth_param is None:
                    public.add("/api" + (prefix.rstrip("/") + "/" + route.lstrip("/")).rstrip("/"))
    assert public and public <= PUBLIC_API_PATHS, public
    assert not edge_credentials_needed("/api/health") and edge_credentials_needed("/api/swap/lock")


def test_a_form_body_is_left_to_the_route(server: ServeProcess, operate_token: str) -> None:
    """The server does not parse POSTed form or multipart bodies itself (Twisted's default, which daphne never
    reads): a malformed multipart upload is answered by the route that received it, in the API's JSON shape, not
    with the server's own 400 page and a dropped connection; and no POST pays for a Content-Type parse."""
    body = b"no parts at all"
    answer, _ = raw_exchange(
        server.port,
        _head(
            "POST",
            "/api/swap/lock",
            {
                "Authorization": f"Bearer {operate_token}",
                "Content-Type": "multipart/form-data; boundary=edge",
                "Content-Length": str(len(body)),
            },
        ),
        body,
    )
    status, _, payload = _status(answer)
    assert 400 <= status < 500, answer[:300]
    assert payload.lstrip().startswith(b"{"), f"the server answered, not the route: {answer[:300]!r}"
