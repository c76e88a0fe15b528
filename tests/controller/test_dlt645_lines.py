"""The gateway polls simulated DL/T 645-2007 meters end to end: real frames over
pseudo-terminals (a virtual RS-485 bus at the meters' 2400 8E1), a serial device server
and native TCP; faults, follow-up frames, verified writes and ``pedf scan``."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from test_pedf_cli import ENV, PEDF
from tests_support import (
    DLT645_POINTS,
    METER_A,
    METER_B,
    Polling,
    dlt645_site,
    free_port,
    polling,
    serial_line,
    serial_server_line,
    simulated,
    tcp_line,
    with_writable_point,
)

from controller.lines import SerialLine, TcpLine
from controller.runtime import with_serial_ports
from controller.tools import read_device
from drivers import dlt645
from drivers.dlt645 import read_reply
from drivers.dlt645_driver import DiRead, Dlt645Driver
from drivers.reading import Quality
from simulators.dlt645 import Dlt645Meter
from simulators.runner import SiteRunner

METERS = {"meter_a": METER_A, "meter_b": METER_B}


def check_physics(polled: Polling, runner: SiteRunner, names: list[str]) -> None:
    """The latest readings of each meter are what its physics holds, in base units."""
    model = runner.site.model
    for name in names:
        meter = model.meters[name]
        expected = {"import_energy": (meter.counter.import_wh, 5.0, "Wh"),  # 0.01 kWh
                    "export_energy": (meter.counter.export_wh, 5.0, "Wh"),
                    "power": (meter.counter.power_w, 0.051, "W")}  # 0.0001 kW
        for phase, values in enumerate(meter.phases(model.t_s), start=1):
            expected[f"l{phase}_voltage"] = (values.voltage_v, 0.051, "V")  # 0.1 V
        for point, (value, resolution, unit) in expected.items():
            reading = polled.latest(name, point)
            assert reading is not None, (name, point)
            assert reading.quality is Quality.OK, reading
            assert reading.unit == unit, reading
            assert reading.value == pytest.approx(value, abs=resolution), reading
    powers = [model.meters[name].counter.power_w for name in names]
    assert len({round(p) for p in powers}) == len(powers)  # the meters answer differently
    assert all(p > 100 for p in powers)


async def test_two_meters_on_a_2400_8e1_bus(tmp_path: Path) -> None:
    spec = dlt645_site(serial_line(f"{tmp_path}/rs485"), METERS)
    async with simulated(spec) as runner, polling(spec, runner.serial_ports) as polled:
        await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
        check_physics(polled, runner, list(METERS))
        scheduler = polled.gateway.scheduler_of("meter_a")
        assert scheduler is polled.gateway.scheduler_of("meter_b")  # one bus, one scheduler
        line = scheduler.line
        assert isinstance(line, SerialLine)
        assert str(line.spec.serial) == "2400-8E1"
        driver = scheduler.device("meter_a").driver
        assert isinstance(driver, Dlt645Driver)
        voltages = [0x02010100, 0x02010200, 0x02010300]
        assert driver.plan(["l1_voltage", "l2_voltage", "l3_voltage"]) == [
            DiRead(0x0201FF00, tuple(voltages))]  # one block read, not three
        assert line.stats.bad_frames == line.stats.timeouts == 0
        address = polled.latest("meter_b", "meter_address")
        assert address is not None
        assert address.value == METER_B


@pytest.mark.parametrize("transport", ["serial_server", "tcp"])
async def test_meters_behind_a_serial_server_and_over_tcp(transport: str) -> None:
    port = free_port()
    line = serial_server_line(port) if transport == "serial_server" else tcp_line(port)
    spec = dlt645_site(line, METERS)
    async with simulated(spec) as runner, polling(spec) as polled:
        await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
        check_physics(polled, runner, list(METERS))
        tcp = polled.gateway.scheduler_of("meter_a").line
        assert isinstance(tcp, TcpLine)
        assert (tcp.spec.serial is not None) == (transport == "serial_server")
        assert tcp.stats.connects == 1


MODBUS_METERS = '''
[[devices]]
name = "grid_meter"
model = "dtsu666"
line = "bus"
unit = 1
timeout_s = 0.5
[devices.groups.energy]
interval_s = 1.0
points = ["import_energy", "export_energy"]

[[devices]]
name = "feeder_meter"
model = "sdm630"
line = "bus"
unit = 2
timeout_s = 0.5
simulation = { measures = ["load_meter_b"] }
'''


async def test_modbus_rtu_and_dlt645_share_one_bus(tmp_path: Path) -> None:
    # One RS-485 line at 9600 8E1 carries two Modbus RTU meters and two DL/T 645 meters;
    # on the simulated bus each protocol's server has its own drop and hears every frame.
    spec = dlt645_site(serial_line(f"{tmp_path}/rs485", baud=9600), METERS,
                       devices=MODBUS_METERS)
    assert str(spec.lines["bus"].serial) == "9600-8E1"
    modbus_points = ["total_power", "l1_voltage", "import_energy"]
    async with simulated(spec) as runner, polling(spec, runner.serial_ports) as polled:
        await polled.all_good({**dict.fromkeys(METERS, DLT645_POINTS),
                               "grid_meter": modbus_points, "feeder_meter": ["total_power"]})
        check_physics(polled, runner, list(METERS))
        model = runner.site.model
        for name in ("grid_meter", "feeder_meter"):
            reading = polled.latest(name, "total_power")
            assert reading is not None
            assert reading.value == pytest.approx(model.meters[name].counter.power_w, rel=1e-4)
        grid = polled.latest("grid_meter", "import_energy")
        assert grid is not None
        assert grid.value == pytest.approx(model.meters["grid_meter"].counter.import_wh,
                                           abs=10.0)
        assert len(polled.gateway.lines) == 1  # one scheduler serialises both protocols
        before = {name: polled.polls(name) for name in spec.devices}
        await polled.until(lambda: all(polled.polls(n) >= before[n] + 3 for n in before),
                           "three more polls of every device")
        line = polled.gateway.lines["bus"].line
        assert line.stats.bad_frames == line.stats.timeouts == 0
        assert all(h.state == "ok" for h in polled.gateway.health().values())


def failures(polled: Polling, device: str, quality: Quality) -> list[float]:
    """When the device's polls failed with ``quality`` (one time per published batch)."""
    return sorted({r.timestamp for r in polled.readings
                   if r.device == device and r.quality is quality})


