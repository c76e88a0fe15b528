"""DL/T 645-2007 interoperability with an independent implementation, the ``dlt645``
package (PyPI 3.2.0, repository 600888/dlt645), both ways over real sockets and
pseudo-terminals: its master (``MeterClientService`` with its ``TcpClient`` /
``RtuClient``) reads our simulated meter, and our gateway polls its meter
(``MeterServerService`` with its threaded ``TcpServer`` / ``RtuServer``).

The package is synchronous and threaded: its master runs in a worker thread
(``asyncio.to_thread``) while our simulator answers on the event loop; its meter runs in
its own threads while our gateway polls from the event loop.

Where it departs from the standard, the tests pin what happens (frame by frame the same
departures are pinned in ``tests/drivers/test_dlt645_crosscheck.py``):

* addresses: it holds and prints an address in wire order (A0 first) — its
  ``read_address()`` says ``010100002420`` for the meter labelled ``202400000101`` and its
  ``set_address()`` wants that order too;
* its meter answers a request for another address with an error reply ("other error")
  instead of staying silent, which would collide on a multi-drop bus;
* passwords go in printed order (02 12 34 56 for "02123456", where the standard sends
  02 56 34 12): only passwords whose three bytes read the same both ways agree;
* its master reads a maximum-demand time year first (the standard and both meters send
  minutes first);
* its broadcast time sync sends YYMMDDhhmmss where the standard has ssmmhhDDMMYY.

It also has no data-block identifiers (02-01-FF-00 …): it refuses them with "no requested
data", as a meter without blocks does, and the gateway reads the items one by one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from dlt645 import Demand, MeterClientService, MeterServerService  # type: ignore[import-untyped]
from tests_support import (
    DLT645_POINTS,
    METER_A,
    dlt645_site,
    free_port,
    polling,
    serial_line,
    simulated,
    tcp_line,
    with_writable_point,
)

from controller.tools import read_device
from drivers.dlt645_driver import DiRead, Dlt645Driver
from drivers.reading import Quality
from simulators.clock import ManualClock
from simulators.dlt645 import Dlt645Meter
from simulators.serialbus import VirtualSerialLine

#: METER_A's address as the package writes it: A0 first (the standard prints A5 first).
METER_A_WIRE_ORDER = "010100002420"


# ------------------------------------------------------------- their master, our meter


def their_master(transport: str, where: str) -> Any:
    """The package's master on our TCP endpoint or on the pty of our RS-485 bus.

    Its RtuClient applies every read's timeout by reconfiguring the whole port (pyserial),
    which a pty at 8E1 may refuse while our relay has not yet seen the request; a pty has
    no parity bit to disagree on, so it opens the bus 8N1."""
    if transport == "tcp":
        return MeterClientService.new_tcp_client("127.0.0.1", int(where), timeout=2.0)
    return MeterClientService.new_rtu_client(where, 2400, 8, 1, "N", 2.0)


def read_with(master: Any) -> dict[str, Any]:
    """What the package's master reads (blocking: run it in a thread)."""
    with master:
        address = master.read_address()  # 13H to AAAAAAAAAAAA; it then talks to that
        reads = {"address": None if address is None else address.value}
        for name, di, read in (
                ("address_item", 0x04000401, master.read_04),
                ("import_kwh", 0x00010000, master.read_00),
                ("export_kwh", 0x00020000, master.read_00),
                ("l1_v", 0x02010100, master.read_02), ("l2_v", 0x02010200, master.read_02),
                ("l3_v", 0x02010300, master.read_02), ("power_kw", 0x02030000, master.read_02),
                ("l1_a", 0x02020100, master.read_02),
                ("frequency_hz", 0x02800002, master.read_02),
                ("max_demand", 0x01010000, master.read_01)):
            item = read(di)
            reads[name] = None if item is None else item.value
        return reads


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_their_master_reads_our_meter(tmp_path: Path, transport: str) -> None:
    port = free_port()
    line = tcp_line(port) if transport == "tcp" else serial_line(f"{tmp_path}/rs485")
    spec = dlt645_site(line, {"meter_a": METER_A})
    async with simulated(spec) as runner:
        assert isinstance(runner.clock, ManualClock)
        runner.clock.advance(900.0)  # a 15-minute demand window closes: a maximum demand
        runner.refresh()
        where = str(port) if transport == "tcp" else runner.serial_ports[f"{tmp_path}/rs485"]
        reads = await asyncio.to_thread(read_with, their_master(transport, where))
    model = runner.site.model
    meter = model.meters["meter_a"]
    assert reads["address"] == METER_A_WIRE_ORDER  # its read-address value: A0 first
    assert reads["address_item"] == METER_A  # 04-00-04-01 (NNNNNNNNNNNN): as printed
    assert reads["import_kwh"] == pytest.approx(meter.counter.import_wh / 1000, abs=0.005)
    assert reads["export_kwh"] == pytest.approx(meter.counter.export_wh / 1000, abs=0.005)
    phases = meter.phases(model.t_s)
    for index, phase in enumerate(phases, start=1):
        assert reads[f"l{index}_v"] == pytest.approx(phase.voltage_v, abs=0.051)
    assert reads["l1_a"] == pytest.approx(phases[0].current_a, abs=0.00051)
    assert reads["power_kw"] == pytest.approx(meter.counter.power_w / 1000, abs=0.00005)
    assert reads["power_kw"] > 0.1
    assert reads["frequency_hz"] == pytest.approx(
        runner.site.bindings["meter_a"].values()["frequency_hz"], abs=0.0051)
    demand = reads["max_demand"]
    assert isinstance(demand, Demand)
    assert demand.value == pytest.approx(meter.max_demand_w / 1000, abs=0.00005)
    assert meter.max_demand_at_s is not None
    at = datetime.datetime.fromtimestamp(meter.max_demand_at_s, spec.zone)
    assert (at.hour, at.minute) == (11, 15)
    # Our meter sends 2026-06-22 11:15 minutes first (15 11 22 06 26); its master reads
    # those bytes year first.
    assert demand.time == datetime.datetime(2015, 11, 22, 6, 26)


