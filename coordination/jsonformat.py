"""One timestamp format for everything Spark Control writes as JSON: ISO 8601 with the offset, from `isoformat()`.

Django's JSON encoder writes UTC as `Z` and cuts to milliseconds, while the services build `isoformat()` strings
(`+00:00`, microseconds); an answer, a push or a webhook mixing both is what this encoder prevents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder


class OffsetJSONEncoder(DjangoJSONEncoder):
    """DjangoJSONEncoder, with datetimes as `isoformat()` (`2026-06-17T12:00:00.123456+00:00`)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        return super().default(o)
