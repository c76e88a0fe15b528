"""Small helpers shared by tests (import as ``tests_support``; fixtures live in
``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from controller.runtime import Gateway, with_serial_ports
from controller.scheduler import DeviceHealth
from drivers.maploader import load_map
from drivers.reading import Quality, Reading
from drivers.schema import Node
from drivers.site import SiteSpec, parse_site
from simulators.clock import ManualClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "jinan-office.toml"


# -- waiting on a condition ----------------------------------------------------------


class _Deadline:
    """When a wait for ``what`` must end; :meth:`met` fails the test past it."""

    def __init__(self, timeout_s: float, what: str | Callable[[], str]) -> None:
        self.timeout_s, self.what = timeout_s, what
        self.at = time.monotonic() + timeout_s

    def met(self, value: object) -> bool:
        if value:
            return True
        if time.monotonic() >= self.at:
            text = self.what() if callable(self.what) else self.what
            raise AssertionError(f"{text}: not within {self.timeout_s:g} s")
        return False


async def eventually(condition: Callable[[], T], *, timeout_s: float = 10.0,
                     what: str | Callable[[], str] = "the condition",
                     interval_s: float = 0.05) -> T:
    """Wait until ``condition()`` returns something truthy, and return it. The test fails
    (naming ``what``, which may be a function giving the state at that moment) when that
    takes longer than ``timeout_s``: a deadline, not a pace — on a loaded machine the
    wait only gets longer. The one way tests wait for something to happen."""
    deadline = _Deadline(timeout_s, what)
    while not deadline.met(value := condition()):  # noqa: ASYNC110 - polling is the job
        await asyncio.sleep(interval_s)
    return value


def eventually_sync(condition: Callable[[], T], *, timeout_s: float = 10.0,
                    what: str | Callable[[], str] = "the condition",
                    interval_s: float = 0.05) -> T:
    """:func:`eventually` for tests without an event loop (subprocesses)."""
    deadline = _Deadline(timeout_s, what)
    while not deadline.met(value := condition()):
        time.sleep(interval_s)
    return value


# -- ports and site files -------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different free ports (all held open while choosing, so no two are the
    same — ``free_port()`` called repeatedly can return one port twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def example_on_free_ports(tmp_path: Path, source: Path = EXAMPLE) -> Path:
    """The example site (or the site file ``source``) with every TCP port replaced by a
    distinct free one and its RS-485 lines linked inside ``tmp_path``."""
    text = source.read_text(encoding="utf-8")
    ports = sorted(set(re.findall(r"^port = (\d+)$", text, flags=re.M)))
    for old, new in zip(ports, distinct_free_ports(len(ports)), strict=True):
        text = re.sub(rf"^port = {old}$", f"port = {new}", text, flags=re.M)
    text = re.sub(r'serial_port = "/tmp/pedf-([\w.-]*rs485[\w.-]*)"',
                  lambda m: f'serial_port = "{tmp_path / m.group(1)}"', text)
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def with_uplink(path: Path, uplink: str) -> Path:
    """Replace the site file's whole ``[uplink]`` block (up to ``[simulation]``)."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index("[uplink]"), text.index("[simulation]")
    path.write_text(text[:start] + uplink.strip() + "\n\n" + text[end:], encoding="utf-8")
    return path


# -- simulated sites, a polling gateway, waiting on conditions ------------------------

#: 11:00 on a June Monday in Jinan: PV up, the office busy.
SIM_START = datetime.fromisoformat("2026-06-22T11:00:00+08:00").timestamp()


def site_from_text(text: str) -> SiteSpec:
    """A site from the text of a site file (validated like a file)."""
    return parse_site(Node("<test site>", "", tomllib.loads(text)))


@asynccontextmanager
async def simulated(spec: SiteSpec, *, serial_time_scale: float = 1.0
                    ) -> AsyncIterator[SiteRunner]:
    """``spec`` served by the simulators (serial lines at their real baud rate unless
    ``serial_time_scale`` < 1). The manual clock takes one 60 s physics step from
    :data:`SIM_START`, so powers are not zero, then stands still: every value stays put
    while a test reads it."""
    clock = ManualClock(SIM_START)
    async with SiteRunner(build_site(spec, start_s=SIM_START), clock,
                          serial_time_scale=serial_time_scale) as runner:
        clock.advance(60.0)
        runner.refresh()
        yield runner


