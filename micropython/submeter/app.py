# The sub-meter application: one superloop over the HAL.
#
#   boot: config (validated, defaults on error) -> counters from flash -> register image
#         -> servers -> MQTT (if configured). No step waits for the network.
#   loop: feed the watchdog; meter one ADC block (or poll the DDSU666); at every window:
#         energy, demand; pack the registers; serve Modbus TCP and RTU; MQTT; save the
#         counters when due; collect garbage (a short, bounded pause, every loop).
# Every socket operation is non-blocking or bounded (see netserve.py, mqtt.py), so the
# device meters and serves Modbus whether or not Wi-Fi and the broker are there.
import gc
import sys
import time

from micropython import const

from submeter import VERSION, regmap
from submeter.energy import Demand, Energy
from submeter.image import Image
from submeter.store import Store

TYPE_CHECKING = const(0)  # folded away by MicroPython's compiler; mypy reads it as true
if TYPE_CHECKING:
    from typing import Any

_NCH = regmap.NCH
_NQ = regmap.NQ
_NPULSE = regmap.NPULSE


class App:
    def __init__(self, hal):
        self.hal = hal
        self.log = hal.log
        self.uptime_ms = 0
        self.windows = 0
        self._dirty = True
        self._packed_s = -1
        self._stats_at = hal.stats_every
        self.seq = 0
        self.heap_peak = 0  # most heap in use before a collection, after warm-up
        self.heap_live = 0  # heap in use right after the last collection
        self.tcp = None  # type: Any
        self.rtu = None  # type: Any
        self.mqtt = None  # type: Any
        self.outbox = None  # type: Any
        self.meter = None  # type: Any
        self.ddsu = None  # type: Any

    # -- boot -----------------------------------------------------------------------

    def boot(self):
        hal = self.hal
        from submeter import config

        cfg, errors = config.load(hal, _NCH, _NPULSE)
        del config  # boot-only: unload it (the package holds it as an attribute too)
        del sys.modules["submeter.config"]
        delattr(sys.modules["submeter"], "config")
        for message in errors:
            self.log("config: " + message)
        self.defaults_in_use = bool(errors)
        self.device_id = cfg["device_id"]
        self.save_ms = int(cfg["storage"]["save_interval_s"] * 1000)
        if cfg["source"] == "ct":  # the one big buffer, while the heap is still in one piece
            from array import array

            self.frames = cfg["metering"]["frames"]
            self.buf = array("H", bytes(2 * (_NCH + 1) * self.frames))
        hal.wdt_start(cfg["watchdog_s"])

        store = Store(hal, _NCH, cfg["storage"]["slots"], _NPULSE)
        if store.load():
            self.log("counters: restored seq=%d boot=%d mwh=%s pulses=%s%s" % (
                store.seq, store.boot, store.counters, store.pulses,
                " (a corrupt record was skipped)" if store.restored_from_backup else ""))
        else:
            self.log("counters: none stored, starting from zero")
        store.boot += 1
        self.store = store
        self.energy = Energy(_NCH, store.counters)
        self.pulses = list(store.pulses)  # counts per pulse channel, since commissioning
        pins = cfg["pulses"]["pins"]
        if pins:
            hal.pulse_start(pins, cfg["pulses"]["debounce_ms"])
            self.log("pulses: %d channel(s) on pins %s" % (len(pins), pins))
        self._pulse_pins = len(pins)
        window_s = store.window_s or cfg["demand_window_s"]
        self.demand = Demand(window_s)

        image = Image()
        values = image.values
        values[regmap.V_FIRMWARE_VERSION] = VERSION[0] * 256 + VERSION[1]
        values[regmap.V_DEMAND_WINDOW] = window_s
        image.on_write = self._on_write
        self.image = image
        self._save(hal.ticks_ms())  # persists the boot count

        if cfg["wifi"]["ssid"]:
            hal.net_start(cfg["wifi"]["ssid"], cfg["wifi"]["password"])
        self._start_modbus(cfg)
        self._start_mqtt(cfg)
        self._start_source(cfg)
        self._update(0)
        source = cfg["source"]
        del cfg  # only what the loop needs was kept
        gc.collect()
        self.log("boot: %s v%d.%d, %d channels, source %s, heap free %d" % (
            regmap.MODEL, VERSION[0], VERSION[1], _NCH, source, gc.mem_free()))

    def _start_modbus(self, cfg):
        from submeter import netserve

        tcp = cfg["modbus_tcp"]
        if tcp["enabled"]:
            unit = tcp["unit_id"]
            try:
                self.tcp = netserve.TcpServer(self.image, tcp["port"], (unit, 0, 255),
                                              tcp["max_clients"],
                                              tcp["idle_timeout_s"] * 1000, self.log)
                self.log("modbus-tcp: listening on port %d, unit %d" % (tcp["port"], unit))
            except OSError as exc:
                self.log("modbus-tcp: cannot listen on port %d: %s" % (tcp["port"], exc))
        rtu = cfg["modbus_rtu"]
        if rtu["enabled"]:
            uart = self.hal.uart(rtu["uart"], rtu["baudrate"], rtu["tx"], rtu["rx"], rtu["de"])
            self.rtu = netserve.RtuPort(self.image, uart, rtu["unit_id"])
            self.log("modbus-rtu: unit %d on UART %d at %d baud" % (
                rtu["unit_id"], rtu["uart"], rtu["baudrate"]))

    def _start_mqtt(self, cfg):
        m = cfg["mqtt"]
        if not (m["enabled"] and m["host"]):
            return
        from submeter.mqtt import Client
        from submeter.outbox import Outbox, Ring

        device = cfg["device_id"]
        base = "%s/%s/" % (m["topic"], device)
        client = Client(m["host"], m["port"], m["client_id"] or device, m["keepalive_s"],
                        m["user"], m["password"], base + "status", self.log)
        ring = Ring(self.hal, m["ring_kb"] * 1024)
        self.outbox = Outbox(ring, client, base + "reading")
        self.mqtt = client
        self.publish_ms = int(m["interval_s"] * 1000)
        self.next_publish = self.publish_ms

    def _start_source(self, cfg):
        hal = self.hal
        if cfg["source"] == "ddsu666":
            from submeter.ddsu666 import Ddsu666

            d = cfg["ddsu666"]
            uart = hal.uart(d["uart"], d["baudrate"], d["tx"], d["rx"], d["de"])
            self.ddsu = Ddsu666(uart, d["unit_id"], int(d["interval_s"] * 1000),
                                int(d["timeout_s"] * 1000), self.log)
            return
        from submeter.metering import Meter

        m = cfg["metering"]
        channels = cfg["channels"]
        self._fit = True
        hal.adc_start(cfg["pins"]["v"], cfg["pins"]["ct"][:_NCH], m["rate"])
        self.meter = Meter(_NCH, m["cycles"], m["v_gain"], [c["i_gain"] for c in channels],
                           [c["phase_deg"] for c in channels], m["adc_mid"], m["hysteresis"],
                           m["kernel"], v_min=m["v_min"])
        self.log("metering: %s kernel, %d cycles per window" % (m["kernel"], m["cycles"]))

    # -- loop -----------------------------------------------------------------------

    def run(self):
        hal = self.hal
        last = hal.ticks_ms()
        self._last_window = last
        while not hal.stop():
            hal.wdt_feed()
            if self.meter is not None:
                rate, contiguous = hal.adc_read(self.buf, self.frames)
                if not contiguous:
                    self._fit_cycles(rate)
                self.meter.feed(self.buf, self.frames, rate, self._on_window, contiguous)
            else:
                if self.ddsu.poll():
                    self._on_ddsu()
                hal.sleep_ms(10)
            if self._pulse_pins:
                self._take_pulses()
            now = hal.ticks_ms()
            self._update(time.ticks_diff(now, last))
            last = now
            if self.tcp is not None:
                self.tcp.poll()
            if self.rtu is not None:
                self.rtu.poll()
            if self.mqtt is not None:
                self._mqtt()
            if time.ticks_diff(now, self._next_save) >= 0:
                self._save(now)
            self._collect()

    def _take_pulses(self):
        """Add the edges the pulse inputs counted since the last loop."""
        new = self.hal.pulse_take()
        for p in range(self._pulse_pins):
            if new[p]:
                self.pulses[p] += new[p]
                self._dirty = True

    def _fit_cycles(self, rate):
        """A block must hold a window plus the cycles spent finding its first crossing."""
        if not self._fit:
            return
        self._fit = False
        meter = self.meter
        fit = int(self.frames * 45 / rate) - 2  # cycles a block holds at 45 Hz, less 2
        if fit < meter.cycles:
            meter.cycles = max(2, fit)
            self.log("metering: %d frames at %d/s hold %d cycles per window" % (
                self.frames, rate, meter.cycles))

    def _on_window(self, meter):
        now = self.hal.ticks_ms()
        dt = time.ticks_diff(now, self._last_window) / 1000
        self._last_window = now
        values = self.image.values
        total = 0.0
        for c in range(_NCH):
            volts, amps, watts, va, var, pf = meter.ch[c]  # metering.R_V .. R_PF
            base = c * _NQ
            values[base + regmap.Q_VOLTAGE] = volts
            values[base + regmap.Q_CURRENT] = amps
            values[base + regmap.Q_POWER] = watts
            values[base + regmap.Q_APPARENT_POWER] = va
            values[base + regmap.Q_REACTIVE_POWER] = var
            values[base + regmap.Q_POWER_FACTOR] = pf
            self.energy.add(c, watts, dt)
            total += watts
        values[regmap.V_FREQUENCY] = meter.freq
        self.demand.add(total, dt)
        self.windows += 1
        self._dirty = True

    def _on_ddsu(self):
        v = self.ddsu.values
        values = self.image.values
        values[regmap.Q_VOLTAGE] = v[0]
        values[regmap.Q_CURRENT] = v[1]
        values[regmap.Q_POWER] = v[2] * 1000
        values[regmap.Q_REACTIVE_POWER] = v[3] * 1000
        values[regmap.Q_APPARENT_POWER] = v[4] * 1000
        values[regmap.Q_POWER_FACTOR] = v[5]
        values[regmap.V_FREQUENCY] = v[6]
        mwh = self.energy.mwh
        mwh[0] = int(v[7] * 1e6 + 0.5)  # the meter's own counters (kWh)
        mwh[1] = int(v[8] * 1e6 + 0.5)
        now = self.hal.ticks_ms()
        self.demand.add(v[2] * 1000, time.ticks_diff(now, self._last_window) / 1000)
        self._last_window = now
        self.windows += 1
        self._dirty = True

    def _update(self, dt_ms):
        """Refresh the device values and pack the registers: after every window, and at
        least once a second (uptime, status)."""
        self.uptime_ms += dt_ms
        second = self.uptime_ms // 1000
        if not self._dirty and second == self._packed_s:
            return
        self._dirty = False
        self._packed_s = second
        values = self.image.values
        for c in range(_NCH):
            values[c * _NQ + regmap.Q_IMPORT_ENERGY] = self.energy.wh(c, False)
            values[c * _NQ + regmap.Q_EXPORT_ENERGY] = self.energy.wh(c, True)
        values[regmap.V_UPTIME] = self.uptime_ms // 1000
        values[regmap.V_PULSE1_COUNT] = self.pulses[0]
        values[regmap.V_PULSE2_COUNT] = self.pulses[1]
        values[regmap.V_DEMAND] = self.demand.value
        status = 0
        if self.hal.net_up():
            status |= regmap.ST_WIFI_CONNECTED
        if self.mqtt is not None and self.mqtt.up:
            status |= regmap.ST_MQTT_CONNECTED
        if self.meter is not None and self.meter.v_missing:
            status |= regmap.ST_VOLTAGE_MISSING
        if self.ddsu is not None and not self.ddsu.online:
            status |= regmap.ST_VOLTAGE_MISSING
        if self.defaults_in_use:
            status |= regmap.ST_CONFIG_DEFAULTS_IN_USE
        if self.store.restored_from_backup:
            status |= regmap.ST_COUNTERS_RESTORED_FROM_BACKUP
        values[regmap.V_STATUS] = status
        self.image.pack()

    def _mqtt(self):
        self.mqtt.poll(self.hal.net_up())
        if self.uptime_ms >= self.next_publish and self.windows:
            self.next_publish = self.uptime_ms + self.publish_ms
            self.outbox.add(self._reading())
        self.outbox.pump()

    def _reading(self):
        """One JSON line: device, (boot, seq) for de-duplication, uptime s, Unix time
        (when known), frequency Hz, demand W, and per channel [V, A, W, VA, var, PF,
        import Wh, export Wh]."""
        values = self.image.values
        parts = []
        for c in range(_NCH):
            b = c * _NQ
            parts.append("[%.2f,%.3f,%.1f,%.1f,%.1f,%.3f,%d,%d]" % (
                values[b + regmap.Q_VOLTAGE], values[b + regmap.Q_CURRENT],
                values[b + regmap.Q_POWER], values[b + regmap.Q_APPARENT_POWER],
                values[b + regmap.Q_REACTIVE_POWER], values[b + regmap.Q_POWER_FACTOR],
                values[b + regmap.Q_IMPORT_ENERGY], values[b + regmap.Q_EXPORT_ENERGY]))
        self.seq += 1
        now = self.hal.time()  # Unix time once the RTC is set (NTP), else omitted
        return ('{"dev":"%s","boot":%d,"seq":%d,"up":%d,%s"f":%.2f,"dmd":%.1f,"ch":[%s]}\n' % (
            self.device_id, self.store.boot, self.seq, self.uptime_ms // 1000,
            '"ts":%d,' % now if now else "", values[regmap.V_FREQUENCY], self.demand.value,
            ",".join(parts))).encode()

    def _on_write(self, slot):
        if slot == regmap.V_DEMAND_WINDOW:
            window_s = int(self.image.values[slot])
            self.demand.set_window(window_s)
            self.log("demand: window set to %d s" % window_s)
            self._save(self.hal.ticks_ms())

    def _save(self, now):
        self._next_save = time.ticks_add(now, self.save_ms)
        try:
            seq = self.store.save(self.energy.mwh, self.demand.window_s, self.pulses)
        except OSError as exc:  # flash full or failing: keep metering, try again later
            self.log("counters: save failed: %s" % exc)
            return
        self.log("counters: saved seq=%d mwh=%s pulses=%s" % (seq, self.energy.mwh,
                                                             self.pulses))

    def _collect(self):
        """Once per loop: a short collection keeps the heap unfragmented and the peak low."""
        used = gc.mem_alloc()
        if self.windows > 2 and used > self.heap_peak:
            self.heap_peak = used
        gc.collect()
        self.heap_live = gc.mem_alloc()
        every = self.hal.stats_every
        if every and self.windows >= self._stats_at:
            self._stats_at = self.windows + every
            self.log("stats: windows=%d heap_peak=%d heap_live=%d heap_free=%d up_s=%d "
                     "tcp=%d rtu=%d published=%d" % (
                         self.windows, self.heap_peak, self.heap_live, gc.mem_free(),
                         self.uptime_ms // 1000,
                         self.tcp.requests if self.tcp else 0,
                         self.rtu.requests if self.rtu else 0,
                         self.outbox.published if self.outbox else 0))


def run(hal):
    app = App(hal)
    app.boot()
    app.run()
    return app
