"""The console's rules over real HTTP (aiohttp's test server on a loopback socket, or
the console's own server with TLS): passwords, sessions, cookies, CSRF, roles, login
rate limiting, reverse-proxy headers; and the ``[console]`` section's errors."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests_support import EXAMPLE, example_on_free_ports, free_port

from controller.app import App, assemble
from controller.config import check_site, uplink_settings
from controller.console.auth import (
    LoginLimiter,
    Role,
    Sessions,
    User,
    check_password,
    hash_password,
)
from controller.console.demo import demo_console
from controller.console.server import Console, serve_console
from controller.console.settings import ConsoleSettings, console_settings
from controller.console.views import energy_by_period
from controller.metering import metering_settings
from drivers.schema import ConfigError
from drivers.site import load_site

# -- pure parts ---------------------------------------------------------------------------


def test_password_hashes_verify_and_differ_per_salt() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # a fresh salt each time
    assert first.startswith("scrypt$14$8$1$")
    assert check_password("correct horse", first)
    assert check_password("correct horse", second)
    assert not check_password("correct hors", first)
    assert not check_password("correct horse", "md5$abc")
    assert not check_password("correct horse", "scrypt$99$8$1$AAAA$AAAA")


def test_sessions_end_after_their_idle_time() -> None:
    now = [0.0]
    sessions = Sessions(ttl_s=60.0, clock=lambda: now[0])
    token, session = sessions.start(User("op", Role.OPERATOR, ""))
    assert sessions.get(token) is session
    now[0] = 59.0
    assert sessions.get(token) is session  # used: its idle time starts again
    now[0] = 118.0
    assert sessions.get(token) is session
    now[0] = 179.0
    assert sessions.get(token) is None
    assert sessions.get("forged") is None


def test_the_limiter_blocks_an_address_and_a_name_for_a_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(attempts=3, window_s=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert not limiter.blocked("addr:a", "user:x")
        limiter.failed("addr:a", "user:x")
    assert limiter.blocked("addr:a", "user:y")  # the address
    assert limiter.blocked("addr:b", "user:x")  # the name, from anywhere
    assert not limiter.blocked("addr:b", "user:y")
    now[0] = 60.5
    assert not limiter.blocked("addr:a", "user:x")


def test_energy_by_period_prices_each_window_at_its_period() -> None:
    tariff = metering_settings(load_site(EXAMPLE)).tariff
    zone = ZoneInfo("Asia/Shanghai")
    day = dt.datetime(2026, 6, 22, tzinfo=zone)  # a Monday in summer
    windows = [((day + dt.timedelta(hours=h)).timestamp(), 100.0) for h in (3, 12, 19)]
    result = energy_by_period(windows, 900.0, tariff.calendar, zone)
    expected_cost = 0.0
    for start, kw in windows:
        local = dt.datetime.fromtimestamp(start, zone)
        expected_cost += kw * 0.25 * tariff.calendar.price_at(local)
        assert result["energy_kwh"][tariff.calendar.period_at(local).name] > 0
    assert result["total_kwh"] == pytest.approx(75.0)
    assert result["total_cny"] == pytest.approx(expected_cost, abs=0.01)
    assert result["peak_demand_kw"] == 100.0


# -- the [console] section ----------------------------------------------------------------


def site_with_console(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n" + section, encoding="utf-8")
    return path


def test_console_section_fills_its_settings(tmp_path: Path) -> None:
    digest = hash_password("operator-pass")
    path = site_with_console(tmp_path, f"""
