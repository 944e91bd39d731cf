"""Every request passes here first: the Host allowlist (DNS rebinding), the Origin check, the user's secret when
one is set, the page token on state-changing requests; every response gets the security headers.

With a secret (``serve --token`` / DIFFUSCOPE_TOKEN, required to bind anything but loopback), a request needs the
``diffuscope_secret`` cookie, ``Authorization: Bearer SECRET`` or ``X-Diffuscope-Secret: SECRET``, else 401 (the page,
and the page token in it, are not revealed). Opening ``/?token=SECRET`` once sets the cookie (HttpOnly,
SameSite=Strict) and redirects to ``/`` so the secret leaves the address bar.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from diffuscope.web.state import ServerState

TOKEN_HEADER = "x-diffuscope-token"
SECRET_HEADER = "x-diffuscope-secret"
SECRET_COOKIE = "diffuscope_secret"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
# The page is one HTML file, one script and one style sheet from this server; its images are PNG data URLs.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin",
                    "Cross-Origin-Resource-Policy": "same-origin"}


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def host_name(host: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1'; '[::1]:7860' -> '[::1]'."""
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _origin_host(origin: str) -> str | None:
    m = re.match(r"^https?://([^/]+)$", origin)
    return host_name(m.group(1)).lower() if m else None


def cookie_value(secret: str) -> str:
    """What the cookie carries: a digest of the secret (the secret itself stays out of the browser's storage)."""
    return hmac.new(secret.encode(), b"diffuscope serve cookie", hashlib.sha256).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


def _has_secret(request: Request, secret: str) -> bool:
    auth = request.headers.get("authorization", "")
    bearer = auth[7:] if auth[:7].lower() == "bearer " else None
    return (_same(request.cookies.get(SECRET_COOKIE), cookie_value(secret)) or _same(bearer, secret)
            or _same(request.headers.get(SECRET_HEADER), secret))


def _refusal(request: Request, state: ServerState) -> Response | None:
    """The response refusing ``request``, or None to let it through."""
    host = host_name(request.headers.get("host", "")).lower()
    if host not in state.hosts:
        return error(403, f"host {host[:80]!r} is not allowed (DNS rebinding guard); "
                          f"allowed: {', '.join(sorted(state.hosts))}")
    origin = request.headers.get("origin")
    if origin is not None and _origin_host(origin) not in state.hosts:
        return error(403, f"origin {origin[:80]!r} is not allowed: this server answers its own page only")
    if request.headers.get("sec-fetch-site") == "cross-site":
        return error(403, "cross-site requests are not allowed")
    if state.secret is not None:
        given = request.query_params.get("token")
        if request.url.path == "/" and request.method == "GET" and _same(given, state.secret):
            page = RedirectResponse("/", status_code=303)  # the secret leaves the address bar and the history
            page.set_cookie(SECRET_COOKIE, cookie_value(state.secret), httponly=True, samesite="strict", path="/")
            return page
    if state.secret is not None and not _has_secret(request, state.secret):
        return error(401, "this server needs its secret: open /?token=SECRET once (a cookie keeps it), or send "
                          "Authorization: Bearer SECRET")
    if request.method in STATE_CHANGING and not _same(request.headers.get(TOKEN_HEADER), state.token):
        return error(403, "missing or wrong page token: reload the page")
    return None


async def guard(request: Request, call_next) -> Response:
    """The app's one HTTP middleware."""
    response = _refusal(request, request.app.state.server)
    if response is None:
        response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    return response
