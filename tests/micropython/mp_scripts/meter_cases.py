# Runs on MicroPython: meter the wave files of a batch of cases with both kernels and
# print one JSON line per case and kernel with every window's results.
import json
import sys
from array import array

from submeter.metering import Meter


def run(case, kernel):
    nch = len(case["i_gains"])
    meter = Meter(nch, case["cycles"], case["v_gain"], case["i_gains"], case["phases"],
                  2048, case["hysteresis"], kernel)
    windows = []

    def on_window(m):
        windows.append([m.freq, m.v_missing, [list(r) for r in m.ch], m.window_s])

    frames = case["block"]
    size = 2 * (nch + 1)
    buf = array("H", bytes(size * frames))
    skip = case.get("skip", 0)  # > 0: sample in bursts like a board, skipping frames
    with open(case["wave"], "rb") as f:
        while True:
            n = f.readinto(buf)
            if n < len(buf) if skip else not n:
                break
            meter.feed(buf, n // size, case["rate"], on_window, not skip)
            if skip:
                f.seek(skip * size, 1)
    return windows


with open(sys.argv[1]) as f:
    cases = json.load(f)
for k, case in enumerate(cases):
    for kernel in ("viper", "python"):
        print(json.dumps({"case": k, "kernel": kernel, "windows": run(case, kernel)}))
