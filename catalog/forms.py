"""Admin forms for the catalog: list and mapping fields as plain text (one item per line), and the write-only
secret variable form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from catalog.models import ModelEntry, ModelSecret


class _LinesField(forms.CharField):
    """A value edited as lines of a textarea, kept as typed (not stripped) and optional."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def lines(self, value: Any) -> list[str]:
        """The submitted text's lines, whichever line ends the browser sent."""
        text = super().to_python(value) or ""
        return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


class LineListField(_LinesField):
    """A list of strings edited as a textarea, one item per line; blank lines are dropped and nothing else changes,
    so a list without empty items round-trips exactly."""

    widget = forms.Textarea(attrs={"rows": 5, "cols": 60, "spellcheck": "false", "class": "sc-mono"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list):
            return value
        return [line for line in self.lines(value) if line.strip()]

    def has_changed(self, initial: Any, data: Any) -> bool:
        return self.to_python(self.prepare_value(initial) or "") != self.to_python(data)


class EnvLinesField(_LinesField):
    """A mapping {NAME: value} edited as `NAME=value` lines (the value is everything after the first `=`)."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60, "spellcheck": "false", "class": "sc-mono"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return "\n".join(f"{name}={item}" for name, item in value.items())
        return value

    def to_python(self, value: Any) -> dict[str, str]:  # type: ignore[override]
        if isinstance(value, dict):
            return value
        result: dict[str, str] = {}
        problems: list[str] = []
        for number, line in enumerate(self.lines(value), start=1):
            if not line.strip():
                continue
            name, equals, item = line.partition("=")
            if not equals:
                problems.append(f"line {number}: write NAME=value")
            elif name.strip() in result:
                problems.append(f"line {number}: {name.strip()} is given twice")
            else:
                result[name.strip()] = item
        if problems:
            raise ValidationError(problems)
        return result

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return (initial or {}) != self.to_python(data)
        except ValidationError:
            return True


class ModelEntryForm(forms.ModelForm):
    """The full model form: vLLM flags, mods and launcher flags one per line, the container environment as
    NAME=value lines."""

    vllm_args = LineListField(
        label="vLLM flags",
        help_text="One argument per line, e.g. --kv-cache-dtype then fp8 on the next line (or --kv-cache-dtype=fp8).",
    )
    mods = LineListField(
        help_text="The launcher's --apply-mod paths, one per line: absolute, or relative to the launcher's directory.",
    )
    container_env = EnvLinesField(
        label="container environment",
        help_text="Non-secret NAME=value lines. Tokens go in the secret variables below.",
    )
    launcher_flags = LineListField(
        help_text="Extra launcher options, one argument per line (e.g. --non-privileged, or --eth-if, then IF).",
    )

    class Meta:
        model = ModelEntry
        fields = [
            "key",
            "name",
            "enabled",
            "repo",
            "local_path",
            "served_model_name",
            "nodes",
            "vllm_args",
            *ModelEntry.KNOB_FIELDS,
            *ModelEntry.LAUNCHER_FIELDS,
        ]


class LocalModelForm(forms.ModelForm):
    """ "+ Add local model": only what a model on the nodes' disks needs."""

    local_path = forms.CharField(max_length=1024, help_text=ModelEntry._meta.get_field("local_path").help_text)

    class Meta:
        model = ModelEntry
        fields = ["key", "name", "local_path", "served_model_name", "nodes"]


class ModelSecretForm(forms.ModelForm):
    """A secret variable: the stored value is never rendered; a blank value keeps it."""

    value = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Never shown again after saving. Leave blank to keep the stored value.",
    )

    class Meta:
        model = ModelSecret
        fields = ["name", "value"]

    def clean_value(self) -> str:
        value = self.cleaned_data.get("value") or ""
        if not value:
            if self.instance.pk is not None:
                return self.instance.value
            raise ValidationError("a new secret variable needs a value")
        return value

    def has_changed(self) -> bool:
        # A blank value on a stored row means "keep": only a new value or a new name is a change.
        if self.instance.pk is not None and not self.data.get(self.add_prefix("value")):
            return self.instance.name != self.data.get(self.add_prefix("name"), self.instance.name) or bool(
                self.data.get(self.add_prefix("DELETE"))
            )
        return super().has_changed()
