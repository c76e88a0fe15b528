"""The console's HTTP server (aiohttp), run as one of the gateway's services.

Pages are static files shipped in the package (``static/``), filled in the browser from
the JSON API; the live page follows ``/api/stream`` (server-sent events, one message a
second). Every page and API asks for a session (else: the login page, or 401); every
request that changes something asks for the session's CSRF token (else 403) and for a
role (viewer < operator < admin; else 403). Logins are rate-limited per address and per
user name. With ``behind_proxy`` the client address and scheme come from the proxy's
``X-Forwarded-For`` / ``X-Forwarded-Proto``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, NoReturn

from aiohttp import web

from controller.console import views
from controller.console.actions import OperatorActions, Outcome
from controller.console.alarms import AlarmLog
from controller.console.auth import LoginLimiter, Role, Session, Sessions, User, check_password
from controller.console.settings import ConsoleSettings
from controller.sections import is_loopback
from drivers.site import LineKind

if TYPE_CHECKING:
    from controller.app import App

log = logging.getLogger("pedf.console")

SESSION_COOKIE = "pedf_session"
LOGIN_COOKIE = "pedf_login"  # double-submit token of the login form
PAGES = ("live", "devices", "dr", "energy", "plan", "events")
STATIC = resources.files("controller.console") / "static"
#: The role each request that changes something needs, by path prefix (others: admin).
ROLES = {"/api/shed": Role.OPERATOR, "/api/cancel": Role.OPERATOR,
         "/api/sg-ready": Role.OPERATOR, "/api/alarms/": Role.OPERATOR,
         "/api/read": Role.OPERATOR, "/api/scan": Role.ADMIN, "/logout": Role.VIEWER}
#: A hash to check when the user name is unknown, so that both take the same time.
_DUMMY_HASH = "scrypt$14$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONSOLE_KEY: web.AppKey[Console] = web.AppKey("console")


class Console:
    """The console of one gateway: users, sessions, alarms, actions and the web app."""

    def __init__(self, app: App, settings: ConsoleSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.app, self.settings, self.clock = app, settings, clock
        self.users = {user.name: user for user in settings.users}
        self.sessions = Sessions(ttl_s=settings.session_ttl_s)
        self.limiter = LoginLimiter(settings.login_attempts, settings.login_window_s)
        self.alarms = AlarmLog()
        self.actions = OperatorActions(app, self.alarms, clock)

    # -- the web app ------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        web_app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        web_app[CONSOLE_KEY] = self
        get, post = web_app.router.add_get, web_app.router.add_post
        get("/login", self.login_page)
        post("/login", self.login)
        post("/logout", self.logout)
        get("/", self.page)
        for name in PAGES:
            get(f"/{name}", self.page)
        get("/static/{name:[A-Za-z0-9_.-]+}", self.static)
        get("/static/vendor/{name:[A-Za-z0-9_.-]+}", self.static)
        get("/api/live", self.api_live)
        get("/api/stream", self.api_stream)
        get("/api/devices", self.api_devices)
        get("/api/dr", self.api_dr)
        get("/api/energy", self.api_energy)
        get("/api/plan", self.api_plan)
        get("/api/events", self.api_events)
        post("/api/shed", self.api_shed)
        post("/api/cancel", self.api_cancel)
        post("/api/sg-ready", self.api_sg_ready)
        post("/api/alarms/{id:[0-9]+}/ack", self.api_ack)
        post("/api/read", self.api_read)
        post("/api/scan", self.api_scan)
        return web_app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/login" or path.startswith("/static/"):
            response = await handler(request)
            _secure_headers(response)
            return response
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            if request.method == "GET" and path.strip("/") in ("", *PAGES):
                raise web.HTTPFound("/login")
            raise web.HTTPUnauthorized(text="log in first")
        if request.method not in ("GET", "HEAD"):
            given = request.headers.get("X-CSRF-Token", "")
            if not given and request.content_type == "application/x-www-form-urlencoded":
                given = str((await request.post()).get("csrf", ""))
            if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                log.warning("console: %s %s by %s refused: no valid CSRF token",
                            request.method, path, session.user)
                raise web.HTTPForbidden(text="missing or wrong CSRF token")
            needed = next((role for prefix, role in ROLES.items()
                           if path.startswith(prefix)), Role.ADMIN)
            if session.role < needed:
                log.warning("console: %s %s by %s refused: needs %s", request.method, path,
                            session.user, needed.name.lower())
                raise web.HTTPForbidden(text=f"needs the {needed.name.lower()} role")
        response = await handler(request)
        _secure_headers(response)
        return response

    def _session(self, request: web.Request) -> Session:
        """The session of a request the guard let through."""
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:  # it ended between the guard and here
            raise web.HTTPUnauthorized(text="log in first")
        return session

    def _client(self, request: web.Request) -> str:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if self.settings.behind_proxy and forwarded:
            return forwarded.split(",")[-1].strip()  # what the proxy itself saw
        return request.remote or "?"

    def _secure(self, request: web.Request) -> bool:
        if self.settings.behind_proxy:
            return request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        return request.secure

    # -- login ------------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        # One token per browser (kept while it has one): a second tab or a stray request
        # to this page must not invalidate the form already shown.
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        if not token.replace("-", "").replace("_", "").isalnum() or len(token) > 64:
            token = secrets.token_urlsafe(24)
        html = _static_text("login.html").replace("{{login_token}}", token)
        response = web.Response(text=html, content_type="text/html")
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict",
                            secure=self._secure(request), path="/login")
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        token = str(form.get("login_token", ""))
        if not token or not hmac.compare_digest(token.encode(), request.cookies.get(
                LOGIN_COOKIE, "").encode()):
            raise web.HTTPForbidden(text="stale login form: reload the page")
        client = self._client(request)
        keys = (f"addr:{client}", f"user:{name}")
        if self.limiter.blocked(*keys):
            log.warning("console: login as %r from %s refused: too many failures", name,
                        client)
            raise web.HTTPTooManyRequests(text="too many failed logins: wait a minute")
        user = self.users.get(name)
        ok = await asyncio.to_thread(check_password, password,
                                     user.password_hash if user else _DUMMY_HASH)
        if user is None or not ok:
            self.limiter.failed(*keys)
            log.warning("console: failed login as %r from %s", name, client)
            raise web.HTTPFound("/login?failed=1")
        self.limiter.succeeded(f"user:{name}")
        self._start_session(request, user)

    def _start_session(self, request: web.Request, user: User) -> NoReturn:
        token, _session = self.sessions.start(user)
        log.info("console: %s (%s) logged in from %s", user.name, user.role.name.lower(),
                 self._client(request))
        response = web.HTTPFound("/live")
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict",
                            secure=self._secure(request), path="/")
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = web.HTTPFound("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    # -- pages --------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        html = (_static_text("app.html")
                .replace("{{csrf}}", session.csrf)
                .replace("{{user}}", _escape(session.user))
                .replace("{{role}}", session.role.name.lower())
                .replace("{{site}}", _escape(self.app.site.name))
                .replace("{{zone}}", _escape(self.app.site.timezone)))
        return web.Response(text=html, content_type="text/html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        folder = STATIC / "vendor" if request.path.startswith("/static/vendor/") else STATIC
        entry = folder / name
        if not entry.is_file():
            raise web.HTTPNotFound()
        kind = {"js": "text/javascript", "css": "text/css", "html": "text/html",
                "svg": "image/svg+xml"}.get(name.rsplit(".", 1)[-1], "text/plain")
        return web.Response(body=entry.read_bytes(), content_type=kind,
                            headers={"Cache-Control": "max-age=300"})

    # -- the API ------------------------------------------------------------------------------

    async def api_live(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(views.live(self.app, self.clock()))

    async def api_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the live view once a second until the client goes."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while True:
                body = json.dumps(views.live(self.app, self.clock()), allow_nan=False)
                await response.write(f"data: {body}\n\n".encode())
                await asyncio.sleep(1.0)
        return response

    async def api_devices(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(views.devices(self.app))

    async def api_dr(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await asyncio.to_thread(views.demand_response, self.app,
                                                         self.clock()))

    async def api_energy(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await asyncio.to_thread(views.energy, self.app,
                                                         self.clock()))

    async def api_plan(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(views.plan(self.app, self.clock()))

    async def api_events(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"entries": self.alarms.newest()})

    async def api_shed(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        outcome = await self.actions.shed(self._session(request).user,
                                          _field(body, "kw"), _field(body, "duration_s"))
        return self._outcome(request, "shed", outcome)

    async def api_cancel(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        command_id = body.get("command_id")
        if not isinstance(command_id, str):
            raise web.HTTPBadRequest(text="command_id: expected a string")
        outcome = await self.actions.release(self._session(request).user, command_id)
        return self._outcome(request, "cancel", outcome)

    async def api_sg_ready(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        device, state = body.get("device"), body.get("state")
        if not isinstance(device, str) or not isinstance(state, int):
            raise web.HTTPBadRequest(text="device: a string, state: an integer expected")
        outcome = await self.actions.sg_ready(self._session(request).user, device, state,
                                              _field(body, "duration_s"))
        return self._outcome(request, "sg_ready", outcome)

    async def api_ack(self, request: web.Request) -> web.StreamResponse:
        outcome = await self.actions.acknowledge(self._session(request).user,
                                                 int(request.match_info["id"]))
        return self._outcome(request, "ack_alarm", outcome)

    async def api_read(self, request: web.Request) -> web.StreamResponse:
        """Commissioning: read points of a device now, on a connection of its own."""
        from controller.tools import read_device

        body = await _json(request)
        device = self.app.site.devices.get(str(body.get("device")))
        if device is None:
            raise web.HTTPBadRequest(text="device: not in the site file")
        if device.line.kind is not LineKind.TCP:  # the gateway owns the port: no second user
            return web.json_response({"error": "on a serial line the gateway polls: its "
                                      "latest values are shown"}, status=409)
        points = body.get("points")
        if points is not None and (not isinstance(points, list) or
                                   not all(isinstance(p, str) for p in points)):
            raise web.HTTPBadRequest(text="points: a list of point names expected")
        try:
            async with asyncio.timeout(10):
                values = await read_device(device, points)
        except KeyError as exc:
            raise web.HTTPBadRequest(text=f"unknown point {exc}") from None
        except (TimeoutError, OSError) as exc:
            return web.json_response({"error": str(exc) or "timed out"}, status=504)
        return web.json_response({"device": device.name, "points": [
            {"point": v.point.name, "value": v.value if isinstance(v.value, str | None)
             else views._num(v.value, 6), "unit": v.point.unit, "error": v.error}
            for v in values]})

    async def api_scan(self, request: web.Request) -> web.StreamResponse:
        """Commissioning: which Modbus unit ids answer on a TCP host (admin)."""
        from controller.tools import parse_units, scan_line, scan_spec

        body = await _json(request)
        try:
            spec = scan_spec(host=str(body.get("host", "")), serial_port=None,
                             port=int(body.get("port", 502)), serial_server=False,
                             protocol="modbus", baud=None, parity=None, stop_bits=1)
            units = parse_units(str(body.get("units", "1-10")))
            async with asyncio.timeout(60):
                found = await scan_line(spec, "modbus", units)
        except (ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        except (TimeoutError, OSError) as exc:
            return web.json_response({"error": str(exc) or "timed out"}, status=504)
        return web.json_response({"found": [{"station": f.station, "models": f.models,
                                             "note": f.note} for f in found]})

    def _outcome(self, request: web.Request, action: str, outcome: Outcome
                 ) -> web.StreamResponse:
        user = self._session(request).user
        self.alarms.add(self.clock(), "action", "site",
                        f"{user}: {action} {outcome.status}"
                        + (f" ({outcome.reason})" if outcome.reason else ""))
        return web.json_response({"status": outcome.status, "reason": outcome.reason,
                                  "command_id": outcome.command_id},
                                 status=200 if outcome.ok else 422)

    # -- the service --------------------------------------------------------------------------

    async def watch(self) -> None:
        """Turn device state changes into alarms and note DR events' status changes,
        four times a second."""
        while True:
            now = self.clock()
            self.alarms.observe(self.app.gateway.health(), now)
            if self.app.control is not None:
                self.alarms.observe_events(self.app.control.book.events, now)
            await asyncio.sleep(0.25)


def _static_text(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _secure_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'")


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _field(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise web.HTTPBadRequest(text=f"{name}: expected a number")
    return float(value)


def tls_context(settings: ConsoleSettings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def url(settings: ConsoleSettings) -> str:
    scheme = "https" if settings.tls_cert_file else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{scheme}://{host}:{settings.port}/"


async def serve_console(app: App, settings: ConsoleSettings,
                        clock: Callable[[], float] = time.time) -> None:
    """Serve the console on ``settings.host:port`` until cancelled. Raises OSError when
    the address is taken."""
    console = Console(app, settings, clock)
    runner = web.AppRunner(console.web_app(), access_log=None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port,
                           ssl_context=tls_context(settings))
        await site.start()
        where = url(settings)
        if is_loopback(settings.host):
            log.info("web console on %s", where)
        else:
            log.warning("web console on %s, beyond this machine", where)
        await console.watch()
    finally:
        await runner.cleanup()
