"""What every response of the served app passes through: a Host allow-list and
security headers (one pure ASGI middleware, so it also covers errors and maggma's
routes).

* **Host allow-list.** A request whose ``Host`` header is not an allowed name is
  answered ``400`` with a JSON error and never reaches a route. This is what stops DNS
  rebinding: a page of ``attacker.example`` that re-points its own name at
  127.0.0.1 reaches the server with ``Host: attacker.example`` and is refused, so
  the browser's same-origin rule is not bypassed. Allowed by default: ``localhost``,
  ``127.0.0.1`` and ``::1`` (any port); ``alcampaign serve --allowed-host NAME`` adds
  names (a bound non-loopback address is added by the CLI).
* **Headers on every response**: a ``Content-Type`` (``application/json`` where a
  route set none), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer``, ``X-Frame-Options: DENY``, ``Cross-Origin-Resource-Policy:
  same-origin``, ``Cross-Origin-Opener-Policy: same-origin`` and a
  ``Content-Security-Policy``: for HTML pages scripts only from this server or inline
  with the response's nonce (:func:`csp_nonce`), data only from this server, no
  frames, no forms elsewhere; for everything else ``default-src 'none'``.
  No ``Access-Control-Allow-Origin`` is ever sent, so a page of another origin
  cannot read a response.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from typing import Any

from starlette._utils import parse_host_header
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alcampaign.store.redaction import redact

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
PAGE_CSP = (
    "default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
    b"cross-origin-resource-policy": b"same-origin",
    b"cross-origin-opener-policy": b"same-origin",
}


def normalise_host(name: str) -> str:
    """A host name as the allow-list compares it: lower case, no port, no brackets.

    Raises
    ------
    ValueError
        For an empty name, a URL, a wildcard or a name with a path.
    """
    text = name.strip().lower()
    if not text or any(c in text for c in "/*@ \t") or "://" in text:
        raise ValueError(
            f"allowed host {name!r}: give a host name or address (e.g. myhost.lan or "
            "10.0.0.5), without scheme, port, path or wildcard"
        )
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:  # name:port
        text = text.split(":", 1)[0]
    return text


def served(request: Request, obj: Any) -> Any:
    """What a route sends: ``obj`` through the one redaction
    (:func:`alcampaign.store.redaction.redact`), with absolute paths shown relative
    to the app's ``path_root``."""
    return redact(obj, getattr(request.app.state, "path_root", None))


def csp_nonce(request: Request) -> str:
    """The nonce that this response's ``Content-Security-Policy`` allows inline
    ``<script nonce=...>`` elements with (fresh per request)."""
    return request.scope["state"]["csp_nonce"]


class SecurityMiddleware:
    """The Host allow-list and the security headers (see the module docstring).

    Parameters
    ----------
    app
        The ASGI app to wrap.
    allowed_hosts
        Extra host names (or addresses) to accept besides :data:`LOCAL_HOSTS`.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(LOCAL_HOSTS) | {normalise_host(h) for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _secured(list(message.get("headers", [])), nonce)
            await send(message)

        if not self._host_ok(scope):
            await _refuse(scope, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _host_ok(self, scope: Scope) -> bool:
        raw = dict(scope.get("headers") or []).get(b"host")
        if raw is None:
            return False
        parsed = parse_host_header(raw.decode("latin-1"))
        return parsed is not None and parsed.host.lower().strip("[]") in self.allowed


async def _refuse(scope: Scope, send) -> None:
    body = json.dumps(
        {
            "detail": "this server does not answer for that Host header; "
            "start it with 'alcampaign serve --allowed-host NAME' to add a name"
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _secured(headers: list[tuple[bytes, bytes]], nonce: str) -> list[tuple[bytes, bytes]]:
    """The response headers with a Content-Type and the security headers set."""
    names = {k.lower() for k, _ in headers}
    ctype = next((v for k, v in headers if k.lower() == b"content-type"), None)
    if ctype is None:
        ctype = b"application/json"
        headers.append((b"content-type", ctype))
    for name, value in HEADERS.items():
        if name not in names:
            headers.append((name, value))
    csp = PAGE_CSP.format(nonce=nonce) if ctype.startswith(b"text/html") else DATA_CSP
    headers = [(k, v) for k, v in headers if k.lower() != b"content-security-policy"]
    headers.append((b"content-security-policy", csp.encode()))
    return headers
