"""Model downloads through the real sshd, with the real `hf download` on the simulated nodes and the simulated Hub."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest
from django.utils import timezone

from cluster.services import cluster_settings_get
from modelfiles.models import DownloadState, ModelDownload
from modelfiles.services import download_run, downloads_resume, node_disk_report
from sparkcontrol import startup
from swaps.preflight import preflight_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fast_polls(settings):  # type: ignore[no-untyped-def]
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "DOWNLOAD_POLL_SECONDS": 0.2}


@pytest.fixture
def hub_reset(topology):  # type: ignore[no-untyped-def]
    topology.set_hub(speed=0)
    yield topology
    topology.set_hub(speed=0)
    for node in topology.nodes:
        topology.set_downloader(node.name, True)


def _cache_dir(node, repo):  # type: ignore[no-untyped-def]
    return os.path.join(node.hf_hub, "models--" + repo.replace("/", "--"))


def _request(admin_api, key: str) -> ModelDownload:  # type: ignore[no-untyped-def]
    response = admin_api.post(f"/api/models/{key}/download")
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "queued"
    return ModelDownload.objects.get(pk=response.json()["id"])


def _wait(predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _downloader_running(sim, node, repo: str) -> bool:  # type: ignore[no-untyped-def]
    out = subprocess.run(sim.ssh_argv(node, f"pgrep -f '[d]ownload {repo}' || true"), capture_output=True, text=True)
    return bool(out.stdout.strip())


def test_download_reaches_100_percent_on_both_nodes_and_preflight_sees_it(
    hub_reset, fast_polls, model_factory, admin_api, reader
):
    sim, repo = hub_reset, "sim/dl-whole"
    sim.set_hub(repo=repo, weights_bytes=3_000_000)
    entry = model_factory("dl-whole", repo=repo, nodes=2)
    before = preflight_run(entry=entry, cluster=cluster_settings_get())
    missing = [check for check in before.checks if check.name.startswith("HF cache")]
    assert missing and all(check.warning and f"/api/models/{entry.key}/download" in check.detail for check in missing)

    download = _request(admin_api, entry.key)
    assert download.nodes == [node.name for node in sim.nodes]
    finished = download_run(download_id=str(download.id), attempt=1, worker="test")
    assert finished.state == DownloadState.DONE, finished.error
    body = reader.get(f"/api/downloads/{download.id}").json()
    assert body["state"] == "done" and body["error"] is None
    assert body["bytes_total"] == body["bytes_done"] > 2 * 3_000_000
    assert all(p["state"] == "done" and p["bytes_done"] == p["bytes_total"] for p in body["progress"].values())
    for node in sim.nodes:
        assert os.path.isdir(os.path.join(_cache_dir(node, repo), "snapshots"))
    after = preflight_run(entry=entry, cluster=cluster_settings_get())
    cache_checks = [check for check in after.checks if check.name.startswith("HF cache")]
    assert len(cache_checks) == 2 and all(c.ok and not c.warning for c in cache_checks), cache_checks
    fit = next(check for check in after.checks if check.name == "fit")
    assert "fits" in fit.detail and "KV cache" in fit.detail
    disk = {row["node"]: row for row in node_disk_report()}
    assert disk[sim.head.name]["models"][entry.key] >= 3_000_000 and disk[sim.head.name]["free_bytes"] > 0
    # The token went over stdin: nothing on a node's command line names it (checked by the start command's shape).
    assert reader.post(f"/api/models/{entry.key}/download").status_code == 403


def _downloader_pid(repo: str) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if b"download" in argv and repo.encode() in argv:
                return int(entry)
    return None


def test_cancel_kills_the_downloader_on_the_nodes(hub_reset, fast_polls, model_factory, admin_api, settings):
    """Also: the HF token reaches the downloader's environment and the Hub, never an argv."""
    token = "hf_cancelTestSecret0123456789"
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "HF_TOKEN": token}
    sim, repo = hub_reset, "sim/dl-cancel"
    sim.set_hub(speed=300_000, repo=repo, weights_bytes=6_000_000)
    entry = model_factory("dl-cancel", repo=repo)
    download = _request(admin_api, entry.key)
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=download_run(download_id=str(download.id), attempt=1, worker="test"))
    )
    thread.start()
    _wait(lambda: ModelDownload.objects.get(pk=download.pk).bytes_done > 100_000)
    ps = subprocess.run(sim.ssh_argv(sim.head, "ps -eo pid,pgid,args"), capture_output=True, text=True).stdout
    assert _downloader_running(sim, sim.head, repo), (ModelDownload.objects.get(pk=download.pk).progress, ps)
    pid = _downloader_pid(repo)
    with open(f"/proc/{pid}/cmdline", "rb") as fh, open(f"/proc/{pid}/environ", "rb") as env:
        assert token.encode() not in fh.read()
        assert f"HF_TOKEN={token}".encode() in env.read().split(b"\0")
    assert token not in ps
    sent = hashlib.sha256(f"Bearer {token}".encode()).hexdigest()[:12]
    seen = {
        (r["path"].split("/")[-1] if "/resolve/" in r["path"] else "api", r["auth"])
        for r in sim.hub_requests()
        if repo in r["path"]
    }
    assert ("model.safetensors", sent) in seen and ("api", sent) in seen, seen
    response = admin_api.post(f"/api/downloads/{download.id}/cancel")
    assert response.status_code == 202
    thread.join(60)
    assert outcome["result"].state == DownloadState.CANCELLED
    assert not _downloader_running(sim, sim.head, repo)
    assert admin_api.post(f"/api/downloads/{download.id}/cancel").status_code == 409
    # What the cancelled download left is not taken for the model in the cache.
    assert os.path.isdir(_cache_dir(sim.head, repo))
    report = preflight_run(entry=entry, cluster=cluster_settings_get())
    cache = next(check for check in report.checks if check.name.startswith("HF cache"))
    assert cache.warning and "not (wholly) in the HF cache" in cache.detail