[console]
port = 8443
behind_proxy = true
host = "0.0.0.0"
session_ttl_min = 30
[[console.users]]
name = "op"
role = "operator"
password_hash = "{digest}"
""")
    settings = console_settings(check_site(path))
    checked = subprocess.run([sys.executable, "-m", "controller.cli", "check", str(path)],
                             capture_output=True, text=True, timeout=60, check=True)
    assert ("pedf run listens on 0.0.0.0:8443 (beyond this machine): web console "
            "(1 user(s), no TLS)") in checked.stdout
    assert (settings.enabled, settings.port, settings.host) == (True, 8443, "0.0.0.0")
    assert settings.session_ttl_s == 1800.0
    assert settings.users == (User("op", Role.OPERATOR, digest),)
    assert console_settings(load_site(EXAMPLE)) == ConsoleSettings()  # no section: off


@pytest.mark.parametrize(("section", "message"), [
    ('[console]\nport = 8080\n', "console.users: expected at least one"),
    ('[console]\n[[console.users]]\nname = "a"\nrole = "boss"\npassword_hash = "HASH"\n',
     "console.users[0].role: expected one of \"admin\", \"operator\", \"viewer\""),
    ('[console]\n[[console.users]]\nname = "a"\nrole = "viewer"\npassword_hash = "secret"\n',
     "console.users[0].password_hash: expected a scrypt hash"),
    ('[console]\nhost = "0.0.0.0"\n[[console.users]]\nname = "a"\nrole = "viewer"\n'
     'password_hash = "HASH"\n', "console.host: expected a loopback address"),
    ('[console]\nport = 0\n', "console.port: expected an integer 1–65535"),
    ('[console]\nfavourite = 1\n', "console.favourite: expected one of the keys"),
])
def test_console_mistakes_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    path = site_with_console(tmp_path, section.replace("HASH", hash_password("x" * 8)))
    with pytest.raises(ConfigError) as caught:
        check_site(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_hash_password_command_prints_a_hash_the_console_accepts(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "controller.cli", "console", "hash-password"],
                          input="a long passphrase\n", capture_output=True, text=True,
                          timeout=60, check=True)
    assert check_password("a long passphrase", done.stdout.strip())
    short = subprocess.run([sys.executable, "-m", "controller.cli", "console",
                            "hash-password"], input="short\n", capture_output=True, text=True,
                           timeout=60)
    assert short.returncode == 1
    assert "at least 8" in short.stderr


# -- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    spec = load_site(example_on_free_ports(tmp_path))  # nothing serves it: devices down
    settings = dataclasses.replace(uplink_settings(spec), enabled=False,
                                   store_path=str(tmp_path / "state.sqlite"))
    async with assemble(spec, settings=settings) as assembled:
        yield assembled


async def client_for(app: App, **changes: object) -> TestClient[aiohttp.web.Request,
                                                                 aiohttp.web.Application]:
    settings = dataclasses.replace(demo_console(free_port()), **changes)  # type: ignore[arg-type]
    client = TestClient(TestServer(Console(app, settings).web_app()),
                        cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1
    await client.start_server()
    return client


async def log_in(client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
                 user: str, password: str, headers: dict[str, str] | None = None
                 ) -> aiohttp.ClientResponse:
    page = await client.get("/login", headers=headers)
    token = (await page.text()).split('name="login_token" value="')[1].split('"')[0]
    # The form's cookie goes back by hand: behind a TLS proxy it is Secure, which the
    # client's jar keeps for https only.
    return await client.post("/login", data={"username": user, "password": password,
                                             "login_token": token}, allow_redirects=False,
                             headers={**(headers or {}), "Cookie": f"pedf_login={token}"})


async def test_cookies_are_http_only_and_same_site_strict(app: App) -> None:
    client = await client_for(app)
    try:
        answer = await log_in(client, "operator", "operator-demo")
        assert answer.status == 302
        assert answer.headers["Location"] == "/live"
        cookie = next(c for c in answer.headers.getall("Set-Cookie")
                      if c.startswith("pedf_session="))
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback
        page = await client.get("/live")
        html = await page.text()
        assert page.status == 200
        assert 'name="pedf-role" content="operator"' in html
        assert page.headers["X-Frame-Options"] == "DENY"
    finally:
        await client.close()


async def test_login_is_rate_limited_even_with_the_right_password(app: App) -> None:
    client = await client_for(app, login_attempts=3)
    try:
        for _ in range(3):
            wrong = await log_in(client, "admin", "wrong-password")
            assert (wrong.status, wrong.headers["Location"]) == (302, "/login?failed=1")
        right = await log_in(client, "admin", "admin-demo")
        assert right.status == 429
        other = await log_in(client, "viewer", "viewer-demo")  # same address: blocked too
        assert other.status == 429
    finally:
        await client.close()


async def test_a_login_form_from_elsewhere_is_refused(app: App) -> None:
    client = await client_for(app)
    try:
        answer = await client.post("/login", data={"username": "admin",
                                                   "password": "admin-demo"},
                                   allow_redirects=False)
        assert answer.status == 403
    finally:
        await client.close()


async def test_behind_a_proxy_its_headers_name_the_client_and_the_scheme(app: App) -> None:
    client = await client_for(app, behind_proxy=True, login_attempts=2)
    try:
        secure = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        answer = await log_in(client, "viewer", "viewer-demo", headers=secure)
        cookie = next(c for c in answer.headers.getall("Set-Cookie")
                      if c.startswith("pedf_session="))
        assert "Secure" in cookie  # TLS ends at the proxy
        for _ in range(2):
            await log_in(client, "nobody", "x" * 8, headers=secure)
        assert (await log_in(client, "admin", "admin-demo", headers=secure)).status == 429
        elsewhere = {"X-Forwarded-For": "198.51.100.1"}
        assert (await log_in(client, "admin", "admin-demo", headers=elsewhere)).status == 302
    finally:
        await client.close()


async def test_every_action_checks_role_and_token(app: App) -> None:
    client = await client_for(app)
    try:
        await log_in(client, "operator", "operator-demo")
        html = await (await client.get("/live")).text()
        csrf = html.split('name="csrf-token" content="')[1].split('"')[0]
        scan = await client.post("/api/scan", json={"host": "127.0.0.1"},
                                 headers={"X-CSRF-Token": csrf})
        assert scan.status == 403  # admin only
        bad = await client.post("/api/shed", json={"kw": "lots"},
                                headers={"X-CSRF-Token": csrf})
        assert bad.status == 400
        too_much = await client.post("/api/shed", json={"kw": 1e5, "duration_s": 60},
                                     headers={"X-CSRF-Token": csrf})
        assert too_much.status == 422
        assert "sheddable" in (await too_much.json())["reason"]
        assert app.store is not None
        audit = app.store._db.execute(
            "SELECT source, result FROM audit WHERE command_type = 'shed'").fetchall()
        assert [tuple(row) for row in audit] == [("console:operator", "rejected")]
        assert (await client.get("/api/live")).status == 200
        await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
        assert (await client.get("/api/live")).status == 401
    finally:
        await client.close()


async def test_tls_when_configured(app: App, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = dataclasses.replace(demo_console(free_port()), tls_cert_file=str(cert),
                                   tls_key_file=str(key))
    service = asyncio.create_task(serve_console(app, settings))
    trust = ssl.create_default_context(cafile=str(cert))
    base = f"localhost:{settings.port}/login"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = asyncio.get_running_loop().time() + 10
            while True:  # until it listens
                try:
                    async with session.get(f"https://{base}", ssl=trust) as answer:
                        assert answer.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    assert asyncio.get_running_loop().time() < deadline, "no TLS console"
                    await asyncio.sleep(0.1)
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
                async with session.get(f"http://{base}") as plain:
                    await plain.read()
    finally:
        service.cancel()
        await asyncio.gather(service, return_exceptions=True)


def self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "console.crt", folder / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_the_energy_page_adds_up_the_stored_demand_windows(app: App) -> None:
    from controller.console.views import energy

    assert app.store is not None
    assert app.metering is not None
    zone = app.site.zone
    day = dt.datetime(2026, 6, 22, tzinfo=zone)
    rows = [((day + dt.timedelta(hours=h)).timestamp(), "grid_meter", 80.0) for h in (3, 12)]
    rows.append(((day - dt.timedelta(days=3)).timestamp(), "grid_meter", 40.0))  # June 19
    app.store.record_windows(rows)
    page = energy(app, (day + dt.timedelta(hours=13)).timestamp())
    grid = next(s for s in page["series"] if s["name"] == "grid_meter")
    assert grid["today"]["total_kwh"] == pytest.approx(2 * 80.0 * 0.25)
    assert grid["month"]["total_kwh"] == pytest.approx(2 * 80.0 * 0.25 + 40.0 * 0.25)
    assert grid["month"]["peak_demand_kw"] == 80.0
    assert (page["date"], page["month"]) == ("2026-06-22", "2026-06")
    assert page["categories"] == {"day": [], "month": [], "year": []}  # no window yet


async def test_the_energy_page_shows_the_code_tree_and_the_plans_figures(app: App) -> None:
    """The day's, month's and year's energy per 分类分项 code, as the store rolled them
    up, with names in both languages; the figures computed from the same periods."""
    from controller.console.views import energy
    from controller.kpi import period_start
    from controller.store import EnergyWindow

    assert app.store is not None
    assert app.metering is not None
    zone = app.site.zone
    day = dt.date(2026, 6, 22)
    starts = {level: period_start(level, day, zone) for level in ("day", "month", "year")}
    rollups = (("hour", starts["day"]), *starts.items())
    energy_kwh = {"01000": 90.0, "01A10": 30.0, "02000": 1.5, "site:consumption": 100.0,
                  "site:grid_import": 80.0, "site:grid_export": 0.0,
                  "site:pv_generation": 20.0}
    app.store.record_energy_window(EnergyWindow("900s", starts["day"], energy_kwh, rollups),
                                   {})
    earlier = period_start("day", dt.date(2026, 6, 1), zone)  # this month, not today
    app.store.record_energy_window(EnergyWindow(
        "900s", earlier, {"01000": 10.0, "site:consumption": 10.0},
        (("hour", earlier), ("day", earlier), ("month", starts["month"]),
         ("year", starts["year"]))), {})
    page = energy(app, starts["day"] + 13 * 3600)
    today = {c["code"]: c for c in page["categories"]["day"]}
    month = {c["code"]: c for c in page["categories"]["month"]}
    assert set(today) == {"01000", "01A10", "02000"}  # site:* totals are not codes
    assert (today["01000"]["value"], month["01000"]["value"]) == (90.0, 100.0)
    assert today["02000"]["unit"] in {"m³", "m3"}
    assert today["01A10"]["zh"]
    assert today["01A10"]["en"]
    area = app.metering.energy.settings.floor_area_m2
    kpis = page["kpis"]
    assert kpis["day"]["renewable_rate"] == pytest.approx(0.2)  # 20 of 100 kWh, as kgce
    assert kpis["month"]["pv_export_kwh"] == 0.0
    assert area  # the demo site's floor area
    assert kpis["month"]["eui_kwh_per_m2"] == pytest.approx(110.0 / area, abs=1e-4)  # 4 places
