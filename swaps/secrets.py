"""The secrets a swap hands to vLLM: the Hugging Face token and the model's secret container environment.

They reach each node over SSH stdin (`swaps.launch.build_secrets_write_command`), never an argv, a log or an event.
"""

from __future__ import annotations

from django.conf import settings

from catalog.models import ModelEntry
from catalog.selectors import model_secrets


def swap_secrets(*, entry: ModelEntry) -> dict[str, str]:
    """Name -> value of every secret the launch of `entry` needs; empty values are left out."""
    secrets: dict[str, str] = {}
    token = settings.SPARKCONTROL.get("HF_TOKEN", "")
    if token:
        secrets["HF_TOKEN"] = token
    secrets.update({name: value for name, value in model_secrets(entry).items() if value})
    return secrets
