# The register image: firmware values -> big-endian Modbus registers, and writes back.
# Driven entirely by the tables build.py generates from the sub-meter map (regmap), so
# the registers served are the registers the gateway's driver decodes.
from struct import pack_into, unpack_from

from micropython import const

from submeter import regmap

_U16 = const(0)
_S16 = const(1)
_U32 = const(2)
_S32 = const(3)
_WRAP = const(0x80)
_FMT = (">H", ">h", ">I", ">i")
_LOW = (0, -0x8000, 0, -0x80000000)
_HIGH = (0xFFFF, 0x7FFF, 0xFFFFFFFF, 0x7FFFFFFF)
_POW10 = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0,
          1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)

# Modbus exception codes
ILLEGAL_FUNCTION = const(1)
ILLEGAL_ADDRESS = const(2)
ILLEGAL_VALUE = const(3)


def _raw(value, typ, exp):
    if exp or not isinstance(value, int):
        value = value * _POW10[9 - exp]
        if value != value:  # NaN
            return 0
        value = round(value)
    t = typ & 3
    if typ & _WRAP:
        return value & _HIGH[t]
    if value < _LOW[t]:
        return _LOW[t]
    if value > _HIGH[t]:
        return _HIGH[t]
    return value


def _pack(records, values, buf):
    for k in range(0, len(records), 5):
        addr = records[k] << 8 | records[k + 1]
        typ = records[k + 2]
        exp = records[k + 4]
        if exp > 127:
            exp -= 256
        pack_into(_FMT[typ & 3], buf, 2 * addr, _raw(values[records[k + 3]], typ, exp))


def _covered(ranges, first, end):
    for k in range(0, len(ranges), 4):
        lo = ranges[k] << 8 | ranges[k + 1]
        hi = ranges[k + 2] << 8 | ranges[k + 3]
        if lo <= first and end <= hi:
            return True
    return False


class Image:
    """Registers of the input and holding tables, packed from ``values`` (one slot per
    firmware value, regmap.NV of them, engineering units)."""

    def __init__(self):
        self.values = [0.0] * regmap.NV  # ints where exact (energy, status)
        self.input = bytearray(2 * regmap.INPUT_COUNT)
        self.holding = bytearray(2 * regmap.HOLDING_COUNT)
        self.on_write = None  # called with the value slot after a successful write

    def pack(self):
        _pack(regmap.INPUT_POINTS, self.values, self.input)
        _pack(regmap.HOLDING_POINTS, self.values, self.holding)

    def table(self, holding):
        return self.holding if holding else self.input

    def readable(self, holding, first, count):
        ranges = regmap.HOLDING_RANGES if holding else regmap.INPUT_RANGES
        return _covered(ranges, first, first + count)

    def write(self, first, data, off, count):
        """Write ``count`` registers from ``data[off:]`` at holding address ``first``.
        Every register must belong to a writable point, wholly covered (else exception 2);
        every value must be within the point's limits (else 3). Returns 0 or the exception
        code; nothing is written unless everything is valid."""
        table = regmap.WRITABLE
        end = first + count
        addr = first
        found = []
        while addr < end:  # addresses first: exception 2 takes precedence over 3
            k = 0
            while k < len(table):
                if (table[k] << 8 | table[k + 1]) == addr:
                    break
                k += 13
            if k >= len(table):
                return ILLEGAL_ADDRESS
            size = 2 if table[k + 2] & 3 >= _U32 else 1
            if addr + size > end:
                return ILLEGAL_ADDRESS
            found.append((k, addr))
            addr += size
        updates = []
        for k, addr in found:
            typ = table[k + 2]
            raw = unpack_from(_FMT[typ & 3], data, off + 2 * (addr - first))[0]
            low, high = unpack_from(">ii", table, k + 5)
            if raw < low or raw > high:
                return ILLEGAL_VALUE
            exp = table[k + 4]
            if exp > 127:
                exp -= 256
            updates.append((table[k + 3], raw * _POW10[9 + exp] if exp else raw))
        for slot, value in updates:
            self.values[slot] = value
            if self.on_write:
                self.on_write(slot)
        self.pack()
        return 0
