"""Admin forms for the catalog."""

from __future__ import annotations

from django import forms

from catalog.models import ModelEntry


class LocalModelForm(forms.ModelForm):
    """ "+ Add local model": only what a model on the nodes' disks needs."""

    local_path = forms.CharField(max_length=1024, help_text=ModelEntry._meta.get_field("local_path").help_text)

    class Meta:
        model = ModelEntry
        fields = ["key", "name", "local_path", "served_model_name", "nodes"]
