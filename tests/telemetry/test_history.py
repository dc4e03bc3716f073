"""The load history: the API's shape and validation, bounded answers, downsampling and pruning, /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from telemetry.models import LoadResolution, LoadSample
from telemetry.selectors import MAX_POINTS
from telemetry.services import AVERAGES_KEPT, load_history_compact

pytestmark = pytest.mark.django_db

REQUIRED = {
    "gpu_busy_percent",
    "memory_used_bytes",
    "requests_running",
    "requests_waiting",
    "generation_tokens_per_second",
}


def _sample(at: datetime, node: str = "spark-1", **values: float) -> LoadSample:
    defaults = {"gpu_busy_percent": 50.0, "memory_used_bytes": 1e9, "requests_running": 1.0}
    if not node:
        defaults = {"gateway_requests_per_second": 2.0, "gateway_held": 0.0}
    return LoadSample.objects.create(at=at, node=node, **{**defaults, **values})


def test_the_answer_has_the_contract_shape(reader):
    now = timezone.now()
    _sample(now - timedelta(minutes=2), gpu_busy_percent=20.0, requests_waiting=3.0, generation_tokens_per_second=9.5)
    _sample(now - timedelta(minutes=1), gpu_busy_percent=80.0)
    _sample(now - timedelta(minutes=1), node="")
    response = reader.get("/api/load")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"series"}
    assert REQUIRED <= set(body["series"])
    busy = body["series"]["gpu_busy_percent"]
    assert [point["value"] for point in busy] == [20.0, 80.0]
    assert all(set(point) == {"t", "node", "value"} and point["node"] == "spark-1" for point in busy)
    assert datetime.fromisoformat(busy[0]["t"]) == now - timedelta(minutes=2)
    assert body["series"]["requests_waiting"] == [{"t": busy[0]["t"], "node": "spark-1", "value": 3.0}]
    assert body["series"]["generation_tokens_per_second"][0]["value"] == 9.5
    assert body["series"]["gateway_requests_per_second"][0]["node"] is None


def test_since_limits_the_range_and_accepts_times_without_an_offset(reader):
    now = timezone.now().replace(microsecond=0)
    _sample(now - timedelta(hours=3), gpu_busy_percent=1.0)
    _sample(now - timedelta(minutes=30), gpu_busy_percent=2.0)
    default = reader.get("/api/load").json()["series"]["gpu_busy_percent"]
    assert [point["value"] for point in default] == [2.0]  # the last hour by default
    naive = (now - timedelta(hours=4)).astimezone(UTC).replace(tzinfo=None).isoformat()
    wider = reader.get(f"/api/load?since={naive}").json()["series"]["gpu_busy_percent"]
    assert [point["value"] for point in wider] == [1.0, 2.0]


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01T00:00:00Z", "", "2026-01-01T25:00"])
def test_a_bad_since_is_a_422_naming_it(reader, since):
    response = reader.get(f"/api/load?since={since}")
    assert response.status_code == 422, response.content
    assert "since" in response.json()["detail"]


def test_credentials_are_needed(anon):
    assert anon.get("/api/load").status_code == 401


def test_a_long_range_is_averaged_to_a_bounded_size(reader):
    now = timezone.now()
    start = now - timedelta(hours=6)
    LoadSample.objects.bulk_create(
        [
            LoadSample(at=start + timedelta(seconds=10 * i), node=node, gpu_busy_percent=float(i % 2) * 100)
            for i in range(6 * 360)
            for node in ("spark-1", "spark-2")
        ]
    )
    since = (start - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    series = reader.get(f"/api/load?since={since}").json()["series"]["gpu_busy_percent"]
    for node in ("spark-1", "spark-2"):
        points = [point for point in series if point["node"] == node]
        assert 100 < len(points) <= MAX_POINTS
        # Averages of alternating 0 and 100 over whole steps: about 50, never the raw extremes only.
        assert 40 <= sum(point["value"] for point in points) / len(points) <= 60


def test_old_samples_fold_into_five_minute_averages_and_expire():
    now = datetime(2026, 11, 30, 12, 0, 7, tzinfo=UTC)
    day_ago = now - timedelta(days=1)
    # 10 minutes of samples, all more than a day old.
    for i in range(60):
        at = day_ago - timedelta(minutes=12) + timedelta(seconds=10 * i)
        _sample(at, gpu_busy_percent=10.0 if i < 30 else 30.0, requests_running=None)
    recent = _sample(now - timedelta(minutes=5), gpu_busy_percent=99.0)
    expired = LoadSample.objects.create(
        at=now - AVERAGES_KEPT - timedelta(minutes=5), node="spark-1", resolution=LoadResolution.FIVE_MINUTES
    )
    averaged, deleted = load_history_compact(now=now)
    averages = list(LoadSample.objects.filter(resolution=LoadResolution.FIVE_MINUTES).order_by("at"))
    # Samples from 11:48:07 to 11:57:57 the day before: buckets 11:45 (all 10), 11:50 (18 of 10, 12 of 30), 11:55.
    assert averaged == len(averages) == 3
    assert [(sample.at.hour, sample.at.minute, sample.at.second) for sample in averages] == [
        (11, 45, 0),
        (11, 50, 0),
        (11, 55, 0),
    ]
    assert [sample.gpu_busy_percent for sample in averages] == [10.0, 18.0, 30.0]
    assert all(sample.requests_running is None for sample in averages)
    assert not LoadSample.objects.filter(pk=expired.pk).exists()
    full = LoadSample.objects.filter(resolution=LoadResolution.FULL)
    assert all(sample.at >= day_ago - timedelta(minutes=5) for sample in full)
    assert full.filter(pk=recent.pk).exists()
    assert deleted >= 1
    # Run again: nothing left to fold, nothing doubled.
    assert load_history_compact(now=now) == (0, 0)


def test_the_range_joins_averages_and_full_samples(reader):
    now = timezone.now()
    LoadSample.objects.create(
        at=now - timedelta(days=3), node="spark-1", resolution=LoadResolution.FIVE_MINUTES, gpu_busy_percent=5.0
    )
    _sample(now - timedelta(minutes=1), gpu_busy_percent=7.0)
    since = (now - timedelta(days=4)).isoformat().replace("+00:00", "Z")
    series = reader.get(f"/api/load?since={since}").json()["series"]["gpu_busy_percent"]
    assert [point["value"] for point in series] == [5.0, 7.0]


def test_metrics_show_the_latest_sample(reader):
    now = timezone.now()
    _sample(now - timedelta(seconds=20), gpu_busy_percent=11.0)
    _sample(now - timedelta(seconds=10), gpu_busy_percent=42.0, requests_waiting=4.0)
    _sample(now - timedelta(seconds=10), node="", gateway_held=3.0)
    text = reader.get("/metrics").content.decode()
    assert 'sparkcontrol_load_gpu_busy_percent{node="spark-1"} 42.0' in text
    assert 'sparkcontrol_load_requests_waiting{node="spark-1"} 4.0' in text
    assert "sparkcontrol_load_gateway_held 3.0" in text
    assert 'sparkcontrol_load_gpu_busy_percent{node=""}' not in text