async def test_their_broadcast_time_sync_does_not_set_our_meter() -> None:
    # 7.6 sends ssmmhhDDMMYY; the package sends 26 06 22 10 15 30 for 2026-06-22 10:15:30,
    # which reads as second 26, minute 6, hour 22, day 10, month 15: no date, so our meter
    # keeps its clock (the meter answers no broadcast either way).
    port = free_port()
    spec = dlt645_site(tcp_line(port), {"meter_a": METER_A})
    async with simulated(spec) as runner:
        meter = runner.devices["meter_a"]
        assert isinstance(meter, Dlt645Meter)
        before = meter.meter_time()
        master = their_master("tcp", str(port))

        def sync() -> bool:
            with master:
                sent: bool = master.broadcast_time_sync(datetime.datetime(2026, 6, 22, 10, 15, 30))
                master.read_address()  # answered after the broadcast: it has been handled
                return sent

        assert await asyncio.to_thread(sync)
        assert meter.meter_time() == before
        assert meter.clock_offset_s == 0.0


# ------------------------------------------------------------- their meter, our master

#: What their meter holds: its set_00/set_01/set_02 values (kWh, V, kW, Hz).
THEIR_VALUES = {
    0x00010000: 12345.67, 0x00020000: 234.56,
    0x02010100: 229.8, 0x02010200: 230.1, 0x02010300: 231.4,
    0x02030000: 12.3456, 0x02800002: 50.02,
}
THEIR_DEMAND = Demand(23.4567, datetime.datetime(2026, 6, 22, 10, 45))
#: The same values as the gateway reads them, in base units.
EXPECTED = {
    "import_energy": 12_345_670.0, "export_energy": 234_560.0,
    "l1_voltage": 229.8, "l2_voltage": 230.1, "l3_voltage": 231.4,
    "power": 12_345.6, "frequency": 50.02,
    "max_demand": 23_456.7, "max_demand_time": "2026-06-22T10:45",
    "meter_address": METER_A,
}


def their_meter(meter: Any, *, address: str = METER_A_WIRE_ORDER) -> Any:
    """The package's meter with :data:`THEIR_VALUES`, at ``address`` (its own order)."""
    assert meter.set_address(address)
    for di, value in THEIR_VALUES.items():
        assert (meter.set_00 if di >> 24 == 0 else meter.set_02)(di, value)
    assert meter.set_01(0x01010000, THEIR_DEMAND)
    assert meter.set_04(0x04000401, METER_A)  # 04-00-04-01 as printed
    return meter


@contextmanager
def running(meter: Any) -> Iterator[Any]:
    assert meter.start()
    try:
        yield meter
    finally:
        meter.stop()


