# The JSON config file (config.json at the filesystem root), validated at boot.
#
# Every key has a default; a bad value (wrong type, out of range, unknown choice) is
# reported with the file, the key, what was expected and what was found, and replaced by
# its default -- the rest of the file still applies. A missing or unreadable file means
# defaults everywhere. Either way the device boots and meters; `errors` lists the
# messages and the status register's "config defaults in use" bit is set.
# Imported at boot only: app.py drops the module afterwards to give its RAM back.
import json

from micropython import const

TYPE_CHECKING = const(0)  # folded away by MicroPython's compiler; mypy reads it as true
if TYPE_CHECKING:
    from typing import Any

FILE = "config.json"

DEFAULTS = {  # type: dict[str, Any]
    "device_id": "submeter",
    "source": "ct",
    "wifi": {"ssid": "", "password": ""},
    "metering": {"cycles": 10, "v_gain": 0.1887, "adc_mid": 2048, "hysteresis": 30,
                 "kernel": "viper", "v_min": 20.0, "frames": 640, "rate": 2500},
    "channels": [],  # one {"i_gain": A per count, "phase_deg": CT phase lead} per channel
    "pins": {"v": 36, "ct": [39, 34, 35]},
    "modbus_tcp": {"enabled": True, "port": 502, "unit_id": 1, "max_clients": 2,
                   "idle_timeout_s": 120},
    "modbus_rtu": {"enabled": False, "uart": 2, "baudrate": 9600, "unit_id": 1, "tx": 17,
                   "rx": 16, "de": -1},
    "ddsu666": {"uart": 1, "baudrate": 9600, "unit_id": 1, "tx": 4, "rx": 5, "de": -1,
                "interval_s": 1.0, "timeout_s": 0.5},
    "mqtt": {"enabled": False, "host": "", "port": 1883, "client_id": "", "user": "",
             "password": "", "topic": "pedf/submeter", "keepalive_s": 60,
             "interval_s": 10.0, "ring_kb": 64},
    "storage": {"save_interval_s": 300.0, "slots": 4},
    # pulse inputs (water, gas, heat meters with a pulse output): one GPIO per channel,
    # counted on falling edges at least debounce_ms apart; counts survive power cuts
    "pulses": {"pins": [], "debounce_ms": 20},
    "demand_window_s": 900,
    "watchdog_s": 30,
}
CHANNEL_DEFAULTS = {"i_gain": 0.0488, "phase_deg": 0.0}

# Limits (inclusive) of numbers and choices of strings, by dotted key.
LIMITS = {  # type: dict[str, tuple[Any, ...]]
    "source": ("ct", "ddsu666"),
    "metering.cycles": (2, 100),
    "metering.v_gain": (1e-6, 100.0),
    "metering.adc_mid": (0, 65535),
    "metering.hysteresis": (0, 2000),
    "metering.kernel": ("viper", "python"),
    "metering.v_min": (0.0, 1000.0),
    "metering.frames": (16, 2048),
    "metering.rate": (500, 20000),
    "channels.i_gain": (1e-6, 100.0),
    "channels.phase_deg": (-30.0, 30.0),
    "pins.v": (0, 48),
    "pins.ct": (0, 48),
    "modbus_tcp.port": (1, 65535),
    "modbus_tcp.unit_id": (1, 247),
    "modbus_tcp.max_clients": (1, 4),
    "modbus_tcp.idle_timeout_s": (1, 86400),
    "modbus_rtu.uart": (1, 2),
    "modbus_rtu.baudrate": (1200, 115200),
    "modbus_rtu.unit_id": (1, 247),
    "modbus_rtu.tx": (0, 48),
    "modbus_rtu.rx": (0, 48),
    "modbus_rtu.de": (-1, 48),
    "ddsu666.uart": (1, 2),
    "ddsu666.baudrate": (1200, 115200),
    "ddsu666.unit_id": (1, 247),
    "ddsu666.tx": (0, 48),
    "ddsu666.rx": (0, 48),
    "ddsu666.de": (-1, 48),
    "ddsu666.interval_s": (0.2, 3600.0),
    "ddsu666.timeout_s": (0.05, 5.0),
    "mqtt.port": (1, 65535),
    "mqtt.keepalive_s": (5, 3600),
    "mqtt.interval_s": (0.1, 86400.0),
    "mqtt.ring_kb": (4, 1024),
    "storage.save_interval_s": (1.0, 86400.0),
    "storage.slots": (2, 16),
    "pulses.pins": (0, 48),
    "pulses.debounce_ms": (0, 1000),
    "demand_window_s": (60, 3600),
    "watchdog_s": (5, 120),
}


