# The per-sample metering loop, the only hot path of the firmware, in two twins:
#
#   run_viper   @micropython.viper: machine code with native 32-bit ints and raw pointers
#               into the sample and accumulator arrays (no boxing, no bounds checks);
#   run_python  the same loop as plain bytecode, the reference the viper twin must match
#               bit for bit (tests/micropython/test_submeter_metering.py checks both).
#
# One call walks interleaved ADC frames [v, i1, i2, ...] (u16 counts) and sums, per block
# of at most MAX_BLOCK frames, the integer moments the meter needs:
#   sv, svv                 voltage sum and sum of squares
#   per channel: si, sii    current sum and sum of squares
#                svi        sum of v*i (active power)
#                sd         sum of v[n-1]*i[n] - v[n]*i[n-1] (sign of reactive power, phase
#                           correction: its mean is V*I*sin(phi)*sin(2*pi*f/rate) per harmonic)
# Samples are centred on the nominal mid-scale first, so a 12-bit square is < 2**22 and a
# block of 128 frames cannot overflow the viper's 32-bit ints on the ESP32.
#
# It also finds rising zero crossings of the voltage (relative to the DC level the meter
# estimated; a crossing counts only after the voltage rose above +hysteresis and then fell
# below -hysteresis, so noise, harmonics and a corrected DC level cannot add crossings) and
# returns early, without consuming the frame after the
# crossing, once S_NEED crossings were seen: windows then span whole mains cycles.
import micropython
from micropython import const

# st: array('i') of NSTATE, kept across calls
S_MID = const(0)  # nominal ADC mid-scale, counts
S_THR = const(1)  # crossing level relative to mid (the DC offset), counts, + THR_BIAS
S_HYST = const(2)  # hysteresis, counts
S_ARMED = const(3)  # Schmitt trigger: 0 wait for > +hyst, 1 wait for < -hyst, 2 armed
S_PREV = const(4)  # previous voltage sample relative to the crossing level
S_NEED = const(5)  # crossings still wanted; the call returns when it reaches 0
S_XA = const(6)  # voltage (relative to the level) before the last crossing, < 0
S_XB = const(7)  # voltage at the last crossing, >= 0
S_VP = const(8)  # previous centred voltage sample
S_IP = const(9)  # previous centred current sample of channel c at S_IP + c
NSTATE = const(16)
# Loads from a ptr32 are not sign-extended on 64-bit builds (the unix port): state the
# viper compares must stay non-negative, so the crossing level is stored biased.
THR_BIAS = const(0x10000)
MAX_CHANNELS = const(7)

# acc: array('i') of 2 + 4 * nch, zeroed by every call
A_SV = const(0)
A_SVV = const(1)
A_CH = const(2)  # channel c: si, sii, svi, sd at A_CH + 4 * c
MAX_BLOCK = const(128)


@micropython.viper
def run_viper(buf: ptr16, start: int, n: int, nch: int, st: ptr32, acc: ptr32) -> int:
    stride = nch + 1
    k = 0
    while k < 2 + 4 * nch:
        acc[k] = 0
        k += 1
    mid = st[S_MID]
    thr = st[S_THR] - THR_BIAS
    hyst = st[S_HYST]
    armed = st[S_ARMED]
    prev = st[S_PREV]
    need = st[S_NEED]
    vp = st[S_VP]
    sv = 0
    svv = 0
    j = start * stride
    f = 0
    while f < n:
        v = int(buf[j]) - mid
        rel = v - thr
        if armed == 2:
            if rel >= 0:
                armed = 0
                st[S_XA] = prev
                st[S_XB] = rel
                need -= 1
                if need <= 0:
                    break
        elif armed == 1:
            if rel < 0 - hyst:
                armed = 2
        elif rel > hyst:
            armed = 1
        prev = rel
        sv += v
        svv += v * v
        c = 0
        a = A_CH
        while c < nch:
            i = int(buf[j + 1 + c]) - mid
            acc[a] += i
            acc[a + 1] += i * i
            acc[a + 2] += v * i
            acc[a + 3] += vp * i - v * st[S_IP + c]
            st[S_IP + c] = i
            c += 1
            a += 4
        vp = v
        j += stride
        f += 1
    acc[A_SV] = sv
    acc[A_SVV] = svv
    st[S_ARMED] = armed
    st[S_PREV] = prev
    st[S_NEED] = need
    st[S_VP] = vp
    return f


def run_python(buf, start, n, nch, st, acc):
    stride = nch + 1
    for k in range(2 + 4 * nch):
        acc[k] = 0
    mid = st[S_MID]
    thr = st[S_THR] - THR_BIAS
    hyst = st[S_HYST]
    armed = st[S_ARMED]
    prev = st[S_PREV]
    need = st[S_NEED]
    vp = st[S_VP]
    sv = 0
    svv = 0
    j = start * stride
    f = 0
    while f < n:
        v = buf[j] - mid
        rel = v - thr
        if armed == 2:
            if rel >= 0:
                armed = 0
                st[S_XA] = prev
                st[S_XB] = rel
                need -= 1
                if need <= 0:
                    break
        elif armed == 1:
            if rel < -hyst:
                armed = 2
        elif rel > hyst:
            armed = 1
        prev = rel
        sv += v
        svv += v * v
        a = A_CH
        for c in range(nch):
            i = buf[j + 1 + c] - mid
            acc[a] += i
            acc[a + 1] += i * i
            acc[a + 2] += v * i
            acc[a + 3] += vp * i - v * st[S_IP + c]
            st[S_IP + c] = i
            a += 4
        vp = v
        j += stride
        f += 1
    acc[A_SV] = sv
    acc[A_SVV] = svv
    st[S_ARMED] = armed
    st[S_PREV] = prev
    st[S_NEED] = need
    st[S_VP] = vp
    return f


def kernel(name):
    """The kernel called ``name`` ("viper" or "python")."""
    return run_viper if name == "viper" else run_python
