# Readings on their way to the broker, in order, never lost to a dead link.
#
# The queue is the ring file in flash (oldest) followed by a few lines in RAM (newest):
#   * online with an empty ring: readings wait in RAM and are published at once (QoS 1);
#   * offline, or while the ring still drains: readings are appended to the ring;
#   * a reading leaves the queue only when the broker acknowledged it (PUBACK); when the
#     link dies, unacknowledged ring lines are re-read and the RAM lines are appended to
#     the ring, so the order on the wire is the order of the readings.
# Delivery is at least once: a line whose PUBACK was lost is sent again; every reading
# carries (boot, seq) for subscribers to drop duplicates.
#
# The ring is a directory of segment files "ring/<n>" of about SEGMENT bytes each, one
# JSON line per reading. When it holds more than its capacity the oldest segment is
# deleted (its readings are counted in `dropped`). A line torn by a power cut is ended
# at boot and skipped: a reading is a line "{...}" (one JSON object, nothing nested).
# After a reboot the ring replays from its oldest segment.
from micropython import const

DIR = "ring"
SEGMENT = const(4096)
_RAM_MAX = const(4)


class Ring:
    def __init__(self, hal, capacity):
        self.hal = hal
        self.max_segments = max(2, capacity // SEGMENT)
        hal.mkdir(DIR)
        self.segments = sorted(int(n) for n in hal.listdir(DIR) if n.isdigit())
        self.dropped = 0  # segments dropped when full, and lines the flash refused
        if self.segments:
            self.head = self.segments[-1]
            self.head_size = hal.size(self._name(self.head))
            first = self.segments[0]
            self._seal()
        else:
            self.head = 0
            self.head_size = 0
            first = 0
        self.rseg, self.roff = first, 0  # read cursor
        self.cseg, self.coff = first, 0  # everything before it is acknowledged

    def _name(self, seg):
        return "%s/%08d" % (DIR, seg)

    def _seal(self):
        """End a line torn by a power cut, so the next reading starts a line of its own
        (the torn one then fails the check in next() and is skipped)."""
        if not self.head_size:
            return
        f = self.hal.open(self._name(self.head), "rb")
        try:
            f.seek(self.head_size - 1)
            last = f.read(1)
        finally:
            f.close()
        if last != b"\n":
            self.hal.append_file(self._name(self.head), b"\n")
            self.head_size += 1

    def empty(self):
        return not self.segments or (self.cseg == self.head and self.coff >= self.head_size)

    def unread(self):
        return bool(self.segments) and not (self.rseg == self.head
                                            and self.roff >= self.head_size)

    def append(self, line):
        """Append one reading; a full or failing flash loses it (counted in `dropped`)
        rather than stopping the meter."""
        try:
            self._append(line)
        except OSError:
            self.dropped += 1

    def _append(self, line):
        if self.segments and self.head_size >= SEGMENT:
            self.head += 1
            self.head_size = 0
        if not self.segments or self.segments[-1] != self.head:
            self.segments.append(self.head)
        self.hal.append_file(self._name(self.head), line)
        self.head_size += len(line)
        while len(self.segments) > self.max_segments:
            self._drop_oldest()

    def _drop_oldest(self):
        seg = self.segments.pop(0)
        self.hal.remove(self._name(seg))
        self.dropped += 1
        first = self.segments[0]
        if self.cseg <= seg:
            self.cseg, self.coff = first, 0
        if self.rseg <= seg:
            self.rseg, self.roff = first, 0

    def next(self):
        """(line, position after it) of the next unread line, or None."""
        while self.unread():
            f = self.hal.open(self._name(self.rseg), "rb")
            try:
                f.seek(self.roff)
                line = f.readline()
            finally:
                f.close()
            if line.endswith(b"\n"):
                self.roff += len(line)
                if line.startswith(b"{") and line.endswith(b"}\n"):
                    return line, (self.rseg, self.roff)
                continue  # a line torn by a power cut (and sealed at boot)
            if line:  # torn and not sealed yet
                self.roff += len(line)
                continue
            if self.rseg == self.head:
                self.roff = self.head_size
                return None
            self.rseg = self.segments[self.segments.index(self.rseg) + 1]
            self.roff = 0
        return None

    def commit(self, pos):
        if self.segments and pos[0] < self.segments[0]:
            return  # its segment was dropped when the ring overflowed
        self.cseg, self.coff = pos
        while self.segments and self.segments[0] < self.cseg:
            self.hal.remove(self._name(self.segments.pop(0)))
        if self.empty() and self.segments:  # all acknowledged: start afresh
            for seg in self.segments:
                self.hal.remove(self._name(seg))
            self.segments = []
            self.head += 1
            self.head_size = 0
            self.rseg, self.roff = self.cseg, self.coff = self.head, 0

    def rewind(self):
        self.rseg, self.roff = self.cseg, self.coff


class Outbox:
    def __init__(self, ring, client, topic, window=4):
        self.ring = ring
        self.client = client
        self.topic = topic
        self.window = window
        self.inflight = []  # [pid, from_ram, ring position, acked]
        self.ram = []
        self._ram_sent = 0
        self.published = 0
        client.on_puback = self.on_puback
        client.on_down = self.on_down
        client.on_up = self.pump

    def add(self, line):
        """Queue one reading (bytes ending in a newline)."""
        if self.client.up and self.ring.empty():
            if len(self.ram) >= _RAM_MAX:
                self.client.drop("no PUBACKs")  # spills the RAM lines into the ring
                self.ring.append(line)
            else:
                self.ram.append(line)
        else:
            self.ring.append(line)
        self.pump()

    def pump(self):
        client = self.client
        while client.up and len(self.inflight) < self.window:
            if self.ring.unread():
                item = self.ring.next()
                if item is None:
                    return
                line, pos = item
                from_ram = False
            elif self._ram_sent < len(self.ram):
                line = self.ram[self._ram_sent]
                pos = None
                from_ram = True
            else:
                return
            pid = client.publish(self.topic, line[:-1])
            if pid is None:
                return
            if from_ram:
                self._ram_sent += 1
            self.inflight.append([pid, from_ram, pos, False])

    def on_puback(self, pid):
        for entry in self.inflight:
            if entry[0] == pid:
                entry[3] = True
        while self.inflight and self.inflight[0][3]:
            entry = self.inflight.pop(0)
            self.published += 1
            if entry[1]:
                self.ram.pop(0)
                self._ram_sent -= 1
            else:
                self.ring.commit(entry[2])
        self.pump()

    def on_down(self):
        self.inflight = []
        self.ring.rewind()
        for line in self.ram:
            self.ring.append(line)
        self.ram = []
        self._ram_sent = 0

    def pending(self):
        return self.ring.unread() or len(self.ram) > self._ram_sent
