"""The web console in a real headless browser: Debian's chromium driven through its
chromedriver by selenium, against the gateway polling the simulated Jinan building
(real Modbus and DL/T 645 over loopback and pseudo-terminals).

One gateway and one browser serve the whole module; each test logs in as the user it
needs. Waits are conditions with deadlines (selenium's WebDriverWait)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from tests_support import SIM_START, eventually_sync, example_on_free_ports, free_port

from controller.app import App, assemble
from controller.console.demo import demo_console
from drivers.site import load_site
from simulators.clock import ScaledClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

T = TypeVar("T")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 15.0
#: Simulated seconds per real second: a two-minute event ends within seconds.
SPEED = 10.0
#: Set to a folder to keep a screenshot of each page there (docs, reviews).
SHOTS = os.environ.get("PEDF_CONSOLE_SCREENSHOTS")


@dataclass
class Building:
    """The simulated building and its gateway, running on an event loop of their own."""

    app: App
    runner: SiteRunner
    url: str
    loop: asyncio.AbstractEventLoop

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the gateway's loop (the simulator is not thread-safe)."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(function())
            except Exception as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    def relays_on(self) -> int:
        """Relay channels switched on in the simulated relay modules (call it on the
        gateway's loop: :meth:`call`)."""
        on = 0
        for name, device in self.runner.devices.items():
            if self.app.site.devices[name].device_map.kind != "relay":
                continue
            values = device.point_values()
            on += sum(1 for capability, point in device.device_map.capabilities.items()
                      if capability.endswith("_on") and values.get(point))
        return on


@pytest.fixture(scope="module")
def building(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Building]:
    tmp_path = tmp_path_factory.mktemp("console")
    path = example_on_free_ports(tmp_path)
    with path.open("a", encoding="utf-8") as site_file:  # the plan page shows a plan
        site_file.write("\n[planner]\nenabled = true\n")
    spec = load_site(path)
    console = demo_console(free_port())
    started: Future[Building] = Future()
    stopping: Future[asyncio.Event] = Future()

    async def main() -> None:
        clock = ScaledClock(start=SIM_START, speed=SPEED)
        import dataclasses

        from controller.config import uplink_settings

        settings = dataclasses.replace(uplink_settings(spec), enabled=False,
                                       store_path=str(tmp_path / "state.sqlite"))
        async with SiteRunner(build_site(spec, start_s=SIM_START), clock) as runner, \
                assemble(spec, serial_ports=runner.serial_ports, settings=settings,
                         wall_clock=clock.now, console=console) as app:
            stop = asyncio.Event()
            stopping.set_result(stop)
            started.set_result(Building(app, runner, f"http://127.0.0.1:{console.port}",
                                        asyncio.get_running_loop()))
            await app.gateway.run(stop, app.services)

    def run() -> None:
        try:
            asyncio.run(main())
        except Exception as exc:  # start-up failed: the fixture says why
            if not started.done():
                started.set_exception(exc)
            raise

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    site = started.result(timeout=60)
    yield site
    stop = stopping.result()
    site.loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(browser: WebDriver, condition: Callable[[WebDriver], T], what: str) -> T:
    result: T = WebDriverWait(browser, WAIT_S, poll_frequency=0.1,
                              ignored_exceptions=(StaleElementReferenceException,)
                              ).until(condition, what)
    return result


def text_of(browser: WebDriver, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def login(browser: WebDriver, building: Building, user: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{building.url}/login")
    browser.execute_script("localStorage.setItem('pedf.lang', 'en')")
    browser.find_element(By.ID, "username").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(f"{user}-demo")
    browser.find_element(By.ID, "login-button").click()
    wait(browser, lambda b: b.current_url.endswith("/live"), f"{user} logged in")


def post(browser: WebDriver, path: str, body: dict[str, Any], *, csrf: bool) -> int:
    """POST ``body`` as JSON from the page, with or without the page's CSRF token; the
    HTTP status."""
    status = browser.execute_async_script(
        """const [path, body, csrf, done] = arguments;
        const headers = {"Content-Type": "application/json"};
        if (csrf) headers["X-CSRF-Token"] =
            document.querySelector('meta[name="csrf-token"]').content;
        fetch(path, {method: "POST", headers, body: JSON.stringify(body),
                     credentials: "same-origin"}).then(r => done(r.status));""",
        path, body, csrf)
    return int(status)


def shot(browser: WebDriver, name: str) -> None:
    if SHOTS:
        browser.save_screenshot(str(Path(SHOTS) / f"console-{name}.png"))


def test_login_is_required(browser: WebDriver, building: Building) -> None:
    browser.delete_all_cookies()
    for page in ("/live", "/devices", "/dr", "/events"):
        browser.get(building.url + page)
        assert browser.current_url == f"{building.url}/login"
        assert browser.find_element(By.ID, "login-form").is_displayed()
    api = browser.execute_async_script(
        "fetch('/api/live').then(r => arguments[0](r.status))")
    assert api == 401
    browser.find_element(By.ID, "username").send_keys("operator")
    browser.find_element(By.ID, "password").send_keys("not-the-password")
    browser.find_element(By.ID, "login-button").click()
    wait(browser, lambda b: "failed=1" in b.current_url, "the failed login noted")
    assert browser.find_element(By.ID, "login-failed").is_displayed()
    browser.get(building.url + "/live")
    assert browser.current_url == f"{building.url}/login"


def test_pages_render(browser: WebDriver, building: Building) -> None:
    login(browser, building, "admin")
    wait(browser, lambda b: text_of(b, "flow-grid") != "—", "the grid power shown")
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#health tbody tr"))
         == len(building.app.site.devices), "a health row per device")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#live-chart canvas"), "the chart")
    shot(browser, "live")
    browser.get(building.url + "/devices")
    boxes = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#device-list details"),
                 "the device list")
    assert {b.get_attribute("data-device") for b in boxes} == set(building.app.site.devices)
    assert browser.find_element(By.ID, "scan-form").is_displayed()  # an admin may scan
    browser.find_element(By.CSS_SELECTOR, "details[data-device='battery'] summary").click()
    battery_soc = browser.find_element(
        By.CSS_SELECTOR, "details[data-device='battery'] tr[data-point='battery.SoC']")
    assert "%" in battery_soc.text
    shot(browser, "devices")
    browser.get(building.url + "/dr")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#dr-groups h3"), "the DR groups")
    browser.get(building.url + "/energy")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#energy-today th"),
         "the energy table")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#energy-today th")]
    shot(browser, "energy")
    assert {"sharp", "peak", "flat", "valley", "deep_valley"} <= set(headers)
    browser.get(building.url + "/plan")
    segments = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".strip div"),
                    "the tariff strips")
    from controller.console.views import plan

    expected = building.call(lambda: plan(building.app, building.app.gateway.wall_clock()))
    wanted = [s for day in expected["days"] for s in day["segments"]]
    assert [s.get_attribute("class") for s in segments] == [f"tier-{s['tier']}" for s in wanted]
    # the optimiser's plan in force: its summary and charts, step for step as the planner has
    # it (the first solve comes once the grid meter has been read: waited for, then shown)
    from controller.console.views import schedule

    eventually_sync(lambda: building.call(lambda: schedule(building.app)) is not None,
                    timeout_s=60, what="the planner's first plan")
    browser.get(building.url + "/plan")
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#plan-chart canvas")) > 0,
         "the plan's chart")
    assert "steps" in text_of(browser, "plan-summary")
    assert browser.find_elements(By.CSS_SELECTOR, "#plan-soc-chart canvas")
    in_force = building.call(lambda: schedule(building.app))
    assert in_force is not None
    assert f"{len(in_force['steps'])} steps" in text_of(browser, "plan-summary")
    shot(browser, "plan")
    browser.find_element(By.CSS_SELECTOR, "header [data-lang='zh']").click()
    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "nav a[data-page='live']").text
         == "实时", "the Chinese navigation")
    titles = [s.get_attribute("title") for s in
              browser.find_elements(By.CSS_SELECTOR, ".strip div")]
    assert [str(t).split()[1] for t in titles] == [s["zh"] for s in wanted]  # "HH:MM 低谷 …"
    shot(browser, "plan-zh")
    browser.find_element(By.CSS_SELECTOR, "header [data-lang='en']").click()


