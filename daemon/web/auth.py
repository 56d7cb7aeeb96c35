"""Who may use the dashboard, and protection of its actions against cross-site requests.

With no credentials configured (only allowed on a loopback address, see ``config``), every
request from this machine is let in. With a token or a user name and password, a request must
carry one of:

- ``Authorization: Bearer <token>`` or HTTP Basic ``user:password`` (scripts, Prometheus);
- the session cookie set by the login page: ``<expiry>.<HMAC>``, signed with a key derived from
  the configured credentials, so changing them logs everybody out, and ``HttpOnly`` +
  ``SameSite=Strict``, so another site's page cannot make the browser send it.

Without credentials, only requests addressed to a loopback name (``Host: 127.0.0.1``,
``localhost``) are answered, so a web page cannot reach the dashboard by pointing a name of its
own at 127.0.0.1 (DNS rebinding). Every state-changing request (anything but GET/HEAD) that is
not authenticated by an
``Authorization`` header must also come from our own pages: its ``Origin`` (or, failing that,
``Referer``) must be this server's own origin. That stops cross-site form posts even on a
password-less loopback dashboard, which a web page in the user's browser could otherwise reach.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Web, is_loopback

COOKIE = "lipsyncd_session"
SESSION_S = 7 * 24 * 3600
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
OPEN_PATHS = ("/login", "/healthz", "/static/")
"""Reachable without logging in: the login page itself, its stylesheet, and the liveness probe
(which says only "ok" or that the database cannot be read)."""


class Auth:
    """Checks credentials and signs session cookies for one web configuration."""

    def __init__(self, web: Web) -> None:
        self.web = web
        secret = f"{web.token or ''}\0{web.username or ''}\0{web.password or ''}"
        self._key = hashlib.sha256(b"lipsyncd-session\0" + secret.encode()).digest()

    @property
    def required(self) -> bool:
        return self.web.needs_login

    def check(self, token: str = "", username: str = "", password: str = "") -> bool:
        """Do these credentials match the configured ones? (constant-time comparisons)"""
        if self.web.token and token and hmac.compare_digest(token.encode(), self.web.token.encode()):
            return True
        if self.web.username and self.web.password and username:
            return (hmac.compare_digest(username.encode(), self.web.username.encode())
                    & hmac.compare_digest(password.encode(), self.web.password.encode()))
        return False

    def header_login(self, request: Request) -> bool:
        """Authenticated by an ``Authorization`` header (Bearer token or HTTP Basic)."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self.check(token=value.strip())
        if scheme.lower() == "basic":
            try:
                username, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return self.check(username=username, password=password)
        return False

    def session_value(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_S)
        return f"{expires}.{self._sign(str(expires))}"

    def cookie_login(self, request: Request, now: float | None = None) -> bool:
        expires, _, mac = request.cookies.get(COOKIE, "").partition(".")
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return False
        return hmac.compare_digest(mac, self._sign(expires))

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def loopback_host(request: Request) -> bool:
    """Was this request addressed to this machine by a loopback name (``Host`` header)?"""
    host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
    return is_loopback(host)


def same_origin(request: Request) -> bool:
    """Does this request come from one of our own pages (``Origin``, else ``Referer``)?"""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    host = request.headers.get("host", "")
    return bool(host) and parts.netloc == host and parts.scheme in ("http", "https")


class Guard:
    """ASGI middleware: refuses requests that are not logged in, and cross-site actions."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(Request(scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> Response | None:
        path = request.url.path
        if not self.auth.required and not loopback_host(request):
            return PlainTextResponse("Refused: this dashboard has no login, so it answers only requests addressed to "
                                     "127.0.0.1 or localhost. To reach it under another name (a reverse proxy), set "
                                     "web.token or web.username and web.password.", status_code=403)
        by_header = self.auth.required and self.auth.header_login(request)
        if request.method not in SAFE_METHODS and not by_header and not same_origin(request):
            return PlainTextResponse("Refused: this action must be sent from the dashboard's own pages "
                                     "(cross-site request).", status_code=403)
        if not self.auth.required or path.startswith(OPEN_PATHS):
            return None
        if by_header or self.auth.cookie_login(request):
            return None
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            target = path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        challenge = "Basic realm=\"lipsyncd\"" if self.auth.web.username else "Bearer"
        return PlainTextResponse("Log in first: this dashboard needs a token or a user name and password.",
                                 status_code=401, headers={"WWW-Authenticate": challenge})
