"""The coordination commands as an operator runs them: bad input is one line saying what is wrong, exit non-zero."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from coordination.selectors import lock_status
from coordination.services import lock_acquire
from tests.commandline.shell import manage

pytestmark = pytest.mark.django_db


BAD_INPUT = [
    (["lock", "acquire", "me", "--ttl", "0"], "ttl"),
    (["lock", "acquire", "me", "--ttl", "-5"], "ttl"),
    (["lock", "acquire", "me", "--ttl", "100000"], "ttl"),
    (["lock", "acquire", "me", "--ttl", "soon"], "--ttl"),
    (["lock", "acquire", ""], "holder"),
    (["lock", "acquire", "x" * 65], "holder"),
    (["lock", "acquire"], "holder"),
    (["lock", "bogus"], "bogus"),
    (["lock"], "status"),
    (["lock", "release"], "HOLDER"),
    (["lock", "release", "--token", "-"], "token"),
    (["webhook", "add", "ftp://x"], "url"),
    (["webhook", "add", "https://hooks.example/x", "--events", "nope"], "events"),
    (["webhook", "add", "https://hooks.example/x", "--events", ","], "events"),
    (["webhook", "remove", "99"], "99"),
    (["webhook"], "add"),
    (["schedule", "list", "extra"], "extra"),
    (["schedule", "nope"], "nope"),
]


@pytest.mark.parametrize(("argv", "named"), BAD_INPUT, ids=[" ".join(a) or "none" for a, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(argv, named, monkeypatch, capsys):
    code, out, err = manage(*argv, monkeypatch=monkeypatch, capsys=capsys)
    assert code != 0, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and named in lines[0], lines[0]


def test_a_lock_held_by_someone_else_names_them_and_the_cli_ways_past(monkeypatch, capsys):
    lock_acquire(holder="nightly-cron", ttl_seconds=600, actor="test")
    code, _, err = manage("lock", "acquire", "me", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "'nightly-cron'" in err and len(err.strip().splitlines()) == 1
    code, _, err = manage("lock", "release", "--token", "sclk_wrong", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "X-Swap-Lock-Token" not in err and "'nightly-cron'" in err, err
    assert lock_status()["locked"]


def test_swap_refused_by_the_lock_names_the_cli_options_not_the_http_header(monkeypatch, capsys):
    from catalog.models import ModelEntry

    ModelEntry.objects.create(key="tiny", name="Tiny", repo="sim/tiny-model")
    lock_acquire(holder="nightly-cron", ttl_seconds=600, actor="test")
    code, _, err = manage("swap", "tiny", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "X-Swap-Lock-Token" not in err and "--lock-token" in err and "--force" in err and "'nightly-cron'" in err


def test_swap_takes_the_lock_token_from_stdin(monkeypatch, capsys):
    from catalog.models import ModelEntry

    ModelEntry.objects.create(key="tiny", name="Tiny", repo="sim/tiny-model")
    grant, _ = lock_acquire(holder="me", ttl_seconds=600, actor="test")
    code, out, err = manage(
        "swap", "tiny", "--lock-token", "-", stdin=grant.token + "\n", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0 and "queued for tiny" in out, err


def test_release_by_holder_frees_only_that_holders_lock(monkeypatch, capsys):
    lock_acquire(holder="nightly-cron", ttl_seconds=600, actor="test")
    code, _, err = manage("lock", "release", "me", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "'nightly-cron', not 'me'" in err and "force-release" in err, err
    assert lock_status()["holder"] == "nightly-cron"
    code, out, _ = manage("lock", "release", "nightly-cron", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and out.startswith("released"), out
    status = lock_status()
    assert not status["locked"] and not status["forced"]
    code, out, _ = manage("lock", "release", "nightly-cron", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "not held" in out


def test_acquire_then_release_with_the_printed_token(monkeypatch, capsys):
    out = io.StringIO()
    call_command("lock", "acquire", "me", "--ttl", "60", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    code, out, err = manage(
        "lock", "release", "--token", "-", stdin=token + "\n", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0 and out.startswith("released"), err
    assert not lock_status()["locked"]


def test_status_prints_iso_timestamps(monkeypatch, capsys):
    grant, _ = lock_acquire(holder="me", ttl_seconds=60, actor="test")
    _, out, _ = manage("lock", "status", monkeypatch=monkeypatch, capsys=capsys)
    assert f"expires_at: {grant.expires_at.isoformat()}" in out, out


def test_webhook_add_and_list_never_print_credentials_in_the_url(monkeypatch, capsys):
    url = "https://bot:hunter2@hooks.example/notify?token=s3cr3t&team=gpu"
    _, added, _ = manage("webhook", "add", url, monkeypatch=monkeypatch, capsys=capsys)
    _, listed, _ = manage("webhook", "list", monkeypatch=monkeypatch, capsys=capsys)
    for out in (added, listed):
        assert "hooks.example/notify" in out, out
        assert "hunter2" not in out and "s3cr3t" not in out, out
