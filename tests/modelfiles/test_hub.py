"""The simulated Hub: what huggingface_hub's client asks of the real one (metadata headers, ranges, file lists)."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from sparksim import hub


@pytest.fixture
def hub_url(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / hub.SETTINGS_FILE).write_text(json.dumps({"weights_bytes": 100_000}))
    server = hub.make_server(str(tmp_path))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_head_gives_the_metadata_the_client_reads(hub_url):
    info = httpx.get(f"{hub_url}/api/models/sim/unit/revision/main").json()
    assert info["id"] == "sim/unit" and len(info["sha"]) == 40
    assert {s["rfilename"] for s in info["siblings"]} == {"config.json", "tokenizer.json", "model.safetensors"}
    head = httpx.head(f"{hub_url}/sim/unit/resolve/main/model.safetensors")
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == info["sha"]
    assert head.headers["X-Linked-Size"] == "100000" and head.headers["Content-Length"] == "100000"
    assert len(head.headers["X-Linked-Etag"].strip('"')) == 64
    tree = httpx.get(f"{hub_url}/api/models/sim/unit/tree/{info['sha']}?recursive=true").json()
    weights = next(entry for entry in tree if entry["path"] == "model.safetensors")
    assert weights["lfs"] == {"oid": head.headers["X-Linked-Etag"].strip('"'), "size": 100_000, "pointerSize": 134}
    assert httpx.get(f"{hub_url}/api/models/org/absent/revision/main").headers["X-Error-Code"] == "RepoNotFound"


def test_range_requests_resume_where_asked(hub_url):
    url = f"{hub_url}/sim/unit/resolve/main/model.safetensors"
    whole = httpx.get(url).content
    assert len(whole) == 100_000
    part = httpx.get(url, headers={"Range": "bytes=60000-"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == "bytes 60000-99999/100000"
    assert part.content == whole[60000:]


def test_fail_download_breaks_halfway(hub_url):
    url = f"{hub_url}/sim/fail-download/resolve/main/model.safetensors"
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", url) as response:
        for chunk in response.iter_bytes():
            received += chunk
    assert len(received) == 50_000
    assert httpx.get(url, headers={"Range": "bytes=50000-"}).status_code == 500
    assert httpx.head(url).status_code == 200  # the metadata still answers, as on the real Hub