@dataclass
class Polling:
    """A running gateway and every reading it published."""

    gateway: Gateway
    readings: list[Reading]

    def health(self, device: str) -> DeviceHealth:
        return self.gateway.health()[device]

    def latest(self, device: str, point: str) -> Reading | None:
        return self.gateway.bus.latest.get(device, point)

    def good(self, device: str, point: str) -> bool:
        """Whether the latest reading of the point is a good one."""
        reading = self.latest(device, point)
        return reading is not None and reading.quality is Quality.OK

    def polls(self, device: str) -> int:
        """Polls of the device that succeeded so far."""
        return self.health(device).polls_ok

    async def until(self, condition: Callable[[], bool], what: str, *,
                    timeout_s: float = 10.0) -> None:
        """:func:`eventually`, reporting the devices' health on failure."""
        try:
            await eventually(condition, timeout_s=timeout_s, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; health {self.gateway.health()}") from None

    async def all_good(self, points: Mapping[str, list[str]], *,
                       timeout_s: float = 10.0) -> None:
        """Wait until every device's listed points have a good latest reading."""
        await self.until(lambda: all(self.good(device, point) for device, names in
                                     points.items() for point in names),
                         f"good readings of {dict(points)}", timeout_s=timeout_s)


@asynccontextmanager
async def polling(spec: SiteSpec, serial_ports: Mapping[str, str] | None = None
                  ) -> AsyncIterator[Polling]:
    """A gateway polling ``spec`` (serial ports renamed to the simulator's pseudo-terminals
    by ``serial_ports``) until the block exits."""
    gateway = Gateway(with_serial_ports(spec, serial_ports or {}))
    readings: list[Reading] = []
    subscription = gateway.bus.subscribe("test", maxsize=100_000)

    async def collect() -> None:
        async for batch in subscription:
            readings.extend(batch)

    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        run = group.create_task(gateway.run(stop, [("collect", collect)]))
        try:
            yield Polling(gateway, readings)
        finally:
            stop.set()
            await run



MBPOLL = shutil.which("mbpoll")


async def mbpoll(*args: str) -> str:
    """Run mbpoll (the Debian package, an independent Modbus client) with ``args``; its
    output, stdout and stderr together."""
    assert MBPOLL is not None, "mbpoll is missing: run .ci/system-packages --check-or-install"
    process = await asyncio.create_subprocess_exec(
        MBPOLL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 20)
    return output.decode()


def polled_values(output: str) -> dict[int, float]:
    """mbpoll's ``[reference]: value`` lines (numbers, NaN included) by reference."""
    return {int(ref): float(value) for ref, value in
            re.findall(r"^\[(\d+)\]:\s+(\S+)", output, flags=re.M)}


def crc16(frame: bytes) -> bytes:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF), low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))


# -- a real mosquitto -----------------------------------------------------------------


def _write_cert_chain(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def save_key(name: str, private: ec.EllipticCurvePrivateKey) -> Path:
        path = folder / name
        path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return path

    def save_cert(name: str, cert: x509.Certificate) -> Path:
        path = folder / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pedf test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def issue(common_name: str, private: ec.EllipticCurvePrivateKey,
              san: list[x509.GeneralName] | None) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                               common_name)]))
                   .issuer_name(ca_name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2)))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    import ipaddress

    server_key, client_key = key(), key()
    server = issue("127.0.0.1", server_key, [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                             x509.DNSName("localhost")])
    client = issue("gateway", client_key, None)
    return {
        "ca": save_cert("ca.pem", ca), "server_cert": save_cert("server.pem", server),
        "server_key": save_key("server.key", server_key),
        "client_cert": save_cert("client.pem", client),
        "client_key": save_key("client.key", client_key),
    }


