"""The generic codec: round-trips for every type and layout, golden register images,
sentinels and write checks."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import (
    DecodeError,
    RegisterImage,
    WriteRangeError,
    bytes_to_registers,
    decode,
    decode_points,
    encode,
    encode_write,
    register_map,
    registers_to_bytes,
    with_dependencies,
)
from drivers.maploader import get_map
from drivers.points import DEFAULT_NOT_IMPLEMENTED, Access, Order, Point, PointType, Table

INTEGER_TYPES = [t for t in PointType if t.is_integer]
ORDERS = st.sampled_from(list(Order))


def make_point(point_type: PointType, **kwargs: object) -> Point:
    return Point(name="p", table=Table.HOLDING, address=0, type=point_type,
                 **kwargs)  # type: ignore[arg-type]


# -- round trips ----------------------------------------------------------------------


@given(point_type=st.sampled_from(INTEGER_TYPES), word_order=ORDERS, byte_order=ORDERS,
       data=st.data())
def test_integer_round_trip_every_layout(point_type: PointType, word_order: Order,
                                         byte_order: Order, data: st.DataObject) -> None:
    low, high = point_type.integer_range
    raw = data.draw(st.integers(low, high))
    point = make_point(point_type, word_order=word_order, byte_order=byte_order)
    registers = encode(point, raw)
    assert len(registers) == point.count
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(point, registers) == raw


@given(word_order=ORDERS, byte_order=ORDERS,
       value=st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_f32_round_trip(word_order: Order, byte_order: Order, value: float) -> None:
    point = make_point(PointType.F32, word_order=word_order, byte_order=byte_order)
    assert decode(point, encode(point, value)) == value


@given(word_order=ORDERS, byte_order=ORDERS,
       value=st.floats(allow_nan=False, allow_infinity=False))
def test_f64_round_trip(word_order: Order, byte_order: Order, value: float) -> None:
    point = make_point(PointType.F64, word_order=word_order, byte_order=byte_order)
    assert decode(point, encode(point, value)) == value


@given(point_type=st.sampled_from([PointType.U16, PointType.S16, PointType.U32, PointType.S32]),
       scale=st.sampled_from([0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]),
       offset=st.sampled_from([0.0, -40.0, 273.15]), data=st.data())
def test_scaled_round_trip(point_type: PointType, scale: float, offset: float,
                           data: st.DataObject) -> None:
    low, high = point_type.integer_range
    raw = data.draw(st.integers(low + 1, high - 1))  # avoid the sentinels
    point = make_point(point_type, scale=scale, offset=offset)
    value = decode(point, encode_raw_int(point, raw))
    assert isinstance(value, float) or (scale == 1.0 and offset == 0.0 and value == raw)
    assert decode(point, encode(point, value)) == pytest.approx(value, rel=1e-12, abs=1e-9)
    assert encode(point, value) == encode_raw_int(point, raw)


def encode_raw_int(point: Point, raw: int) -> list[int]:
    from drivers.codec import encode_raw

    return encode_raw(point, raw)


@given(sf=st.integers(-10, 10), data=st.data())
def test_scale_factor_round_trip(sf: int, data: st.DataObject) -> None:
    raw = data.draw(st.integers(-0x7FFF, 0x7FFF))
    point = make_point(PointType.S16, scale_factor="W_SF")
    value = decode(point, [raw & 0xFFFF], sf)
    assert value == pytest.approx(raw * 10.0**sf)
    assert isinstance(value, float)
    assert encode(point, value, sf) == [raw & 0xFFFF]


@given(text=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16),
       byte_order=ORDERS)
def test_string_round_trip(text: str, byte_order: Order) -> None:
    point = make_point(PointType.STRING, length=8, byte_order=byte_order)
    assert decode(point, encode(point, text)) == text


def test_byte_layouts_of_a_32_bit_value() -> None:
    # 0xAABBCCDD in the four layouts named in docs/maps.md.
    value = 0xAABBCCDD
    layouts = {
        (Order.BIG, Order.BIG): [0xAABB, 0xCCDD],  # "ABCD"
        (Order.LITTLE, Order.BIG): [0xCCDD, 0xAABB],  # "CDAB", word swap
        (Order.BIG, Order.LITTLE): [0xBBAA, 0xDDCC],  # "BADC"
        (Order.LITTLE, Order.LITTLE): [0xDDCC, 0xBBAA],  # "DCBA"
    }
    for (word_order, byte_order), registers in layouts.items():
        point = make_point(PointType.U32, word_order=word_order, byte_order=byte_order,
                           not_implemented=())
        assert encode(point, value) == registers
        assert decode(point, registers) == value


@given(data=st.binary(min_size=0, max_size=16).filter(lambda b: len(b) % 2 == 0),
       word_order=ORDERS, byte_order=ORDERS)
def test_bytes_registers_inverse(data: bytes, word_order: Order, byte_order: Order) -> None:
    assert registers_to_bytes(bytes_to_registers(data, word_order, byte_order),
                              word_order, byte_order) == data


# -- golden register images -----------------------------------------------------------


def image_from(table: Table, address: int, registers: list[int]) -> RegisterImage:
    image = RegisterImage()
    image.store(table, address, registers)
    return image


def test_golden_sdm630_input_registers() -> None:
    sdm = register_map(get_map("sdm630"))
    image = RegisterImage()
    image.store(Table.INPUT, 0x0000, [
        0x4366, 0x8000,  # L1 voltage 230.5 V (f32 0x43668000)
        0x4367, 0x1999,  # L2 voltage ≈ 231.1 V
        0x4365, 0xE666,  # L3 voltage ≈ 229.9 V
    ])
    image.store(Table.INPUT, 0x0034, [0x4640, 0xE400])  # total power 12345 W
    image.store(Table.INPUT, 0x0046, [0x4248, 0x0000])  # frequency 50.0 Hz
    image.store(Table.INPUT, 0x0048, [0x44F6, 0x6B85])  # import 1971.36 kWh
    image.store(Table.INPUT, 0x004A, [0x7FC0, 0x0000])  # export: NaN = not available
    points = [sdm.point(sdm.capabilities[c]) for c in (
        "l1_voltage_v", "l2_voltage_v", "l3_voltage_v", "power_w", "frequency_hz",
        "import_wh", "export_wh")]
    values = decode_points(sdm, points, image)
    assert values[sdm.capabilities["l1_voltage_v"]] == 230.5
    assert values[sdm.capabilities["l2_voltage_v"]] == pytest.approx(231.1, abs=1e-4)
    assert values[sdm.capabilities["l3_voltage_v"]] == pytest.approx(229.9, abs=1e-4)
    assert values[sdm.capabilities["power_w"]] == 12345.0
    assert values[sdm.capabilities["frequency_hz"]] == 50.0
    assert values[sdm.capabilities["import_wh"]] == pytest.approx(1_971_360.0, rel=1e-6)
    assert values[sdm.capabilities["export_wh"]] is None


@pytest.mark.parametrize(("irat", "urat", "ct", "pt"), [(1, 10, 1, 1), (80, 10, 80, 1),
                                                       (80, 100, 80, 10)])
def test_golden_dtsu666_scaled_floats(irat: int, urat: int, ct: float, pt: float) -> None:
    """The Chint quick manual's conversion table: the registers hold the secondary side;
    U × UrAt·0.1, I × IrAt, P and energy × UrAt·0.1 × IrAt (ratios at 0x0006/0x0007)."""
    dtsu = register_map(get_map("dtsu666"))
    image = RegisterImage()
    image.store(Table.HOLDING, 0x0006, [irat, urat])  # IrAt, UrAt (×0.1: 10 = ratio 1)
    image.store(Table.HOLDING, 0x2006, [0x4510, 0x5000])  # Ua raw 2309.0 → 230.9 V (×0.1)
    image.store(Table.HOLDING, 0x200C, [0x45A4, 0x1000])  # Ia raw 5250.0 → 5.25 A (×0.001)
    image.store(Table.HOLDING, 0x2012, [0x46DE, 0xA800])  # Pt raw 28500.0 → 2850 W (×0.1)
    image.store(Table.HOLDING, 0x202A, [0x4466, 0x0000])  # PFt raw 920 → 0.92 (×0.001)
    image.store(Table.HOLDING, 0x2044, [0x459C, 0x4C00])  # Freq raw 5001.5 → 50.015 Hz
    image.store(Table.HOLDING, 0x401E, [0x45B1, 0x71D7])  # ImpEp 5678.23 kWh → Wh
    caps = dtsu.capabilities
    points = with_dependencies(dtsu, [caps[c] for c in (
        "l1_voltage_v", "l1_current_a", "power_w", "power_factor", "frequency_hz",
        "import_wh")])
    values = decode_points(dtsu, points, image)
    assert values[caps["l1_voltage_v"]] == pytest.approx(230.9 * pt)
    assert values[caps["l1_current_a"]] == pytest.approx(5.25 * ct)
    assert values[caps["power_w"]] == pytest.approx(2850.0 * ct * pt)
    assert values[caps["power_factor"]] == pytest.approx(0.92)  # no ratio
    assert values[caps["frequency_hz"]] == pytest.approx(50.015)  # no ratio
    assert values[caps["import_wh"]] == pytest.approx(5_678_230.0 * ct * pt, rel=1e-6)
    assert values[caps["ct_ratio"]] == ct
    assert values[caps["pt_ratio"]] == pt


def test_a_ratio_the_device_does_not_report_makes_the_primary_value_unknown() -> None:
    dtsu = register_map(get_map("dtsu666"))
    image = RegisterImage()
    image.store(Table.HOLDING, 0x0006, [0, 10])  # IrAt 0: not a ratio
    image.store(Table.HOLDING, 0x200C, [0x45A4, 0x1000])
    current = dtsu.point("l1_current")
    values = decode_points(dtsu, with_dependencies(dtsu, [current.name]), image)
    assert values["l1_current"] is None


def test_golden_sunspec_inverter_with_scale_factors() -> None:
    inverter = register_map(get_map("sunspec-inverter"))
    w = inverter.point("inverter_three_phase.W")
    w_sf = inverter.point("inverter_three_phase.W_SF")
    hz = inverter.point("inverter_three_phase.Hz")
    hz_sf = inverter.point("inverter_three_phase.Hz_SF")
    image = RegisterImage()
    image.store(Table.HOLDING, w.address, [4156])  # W raw 4156
    image.store(Table.HOLDING, w_sf.address, [0x0001])  # W_SF = 1 → 41560 W
    image.store(Table.HOLDING, hz.address, [4998])  # Hz raw 4998
    image.store(Table.HOLDING, hz_sf.address, [0xFFFE])  # Hz_SF = −2 → 49.98 Hz
    values = decode_points(inverter, [w, hz], image)
    assert values == {w.name: 41560.0, hz.name: pytest.approx(49.98)}
    # The device changes its scale factor at runtime: re-read with the value, it still
    # decodes right.
    image.store(Table.HOLDING, w.address, [41560 & 0xFFFF])  # would overflow s16…
    image.store(Table.HOLDING, w.address, [0x1036])  # W raw 4150
    image.store(Table.HOLDING, w_sf.address, [0x0002])  # W_SF = 2 → 415000 W
    assert decode_points(inverter, [w], image) == {w.name: 415000.0}
    # A "not implemented" scale factor makes the value unknown, not wrong.
    image.store(Table.HOLDING, w_sf.address, [0x8000])
    assert decode_points(inverter, [w], image) == {w.name: None}


def test_points_missing_from_the_image_are_left_out() -> None:
    sdm = register_map(get_map("sdm630"))
    point = sdm.point(sdm.capabilities["power_w"])
    assert decode_points(sdm, [point], RegisterImage()) == {}


# -- sentinels ------------------------------------------------------------------------


@pytest.mark.parametrize(("point_type", "registers"), [
    (PointType.U16, [0xFFFF]),
    (PointType.S16, [0x8000]),
    (PointType.U32, [0xFFFF, 0xFFFF]),
    (PointType.S32, [0x8000, 0x0000]),
    (PointType.S32, [0x7FFF, 0xFFFF]),
    (PointType.U64, [0xFFFF] * 4),
    (PointType.S64, [0x8000, 0, 0, 0]),
    (PointType.BITS16, [0xFFFF]),
])
def test_not_implemented_sentinels_decode_to_none(point_type: PointType,
                                                  registers: list[int]) -> None:
    point = make_point(point_type, not_implemented=DEFAULT_NOT_IMPLEMENTED[point_type])
    assert decode(point, registers) is None


def test_nan_always_decodes_to_none() -> None:
    for point_type, registers in ((PointType.F32, [0x7FC0, 0]), (PointType.F64,
                                                                  [0x7FF8, 0, 0, 0])):
        assert decode(make_point(point_type), registers) is None


def test_sentinel_off_keeps_the_raw_value() -> None:
    assert decode(make_point(PointType.U16), [0xFFFF]) == 0xFFFF


def test_none_encodes_the_canonical_sentinel() -> None:
    point = make_point(PointType.S32, not_implemented=DEFAULT_NOT_IMPLEMENTED[PointType.S32])
    assert encode(point, None) == [0x8000, 0x0000]
    assert math.isnan(struct.unpack(">f", registers_to_bytes(
        encode(make_point(PointType.F32), None), Order.BIG, Order.BIG))[0])


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected 2 register"):
        decode(make_point(PointType.U32), [1])


# -- writes ---------------------------------------------------------------------------


def writable(**kwargs: object) -> Point:
    defaults: dict[str, object] = {"type": PointType.S16, "scale": 0.1, "unit": "°C",
                                   "access": Access.READ_WRITE, "minimum": 20.0,
                                   "maximum": 60.0}
    defaults.update(kwargs)
    return Point(name="flow_setpoint", table=Table.HOLDING, address=1,
                 **defaults)  # type: ignore[arg-type]


def test_write_within_limits_encodes() -> None:
    assert encode_write(writable(), 45.5) == [455]


@pytest.mark.parametrize("value", [19.9, 60.1, -5.0])
def test_write_outside_limits_is_rejected_with_the_limits(value: float) -> None:
    with pytest.raises(WriteRangeError, match=r"flow_setpoint: .* outside 20–60 °C"):
        encode_write(writable(), value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "45", None, True])
def test_write_of_non_numbers_is_rejected(value: object) -> None:
    with pytest.raises(WriteRangeError):
        encode_write(writable(), value)  # type: ignore[arg-type]


def test_write_to_read_only_point_is_rejected() -> None:
    with pytest.raises(WriteRangeError, match="read-only"):
        encode_write(writable(access=Access.READ), 45.0)


def test_write_beyond_the_wire_type_is_rejected() -> None:
    point = writable(minimum=None, maximum=None)  # s16 × 0.1 → ±3276.7
    with pytest.raises(WriteRangeError, match="does not fit s16"):
        encode_write(point, 4000.0)


def test_write_of_an_enum_accepts_only_its_values() -> None:
    point = Point(name="sg", table=Table.HOLDING, address=0, type=PointType.U16,
                  access=Access.READ_WRITE, enum={1: "blocked", 2: "normal"})
    assert encode_write(point, 2) == [2]
    with pytest.raises(WriteRangeError, match="not one of 1 \\(blocked\\), 2 \\(normal\\)"):
        encode_write(point, 3)


def test_write_that_would_encode_the_sentinel_is_rejected() -> None:
    point = Point(name="x", table=Table.HOLDING, address=0, type=PointType.U16,
                  access=Access.READ_WRITE, not_implemented=(0xFFFF,))
    with pytest.raises(WriteRangeError, match="reserved"):
        encode_write(point, 0xFFFF)


def test_coil_write() -> None:
    coil = Point(name="relay_1", table=Table.COIL, address=0, type=PointType.BOOL,
                 access=Access.READ_WRITE)
    assert encode_write(coil, True) == [1]
    assert encode_write(coil, False) == [0]
    with pytest.raises(WriteRangeError):
        encode_write(coil, 2)
