# Energy counters in flash: wear levelling by rotation, integrity by checksum.
#
# Each save writes the next of SLOTS files (cnt0.bin, cnt1.bin, ...) with a sequence
# number and a CRC-32, so every file is rewritten once every SLOTS saves. A power cut in
# the middle of a write can only corrupt the file being written: at boot the valid record
# with the highest sequence number wins, losing at most the interval since the previous
# save, and the corrupt one is simply overwritten in its turn.
#
# Record (big-endian): magic "SMC2", nch u16, demand window s u16, seq u32, boot u32,
# npulse u16, then import and export energy per channel as u64 milliwatt-hours, the
# pulse counts as u64, then CRC-32 u32. Records of the previous format ("SMC1": no
# npulse, no pulse counts) are still read, with the pulse counts at zero.
from binascii import crc32
from struct import pack, unpack_from

MAGIC = b"SMC2"
MAGIC_V1 = b"SMC1"
_HEAD = ">4sHHIIH"
_HEAD_SIZE = 18
_HEAD_V1 = ">4sHHII"
_HEAD_V1_SIZE = 16


def encode(seq, boot, window_s, counters, pulses=()):
    body = pack(_HEAD, MAGIC, len(counters) // 2, window_s, seq, boot, len(pulses))
    body += pack(">%dQ" % (len(counters) + len(pulses)), *(list(counters) + list(pulses)))
    return body + pack(">I", crc32(body))


def decode(data, nch, npulse=0):
    """(seq, boot, window_s, counters, pulses) of a record, or None if it is not a valid
    one (an SMC1 record gives zero pulse counts)."""
    if data is None or len(data) < 4:
        return None
    size = len(data)
    if unpack_from(">I", data, size - 4)[0] != crc32(data[:size - 4]):
        return None
    if data[:4] == MAGIC_V1 and size == _HEAD_V1_SIZE + 16 * nch + 4:
        magic, n, window_s, seq, boot = unpack_from(_HEAD_V1, data, 0)
        if n != nch:
            return None
        return (seq, boot, window_s, list(unpack_from(">%dQ" % (2 * nch), data,
                                                      _HEAD_V1_SIZE)), [0] * npulse)
    if data[:4] != MAGIC or size != _HEAD_SIZE + 16 * nch + 8 * npulse + 4:
        return None
    magic, n, window_s, seq, boot, np = unpack_from(_HEAD, data, 0)
    if n != nch or np != npulse:
        return None
    values = list(unpack_from(">%dQ" % (2 * nch + npulse), data, _HEAD_SIZE))
    return seq, boot, window_s, values[:2 * nch], values[2 * nch:]


class Store:
    def __init__(self, hal, nch, slots=4, npulse=0):
        self.hal = hal
        self.nch = nch
        self.npulse = npulse
        self.slots = slots
        self.seq = 0
        self.boot = 0
        self.window_s = 0
        self.counters = [0] * (2 * nch)
        self.pulses = [0] * npulse
        self.restored_from_backup = False  # a corrupt or stray record was skipped at load

    def _name(self, k):
        return "cnt%d.bin" % k

    def load(self):
        """Load the newest valid record. Returns False when there is none (first boot)."""
        best = None
        for k in range(self.slots):
            data = self.hal.read_file(self._name(k))
            if data is None:
                continue
            record = decode(data, self.nch, self.npulse)
            if record is None:
                self.restored_from_backup = True
                continue
            if best is None or record[0] > best[0]:
                best = record
        if best is None:
            return False
        self.seq, self.boot, self.window_s, self.counters, self.pulses = best
        return True

    def save(self, counters, window_s, pulses=()):
        """Write the next slot. Returns the sequence number written."""
        seq = self.seq + 1
        self.hal.write_file(self._name(seq % self.slots),
                            encode(seq, self.boot, window_s, counters, pulses))
        self.seq = seq
        self.counters = list(counters)
        self.pulses = list(pulses)
        self.window_s = window_s
        return seq