class Mosquitto:
    """A mosquitto of the test's own, on free ports: a plain listener and optionally a
    TLS listener (certificates generated here), users with passwords and an ACL, and
    persistence so stop/start keeps queued messages like a real broker restart."""

    def __init__(self, folder: Path, *, tls: bool = False, port: int | None = None,
                 users: dict[str, str] | None = None, acl: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        assert Path(self.binary).exists(), (
            "mosquitto is missing: .ci/system-packages --check-or-install")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.certs = _write_cert_chain(folder) if tls else {}
        self.process: object | None = None
        import getpass

        # As root, mosquitto would switch to its own user and lose access to the test's
        # private temp folder: stay who we are.
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1",
                 "persistence true",
                 f"persistence_location {folder}/", "autosave_interval 1",
                 "max_queued_messages 100000", "set_tcp_nodelay true", "log_dest stderr",
                 "log_type error"]
        if users:
            passwords = folder / "passwords"
            passwords.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            import subprocess

            subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True,
                           capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            (folder / "acl").write_text(acl)
            lines.append(f"acl_file {folder / 'acl'}")
        lines += extra  # more settings, e.g. max_packet_size
        if tls:
            lines += [f"listener {self.tls_port} 127.0.0.1",
                      f"cafile {self.certs['ca']}", f"certfile {self.certs['server_cert']}",
                      f"keyfile {self.certs['server_key']}"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> Mosquitto:
        import contextlib
        import subprocess

        process = subprocess.Popen([self.binary, "-c", str(self.config)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.process = process

        def listening() -> bool:
            if process.poll() is not None:
                _, errors = process.communicate()
                raise AssertionError(f"mosquitto did not start: {errors.decode()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), 0.2):
                return True
            return False

        try:
            eventually_sync(listening, timeout_s=10, what="mosquitto listening")
        except AssertionError:
            process.kill()
            raise
        return self

    def stop(self) -> None:
        import subprocess

        process = self.process
        if isinstance(process, subprocess.Popen):
            process.terminate()  # SIGTERM: mosquitto saves its persistence file
            process.wait(10)
        self.process = None


# -- DL/T 645 meters on one line -------------------------------------------------------

METER_A = "202400000101"
METER_B = "202400000102"

#: What the DL/T 645 tests poll (a voltage block, single items), in short cycles.
DLT645_GROUPS = {
    "realtime": (1.0, ("power", "l1_voltage", "l2_voltage", "l3_voltage")),
    "energy": (2.0, ("import_energy", "export_energy")),
    "identity": (3600.0, ("meter_address",)),
}
DLT645_POINTS = [p for _, points in DLT645_GROUPS.values() for p in points]


def serial_line(port: str, *, baud: int = 2400, parity: str = "E") -> str:
    """A ``[[lines]]`` body: an RS-485 port of the gateway."""
    return f'transport = "serial"\nserial_port = "{port}"\nbaud = {baud}\nparity = "{parity}"'


def serial_server_line(port: int, *, baud: int = 2400, parity: str = "E") -> str:
    """A ``[[lines]]`` body: a serial device server in transparent mode."""
    return (f'transport = "serial_server"\nhost = "127.0.0.1"\nport = {port}\n'
            f'baud = {baud}\nparity = "{parity}"')


def tcp_line(port: int) -> str:
    """A ``[[lines]]`` body: a native TCP endpoint."""
    return f'transport = "tcp"\nhost = "127.0.0.1"\nport = {port}'


def dlt645_site(line: str, meters: Mapping[str, str], *, devices: str = "",
                timeout_s: float = 0.5, model: str = "dlt645-3phase",
                ct_ratio: float = 1.0) -> SiteSpec:
    """DL/T 645 meters (name → address) on the line ``bus`` (``line`` is its body), each
    measuring a load of its own with its own counter readings (through current
    transformers of ``ct_ratio``), polled in :data:`DLT645_GROUPS`; ``devices`` adds more
    ``[[devices]]`` tables. Failing devices are retried after at most 2 s."""
    parts = ['[site]\nid = "dlt645-test"\n', f'[[lines]]\nname = "bus"\n{line}\n']
    for index, (name, address) in enumerate(meters.items()):
        parts.append(f'[[loads]]\nname = "load_{name}"\nrated_w = {4000 + 3000 * index}.0\n'
                     'simulation = { profile = "plugs" }\n')
        parts.append(
            f'[[devices]]\nname = "{name}"\nmodel = "{model}"\nline = "bus"\n'
            f'address = "{address}"\ntimeout_s = {timeout_s}\nbackoff_max_s = 2.0\n'
            f'simulation = {{ measures = ["load_{name}"], import_wh = {86000 + 5000 * index}.0,'
            f' export_wh = {120 + 40 * index}.0, ct_ratio = {ct_ratio} }}\n')
        for group, (interval, points) in DLT645_GROUPS.items():
            listed = ", ".join(f'"{p}"' for p in points)
            parts.append(f"[devices.groups.{group}]\ninterval_s = {interval}\n"
                         f"points = [{listed}]\n")
    parts.append(devices)
    return site_from_text("\n".join(parts))


def with_writable_point(spec: SiteSpec, device: str, point: str, folder: Path, *,
                        limits: tuple[float, float] | None = None) -> SiteSpec:
    """``spec`` with ``device`` on a copy of its map in which ``point`` is writable
    (within ``limits``). A site file names shipped models only and no shipped DL/T 645
    map has a writable item, so the copy is a map file of the test's own in ``folder``."""
    original = spec.devices[device]
    model = f"{original.model}-rw"
    text = Path(original.device_map.source).read_text(encoding="utf-8")
    text = text.replace(f'model = "{original.model}"', f'model = "{model}"')
    extra = 'access = "rw"\n' + ("" if limits is None else
                                  f"min = {limits[0]}\nmax = {limits[1]}\n")
    text = text.replace(f'name = "{point}"\n', f'name = "{point}"\n{extra}')
    path = folder / f"{model}.toml"
    path.write_text(text, encoding="utf-8")
    device_map = load_map(path)
    assert device_map.points[point].access.writable
    devices = dict(spec.devices)
    devices[device] = dataclasses.replace(original, model=model, device_map=device_map)
    return dataclasses.replace(spec, devices=devices)

