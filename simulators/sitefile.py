"""Build the simulated building from a site file: physics models plus one binding per
device. Reads the ``[simulation]`` section and the ``simulation`` tables of devices and
loads (all optional: defaults describe a mid-size office in Jinan).

See ``docs/configuration.md`` ("Simulation") for every key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from drivers.capabilities import relay_channel_count
from drivers.devices import sg_ready_from_contacts
from drivers.schema import ConfigError, Node
from drivers.site import DeviceSpec, SiteSpec
from simulators.bindings import (
    BatteryBinding,
    Binding,
    DcBusBinding,
    HeatMeterBinding,
    HeatPumpBinding,
    InverterBinding,
    MapView,
    MeterBinding,
    RelayBinding,
    SubMeterBinding,
    WaterMeterBinding,
)
from simulators.dcsite import DC_KINDS, build_dc_devices, is_dc_grid_converter
from simulators.physics.battery import BatteryConfig, BatteryModel
from simulators.physics.dcbus import DcBus, DcBusConfig
from simulators.physics.heatpump import BuildingConfig, HeatPump, HeatPumpConfig
from simulators.physics.loads import PROFILES, LoadConfig, RelayModule, profile_fraction
from simulators.physics.pv import PvConfig, PvInverter
from simulators.physics.site import (
    MeterModel,
    SimLoad,
    SiteModel,
    SubMeterChannelModel,
    meter_tariff,
)
from simulators.physics.solar import Climate, Location
from simulators.physics.water import WaterDemand


def _heat_meter(device: DeviceSpec, model: SiteModel) -> HeatMeterBinding:
    """A heat meter's ``simulation = { measures = "HEAT_PUMP" }``: the heat pump on
    whose hydraulic side it sits."""
    params = device.simulation
    if params is None:
        raise ConfigError("site file", device.path + ".simulation",
                          '{ measures = "<heat pump>" }', missing=True)
    params.only(("measures",))
    measured = params.req("measures")
    heat_pump = model.heat_pumps.get(measured.str())
    if heat_pump is None:
        raise measured.error("the name of a heat pump of this site")
    return HeatMeterBinding(heat_pump)


@dataclass
class SimulatedSite:
    """The physics of a site and the binding that serves each of its devices."""

    spec: SiteSpec
    model: SiteModel
    bindings: dict[str, Binding]
    start_s: float
    speed: float
    location: Location
    climate: Climate
    notes: list[str] = field(default_factory=list)


def default_start_s(zone: ZoneInfo, now_s: float | None = None) -> float:
    """Today 09:00 in the site's time zone: PV is up and the office is busy."""
    now = datetime.fromtimestamp(time.time() if now_s is None else now_s, zone)
    return now.replace(hour=9, minute=0, second=0, microsecond=0).timestamp()