def test_live_values_change_while_the_simulator_runs(browser: WebDriver,
                                                     building: Building) -> None:
    login(browser, building, "viewer")
    wait(browser, lambda b: text_of(b, "live-time") != "—", "a first live update")
    first_time = text_of(browser, "live-time")
    first = {i: text_of(browser, i) for i in ("flow-grid", "flow-pv", "flow-battery",
                                               "flow-heat-pump", "flow-dc-bus")}
    wait(browser, lambda b: text_of(b, "live-time") != first_time, "a later live update")
    wait(browser, lambda b: any(text_of(b, i) != v for i, v in first.items()),
         "a power flow that changed")


def test_a_viewer_cannot_act(browser: WebDriver, building: Building) -> None:
    login(browser, building, "viewer")
    assert browser.find_elements(By.ID, "shed-start") == []  # no operator controls
    assert browser.find_elements(By.ID, "sg-set") == []
    before = set(building.app.control.book.events) if building.app.control else set()
    assert post(browser, "/api/shed", {"kw": 5, "duration_s": 300}, csrf=True) == 403
    assert post(browser, "/api/sg-ready", {"device": "heat_pump", "state": 1,
                                           "duration_s": 300}, csrf=True) == 403
    assert building.app.control is not None
    assert set(building.app.control.book.events) == before


