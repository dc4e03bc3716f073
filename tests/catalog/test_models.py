import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from catalog.models import ModelEntry

pytestmark = pytest.mark.django_db


def test_database_refuses_both_repo_and_local_path():
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelEntry.objects.create(key="both", name="both", repo="org/x", local_path="/models/x")


def test_database_refuses_neither_repo_nor_local_path():
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelEntry.objects.create(key="neither", name="neither")


def test_database_refuses_an_update_that_breaks_the_rule(model_factory):
    entry = model_factory("ok")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelEntry.objects.filter(pk=entry.pk).update(local_path="/models/ok")
    entry.refresh_from_db()
    assert entry.repo == "sim/tiny-model" and entry.local_path == ""


def test_validation_names_the_field():
    entry = ModelEntry(key="both", name="both", repo="org/x", local_path="/models/x")
    with pytest.raises(ValidationError) as info:
        entry.full_clean()
    assert "local_path" in info.value.message_dict


def test_served_name_defaults_to_key(model_factory):
    assert model_factory("abc").effective_served_name == "abc"
    assert model_factory("def", served_model_name="served").effective_served_name == "served"
