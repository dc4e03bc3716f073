"""swaps routes."""

from ninja import Router

router = Router(tags=["swaps"])
