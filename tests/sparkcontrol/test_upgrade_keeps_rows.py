"""Upgrading a database made before API tokens and the audit trail moved out of the project package keeps every row.

The database is migrated back to the last schema in which `sparkcontrol` owned both tables, filled through the
historical models of that schema, and migrated forward again: tokens (hash, scope, expiry, revocation), audit
entries, their content types and the permissions that hang on them must all come through, and new rows must get
fresh ids.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import APIToken
from accounts.tokens import apitoken_create, apitoken_verify
from audit.models import AuditEntry
from audit.services import audit_record

BEFORE_THE_MOVE = [("sparkcontrol", "0002_apitoken_expires_at"), ("accounts", None), ("audit", None)]
EXPIRY = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def _migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def _upgrade_keeps_every_row() -> None:
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    _migrate(BEFORE_THE_MOVE)
    old = MigrationExecutor(connection).loader.project_state(("sparkcontrol", "0002_apitoken_expires_at")).apps
    old_token = old.get_model("sparkcontrol", "APIToken")
    old_audit = old.get_model("sparkcontrol", "AuditEntry")
    # A token stored the way the old code stored them (prefix + SHA-256 of the whole token), to verify afterwards.
    plain = "sct_0123456789ab_" + "k" * 43
    old_token.objects.create(
        name="nightly-cron",
        prefix="0123456789ab",
        token_hash=hashlib.sha256(plain.encode()).hexdigest(),
        scope="operate",
        created_by="ops",
        expires_at=EXPIRY,
    )
    old_token.objects.create(name="retired", prefix="sct_old00000", token_hash="0" * 64, scope="admin", revoked=True)
    for number in range(3):
        old_audit.objects.create(actor="alice", action="swap.request", target=f"model-{number}", detail={"n": number})
    types_before = {(ct.app_label, ct.model) for ct in ContentType.objects.all()}
    assert ("sparkcontrol", "apitoken") in types_before
    permissions_before = Permission.objects.filter(content_type__app_label="sparkcontrol").count()

    _migrate(_latest())

    tokens = {token.name: token for token in APIToken.objects.all()}
    assert set(tokens) == {"nightly-cron", "retired"}
    assert tokens["nightly-cron"].scope == "operate"
    assert tokens["nightly-cron"].expires_at == EXPIRY
    assert tokens["nightly-cron"].created_by == "ops"
    assert tokens["retired"].revoked is True
    verified = apitoken_verify(plain=plain)
    assert verified is not None and verified.name == "nightly-cron"
    entries = list(AuditEntry.objects.order_by("id"))
    assert [(entry.actor, entry.target, entry.detail) for entry in entries] == [
        ("alice", f"model-{n}", {"n": n}) for n in range(3)
    ]
    assert ContentType.objects.filter(app_label="accounts", model="apitoken").count() == 1
    assert ContentType.objects.filter(app_label="audit", model="auditentry").count() == 1
    assert not ContentType.objects.filter(app_label="sparkcontrol", model__in=["apitoken", "auditentry"]).exists()
    assert Permission.objects.filter(content_type__app_label__in=["accounts", "audit"]).count() == permissions_before
    # New rows after the rename: the id sequences came along with the tables.
    newer = audit_record(actor="bob", action="token.create", target="x")
    assert newer.id > entries[-1].id
    fresh, _ = apitoken_create(name="after-upgrade", scope="read", created_by="ops")
    assert fresh.id > max(token.id for token in tokens.values())
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
    assert {"accounts_apitoken", "audit_auditentry"} <= tables
    assert not {"sparkcontrol_apitoken", "sparkcontrol_auditentry"} & tables


@pytest.mark.django_db(transaction=True)
def test_an_upgrade_on_sqlite_keeps_tokens_audit_entries_and_permissions() -> None:
    _upgrade_keeps_every_row()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_upgrade_on_postgres_keeps_tokens_audit_entries_and_permissions() -> None:
    _upgrade_keeps_every_row()