def build_site(spec: SiteSpec, *, start_s: float | None = None,
               speed: float | None = None) -> SimulatedSite:
    """Physics and bindings for ``spec``. ``start_s``/``speed`` override the file.

    Raises :class:`~drivers.schema.ConfigError` for a malformed simulation section.
    """
    zone = spec.zone
    section = spec.section("simulation")
    if section is not None:
        section.only(("start", "speed", "clearness", "internal_gains_w", "base_load"))
    file_start = _start(section, zone)
    start = start_s if start_s is not None else (
        file_start if file_start is not None else default_start_s(zone))
    file_speed = _float(section, "speed", 1.0, 0.01, 10000)
    utc_offset_h = (zone.utcoffset(datetime.fromtimestamp(start)) or timedelta()).total_seconds()
    location = Location(spec.latitude_deg, spec.longitude_deg, utc_offset_h / 3600.0)
    climate = Climate.jinan()
    clearness = _float(section, "clearness", 0.85, 0.0, 1.0)
    gains_peak = _float(section, "internal_gains_w", 40_000.0, 0, 1e7)
    model = SiteModel(start_s=start, zone=zone)

    def outdoor_c(t: float) -> float:
        return climate.temperature_c(location, t)

    def gains_w(t: float) -> float:
        local = datetime.fromtimestamp(t, zone)
        return gains_peak * profile_fraction("plugs", local.hour + local.minute / 60,
                                             local.weekday(), variation=0.0)

    base = section.get("base_load") if section is not None else None
    if base is not None:
        base.only(("rated_w", "profile", "power_factor"))
        model.base_load = LoadConfig(
            name="base_load",
            rated_w=base.req("rated_w").float(min=0),
            profile=_profile(base.get("profile"), "plugs"),
            power_factor=_float(base, "power_factor", 0.95, 0.1, 1.0),
        )
    bindings: dict[str, Binding] = {}
    site = SimulatedSite(spec, model, bindings, start, speed or file_speed, location, climate)
    sub_meter_channels: dict[str, dict[int, SubMeterChannelModel]] = {}
    for device in spec.devices.values():
        kind = device.device_map.kind
        params = device.simulation
        if kind == "inverter":
            inverter = PvInverter(_pv_config(params, clearness), location, climate, start,
                                  energy_wh=_float(params, "energy_wh", 1_000_000.0, 1, 1e12))
            model.pv[device.name] = inverter
            bindings[device.name] = InverterBinding(inverter, MapView.of(device.device_map))
        elif kind == "battery":
            battery = BatteryModel(_battery_config(params), start,
                                   soc_pct=_float(params, "soc_pct", 60.0, 0, 100))
            model.batteries[device.name] = battery
            bindings[device.name] = BatteryBinding(battery, MapView.of(device.device_map))
        elif kind == "heat_pump":
            heat_pump = HeatPump(_heat_pump_config(params), _building_config(params),
                                 outdoor_c, gains_w, start)
            model.heat_pumps[device.name] = heat_pump
            bindings[device.name] = HeatPumpBinding(heat_pump)
        elif kind == "relay":
            channels = relay_channel_count(device.device_map.capabilities)
            relay = RelayModule(channels, start)
            relay.watchdog_s = _float(params, "watchdog_s", 0.0, 0, 3600)
            # A commissioned module: the channels the site lists in safe_open fall open
            # (watchdog and power-on state); the gateway keeps them so.
            relay.safe_states = [c not in device.safe_open for c in range(1, channels + 1)]
            relay.states = list(relay.safe_states)
            model.relays[device.name] = relay
            bindings[device.name] = RelayBinding(relay)
        elif is_dc_grid_converter(device) or kind in DC_KINDS:
            continue  # 直柔 devices: build_dc_devices below
        elif kind == "dc_bus":
            bus = DcBus(_dc_bus_config(params), start)
            model.dc_buses[device.name] = bus
            bindings[device.name] = DcBusBinding(bus)
        elif kind == "meter":
            meter = MeterModel(_measures(params, spec, device),
                               phases_wired=device.device_map.sim_phases)
            meter.counter.import_wh = _float(params, "import_wh", 5_000_000.0, 0, 1e12)
            meter.counter.export_wh = _float(params, "export_wh", 100_000.0, 0, 1e12)
            meter.ct_ratio = _float(params, "ct_ratio", 1.0, 1, 9999)
            meter.pt_ratio = _float(params, "pt_ratio", 1.0, 0.1, 999.9)
            meter.tariff_of = meter_tariff(zone)
            meter.seed_history()
            model.meters[device.name] = meter
            bindings[device.name] = MeterBinding(meter, lambda: model.t_s, zone)
        elif kind == "sub_meter":
            _no_params(params)
            sub_meter_channels[device.name] = {}
        elif kind == "water_meter":
            if params is not None:
                params.only(("volume_m3", "daily_m3"))
            bindings[device.name] = WaterMeterBinding(WaterDemand(
                zone, start, volume_m3=_float(params, "volume_m3", 1000.0, 0, 1e9),
                daily_m3=_float(params, "daily_m3", 12.0, 0, 1e6)), lambda: model.t_s)
    for device in spec.devices.values():  # after the heat pumps they meter
        if device.device_map.kind == "heat_meter":
            bindings[device.name] = _heat_meter(device, model)
    build_dc_devices(spec, model, bindings, start, location, climate, clearness)
    for load in spec.loads.values():
        params = load.simulation
        if params is not None:
            params.only(("profile", "power_factor"))
        dc_bus = load.dc_bus  # a fact of the site (the load's dc_bus key), not of simulation
        config = LoadConfig(
            name=load.name,
            rated_w=load.rated_w,
            profile=_profile(None if params is None else params.get("profile"), "constant"),
            power_factor=_float(params, "power_factor", 0.95, 0.1, 1.0),
            dc=dc_bus is not None,
        )
        switch = model.relays.get(load.device) if load.device else None
        model.loads[load.name] = SimLoad(config, switch, load.channel or 0, dc_bus)
        if load.meter is not None:
            meter_name, channel = load.meter
            sub_meter_channels[meter_name][channel] = SubMeterChannelModel(load.name)
    _link_hybrids(spec, bindings)
    _wire_sg_ready(spec, model)
    model.sub_meters = sub_meter_channels
    for name, meter_channels in sub_meter_channels.items():
        bindings[name] = SubMeterBinding(meter_channels, model.loads, lambda: model.t_s)
    _check_measures(site)
    return site


def _link_hybrids(spec: SiteSpec, bindings: dict[str, Binding]) -> None:
    """A battery that is a part of an inverter's device (one unit, maps with one
    ``shared_unit``) is a hybrid inverter's: its power flows through the inverter's AC
    port too."""
    for device in spec.devices.values():
        binding = bindings.get(device.name)
        if not isinstance(binding, InverterBinding) or not device.device_map.shared_unit:
            continue
        for other in spec.devices.values():
            battery = bindings.get(other.name)
            if isinstance(battery, BatteryBinding) and other.line.name == device.line.name \
                    and other.station == device.station:
                binding.battery = battery.battery