def _gets(sim, repo: str, *, settled: float = 3.0) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """How many times each weight file of `repo` was fetched from the simulated Hub.

    The Hub writes a request's record once it has sent the whole answer, which may be a moment after the client has
    the bytes (and the download is done): the counts are read until they stop changing for `settled`/10 seconds,
    within `settled` seconds.
    """
    deadline = time.monotonic() + settled
    counts = _get_counts(sim, repo)
    while time.monotonic() < deadline:
        time.sleep(settled / 10)
        again = _get_counts(sim, repo)
        if again == counts:
            break
        counts = again
    return counts


def _get_counts(sim, repo: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    counts: dict[str, int] = {}
    for record in sim.hub_requests():
        path = record["path"]
        if record["method"] == "GET" and path.startswith(f"/{repo}/resolve/") and path.endswith(".safetensors"):
            name = path.rsplit("/", 1)[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


def _worker_stops_mid_download(sim, admin_api, model_factory, repo: str, key: str) -> ModelDownload:  # type: ignore[no-untyped-def]
    """Start a download of two weight files (a small one and a big one); the worker running it stops once the small
    one is in (no word to the row, which stays running)."""
    sim.set_hub(speed=500_000, repo=repo, shards=[400_000, 3_600_000])
    entry = model_factory(key, repo=repo)
    download = _request(admin_api, entry.key)
    stop = threading.Event()
    thread = threading.Thread(
        target=download_run, kwargs={"download_id": str(download.id), "attempt": 1, "worker": "gone", "stop": stop}
    )
    thread.start()
    blobs = os.path.join(_cache_dir(sim.head, repo), "blobs")
    _wait(
        lambda: (
            os.path.isdir(blobs)
            and any(
                os.path.getsize(os.path.join(blobs, name)) == 400_000
                for name in os.listdir(blobs)
                if not name.endswith(".incomplete")
            )
        )
    )
    _wait(lambda: ModelDownload.objects.get(pk=download.pk).bytes_done > 500_000)
    stop.set()
    thread.join(30)
    row = ModelDownload.objects.get(pk=download.pk)
    assert row.state == DownloadState.RUNNING and 0 < row.bytes_done < row.bytes_total
    ModelDownload.objects.filter(pk=download.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(minutes=5))
    return row


def test_resume_after_the_worker_restarts_mid_download(hub_reset, fast_polls, model_factory, admin_api):
    """The downloader outlives the worker on the node: the next attempt finds it running and follows it to the end."""
    sim, repo = hub_reset, "sim/dl-resume"
    download = _worker_stops_mid_download(sim, admin_api, model_factory, repo, "dl-resume")
    assert _downloader_running(sim, sim.head, repo)
    # Its worker was a process of this machine that no longer exists: the next start takes it up at once, without
    # waiting for its heartbeat to go stale.
    dead = subprocess.Popen(["true"])
    dead.wait()
    ModelDownload.objects.filter(pk=download.pk).update(
        heartbeat_at=timezone.now(), worker=f"{socket.gethostname()}:{dead.pid}"
    )
    assert downloads_resume() == []  # not stale, and nobody said its worker is gone
    startup._resume_downloads(at_start=True)
    resumed = ModelDownload.objects.get(pk=download.pk)
    assert resumed.attempt == 2
    assert downloads_resume(stale_seconds=60) == []  # its heartbeat is fresh now
    assert download_run(download_id=str(download.id), attempt=1, worker="late") is None  # the old attempt is over
    finished = download_run(download_id=str(download.id), attempt=2, worker="restarted")
    assert finished.state == DownloadState.DONE, finished.error
    assert finished.bytes_done == finished.bytes_total
    assert _gets(sim, repo) == {"model-00001-of-00002.safetensors": 1, "model-00002-of-00002.safetensors": 1}


def test_resume_when_the_node_lost_the_downloader_too(hub_reset, fast_polls, model_factory, admin_api):
    """The downloader died with the worker: the next attempt starts it again; the file already in stays, the partial
    one is fetched again (huggingface_hub 2.x keeps a partial file per process) and its leftover is removed."""
    sim, repo = hub_reset, "sim/dl-relaunch"
    download = _worker_stops_mid_download(sim, admin_api, model_factory, repo, "dl-relaunch")
    subprocess.run(sim.ssh_argv(sim.head, f"pkill -f '[d]ownload {repo}'"), check=False)
    _wait(lambda: not _downloader_running(sim, sim.head, repo), timeout=20)
    sim.set_hub(speed=0)
    [resumed] = downloads_resume(stale_seconds=60)
    finished = download_run(download_id=str(download.id), attempt=resumed.attempt, worker="restarted")
    assert finished.state == DownloadState.DONE, finished.error
    assert _gets(sim, repo) == {"model-00001-of-00002.safetensors": 1, "model-00002-of-00002.safetensors": 2}
    blobs = os.path.join(_cache_dir(sim.head, repo), "blobs")
    assert not [name for name in os.listdir(blobs) if name.endswith(".incomplete")]


def test_a_download_that_does_not_fit_is_refused_with_the_numbers(hub_reset, fast_polls, model_factory, admin_api):
    sim, repo = hub_reset, "sim/dl-huge"
    sim.set_hub(repo=repo, weights_bytes=50 * 1024**4)
    entry = model_factory("dl-huge", repo=repo)
    download = _request(admin_api, entry.key)
    finished = download_run(download_id=str(download.id), attempt=1, worker="test")
    assert finished.state == DownloadState.FAILED
    assert "does not fit on spark1" in finished.error and "50.0 TiB" in finished.error and "free" in finished.error
    assert not os.path.isdir(os.path.join(_cache_dir(sim.head, repo), "snapshots"))
    # Validate (the pre-flight alone) warns that it cannot fit in memory either, from the Hub's config and file list,
    # and does not refuse the swap for it.
    report = admin_api.post(f"/api/swap/{entry.key}/validate").json()
    fit = next(check for check in report["checks"] if check["name"] == "fit")
    assert fit["ok"] and fit["warning"] and "does NOT fit" in fit["detail"] and "50.0 TiB" in fit["detail"]


def test_the_admin_lists_downloads_and_the_nodes_disk(hub_reset, model_factory, staff_client):
    sim = hub_reset
    sim.ensure_hf_repo("sim/tiny-model")
    model_factory("tiny-on-disk", repo="sim/tiny-model")
    page = staff_client.get("/admin/modelfiles/modeldownload/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Disk on the nodes" in text and all(node.name in text for node in sim.nodes)
    assert "tiny-on-disk: " in text


def test_a_node_without_a_downloader_and_a_hub_failure_say_why(hub_reset, fast_polls, model_factory, admin_api):
    sim = hub_reset
    sim.set_downloader(sim.head.name, False)
    entry = model_factory("dl-nohf", repo="sim/dl-nohf")
    finished = download_run(download_id=str(_request(admin_api, entry.key).id), attempt=1, worker="test")
    assert finished.state == DownloadState.FAILED and "no model downloader" in finished.error
    sim.set_downloader(sim.head.name, True)
    sim.set_hub(repo="sim/fail-download", weights_bytes=1_000_000)
    entry = model_factory("dl-fail", repo="sim/fail-download")
    finished = download_run(download_id=str(_request(admin_api, entry.key).id), attempt=1, worker="test")
    assert finished.state == DownloadState.FAILED and "spark1: exit" in finished.error, finished.error


def test_validate_estimates_the_fit_of_a_local_model(hub_reset, model_factory, admin_api):
    sim = hub_reset
    config = {"num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64}
    path = sim.make_local_model("fit-local", config={**config, "torch_dtype": "bfloat16"})
    with open(os.path.join(path, "model.safetensors"), "wb") as fh:
        fh.write(b"\0" * 1_000_000)
    model_factory("fit-local", repo="", local_path=path, max_model_len=2048)
    report = admin_api.post("/api/swap/fit-local/validate").json()
    fit = next(check for check in report["checks"] if check["name"] == "fit")
    # 4 layers x 2 x 2 KV heads x 64 x 2 bytes x 2048 tokens = 4 MiB; weights 1,000,000 bytes
    assert fit["ok"] and not fit["warning"], fit
    assert (
        "fits: weights 976.6 KiB + KV cache 4.0 MiB (4 layers x 2 x 2 KV heads x 64 x 2 B x 2048 tokens)"
        in (fit["detail"])
    )
