"""coordination routes."""

from ninja import Router

router = Router(tags=["coordination"])
