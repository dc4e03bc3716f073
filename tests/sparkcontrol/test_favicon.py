"""/favicon.ico, which browsers ask for on pages that name no icon, leads to the dashboard's icon."""

from __future__ import annotations

from django.test import Client


def test_favicon_ico_redirects_to_the_icon_that_is_served():
    client = Client(HTTP_HOST="127.0.0.1")
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    icon = client.get(response["Location"])
    assert icon.status_code == 200
    assert b"<svg" in b"".join(icon.streaming_content if icon.streaming else [icon.content])
