"""Small helpers shared by tests (import as ``tests_support``; fixtures live in
``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "jinan-office.toml"


async def wait_until(condition: Callable[[], object], *, timeout_s: float = 10.0,
                     poll_s: float = 0.01, what: str = "") -> None:
    """Wait until ``condition()`` is true, checking every ``poll_s``; fail the test after
    ``timeout_s`` naming ``what`` (a deadline, never a fixed sleep before an assert)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what or condition}")
        await asyncio.sleep(poll_s)


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


def example_on_free_ports(tmp_path: Path) -> Path:
    """The example site with every TCP port replaced by a distinct free one and its RS-485
    lines linked inside ``tmp_path``."""
    text = EXAMPLE.read_text(encoding="utf-8")
    ports = sorted(set(re.findall(r"^port = (\d+)$", text, flags=re.M)))
    for old, new in zip(ports, distinct_free_ports(len(ports)), strict=True):
        text = re.sub(rf"^port = {old}$", f"port = {new}", text, flags=re.M)
    text = re.sub(r'serial_port = "/tmp/pedf-(rs485-\d+)"',
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
                 users: dict[str, str] | None = None, acl: str | None = None) -> None:
        import shutil

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
        if tls:
            lines += [f"listener {self.tls_port} 127.0.0.1",
                      f"cafile {self.certs['ca']}", f"certfile {self.certs['server_cert']}",
                      f"keyfile {self.certs['server_key']}"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> Mosquitto:
        import contextlib
        import subprocess
        import time

        self.process = subprocess.Popen([self.binary, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), 0.2):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                _, errors = self.process.communicate()
                raise AssertionError(f"mosquitto did not start: {errors.decode()}")
            time.sleep(0.05)

    def stop(self) -> None:
        import subprocess

        process = self.process
        if isinstance(process, subprocess.Popen):
            process.terminate()  # SIGTERM: mosquitto saves its persistence file
            process.wait(10)
        self.process = None