def check_only_good(polled: Polling, device: str, since: int) -> None:
    """Every reading of ``device`` published after the first ``since`` is a good one."""
    bad = [r for r in polled.readings[since:] if r.device == device
           and r.quality is not Quality.OK]
    assert not bad, bad[:3]


async def test_a_silent_meter_goes_stale_and_backs_off(tmp_path: Path) -> None:
    spec = dlt645_site(serial_line(f"{tmp_path}/rs485"), METERS)
    async with simulated(spec) as runner, polling(spec, runner.serial_ports) as polled:
        await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
        since, polls_b = len(polled.readings), polled.polls("meter_b")
        runner.faults("meter_a").no_response = True
        await polled.until(lambda: len(failures(polled, "meter_a", Quality.STALE)) >= 3,
                           "three failed polls of the silent meter")
        health = polled.health("meter_a")
        assert health.state == "stale"
        assert "no answer in 0.5 s" in health.last_error
        stale = [r for r in polled.readings[since:] if r.device == "meter_a"]
        assert stale
        assert all(r.quality is Quality.STALE and r.value is None for r in stale)
        first, second, third = failures(polled, "meter_a", Quality.STALE)[:3]
        assert second - first >= 1.0  # backed off 1 s,
        assert third - second >= 2.0  # then 2 s (its ceiling), not its 1 s poll interval
        assert polled.polls("meter_b") >= polls_b + 3  # the other meter kept its polls
        check_only_good(polled, "meter_b", since)
        runner.faults("meter_a").no_response = False
        await polled.until(lambda: polled.health("meter_a").state == "ok",
                           "the meter answering again")  # within one backoff (2 s)
        await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
        check_physics(polled, runner, list(METERS))