def _kind(value):
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _show(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
    def __init__(self):
        self.errors = []

    def fail(self, key, expected, got, default):
        self.errors.append("%s: %s: expected %s, got %s -- using %s"
                           % (FILE, key, expected, _show(got), _show(default)))

    def value(self, key, limit_key, default, given):
        got = given
        if isinstance(default, float) and isinstance(got, int) and not isinstance(got, bool):
            got = float(got)
        if type(got) is not type(default):
            self.fail(key, _kind(default), given, default)
            return default
        limits = LIMITS.get(limit_key)
        if limits is None:
            return got
        if isinstance(got, str):
            if got not in limits:
                self.fail(key, "one of " + ", ".join('"%s"' % c for c in limits), given,
                          default)
                return default
        elif isinstance(got, (int, float)) and not limits[0] <= got <= limits[1]:
            self.fail(key, "%s %s..%s" % (_kind(default), limits[0], limits[1]), given,
                      default)
            return default
        return got

    def section(self, prefix, defaults, given):
        out = {}
        if not isinstance(given, dict):
            self.fail(prefix, "an object", given, "defaults")
            given = {}
        for key in given:
            if key not in defaults:
                self.errors.append("%s: %s%s: unknown key (ignored)"
                                   % (FILE, prefix and prefix + ".", key))
        for key, default in defaults.items():
            dotted = prefix + "." + key if prefix else key
            if key not in given:
                out[key] = default
            elif key == "channels":
                out[key] = given[key]  # checked by channels()
            elif isinstance(default, dict):
                out[key] = self.section(dotted, default, given[key])
            elif isinstance(default, list):
                out[key] = self.int_list(dotted, default, given[key])
            else:
                out[key] = self.value(dotted, dotted, default, given[key])
        return out

    def int_list(self, key, default, got):
        if not isinstance(got, list) or not all(isinstance(x, int) for x in got):
            self.fail(key, "a list of integers", got, default)
            return default
        low, high = LIMITS.get(key, (-(2 ** 31), 2 ** 31 - 1))
        for x in got:
            if not low <= x <= high:
                self.fail(key, "integers %s..%s" % (low, high), got, default)
                return default
        return got

    def channels(self, given, nch):
        out = []
        if not isinstance(given, list):
            self.fail("channels", "a list of %d channel objects" % nch, given, "defaults")
            given = []
        elif given and len(given) != nch:
            self.errors.append("%s: channels: expected %d channel objects, got %d -- using "
                               "defaults for the missing ones" % (FILE, nch, len(given)))
        for c in range(nch):
            item = given[c] if c < len(given) else {}
            key = "channels[%d]" % c
            if not isinstance(item, dict):
                self.fail(key, "an object", item, "defaults")
                item = {}
            for name in item:
                if name not in CHANNEL_DEFAULTS:
                    self.errors.append("%s: %s.%s: unknown key (ignored)" % (FILE, key, name))
            channel = {}
            for name, default in CHANNEL_DEFAULTS.items():
                channel[name] = default if name not in item else self.value(
                    key + "." + name, "channels." + name, default, item[name])
            out.append(channel)
        return out


def parse(text, nch, npulse=2):
    """(config dict, error messages) from the text (str or bytes) of a config file
    (None: no file); ``npulse`` pulse channels are served."""
    checker = _Checker()
    given = {}
    if text is None:
        checker.errors.append("%s: not found -- using defaults" % FILE)
    else:
        try:
            given = json.loads(text)
        except ValueError as exc:
            checker.errors.append("%s: not valid JSON (%s) -- using defaults" % (FILE, exc))
        if not isinstance(given, dict):
            if not checker.errors:
                checker.fail("(top level)", "an object", given, "defaults")
            given = {}
    config = checker.section("", DEFAULTS, given)  # type: dict[str, Any]
    config["channels"] = checker.channels(given.get("channels", []), nch)
    if config["source"] == "ct" and len(config["pins"]["ct"]) < nch:
        checker.fail("pins.ct", "%d pins" % nch, config["pins"]["ct"], DEFAULTS["pins"]["ct"])
        config["pins"]["ct"] = DEFAULTS["pins"]["ct"]
    if len(config["pulses"]["pins"]) > npulse:
        checker.fail("pulses.pins", "at most %d pins" % npulse, config["pulses"]["pins"], [])
        config["pulses"]["pins"] = []
    return config, checker.errors


def load(hal, nch, npulse=2):
    return parse(hal.read_file(FILE), nch, npulse)  # bytes: json takes them, bad UTF-8 included