@asynccontextmanager
async def their_meter_on(transport: str) -> AsyncIterator[str]:
    """Their meter on a TCP port, or on the far end of a virtual RS-485 bus (2400 8E1);
    yields the ``[[lines]]`` body that reaches it."""
    if transport == "tcp":
        port = free_port()
        with running(their_meter(MeterServerService.new_tcp_server("127.0.0.1", port, 1.0))):
            yield tcp_line(port)
        return
    async with VirtualSerialLine(baud=2400, bits_per_char=11) as bus:
        server = MeterServerService.new_rtu_server(bus.device_port, 8, 1, 2400, "E", 1.0)
        with running(their_meter(server)):
            yield serial_line(bus.gateway_port)


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_pedf_read_reads_their_meter(transport: str) -> None:
    async with their_meter_on(transport) as line:
        device = dlt645_site(line, {"meter_a": METER_A}, timeout_s=1.0).devices["meter_a"]
        values = await read_device(device, list(EXPECTED))
    assert {v.point.name: (v.value, v.error) for v in values} == {
        name: (pytest.approx(value) if isinstance(value, float) else value, "")
        for name, value in EXPECTED.items()}


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_the_gateway_polls_their_meter(transport: str) -> None:
    async with their_meter_on(transport) as line:
        spec = dlt645_site(line, {"meter_a": METER_A}, timeout_s=1.0)
        async with polling(spec) as polled:
            await polled.all_good({"meter_a": DLT645_POINTS})
            polls = polled.polls("meter_a")
            await polled.until(lambda: polled.polls("meter_a") >= polls + 3, "three polls more")
            driver = polled.gateway.scheduler_of("meter_a").device("meter_a").driver
    for name in DLT645_POINTS:
        reading = polled.latest("meter_a", name)
        assert reading is not None
        assert reading.value == pytest.approx(EXPECTED[name]), reading
    # Its meter has no block identifiers: the first read of 02-01-FF-00 was refused with
    # "no requested data", and from then on the voltages are read one by one.
    assert isinstance(driver, Dlt645Driver)
    voltages = ["l1_voltage", "l2_voltage", "l3_voltage"]
    assert driver.plan(voltages) == [DiRead(di, (di,)) for di in
                                     (0x02010100, 0x02010200, 0x02010300)]
    refused = [r for r in polled.readings if r.quality is not Quality.OK]
    assert not refused, refused[:3]  # the refusal cost no poll its values


async def test_their_meter_answers_requests_for_other_addresses() -> None:
    # Given its address in printed order, its meter sits at (standard) 010100002420; it
    # answers our request for 202400000101 anyway, with an error reply "other error" from
    # the address asked for (a meter must stay silent: on a bus, every meter would
    # answer). The gateway reports the refusal.
    port = free_port()
    server = MeterServerService.new_tcp_server("127.0.0.1", port, 1.0)
    with running(their_meter(server, address=METER_A)):
        device = dlt645_site(tcp_line(port), {"meter_a": METER_A}).devices["meter_a"]
        (value,) = await read_device(device, ["import_energy"])
    assert value.value is None
    assert value.error == ("address 202400000101 read DI 00-01-00-00: "
                           "meter refused function 11H: other error (ERR 01H)")


@pytest.mark.parametrize(("password", "accepted"), [("02000000", True), ("02123456", False)])
async def test_the_gateway_writes_their_meter(tmp_path: Path, password: str,
                                              accepted: bool) -> None:
    # The same password on both sides. "02000000" reads the same in either digit order;
    # "02123456" goes 02 56 34 12 from us (the standard's P0 first) and is stored 02 12 34
    # 56 by the package: its meter refuses it.
    port = free_port()
    server = their_meter(MeterServerService.new_tcp_server("127.0.0.1", port, 1.0))
    assert server.set_password(password)
    spec = dlt645_site(tcp_line(port), {"meter_a": METER_A}, timeout_s=1.0)
    spec = with_writable_point(spec, "meter_a", "time", tmp_path)
    device = dataclasses.replace(spec.devices["meter_a"], password=password)
    spec = dataclasses.replace(spec, devices={"meter_a": device})
    with running(server):
        async with polling(spec) as polled:
            await polled.all_good({"meter_a": ["power"]})
            result = await polled.gateway.write("meter_a", "time", "10:15:30")
    stored = server.get_data_item(0x04000102).value
    if accepted:
        assert result.ok, result  # written (14H) and read back (11H) by the gateway
        assert stored == "101530"
    else:
        assert not result.ok
        assert "meter refused function 14H: password error or unauthorised (ERR 04H)" in \
            result.error
        assert stored != "101530"