@pytest.mark.parametrize(("fault", "reason"), [
    ("exception", "meter refused function 11H: no requested data (ERR 02H)"),
    ("corrupt", "checksum"),
])
async def test_error_replies_and_corrupt_frames_are_errors(tmp_path: Path, fault: str,
                                                           reason: str) -> None:
    spec = dlt645_site(serial_line(f"{tmp_path}/rs485"), METERS)
    async with simulated(spec) as runner, polling(spec, runner.serial_ports) as polled:
        await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
        since = len(polled.readings)
        faults = runner.faults("meter_a")
        if fault == "exception":
            faults.exception = 2  # every request answered with error word 02H
        else:
            faults.corrupt = True  # every reply with a wrong checksum
        await polled.until(lambda: polled.health("meter_a").state == "error",
                           f"meter_a in error after {fault}")
        assert reason in polled.health("meter_a").last_error
        errors = [r for r in polled.readings[since:] if r.device == "meter_a"]
        assert errors
        assert all(r.quality is Quality.ERROR and r.value is None for r in errors)
        check_only_good(polled, "meter_b", since)
        faults.clear()
        await polled.until(lambda: polled.health("meter_a").state == "ok", "recovery")
        await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
        check_physics(polled, runner, list(METERS))


@pytest.mark.parametrize("transport", ["serial", "tcp"])
async def test_late_answers_are_never_taken_for_the_next_request(tmp_path: Path,
                                                                 transport: str) -> None:
    # Meter A answers 0.7 s after each request; the gateway waits 0.5 s. DL/T 645 frames
    # carry no transaction id: a late answer must not reach the next exchange, neither on
    # the bus (where the guard silence after a timeout swallows it) nor on one TCP
    # connection to a converter serving both meters (closed after the timeout).
    line = serial_line(f"{tmp_path}/rs485") if transport == "serial" else tcp_line(free_port())
    spec = dlt645_site(line, METERS)
    async with simulated(spec) as runner, polling(spec, runner.serial_ports) as polled:
        await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
        since, polls_b = len(polled.readings), polled.polls("meter_b")
        runner.faults("meter_a").latency_s = 0.7
        await polled.until(lambda: len(failures(polled, "meter_a", Quality.STALE)) >= 2
                           and polled.polls("meter_b") >= polls_b + 4,
                           "two late answers of meter_a and four polls of meter_b")
        check_only_good(polled, "meter_b", since)
        assert not failures(polled, "meter_a", Quality.ERROR)
        stats = polled.gateway.scheduler_of("meter_a").line.stats
        assert stats.bad_frames == 0
        if transport == "serial":
            assert stats.discarded_bytes > 0  # the late answers were heard and dropped
        else:
            assert stats.disconnects >= 2  # closed after each timeout: nowhere to land
        runner.faults("meter_a").latency_s = 0.0
        await polled.until(lambda: polled.health("meter_a").state == "ok", "recovery")
        await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
        check_physics(polled, runner, list(METERS))
        check_only_good(polled, "meter_b", since)


async def test_follow_up_frames_carry_what_one_reply_cannot(tmp_path: Path) -> None:
    # Meter A sends at most 2 data bytes per frame: a 4-byte energy takes a reply B1H and
    # one follow-up (12H → 92H), the 6-byte voltage block B1H, B2H (SEQ 1), 92H (SEQ 2);
    # l3_voltage is only in the last frame.
    spec = dlt645_site(serial_line(f"{tmp_path}/rs485"), METERS)
    async with simulated(spec) as runner:
        meter = runner.devices["meter_a"]
        assert isinstance(meter, Dlt645Meter)
        meter.max_reply_bytes = 2
        async with polling(spec, runner.serial_ports) as polled:
            await polled.all_good(dict.fromkeys(METERS, DLT645_POINTS))
            check_physics(polled, runner, list(METERS))
            stats = polled.gateway.lines["bus"].line.stats
            assert stats.bad_frames == stats.timeouts == 0


async def test_verified_writes_need_the_meter_password(tmp_path: Path) -> None:
    spec = with_writable_point(
        dlt645_site(serial_line(f"{tmp_path}/rs485"), {"meter_a": METER_A}), "meter_a",
        "ct_ratio", tmp_path, limits=(1, 9999))
    async with simulated(spec) as runner, polling(spec, runner.serial_ports) as polled:
        await polled.all_good({"meter_a": DLT645_POINTS})
        meter = runner.devices["meter_a"]
        assert isinstance(meter, Dlt645Meter)
        assert meter.point_values()["ct_ratio"] == 1
        written = await polled.gateway.write("meter_a", "ct_ratio", 50)  # 14H, then read back
        assert written.ok, written
        assert meter.point_values()["ct_ratio"] == 50
        out_of_range = await polled.gateway.write("meter_a", "ct_ratio", 0)
        assert not out_of_range.ok
        assert "outside 1–9999" in out_of_range.error
        meter.password = "02123456"  # the meter's password is not the one the site gives
        refused = await polled.gateway.write("meter_a", "ct_ratio", 75)
        assert not refused.ok
        assert "meter refused function 14H: password error or unauthorised (ERR 04H)" in \
            refused.error
        assert meter.point_values()["ct_ratio"] == 50
        health = polled.health("meter_a")
        assert (health.writes_ok, health.writes_failed) == (1, 2)
        assert health.state == "ok"  # a refused write is the write's failure, not the poll's


