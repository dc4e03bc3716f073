"""Where a webhook may be sent, and how its URL is shown.

A webhook URL is typed by an operator but fetched by the server, from inside the cluster's network: without a
check it reaches the server's own loopback services, the link-local cloud metadata address (169.254.169.254) or
anything on the LAN. Loopback, private and shared ranges are refused unless `SPARKCONTROL_WEBHOOK_ALLOW_PRIVATE`
is on (a receiver on the same box or LAN, n8n say); link-local (metadata included), unspecified, multicast and
reserved addresses are refused always. A literal address is judged when the endpoint is saved; a name is judged
at every delivery, on the addresses it resolves to then, and the request goes to the address that was judged (so
a name cannot resolve to an allowed address for the check and to another for the connection).

URLs may carry credentials (`https://user:pass@host/...`, `?token=...`): the stored URL keeps them, since the
receiver needs them, but wherever a URL is shown (audit trail, logs, admin lists, messages) it goes through
`webhook_url_redacted`.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError

REDACTED = "***"
SECRET_QUERY_WORDS = ("token", "secret", "key", "password", "passwd", "sig", "auth", "code")
# Names that are loopback by definition (RFC 6761), judged without asking a resolver.
LOOPBACK_NAMES = ("localhost",)
# Private, but not a LAN: always refused.
CGNAT = ipaddress.ip_network("100.64.0.0/10")


def webhook_url_redacted(url: str) -> str:
    """The URL with its user name, password and secret-looking query values replaced by ***."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if any(w in k.lower() for w in SECRET_QUERY_WORDS) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def allow_private_targets() -> bool:
    """Whether webhooks may go to loopback and private (LAN) addresses."""
    return bool(settings.SPARKCONTROL.get("WEBHOOK_ALLOW_PRIVATE", False))


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why a webhook may not go to `address`, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return f"{ip} is link-local (cloud metadata lives there)"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return f"{ip} is not a unicast host address"
    if ip.is_loopback:
        return None if allow_private else f"{ip} is loopback (set SPARKCONTROL_WEBHOOK_ALLOW_PRIVATE to allow it)"
    if ip.is_private or ip in CGNAT or not ip.is_global:
        return (
            None if allow_private else f"{ip} is a private address (set SPARKCONTROL_WEBHOOK_ALLOW_PRIVATE to allow it)"
        )
    return None


def webhook_url_check(url: str) -> None:
    """Refuse (ValidationError) a URL whose host is a literal address or a loopback name that may not be a target.

    Names are resolved at delivery, not here: the answer can change, and a resolver may not be reachable now.
    """
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    allow = allow_private_targets()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        if not allow:
            raise ValidationError(f"{host} is loopback (set SPARKCONTROL_WEBHOOK_ALLOW_PRIVATE to allow it)")
        return
    try:
        reason = address_refusal(host, allow_private=allow)
    except ValueError:
        return  # a name
    if reason:
        raise ValidationError(f"webhook target refused: {reason}")


class TargetRefused(Exception):
    """The URL's host resolves to an address webhooks may not go to (or does not resolve)."""


def webhook_target_resolve(url: str) -> str:
    """The address to connect to for `url`: every address its host resolves to must be allowed; the first is used."""
    host = urlsplit(url).hostname or ""
    port = urlsplit(url).port or (443 if url.lower().startswith("https") else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    allow = allow_private_targets()
    for address in addresses:
        reason = address_refusal(address, allow_private=allow)
        if reason:
            raise TargetRefused(f"webhook target refused: {host} resolves to {reason}")
    if not addresses:
        raise TargetRefused(f"cannot resolve {host}")
    return addresses[0]
