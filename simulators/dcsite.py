"""The 直柔 part of a simulated site: one :class:`~simulators.physics.dcgrid.DcGrid` per
interface converter (a ``dc_bus`` device whose map has grid-limit mode), with the DC
storage and DC load controllers whose ``simulation.bus`` names it.

Simulation keys (all optional; see docs/configuration.md, "Simulation"):

* converter: ``nominal_voltage_v`` (375), ``rated_power_w`` (60 000), ``droop_pct`` (5),
  ``capacitance_f`` (0.05), ``line_resistance_ohm`` (0.02), ``floor_pct`` (90),
  ``ceiling_pct`` (105), ``pv_peak_w`` (0: no PV on the bus), ``pv_curtail_pct``
  (102: PV curtails above this % of nominal, to nothing 3 % higher);
* storage: ``bus``, ``capacity_wh`` (100 000), ``rated_power_w`` (30 000), ``soc_pct`` (60);
* load controller: ``bus``, ``lighting_w``, ``fan_coil_w``, ``heat_pump_w``,
  ``ev_charger_w`` (rated power per class, W), ``fixed_w`` (constant-power loads, W),
  ``profile`` ("office": each class follows its daily profile; "constant": full demand).
"""

from __future__ import annotations

from datetime import datetime

from drivers.dc_curves import DcLoadClass
from drivers.schema import ConfigError, Node
from drivers.site import DeviceSpec, SiteSpec
from simulators.bindings import Binding
from simulators.dcbindings import DcLoadsBinding, DcStorageBinding, InterfaceConverterBinding
from simulators.physics.dcgrid import (
    DcGrid,
    DcPv,
    DcStorage,
    FlexibleLoad,
    InterfaceConverter,
    default_load_curves,
    default_storage_curve,
)
from simulators.physics.loads import profile_fraction
from simulators.physics.pv import PvConfig, PvInverter
from simulators.physics.site import SiteModel
from simulators.physics.solar import Climate, Location

__all__ = ["DC_KINDS", "build_dc_devices", "is_dc_grid_converter"]

#: Device kinds this module simulates (besides the converters).
DC_KINDS = ("dc_storage", "dc_loads")

#: The daily profile each load class follows in an office.
_PROFILES = {DcLoadClass.LIGHTING: "lighting", DcLoadClass.FAN_COIL: "hvac_fan",
             DcLoadClass.HEAT_PUMP: "hvac_fan", DcLoadClass.EV_CHARGER: "ev_charger"}


def is_dc_grid_converter(device: DeviceSpec) -> bool:
    """A ``dc_bus`` device whose map offers grid-limit mode (a 直柔 interface converter)."""
    return device.device_map.kind == "dc_bus" and \
        "grid_limit_w" in device.device_map.capabilities


def _float(node: Node | None, key: str, default: float, low: float, high: float) -> float:
    child = None if node is None else node.get(key)
    return default if child is None else child.float(min=low, max=high)


def build_dc_devices(spec: SiteSpec, model: SiteModel, bindings: dict[str, Binding],
                     start_s: float, location: Location, climate: Climate,
                     clearness: float) -> None:
    """Add the DC grids of ``spec`` to ``model`` and their devices' bindings. Raises
    :class:`~drivers.schema.ConfigError` for a malformed simulation table or a ``bus``
    that names no interface converter."""
    for device in spec.devices.values():
        if is_dc_grid_converter(device):
            grid = _grid(device.simulation, start_s, location, climate, clearness)
            model.dc_grids[device.name] = grid
            bindings[device.name] = InterfaceConverterBinding(grid)
    for device in spec.devices.values():
        kind = device.device_map.kind
        if kind not in DC_KINDS:
            continue
        params = device.simulation
        grid = _bus(spec, device, params, model)
        if kind == "dc_storage":
            assert params is not None  # _bus required it
            params.only(("bus", "capacity_wh", "rated_power_w", "soc_pct"))
            storage = DcStorage(
                capacity_wh=_float(params, "capacity_wh", 100_000.0, 100, 1e9),
                rated_power_w=_float(params, "rated_power_w", 30_000.0, 10, 1e8),
                curve=default_storage_curve(grid.nominal_v),
                soc_pct=_float(params, "soc_pct", 60.0, 0, 100))
            grid.storage.append(storage)
            bindings[device.name] = DcStorageBinding(grid, storage)
        else:
            _add_loads(spec, grid, params)
            bindings[device.name] = DcLoadsBinding(grid)