def test_a_forged_request_without_the_csrf_token_is_refused(browser: WebDriver,
                                                            building: Building) -> None:
    login(browser, building, "operator")
    assert building.app.control is not None
    before = set(building.app.control.book.events)
    assert post(browser, "/api/shed", {"kw": 5, "duration_s": 300}, csrf=False) == 403
    # A form another site could post (no custom header possible): refused as well.
    status = browser.execute_async_script(
        """const form = new URLSearchParams({kw: "5", duration_s: "300"});
        fetch("/api/shed", {method: "POST", body: form, credentials: "same-origin"})
          .then(r => arguments[0](r.status));""")
    assert status == 403
    assert set(building.app.control.book.events) == before


def test_an_operators_shed_reaches_the_devices(browser: WebDriver, building: Building) -> None:
    login(browser, building, "operator")
    battery = building.runner.site.model.batteries["battery"]
    on_before, discharge_before_w = building.call(
        lambda: (building.relays_on(), battery.power_w))
    assert on_before > 0
    shed_kw = browser.find_element(By.ID, "shed-kw")
    shed_kw.clear()
    shed_kw.send_keys("20")
    browser.find_element(By.ID, "shed-start").click()
    wait(browser, lambda b: "Accepted" in text_of(b, "notice"), "the shed accepted")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#live-events tbody tr"),
         "the event listed")
    deadline = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)

    def reached(_: WebDriver) -> bool:
        """The controller answers a shed with loads switched off or the battery
        discharging harder (it was discharging at its limit or not): the devices moved."""
        on, discharge_w = building.call(lambda: (building.relays_on(), battery.power_w))
        return on < on_before or discharge_w > discharge_before_w + 15_000
    deadline.until(reached, "relays switched off or the battery discharging 15 kW more")
    shot(browser, "live-shed")
    store = building.app.store
    assert store is not None
    rows = store._db.execute("SELECT source, result FROM audit WHERE command_type = 'shed'"
                             ).fetchall()
    assert ("console:operator", "accepted") in [tuple(r) for r in rows]
    stop = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#live-events button"),
                "a stop button")
    event_id = str(stop[0].get_attribute("id")).removeprefix("stop-")
    stop[0].click()
    control = building.app.control
    assert control is not None
    deadline.until(lambda _: all(e.status != "active" for e in building.call(
        lambda: list(control.book.events.values()))), "the shed stopped")
    browser.get(building.url + "/dr")
    wait(browser, lambda b: b.find_elements(
        By.CSS_SELECTOR, f"#dr-groups details[data-event='{event_id}']"), "the event listed")
    browser.get(building.url + "/events")

    def logged(b: WebDriver) -> bool:
        b.refresh()
        rows = b.find_element(By.ID, "event-log").text
        return f"{event_id}: reduction 20 cancelled" in rows
    WebDriverWait(browser, WAIT_S, poll_frequency=1.0).until(logged, "the event in the log")