def _wire_sg_ready(spec: SiteSpec, model: SiteModel) -> None:
    """Heat pumps whose SG-Ready terminals the site wires to relay channels follow those
    contacts (the label's truth table), not their register."""
    for device in spec.devices.values():
        wiring = device.sg_ready
        if wiring is None or wiring.relay is None or wiring.contacts is None:
            continue
        relay = model.relays[wiring.relay]
        first, second = wiring.contacts

        def contacts(relay: RelayModule = relay, first: int = first,
                     second: int = second) -> int:
            state = sg_ready_from_contacts(relay.states[first - 1], relay.states[second - 1])
            assert state is not None  # both contacts are always known here
            return state

        model.heat_pumps[device.name].sg_input = contacts


def _start(section: Node | None, zone: ZoneInfo) -> float | None:
    node = None if section is None else section.get("start")
    if node is None:
        return None
    text = node.str()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise node.error('an ISO date-time such as "2026-06-21T09:00:00"') from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def _float(node: Node | None, key: str, default: float, low: float, high: float) -> float:
    child = None if node is None else node.get(key)
    return default if child is None else child.float(min=low, max=high)


def _profile(node: Node | None, default: str) -> str:
    return default if node is None else node.str(choices=PROFILES)


def _no_params(node: Node | None) -> None:
    if node is not None:
        node.only(())


def _pv_config(node: Node | None, clearness: float) -> PvConfig:
    if node is not None:
        node.only(("peak_power_w", "rated_ac_w", "tilt_deg", "azimuth_deg", "clearness",
                   "energy_wh"))
    peak = _float(node, "peak_power_w", 100_000.0, 100, 1e8)
    return PvConfig(
        peak_power_w=peak,
        rated_ac_w=_float(node, "rated_ac_w", peak, 100, 1e8),
        tilt_deg=_float(node, "tilt_deg", 25.0, 0, 90),
        azimuth_deg=_float(node, "azimuth_deg", 0.0, -180, 180),
        clearness=_float(node, "clearness", clearness, 0, 1),
    )


def _battery_config(node: Node | None) -> BatteryConfig:
    if node is not None:
        node.only(("capacity_wh", "max_charge_w", "max_discharge_w", "round_trip_efficiency",
                   "soc_pct", "ramp_w_per_s", "soc_min_pct"))
    return BatteryConfig(
        capacity_wh=_float(node, "capacity_wh", 200_000.0, 100, 1e9),
        max_charge_w=_float(node, "max_charge_w", 100_000.0, 10, 1e8),
        max_discharge_w=_float(node, "max_discharge_w", 100_000.0, 10, 1e8),
        round_trip_efficiency=_float(node, "round_trip_efficiency", 0.9, 0.5, 1.0),
        ramp_w_per_s=_float(node, "ramp_w_per_s", 50_000.0, 1, 1e8),
        soc_min_pct=_float(node, "soc_min_pct", 5.0, 0, 50),
    )


def _heat_pump_config(node: Node | None) -> HeatPumpConfig:
    if node is not None:
        node.only(("rated_electric_w", "heat_loss_w_per_k", "heat_capacity_j_per_k",
                   "indoor_c"))
    return HeatPumpConfig(rated_electric_w=_float(node, "rated_electric_w", 45_000.0, 100, 1e7))


def _building_config(node: Node | None) -> BuildingConfig:
    return BuildingConfig(
        heat_loss_w_per_k=_float(node, "heat_loss_w_per_k", 4_500.0, 10, 1e7),
        heat_capacity_j_per_k=_float(node, "heat_capacity_j_per_k", 2.0e8, 1e5, 1e12),
        initial_indoor_c=_float(node, "indoor_c", 20.0, -10, 40),
    )


def _dc_bus_config(node: Node | None) -> DcBusConfig:
    if node is not None:
        node.only(("nominal_voltage_v", "rated_power_w", "droop_pct", "capacitance_f"))
    return DcBusConfig(
        nominal_voltage_v=_float(node, "nominal_voltage_v", 375.0, 12, 1500),
        rated_power_w=_float(node, "rated_power_w", 30_000.0, 100, 1e7),
        droop_pct=_float(node, "droop_pct", 5.0, 0.5, 20),
        capacitance_f=_float(node, "capacitance_f", 0.05, 1e-4, 100),
    )


def _measures(node: Node | None, spec: SiteSpec, device: DeviceSpec) -> frozenset[str] | None:
    if node is not None:
        node.only(("measures", "import_wh", "export_wh", "ct_ratio", "pt_ratio"))
    child = None if node is None else node.get("measures")
    if child is None:
        if device.role == "feeder":
            raise ConfigError(spec.file, f"{device.path}.simulation.measures",
                              "the loads or devices this feeder meter measures", missing=True)
        return None
    if child.value == "site":
        return None
    names = []
    for entry in child.list():
        name = entry.str()
        if name not in spec.loads and name not in spec.devices:
            raise entry.error("the name of a load or device of this site, or \"site\"")
        names.append(name)
    return frozenset(names)


def _check_measures(site: SimulatedSite) -> None:
    known = set(site.model.component_names())
    for name, meter in site.model.meters.items():
        if meter.measures is not None and not meter.measures <= known:
            unknown = ", ".join(sorted(meter.measures - known))
            site.notes.append(f"meter {name} measures {unknown}, which consume no power")