def _bus(spec: SiteSpec, device: DeviceSpec, params: Node | None, model: SiteModel
         ) -> DcGrid:
    node = None if params is None else params.get("bus")
    if node is None:
        raise ConfigError(spec.file, f"{device.path}.simulation.bus",
                          "the name of the interface converter whose bus this device is on",
                          missing=True)
    grid = model.dc_grids.get(node.str())
    if grid is None:
        raise node.error("the name of a dc_bus device with grid-limit mode "
                         "(model dc-interface-converter)")
    return grid


def _grid(params: Node | None, start_s: float, location: Location, climate: Climate,
          clearness: float) -> DcGrid:
    if params is not None:
        params.only(("nominal_voltage_v", "rated_power_w", "droop_pct", "capacitance_f",
                     "line_resistance_ohm", "floor_pct", "ceiling_pct", "pv_peak_w",
                     "pv_curtail_pct"))
    nominal = _float(params, "nominal_voltage_v", 375.0, 12, 1500)
    converter = InterfaceConverter(
        rated_power_w=_float(params, "rated_power_w", 60_000.0, 100, 1e7), nominal_v=nominal,
        droop_pct=_float(params, "droop_pct", 5.0, 0.5, 20),
        line_resistance_ohm=_float(params, "line_resistance_ohm", 0.02, 0, 10),
        floor_pct=_float(params, "floor_pct", 90.0, 50, 100),
        ceiling_pct=_float(params, "ceiling_pct", 105.0, 100, 150))
    grid = DcGrid(converter, capacitance_f=_float(params, "capacitance_f", 0.05, 1e-4, 100),
                  t_s=start_s)
    peak = _float(params, "pv_peak_w", 0.0, 0, 1e8)
    if peak > 0:
        array = PvInverter(PvConfig(peak_power_w=peak, rated_ac_w=peak, clearness=clearness),
                           location, climate, start_s)

        def available_w(t_s: float) -> float:
            array.advance(t_s)
            return array.dc_power_w

        curtail = nominal * _float(params, "pv_curtail_pct", 102.0, 90, 140) / 100.0
        grid.pv.append(DcPv(0.0, curtail, curtail + 0.03 * nominal, available_w))
    return grid


def _add_loads(spec: SiteSpec, grid: DcGrid, params: Node | None) -> None:
    assert params is not None  # _bus required it
    params.only(("bus", "lighting_w", "fan_coil_w", "heat_pump_w", "ev_charger_w", "fixed_w",
                 "profile"))
    profile_node = params.get("profile")
    office = profile_node is None or profile_node.str(choices=("office", "constant")) == "office"
    curves = default_load_curves(grid.nominal_v)
    zone = spec.zone
    for cls in DcLoadClass:
        rated = _float(params, f"{cls.value}_w", 0.0, 0, 1e7)
        if rated <= 0:
            continue
        load = FlexibleLoad(cls, rated, curves[cls])
        if office:
            def demand(t_s: float, profile: str = _PROFILES[cls], name: str = cls.value
                       ) -> float:
                local = datetime.fromtimestamp(t_s, zone)
                return profile_fraction(profile, local.hour + local.minute / 60.0,
                                        local.weekday(), name, t_s)
            load.profile = demand
        grid.loads[cls] = load
    grid.fixed_w += _float(params, "fixed_w", 0.0, 0, 1e7)