def test_an_operator_sets_the_sg_ready_state(browser: WebDriver, building: Building) -> None:
    login(browser, building, "operator")
    heat_pump = building.runner.site.model.heat_pumps["heat_pump"]
    assert building.call(lambda: heat_pump.sg_ready_state) == 2
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#sg-device option"),
         "the heat pumps listed")
    browser.find_element(By.CSS_SELECTOR, "#sg-state option[value='1']").click()
    browser.find_element(By.ID, "sg-set").click()
    wait(browser, lambda b: "Accepted" in text_of(b, "notice"), "the SG-Ready command accepted")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda _: building.call(lambda: heat_pump.sg_ready_state) == 1,
        "the simulated heat pump blocked (SG-Ready 1)")
    wait(browser, lambda b: "1 blocked" in text_of(b, "flow-sg"), "SG-Ready 1 on the live page")
    events = building.call(lambda: [e for e in building.app.control.book.events.values()
                                    if e.kind == "sg_ready" and e.status == "active"]
                           if building.app.control else [])
    assert len(events) == 1
    status = post(browser, "/api/cancel", {"command_id": events[0].id}, csrf=True)
    assert status == 200
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda _: building.call(lambda: heat_pump.sg_ready_state) == 2, "handed back (2)")


def test_a_finished_event_shows_its_chart_and_settlement(browser: WebDriver,
                                                        building: Building) -> None:
    login(browser, building, "operator")
    answer = browser.execute_async_script(
        """fetch("/api/shed", {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json", "X-CSRF-Token":
                      document.querySelector('meta[name="csrf-token"]').content},
            body: JSON.stringify({kw: 10, duration_s: 120})})
          .then(r => r.json()).then(arguments[0]);""")
    assert answer["status"] == "accepted"
    event = f"#dr-groups details[data-event='{answer['command_id']}']"
    browser.get(building.url + "/dr")

    def settled(b: WebDriver) -> Any:
        b.refresh()
        return b.find_elements(By.CSS_SELECTOR, f"{event} .settlement")
    settlement = WebDriverWait(browser, 60, poll_frequency=1.0).until(
        settled, "the event's settlement estimate on the DR page")
    box = browser.find_element(By.CSS_SELECTOR, event)
    browser.execute_script("arguments[0].open = true", box)  # past events come folded
    assert "kW" in settlement[0].text
    assert "CNY" in settlement[0].text
    assert box.find_elements(By.CSS_SELECTOR, ".chart canvas")  # baseline/target/actual
    legend = box.text
    assert all(label in legend for label in ("Baseline", "Target", "Actual"))
    shot(browser, "dr")


def test_an_operator_acknowledges_an_alarm(browser: WebDriver, building: Building) -> None:
    building.call(lambda: setattr(building.runner.faults("pv_inverter"), "no_response", True))
    try:
        login(browser, building, "operator")
        browser.get(building.url + "/events")

        def alarm_button(b: WebDriver) -> Any:
            b.refresh()
            return b.find_elements(By.CSS_SELECTOR, "#event-log button")
        buttons = WebDriverWait(browser, 30, poll_frequency=1.0).until(
            alarm_button, "an alarm to acknowledge")
        shot(browser, "events")
        entry = str(buttons[0].get_attribute("id")).removeprefix("ack-")
        buttons[0].click()
        row = f"#event-log tr[data-entry='{entry}']"
        wait(browser, lambda b: "operator" in b.find_element(By.CSS_SELECTOR, row).text,
             "the alarm acknowledged by the operator")
        assert browser.find_elements(By.CSS_SELECTOR, f"{row} button") == []
    finally:
        building.call(lambda: building.runner.faults("pv_inverter").clear())
    store = building.app.store
    assert store is not None
    rows = store._db.execute("SELECT source FROM audit WHERE command_type = 'ack_alarm'"
                             ).fetchall()
    assert [tuple(r) for r in rows] == [("console:operator",)]


def test_an_operator_reads_a_device_on_demand(browser: WebDriver, building: Building) -> None:
    login(browser, building, "operator")
    browser.get(building.url + "/devices")
    button = wait(browser, lambda b: b.find_element(By.ID, "read-battery"), "read button")
    assert browser.find_elements(By.ID, "scan-form") == []  # scanning is for admins
    button.click()
    wait(browser, lambda b: text_of(b, "notice").startswith("battery:"), "the read's result")
    assert int(text_of(browser, "notice").split(":")[1]) > 10  # every readable point answered
    browser.find_element(By.ID, "read-grid_meter").click()  # polled on RS-485: not twice
    wait(browser, lambda b: "serial line" in text_of(b, "notice"), "the serial line refusal")


def test_logging_out_ends_the_session(browser: WebDriver, building: Building) -> None:
    login(browser, building, "viewer")
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    wait(browser, lambda b: b.current_url.endswith("/login"), "the login page")
    browser.get(building.url + "/live")
    assert browser.current_url == f"{building.url}/login"
