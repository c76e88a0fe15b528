# Energy counters in flash: wear levelling by rotation, integrity by checksum.
#
# Each save writes the next of SLOTS files (cnt0.bin, cnt1.bin, ...) with a sequence
# number and a CRC-32, so every file is rewritten once every SLOTS saves. A power cut in
# the middle of a write can only corrupt the file being written: at boot the valid record
# with the highest sequence number wins, losing at most the interval since the previous
# save, and the corrupt one is simply overwritten in its turn.
#
# Record (big-endian): magic "SMC1", nch u16, demand window s u16, seq u32, boot u32,
# then import and export energy per channel as u64 milliwatt-hours, then CRC-32 u32.
from binascii import crc32
from struct import pack, unpack_from

MAGIC = b"SMC1"
_HEAD = ">4sHHII"
_HEAD_SIZE = 16


def encode(seq, boot, window_s, counters):
    body = pack(_HEAD, MAGIC, len(counters) // 2, window_s, seq, boot)
    body += pack(">%dQ" % len(counters), *counters)
    return body + pack(">I", crc32(body))


def decode(data, nch):
    """(seq, boot, window_s, counters) of a record, or None if it is not a valid one."""
    size = _HEAD_SIZE + 16 * nch + 4
    if data is None or len(data) != size:
        return None
    if unpack_from(">I", data, size - 4)[0] != crc32(data[:size - 4]):
        return None
    magic, n, window_s, seq, boot = unpack_from(_HEAD, data, 0)
    if magic != MAGIC or n != nch:
        return None
    return seq, boot, window_s, list(unpack_from(">%dQ" % (2 * nch), data, _HEAD_SIZE))


class Store:
    def __init__(self, hal, nch, slots=4):
        self.hal = hal
        self.nch = nch
        self.slots = slots
        self.seq = 0
        self.boot = 0
        self.window_s = 0
        self.counters = [0] * (2 * nch)
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
            record = decode(data, self.nch)
            if record is None:
                self.restored_from_backup = True
                continue
            if best is None or record[0] > best[0]:
                best = record
        if best is None:
            return False
        self.seq, self.boot, self.window_s, self.counters = best
        return True

    def save(self, counters, window_s):
        """Write the next slot. Returns the sequence number written."""
        seq = self.seq + 1
        self.hal.write_file(self._name(seq % self.slots),
                            encode(seq, self.boot, window_s, counters))
        self.seq = seq
        self.counters = list(counters)
        self.window_s = window_s
        return seq
