"""Service pages: container and link from services-overrides.yaml, a day of probe samples (pruned by the sweep,
written in one insert), the history API, and the page itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cluster.models import Service, ServiceRestart, ServiceSample
from cluster.services import ServicesConfigError, services_sync
from cluster.sweeps import sweep_status

pytestmark = pytest.mark.django_db


# --- services-overrides.yaml: container, gpu, link ------------------------------------------------------------


def test_overrides_set_container_gpu_and_link(tmp_path):
    path = tmp_path / "services-overrides.yaml"
    path.write_text(
        "services:\n"
        "  parakeet-asr:\n    container: parakeet_asr.1\n    gpu: true\n    link: https://grafana.lan/d/asr?x=1\n"
        "  qdrant:\n    container: qdrant\n    node: spark2\n    link: http://spark2:6333/dashboard\n"
    )
    services_sync(overrides_path=path)
    asr = Service.objects.get(key="parakeet-asr")
    assert (asr.container, asr.gpu, asr.link) == ("parakeet_asr.1", True, "https://grafana.lan/d/asr?x=1")
    assert asr.on_gpu
    qdrant = Service.objects.get(key="qdrant")
    assert (qdrant.container, qdrant.node, qdrant.link, qdrant.on_gpu) == (
        "qdrant",
        "spark2",
        "http://spark2:6333/dashboard",
        False,
    )
    # Taking them out of the file takes them off the rows.
    path.write_text("services: {}\n")
    services_sync(overrides_path=path)
    assert Service.objects.get(key="parakeet-asr").container == "" and not Service.objects.get(key="qdrant").link


@pytest.mark.parametrize(
    "fields, expected",
    [
        ("container: 'my box'", "service 'qdrant': field 'container'"),
        ("container: -leading-dash", "service 'qdrant': field 'container'"),
        ("container: 12", "service 'qdrant': field 'container'"),
        ("container: " + "a" * 129, "service 'qdrant': field 'container'"),
        ("link: ftp://files.lan/x", "service 'qdrant': field 'link'"),
        ("link: 'javascript:alert(1)'", "service 'qdrant': field 'link'"),
        ("link: grafana.lan", "service 'qdrant': field 'link'"),
        ("gpu: 'yes'", "service 'qdrant': field 'gpu'"),
    ],
)
def test_bad_container_link_or_gpu_is_refused_naming_the_field(tmp_path, fields, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(f"services:\n  qdrant:\n    {fields}\n")
    with pytest.raises(ServicesConfigError) as info:
        services_sync(overrides_path=path)
    assert expected in str(info.value)
    assert Service.objects.get(key="qdrant").container == "" and Service.objects.get(key="qdrant").link == ""


def test_the_head_vllm_gets_no_container(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("services:\n  vllm:\n    container: vllm_node\n")
    with pytest.raises(ServicesConfigError) as info:
        services_sync(overrides_path=path)
    assert "the head vLLM is changed by swaps" in str(info.value)


# --- probe samples ------------------------------------------------------------------------------------------------


def test_each_status_sweep_adds_one_sample_per_service_in_one_insert_and_prunes_by_age(farm, service_for, settings):
    settings.SERVICE_HISTORY_HOURS = 24
    up = service_for(farm.add("stt"), key="asr")
    down = service_for(farm.add("qdrant", mode="error"), key="vectors")
    old = timezone.now() - timedelta(hours=25)
    ServiceSample.objects.bulk_create(
        [
            ServiceSample(service=up, status="up", latency_ms=1.0, checked_at=old - timedelta(minutes=i))
            for i in range(50)
        ]
    )
    kept = ServiceSample.objects.create(
        service=up, status="up", latency_ms=2.0, checked_at=timezone.now() - timedelta(hours=23)
    )
    with CaptureQueriesContext(connection) as queries:
        sweep_status(timeout=2)
    sample_sql = [q["sql"] for q in queries.captured_queries if "cluster_servicesample" in q["sql"]]
    assert len([sql for sql in sample_sql if sql.startswith("INSERT")]) == 1
    assert len([sql for sql in sample_sql if sql.startswith("DELETE")]) == 1
    assert len(sample_sql) == 2
    rows = ServiceSample.objects.order_by("service__key", "checked_at")
    assert [(row.service.key, row.status) for row in rows] == [("asr", "up"), ("asr", "up"), ("vectors", "down")]
    assert rows[0].pk == kept.pk
    assert rows[1].detail == "" and "HTTP 500" in rows[2].detail
    # Deep and connectivity sweeps do not add samples.
    from cluster.sweeps import sweep_connectivity, sweep_deep

    sweep_deep(timeout=2)
    sweep_connectivity(timeout=2, hosts=False)
    assert ServiceSample.objects.count() == 3
    sweep_status(timeout=2)
    assert ServiceSample.objects.filter(service=down).count() == 2


def test_history_api_gives_columns_errors_deep_health_and_restarts(farm, service_for, reader, anon):
    service = service_for(farm.add("stt"), key="asr")
    sweep_status(timeout=2)
    farm.services[0].set_mode("error")
    sweep_status(timeout=2)
    from cluster.sweeps import sweep_deep

    sweep_deep(timeout=2)
    ServiceRestart.objects.create(
        service=service,
        state="up",
        container="c",
        host="h",
        requested_by="ops",
        requested_at=timezone.now(),
        downtime_s=4.2,
    )
    assert anon.get("/api/services/asr/history").status_code == 401
    assert reader.get("/api/services/nope/history").status_code == 404
    assert reader.get("/api/services/asr/history?hours=0").status_code == 422
    body = reader.get("/api/services/asr/history").json()
    assert body["service"] == "asr"
    assert body["status"] == ["up", "down"] and len(body["t"]) == 2 and body["t"][0] <= body["t"][1]
    assert body["latency_ms"][0] is not None
    assert [(e["sweep"], e["status"]) for e in body["errors"]] == [("deep", "down"), ("status", "down")]
    assert "HTTP 500" in body["errors"][1]["detail"]
    assert body["deep"]["status"] == "down"
    assert [(r["state"], r["downtime_s"], r["requested_by"]) for r in body["restarts"]] == [("up", 4.2, "ops")]


def test_the_service_page_needs_a_login_and_shows_the_service(client, staff_client, farm, service_for):
    service_for(farm.add("tts"), key="voice", link="https://docs.lan/<kokoro>", container="kokoro")
    assert client.get("/services/voice/").status_code == 302
    page = staff_client.get("/services/voice/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="https://docs.lan/&lt;kokoro&gt;"' in html  # escaped, never markup
    assert "vendor/uplot/uPlot.iife.min.js" in html and "dashboard/service.js" in html
    assert '"restartable": false' in html  # no Spark to run it on in this test
    assert "<script>" not in html.replace('<script type="module"', "").replace("<script src", "")
    assert page.headers["Content-Security-Policy"]
    assert staff_client.get("/services/nope/").status_code == 404