async def test_pedf_read_reports_a_silent_meter_point_by_point() -> None:
    spec = dlt645_site(tcp_line(free_port()), METERS)
    async with simulated(spec) as runner:
        values = await read_device(spec.devices["meter_b"], DLT645_POINTS)
        assert [v.point.name for v in values] == DLT645_POINTS
        assert not [v for v in values if v.error]
        by_name = {v.point.name: v.value for v in values}
        meter = runner.site.model.meters["meter_b"]
        assert by_name["import_energy"] == pytest.approx(meter.counter.import_wh, abs=5.0)
        assert by_name["meter_address"] == METER_B
        runner.faults("meter_a").no_response = True
        async with asyncio.timeout(10):  # four reads of 0.5 s each, then it returns
            values = await read_device(spec.devices["meter_a"], DLT645_POINTS)
        assert all(v.value is None and "no answer in 0.5 s" in v.error for v in values)


async def test_pedf_read_opens_the_simulated_bus_again_and_again(tmp_path: Path) -> None:
    # Each pedf read opens the port at 2400 8E1 and closes it; the simulated bus must take
    # that more than once (a pty drops the parity bit, and Linux refused a second 8E1
    # configuration of it with EINVAL).
    spec = dlt645_site(serial_line(f"{tmp_path}/rs485"), {"meter_a": METER_A})
    async with simulated(spec) as runner:
        device = with_serial_ports(spec, runner.serial_ports).devices["meter_a"]
        for _ in range(3):
            (value,) = await read_device(device, ["meter_address"])
            assert (value.value, value.error) == (METER_A, "")


async def test_pedf_read_reports_a_value_that_does_not_decode() -> None:
    # A DL/T 645 endpoint that answers 00-01-00-00 with bytes that are not BCD.
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        receiver = dlt645.FrameReceiver()
        while data := await reader.read(4096):
            receiver.feed(data)
            while (frame := receiver.next_frame()) is not None:
                di, _ = dlt645.parse_read(frame)
                value = bytes.fromhex("ab cd ef 12") if di == 0x00010000 else \
                    dlt645.encode_value(dlt645.FORMATS["energy"], 12.5)
                writer.write(dlt645.encode_frame(read_reply(frame.address, di, value)))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        device = dlt645_site(tcp_line(port), {"meter_a": METER_A}).devices["meter_a"]
        async with asyncio.timeout(10):
            values = await read_device(device, ["import_energy", "export_energy"])
    assert [(v.point.name, v.value) for v in values] == [("import_energy", None),
                                                         ("export_energy", 12_500.0)]
    assert values[0].error == "byte EFH is not BCD"


async def pedf_scan(port: str, *args: str) -> tuple[int, str]:
    """``pedf scan --serial port --protocol dlt645 ARGS`` in another process: exit code and
    standard output (the table)."""
    process = await asyncio.create_subprocess_exec(
        *PEDF, "scan", "--serial", port, "--protocol", "dlt645", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV)
    async with asyncio.timeout(60):
        output, errors = await process.communicate()
    assert b"Traceback" not in errors, errors.decode()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize(("meters", "args", "found"), [
    ({"meter_a": METER_A}, (), [METER_A]),  # point to point: read address (13H)
    (METERS, (), []),  # multi-drop: the read-address answers collide
    (METERS, ("--addresses", f"{METER_A},{METER_B},202400000199"), [METER_A, METER_B]),
])
async def test_pedf_scan_finds_meter_addresses(tmp_path: Path, meters: dict[str, str],
                                               args: tuple[str, ...], found: list[str]) -> None:
    spec = dlt645_site(serial_line(f"{tmp_path}/rs485"), meters)
    async with simulated(spec) as runner:
        code, output = await pedf_scan(runner.serial_ports[f"{tmp_path}/rs485"], *args)
    assert code == (0 if found else 1), output
    assert f"?2400-8E1: {len(found)} device(s) answering" in " ".join(output.split())
    assert re.findall(r"address (\d{12})", output) == found  # never a wrong address
