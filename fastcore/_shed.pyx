# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, binding=True, embedsignature=True
"""Compiled kernel: load-shedding and staggered-restore planner.

Same API and results as :mod:`fastcore._shed_py` (the readable reference). The twin
sorts all candidates; this kernel finds the break item with a weighted histogram over the
keys' bit patterns (a weighted quickselect only when the break bucket is huge) and sorts
the few items around it, which gives the same ranks because the candidate order (cost
per W, then load index) is a strict total order. Scratch memory is pooled between calls;
the argument checks have a C fast path that falls back to the shared checker, so errors
are the twin's.
"""

from libc.math cimport INFINITY, ceil, floor
from libc.stdint cimport INT32_MAX, int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcpy, memset
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release

import numpy as np

from fastcore._shed_common import (
    RestorePlan,
    ShedPlan,
    check_restore_inputs,
    check_shed_inputs,
    check_shed_scalars,
)
from fastcore import _shed_common

cdef enum:
    CORE_HALF_WIDTH = 10
    SMALL = 16
    BUCKETS = 4096
    SORT_LIMIT = 4096
    DROP_BATCH = 64

cdef int64_t NO_LIMIT = 2 ** 62
cdef int64_t CORE_NODE_LIMIT = 100000
cdef double MAX_POWER_KW = 1.0e7

assert CORE_HALF_WIDTH == _shed_common.CORE_HALF_WIDTH
assert CORE_NODE_LIMIT == _shed_common.CORE_NODE_LIMIT and NO_LIMIT == _shed_common.NO_LIMIT
assert MAX_POWER_KW == _shed_common.MAX_POWER_KW
assert _shed_common.MAX_EXACT_ITEMS + 2 * CORE_HALF_WIDTH < 64


cdef struct Item:
    double key  # cost per W
    int64_t w  # watts
    int64_t c  # cost, milli-units
    int32_t rep  # lowest member load index
    int32_t gid  # group id, -1 for a single load


cdef inline bint less(const Item* a, const Item* b) noexcept nogil:
    return a.key < b.key or (a.key == b.key and a.rep < b.rep)


cdef inline void swap(Item* a, Item* b) noexcept nogil:
    cdef Item tmp = a[0]
    a[0] = b[0]
    b[0] = tmp


cdef inline uint64_t next_random(uint64_t* state) noexcept nogil:
    # xorshift64: pivot choice only; results never depend on it
    cdef uint64_t x = state[0]
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    state[0] = x
    return x


cdef void insertion_sort(Item* a, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t q, r
    cdef Item x
    for q in range(lo + 1, hi):
        x = a[q]
        r = q - 1
        while r >= lo and less(&x, &a[r]):
            a[r + 1] = a[r]
            r -= 1
        a[r + 1] = x


cdef Py_ssize_t partition(Item* a, Py_ssize_t lo, Py_ssize_t hi, uint64_t* rng,
                          int64_t* left_w) noexcept nogil:
    """Lomuto partition of [lo, hi) around a random pivot; returns its final position
    and the total watts of the items before it."""
    cdef Py_ssize_t q, store = lo, r = lo + <Py_ssize_t>(next_random(rng) % <uint64_t>(hi - lo))
    cdef int64_t total = 0
    swap(&a[r], &a[hi - 1])
    for q in range(lo, hi - 1):
        if less(&a[q], &a[hi - 1]):
            swap(&a[q], &a[store])
            total += a[store].w
            store += 1
    swap(&a[store], &a[hi - 1])
    left_w[0] = total
    return store


cdef Py_ssize_t weighted_select(Item* a, Py_ssize_t m, int64_t target,
                                uint64_t* rng) noexcept nogil:
    """Partially order ``a`` so that position k holds the break item (the first, in key
    order, at which the running total of watts reaches ``target``) and [0, k) hold
    exactly the items before it. Requires sum(w) >= target > 0."""
    cdef Py_ssize_t lo = 0, hi = m, p, q
    cdef int64_t need = target, left_w
    while hi - lo > SMALL:
        p = partition(a, lo, hi, rng, &left_w)
        if left_w >= need:
            hi = p
        elif left_w + a[p].w >= need:
            return p
        else:
            need -= left_w + a[p].w
            lo = p + 1
    insertion_sort(a, lo, hi)
    for q in range(lo, hi):
        if a[q].w >= need:
            return q
        need -= a[q].w
    return hi - 1


cdef void nth_element(Item* a, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nth,
                      uint64_t* rng) noexcept nogil:
    cdef Py_ssize_t p
    cdef int64_t ignored
    while hi - lo > SMALL:
        p = partition(a, lo, hi, rng, &ignored)
        if p == nth:
            return
        if nth < p:
            hi = p
        else:
            lo = p + 1
    insertion_sort(a, lo, hi)


cdef int cmp_item(const void* pa, const void* pb) noexcept nogil:
    cdef const Item* a = <const Item*>pa
    cdef const Item* b = <const Item*>pb
    if less(a, b):
        return -1
    if less(b, a):
        return 1
    return 0


cdef inline uint64_t key_bits(double key) noexcept nogil:
    # IEEE-754 bit patterns of non-negative doubles sort like the values
    cdef uint64_t bits
    memcpy(&bits, &key, sizeof(double))
    return bits


cdef struct Cand:
    Item item
    Py_ssize_t pos


cdef struct Work:
    # scratch memory of one plan_shed call, pooled between calls (see _Workspace)
    Item* items
    Item* items2
    int64_t* w_load
    int64_t* gw
    int64_t* gc
    int32_t* grep
    uint8_t* gflag  # 1 = has switched-on eligible members, 2 = blocked
    uint8_t* sel
    uint8_t* mark_load
    uint8_t* mark_group
    Cand* cands
    Py_ssize_t* dropped
    int64_t hist_w[BUCKETS]
    int64_t hist_n[BUCKETS]


cdef Py_ssize_t narrow(Work* ws, Py_ssize_t m, int64_t target, Py_ssize_t* s1,
                       int64_t* pre_w, int64_t* pre_c) noexcept nogil:
    """Weighted histogram over the key bit patterns: reorder the items into
    [keys certainly before the core | a middle region S holding the break item and at
    least CORE_HALF_WIDTH items on each side of it (or reaching an end) | the rest].
    Returns S's start (its end in ``s1``) and the watts/cost of the items before it.
    Linear, branch-free passes instead of a sort."""
    cdef Item* a = ws.items
    cdef Item* out = ws.items2
    cdef Item* tmp
    cdef uint64_t lo_bits = key_bits(a[0].key), hi_bits = lo_bits, bits, span
    cdef Py_ssize_t q, nb, b, b_lo, b_hi, brk, cls
    cdef Py_ssize_t cursor[3]
    cdef int64_t below = 0, above = 0, acc = 0, sum_w = 0, sum_c = 0, n0 = 0, n1 = 0
    cdef int shift = 0
    cdef uint64_t limit = 64
    for q in range(1, m):
        bits = key_bits(a[q].key)
        lo_bits = bits if bits < lo_bits else lo_bits
        hi_bits = bits if bits > hi_bits else hi_bits
    span = hi_bits - lo_bits
    while limit < <uint64_t>(m // 4) and limit < BUCKETS:  # ~4 items per bucket
        limit *= 2
    while (span >> shift) >= limit:
        shift += 1
    nb = <Py_ssize_t>(span >> shift) + 1
    memset(ws.hist_w, 0, nb * sizeof(int64_t))
    memset(ws.hist_n, 0, nb * sizeof(int64_t))
    for q in range(m):
        b = <Py_ssize_t>((key_bits(a[q].key) - lo_bits) >> shift)
        ws.hist_w[b] += a[q].w
        ws.hist_n[b] += 1
    brk = 0
    while brk < nb - 1 and acc + ws.hist_w[brk] < target:
        acc += ws.hist_w[brk]
        brk += 1
    b_lo = brk
    while b_lo > 0 and below < CORE_HALF_WIDTH:
        b_lo -= 1
        below += ws.hist_n[b_lo]
    b_hi = brk
    while b_hi < nb - 1 and above < CORE_HALF_WIDTH:
        b_hi += 1
        above += ws.hist_n[b_hi]
    for b in range(b_lo):
        n0 += ws.hist_n[b]
        sum_w += ws.hist_w[b]
    for b in range(b_lo, b_hi + 1):
        n1 += ws.hist_n[b]
    cursor[0] = 0
    cursor[1] = n0
    cursor[2] = n0 + n1
    for q in range(m):  # scatter by class: < b_lo | b_lo..b_hi | > b_hi
        b = <Py_ssize_t>((key_bits(a[q].key) - lo_bits) >> shift)
        cls = (b >= b_lo) + (b > b_hi)
        out[cursor[cls]] = a[q]
        cursor[cls] += 1
    for q in range(n0):
        sum_c += out[q].c
    tmp = ws.items
    ws.items = ws.items2
    ws.items2 = tmp
    s1[0] = n0 + n1
    pre_w[0] = sum_w
    pre_c[0] = sum_c
    return n0


cdef struct BnB:
    const Item* items
    int64_t* suffix
    int m
    int64_t target
    int64_t best_c
    int64_t best_over
    uint64_t path
    uint64_t best
    int64_t nodes
    int64_t node_limit
    bint stop
    bint found


cdef int64_t lower_bound(BnB* b, int j, int64_t need) noexcept nogil:
    cdef int64_t full = 0, acc = 0
    cdef double frac
    cdef int q
    for q in range(j, b.m):
        if acc + b.items[q].w >= need:
            frac = <double>b.items[q].c * (<double>(need - acc) / <double>b.items[q].w)
            return full + <int64_t>ceil(frac * (1.0 - 1e-12) - 1e-9)
        acc += b.items[q].w
        full += b.items[q].c
    return NO_LIMIT


cdef void dfs(BnB* b, int j, int64_t cur_w, int64_t cur_c) noexcept nogil:
    cdef int64_t bound, new_w, new_c, over
    b.nodes += 1
    if b.nodes > b.node_limit:
        b.stop = True
    if b.stop or j == b.m or cur_w + b.suffix[j] < b.target:
        return
    bound = cur_c + lower_bound(b, j, b.target - cur_w)
    if bound > b.best_c or (bound >= b.best_c and b.best_over == 0):
        return
    new_w = cur_w + b.items[j].w
    new_c = cur_c + b.items[j].c
    b.path |= (<uint64_t>1) << j
    if new_w >= b.target:
        over = new_w - b.target
        if new_c < b.best_c or (new_c == b.best_c and over < b.best_over):
            b.best_c = new_c
            b.best_over = over
            b.best = b.path
            b.found = True
    else:
        dfs(b, j + 1, new_w, new_c)
    b.path &= ~((<uint64_t>1) << j)
    dfs(b, j + 1, cur_w, cur_c)


cdef bint bnb(const Item* items, int m, int64_t target, int64_t node_limit,
              uint64_t* chosen) noexcept nogil:
    """Exact search over ``items`` (sorted by key); see _shed_py._bnb."""
    cdef int64_t suffix[64]
    cdef BnB b
    cdef int j
    suffix[m] = 0
    for j in range(m - 1, -1, -1):
        suffix[j] = suffix[j + 1] + items[j].w
    b.items = items
    b.suffix = suffix
    b.m = m
    b.target = target
    b.best_c = NO_LIMIT
    b.best_over = NO_LIMIT
    b.path = 0
    b.best = 0
    b.nodes = 0
    b.node_limit = node_limit
    b.stop = False
    b.found = False
    dfs(&b, 0, 0, 0)
    chosen[0] = b.best
    return b.found


cdef int cmp_drop(const void* pa, const void* pb) noexcept nogil:
    # descending (cost, watts, key, rep)
    cdef const Item* a = &(<const Cand*>pa).item
    cdef const Item* b = &(<const Cand*>pb).item
    if a.c != b.c:
        return -1 if a.c > b.c else 1
    if a.w != b.w:
        return -1 if a.w > b.w else 1
    if a.key != b.key:
        return -1 if a.key > b.key else 1
    if a.rep != b.rep:
        return -1 if a.rep > b.rep else 1
    return 0


cdef inline Py_ssize_t add_cand(Work* ws, Py_ssize_t count, Py_ssize_t q,
                                int64_t over) noexcept nogil:
    if ws.items[q].w <= over:
        ws.cands[count].item = ws.items[q]
        ws.cands[count].pos = q
        count += 1
    return count


cdef inline void swap_cand(Cand* a, Cand* b) noexcept nogil:
    cdef Cand tmp = a[0]
    a[0] = b[0]
    b[0] = tmp


cdef void top_first(Cand* a, Py_ssize_t count, Py_ssize_t top, uint64_t* rng) noexcept nogil:
    """Quickselect: move the ``top`` first candidates in drop order to a[0:top)."""
    cdef Py_ssize_t lo = 0, hi = count, q, store, r
    while hi - lo > 1:
        r = lo + <Py_ssize_t>(next_random(rng) % <uint64_t>(hi - lo))
        swap_cand(&a[r], &a[hi - 1])
        store = lo
        for q in range(lo, hi - 1):
            if cmp_drop(&a[q], &a[hi - 1]) < 0:
                swap_cand(&a[q], &a[store])
                store += 1
        swap_cand(&a[store], &a[hi - 1])
        if store == top or store == top - 1:
            return
        if store > top:
            hi = store
        else:
            lo = store + 1


cdef Py_ssize_t greedy_drop(Work* ws, Py_ssize_t count, int64_t over, int64_t* dropped_w,
                            int64_t* dropped_c) noexcept nogil:
    """Drop candidates costliest first (then largest, then latest in key order) while
    the overshoot allows. Writes the dropped positions to ws.dropped and returns how
    many. Same result as sorting all candidates (_shed_py._drop), but in batches:
    the overshoot only shrinks, so after each batch every remaining candidate heavier
    than it can be discarded for good."""
    cdef Cand* a = ws.cands
    cdef Py_ssize_t q, batch, kept, n_dropped = 0
    cdef uint64_t rng = 0x2545F4914F6CDD1DULL
    while count > 0:
        batch = count if count <= DROP_BATCH else DROP_BATCH
        if batch < count:
            top_first(a, count, batch, &rng)
        qsort(a, batch, sizeof(Cand), cmp_drop)
        for q in range(batch):
            if a[q].item.w <= over:
                over -= a[q].item.w
                dropped_w[0] += a[q].item.w
                dropped_c[0] += a[q].item.c
                ws.dropped[n_dropped] = a[q].pos
                n_dropped += 1
        kept = 0
        for q in range(batch, count):
            if a[q].item.w <= over:
                a[kept] = a[q]
                kept += 1
        count = kept
    return n_dropped


cdef inline bint single_better(const Item* a, const Item* b) noexcept nogil:
    # ascending (cost, watts, key, rep)
    if a.c != b.c:
        return a.c < b.c
    if a.w != b.w:
        return a.w < b.w
    return less(a, b)


cdef bint choose(Work* ws, Py_ssize_t m, int64_t target, int exact_max) noexcept nogil:
    """Set ``ws.sel[q]`` for the items to shed (items are reordered); returns whether
    the plan is exact. Mirrors _shed_py._choose."""
    cdef Item* items = ws.items
    cdef uint8_t* sel = ws.sel
    cdef Py_ssize_t q, k, lo, hi, single, s0, s1, count
    cdef int64_t total = 0, pre_w, pre_c, need, w1, c1, w2, c2, dw, dc, acc_w, acc_c
    cdef uint64_t rng = 0x9E3779B97F4A7C15ULL, mask
    if m <= 0:
        return True
    for q in range(m):
        total += items[q].w
        items[q].key = <double>items[q].c / <double>items[q].w
    memset(sel, 0, <size_t>m)
    if target <= 0:
        return True
    if total < target:
        memset(sel, 1, m)
        return True
    if m <= exact_max:
        insertion_sort(items, 0, m)
        bnb(items, <int>m, target, NO_LIMIT, &mask)
        for q in range(m):
            sel[q] = (mask >> q) & 1
        return True
    # the break item k and a sorted core [lo, hi) of +-CORE_HALF_WIDTH ranks around it
    s0 = narrow(ws, m, target, &s1, &pre_w, &pre_c)
    items = ws.items  # narrow reorders into the other buffer
    if s1 - s0 <= SORT_LIMIT:
        qsort(&items[s0], s1 - s0, sizeof(Item), cmp_item)
        need = target - pre_w
        k = s0
        while items[k].w < need:
            need -= items[k].w
            k += 1
    else:  # a huge break bucket (e.g. many equal keys): select within it
        k = s0 + weighted_select(&items[s0], s1 - s0, target - pre_w, &rng)
    lo = k - CORE_HALF_WIDTH if k > CORE_HALF_WIDTH else 0
    hi = k + CORE_HALF_WIDTH + 1 if k + CORE_HALF_WIDTH + 1 < m else m
    if s1 - s0 > SORT_LIMIT:
        if lo < k:
            nth_element(items, s0, k, lo, &rng)
            insertion_sort(items, lo, k)
        if hi < s1:
            nth_element(items, k + 1, s1, hi, &rng)
        insertion_sort(items, k + 1, hi)
    # watts/cost of ranks < lo and of ranks < k
    acc_w = pre_w
    acc_c = pre_c
    for q in range(s0, lo):
        acc_w += items[q].w
        acc_c += items[q].c
    pre_w = acc_w
    pre_c = acc_c
    for q in range(lo, k):
        acc_w += items[q].w
        acc_c += items[q].c
    # first plan: ranks < lo + exact search on the core, then drop redundant items
    memset(sel, 1, lo)
    w1 = pre_w
    c1 = pre_c
    if bnb(&items[lo], <int>(hi - lo), target - pre_w, CORE_NODE_LIMIT, &mask):
        for q in range(lo, hi):
            if (mask >> (q - lo)) & 1:
                sel[q] = 1
                w1 += items[q].w
                c1 += items[q].c
    else:
        for q in range(lo, k + 1):
            sel[q] = 1
            w1 += items[q].w
            c1 += items[q].c
    count = 0
    for q in range(hi):
        if sel[q]:
            count = add_cand(ws, count, q, w1 - target)
    dw = dc = 0
    count = greedy_drop(ws, count, w1 - target, &dw, &dc)
    for q in range(count):
        sel[ws.dropped[q]] = 0
    w1 -= dw
    c1 -= dc
    # second plan: ranks < k + the best single item completing them, then drop
    need = target - acc_w
    single = -1
    for q in range(k, m):
        if items[q].w >= need and (single < 0 or single_better(&items[q], &items[single])):
            single = q
    w2 = acc_w + items[single].w
    c2 = acc_c + items[single].c
    count = 0
    for q in range(k):
        count = add_cand(ws, count, q, w2 - target)
    count = add_cand(ws, count, single, w2 - target)
    dw = dc = 0
    count = greedy_drop(ws, count, w2 - target, &dw, &dc)
    w2 -= dw
    c2 -= dc
    if c2 < c1 or (c2 == c1 and w2 < w1):
        memset(sel, 0, m)
        memset(sel, 1, k)
        sel[single] = 1
        for q in range(count):
            sel[ws.dropped[q]] = 0
    return False


cdef inline int64_t watts(double kw) noexcept nogil:
    if not (kw >= 0.0 and kw <= MAX_POWER_KW):
        return -1
    return <int64_t>(kw * 1000.0 + 0.5)  # == floor(): the value is positive
cdef class _Workspace:
    """Scratch memory for plan_shed, kept between calls: fresh multi-megabyte buffers
    would cost more in page faults than planning itself."""

    cdef Work w
    cdef Py_ssize_t cap

    def __cinit__(self):
        self.cap = 0

    cdef int reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t i
        if n <= self.cap:
            return 0
        self._free()
        self.w.items = <Item*>malloc(n * sizeof(Item))
        self.w.items2 = <Item*>malloc(n * sizeof(Item))
        self.w.w_load = <int64_t*>malloc(n * sizeof(int64_t))
        # group accumulators, one slot per group id (grep: lowest eligible member)
        self.w.gw = <int64_t*>calloc(n, sizeof(int64_t))
        self.w.gc = <int64_t*>calloc(n, sizeof(int64_t))
        self.w.grep = <int32_t*>malloc(n * sizeof(int32_t))
        self.w.gflag = <uint8_t*>calloc(n, 1)
        self.w.sel = <uint8_t*>malloc(n)
        self.w.mark_load = <uint8_t*>calloc(n, 1)
        self.w.mark_group = <uint8_t*>calloc(n + 1, 1)  # index = group id + 1
        self.w.cands = <Cand*>malloc((n + 1) * sizeof(Cand))
        self.w.dropped = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
        if (self.w.items == NULL or self.w.items2 == NULL or self.w.w_load == NULL or self.w.gw == NULL
                or self.w.gc == NULL or self.w.grep == NULL or self.w.gflag == NULL
                or self.w.sel == NULL or self.w.mark_load == NULL or self.w.mark_group == NULL
                or self.w.cands == NULL or self.w.dropped == NULL):
            self._free()
            raise MemoryError()
        for i in range(n):
            self.w.grep[i] = INT32_MAX
        self.cap = n
        return 0

    cdef void _free(self) noexcept:
        if self.cap == 0 and self.w.items == NULL:
            return
        free(self.w.items)
        free(self.w.items2)
        free(self.w.w_load)
        free(self.w.gw)
        free(self.w.gc)
        free(self.w.grep)
        free(self.w.gflag)
        free(self.w.sel)
        free(self.w.mark_load)
        free(self.w.mark_group)
        free(self.w.cands)
        free(self.w.dropped)
        memset(&self.w, 0, sizeof(Work))
        self.cap = 0

    def __dealloc__(self):
        self._free()


_pool = []  # idle _Workspace objects (taken and returned under the GIL)


cdef int64_t DEFAULT_COST_MILLI[11]  # by priority 1..10: 10 ** (p - 1) * 1000
for _p in range(1, 11):
    DEFAULT_COST_MILLI[_p] = int(_shed_common.default_cost(_p)) * 1000
cdef double MAX_COST = _shed_common.MAX_COST


cdef Py_ssize_t build_items(Work* ws, Py_ssize_t n, const double* power, const int8_t* prio,
                            const uint8_t* shed_ok, const uint8_t* locked,
                            const double* since, const double* min_on, const int32_t* groups,
                            const double* cost, double now, Py_ssize_t* n_invalid,
                            int* errors) noexcept nogil:
    """Check every load (``errors`` gets bit k for SHED_VALUE_ERRORS[k]) and build the
    candidates: eligible ungrouped loads, then eligible groups (see _shed_py). Optional
    arrays may be NULL (defaults: not locked, no min-on rule, no group, default cost).

    Eligibility is random per load, so a single load is written unconditionally and
    kept if eligible (no unpredictable branch); grouped loads are accumulated per group.
    """
    cdef Py_ssize_t i, m = 0, invalid = 0
    cdef int64_t wi, ci
    cdef int32_t g
    cdef int8_t p
    cdef bint eligible, any_group = False
    cdef Item* items = ws.items
    cdef double value
    cdef int bad = 0
    for i in range(n):
        p = prio[i]
        if p < 1 or p > 10:
            bad |= 1
            continue
        g = groups[i] if groups != NULL else -1
        if g < -1 or g >= n:
            bad |= 2
            continue
        if min_on != NULL and not (min_on[i] >= 0.0 and min_on[i] < INFINITY):
            bad |= 4
            continue
        if cost != NULL:
            value = cost[i]
            if not (value >= 0.0 and value <= MAX_COST):
                bad |= 8
                continue
            ci = <int64_t>(value * 1000.0 + 0.5)  # == floor(): the value is positive
        else:
            ci = DEFAULT_COST_MILLI[p]
        wi = watts(power[i])
        ws.w_load[i] = wi
        if wi == 0:
            continue  # off: neither a candidate nor blocking its group
        invalid += wi < 0
        eligible = (wi > 0) & (shed_ok[i] != 0)
        if locked != NULL:
            eligible &= locked[i] == 0
        if since != NULL:
            eligible &= not ((since[i] == since[i]) & (now - since[i] < min_on[i]))
        if g < 0:  # written unconditionally, kept if eligible
            items[m].w = wi
            items[m].c = ci
            items[m].rep = <int32_t>i
            items[m].gid = -1
            m += eligible
        else:
            any_group = True
            ws.gflag[g] |= 2 - eligible  # 1 = has an eligible member, 2 = blocked
            if eligible:
                ws.gw[g] += wi
                ws.gc[g] += ci
                if i < ws.grep[g]:
                    ws.grep[g] = <int32_t>i
    if any_group:
        for i in range(n):
            if ws.gflag[i] == 1 and not bad:
                items[m].w = ws.gw[i]
                items[m].c = ws.gc[i]
                items[m].rep = ws.grep[i]
                items[m].gid = <int32_t>i
                m += 1
            if ws.gflag[i]:
                ws.gflag[i] = 0
                ws.gw[i] = 0
                ws.gc[i] = 0
                ws.grep[i] = INT32_MAX
    n_invalid[0] = invalid
    errors[0] = bad
    return m


cdef extern from "Python.h":
    # the raw C-API call: returns -1 with an exception set instead of raising
    int PyObject_GetBuffer_raw "PyObject_GetBuffer" (object obj, Py_buffer* view, int flags)
    void PyErr_Clear()


cdef bint take_buffer(Py_buffer* view, object obj, char code, Py_ssize_t n):
    """Fast path of check_array: an exact numpy.ndarray, 1-D, C-contiguous, of the native
    format ``code`` and length ``n``. Anything else returns False (no buffer held) and
    plan_shed falls back to the shared checker, which raises the documented errors or
    makes a contiguous copy."""
    if type(obj) is not _ndarray:
        return False
    if PyObject_GetBuffer_raw(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) != 0:
        PyErr_Clear()
        return False
    if (view.ndim != 1 or view.format == NULL or view.format[0] != code
            or view.format[1] != 0 or view.shape[0] != n):
        PyBuffer_Release(view)
        return False
    return True


_ndarray = np.ndarray
# argument order of plan_shed's arrays and their buffer format codes
_SHED_ARGS = ("power_kw", "priority", "sheddable", "locked_out", "on_since_s", "min_on_s",
              "group", "cost")
cdef char* SHED_CODES = b"db??ddid"


def plan_shed(power_kw, priority, sheddable, *, target_kw=None, import_cap_kw=None,
              site_import_kw=None, locked_out=None, on_since_s=None, min_on_s=None,
              now_s=None, group=None, cost=None, exact_max_items=20):
    """Choose the loads to shed; see :func:`fastcore._shed_py.plan_shed` (same API and
    results) and docs/fastcore.md."""
    cdef Py_buffer views[8]
    cdef const void* ptrs[8]
    cdef int held = 0, k
    cdef bint fast = True
    cdef Py_ssize_t n = -1
    arrays = [power_kw, priority, sheddable, locked_out, on_since_s, min_on_s, group, cost]
    try:
        if type(power_kw) is _ndarray and power_kw.ndim == 1:
            n = power_kw.shape[0]
        for k in range(8):
            ptrs[k] = NULL
            if arrays[k] is None and k >= 3:
                continue
            if n < 0 or not take_buffer(&views[k], arrays[k], SHED_CODES[k], n):
                fast = False
                break
            held |= 1 << k
            ptrs[k] = views[k].buf
        if fast:
            target_w, now = check_shed_scalars(
                target_kw=target_kw, import_cap_kw=import_cap_kw,
                site_import_kw=site_import_kw, on_since_given=on_since_s is not None,
                min_on_given=min_on_s is not None, now_s=now_s,
                exact_max_items=exact_max_items)
        else:  # unusual input: the shared checker raises or normalises it
            for k in range(8):
                if held & (1 << k):
                    PyBuffer_Release(&views[k])
            held = 0
            inputs = check_shed_inputs(
                power_kw, priority, sheddable, target_kw=target_kw,
                import_cap_kw=import_cap_kw, site_import_kw=site_import_kw,
                locked_out=locked_out, on_since_s=on_since_s, min_on_s=min_on_s, now_s=now_s,
                group=group, cost=cost, exact_max_items=exact_max_items)
            target_w, now = inputs.target_w, inputs.now_s
            arrays = [inputs.power_kw, inputs.priority, inputs.sheddable, inputs.locked_out,
                      inputs.on_since_s, inputs.min_on_s, inputs.group, inputs.cost]
            n = inputs.power_kw.shape[0]
            for k in range(8):
                ptrs[k] = NULL
                if arrays[k] is None:
                    continue
                if not take_buffer(&views[k], arrays[k], SHED_CODES[k], n):
                    raise AssertionError("checked array refused by the buffer fast path")
                held |= 1 << k
                ptrs[k] = views[k].buf
        return _plan(n, <const double*>ptrs[0], <const int8_t*>ptrs[1],
                     <const uint8_t*>ptrs[2], <const uint8_t*>ptrs[3],
                     <const double*>ptrs[4], <const double*>ptrs[5],
                     <const int32_t*>ptrs[6], <const double*>ptrs[7], target_w, now,
                     exact_max_items)
    finally:
        for k in range(8):
            if held & (1 << k):
                PyBuffer_Release(&views[k])


cdef object _plan(Py_ssize_t n, const double* power, const int8_t* prio,
                  const uint8_t* shed_ok, const uint8_t* locked, const double* since,
                  const double* min_on, const int32_t* groups, const double* costs,
                  int64_t target, double now, int exact_max):
    cdef Py_ssize_t i, m = 0, count = 0, q, n_invalid = 0
    cdef int64_t shed_w = 0, shed_c = 0, goal
    cdef int errors = 0, bit
    cdef bint exact = True
    cdef int32_t[::1] out
    cdef _Workspace workspace
    cdef Work* ws
    if n == 0:
        result = np.empty(0, dtype=np.int32)
    else:
        workspace = _pool.pop() if _pool else _Workspace()
        try:
            workspace.reserve(n)
            ws = &workspace.w
            with nogil:
                m = build_items(ws, n, power, prio, shed_ok, locked, since, min_on, groups,
                                costs, now, &n_invalid, &errors)
            if errors:
                bit = 0
                while not (errors >> bit) & 1:
                    bit += 1
                raise ValueError(_shed_common.SHED_VALUE_ERRORS[bit])
            with nogil:
                exact = choose(ws, m, target, exact_max)
                for q in range(m):
                    if ws.sel[q]:
                        shed_w += ws.items[q].w
                        shed_c += ws.items[q].c
                        if ws.items[q].gid < 0:
                            ws.mark_load[ws.items[q].rep] = 1
                        else:
                            ws.mark_group[ws.items[q].gid + 1] = 1
            full = np.empty(n, dtype=np.int32)
            out = full
            with nogil:
                if groups == NULL:
                    for i in range(n):  # branch-free: membership is unpredictable
                        out[count] = <int32_t>i
                        count += (ws.w_load[i] > 0) & ws.mark_load[i]
                else:
                    for i in range(n):
                        out[count] = <int32_t>i
                        count += (ws.w_load[i] > 0) & (
                            ws.mark_load[i] | ws.mark_group[groups[i] + 1])
                for q in range(m):  # leave the marks clean for the next call
                    if ws.sel[q]:
                        if ws.items[q].gid < 0:
                            ws.mark_load[ws.items[q].rep] = 0
                        else:
                            ws.mark_group[ws.items[q].gid + 1] = 0
            result = full[:count].copy()
        finally:
            if len(_pool) < 4:
                _pool.append(workspace)
    goal = target if target > 0 else 0
    return ShedPlan(
        shed=result,
        target_kw=goal / 1000.0,
        shed_kw=shed_w / 1000.0,
        overshoot_kw=(shed_w - goal if shed_w > goal else 0) / 1000.0,
        shortfall_kw=(goal - shed_w if goal > shed_w else 0) / 1000.0,
        cost=shed_c / 1000.0,
        exact=bool(exact),
        n_items=m,
        n_invalid=n_invalid,
    )


cdef struct RItem:
    bint overdue
    int32_t priority
    int32_t rep
    int64_t w  # -1 = unknown
    double ready_s
    int32_t first  # first member (members linked through next_member)


cdef int cmp_restore(const void* pa, const void* pb) noexcept nogil:
    # overdue first, then higher priority, then lower index
    cdef const RItem* a = <const RItem*>pa
    cdef const RItem* b = <const RItem*>pb
    if a.overdue != b.overdue:
        return -1 if a.overdue else 1
    if a.priority != b.priority:
        return -1 if a.priority > b.priority else 1
    if a.rep != b.rep:
        return -1 if a.rep < b.rep else 1
    return 0


def plan_restore(power_kw, priority, shed, *, now_s, max_kw_per_step, step_s,
                 shed_since_s=None, min_off_s=None, max_shed_s=None, group=None):
    """Plan a staggered restore; see :func:`fastcore._shed_py.plan_restore` (same API
    and results) and docs/fastcore.md."""
    inputs = check_restore_inputs(
        power_kw, priority, shed, now_s=now_s, max_kw_per_step=max_kw_per_step,
        step_s=step_s, shed_since_s=shed_since_s, min_off_s=min_off_s,
        max_shed_s=max_shed_s, group=group)
    cdef const double[::1] power = inputs.power_kw
    cdef const int8_t[::1] prio = inputs.priority
    cdef const uint8_t[::1] flags = inputs.shed.view(np.uint8)
    cdef const double[::1] since = inputs.shed_since_s
    cdef const double[::1] min_off = inputs.min_off_s
    cdef const double[::1] max_shed = inputs.max_shed_s
    cdef const int32_t[::1] groups = inputs.group
    cdef Py_ssize_t n = power.shape[0], i, m = 0, q, prev, cur, n_out = 0
    cdef double now = inputs.now_s, step = inputs.step_s, ready, t_k, first_ready
    cdef int64_t cap = inputs.cap_w, wi, used, k = 0, k_next
    cdef int64_t n_steps = 0
    cdef bint overdue, taken_any, stop
    cdef int32_t g, member
    cdef Py_ssize_t alloc = n if n > 0 else 1
    cdef RItem* items = NULL
    cdef int32_t* item_of_group = NULL
    cdef int32_t* next_member = NULL
    cdef int32_t* last_member = NULL
    cdef Py_ssize_t* nxt = NULL  # linked list of remaining items (in order)
    cdef uint8_t* take = NULL
    cdef int32_t[::1] out_load
    cdef double[::1] out_time
    cdef int32_t[::1] out_step
    out_load_arr = np.empty(n, dtype=np.int32)
    out_time_arr = np.empty(n, dtype=np.float64)
    out_step_arr = np.empty(n, dtype=np.int32)
    out_load = out_load_arr
    out_time = out_time_arr
    out_step = out_step_arr
    try:
        items = <RItem*>malloc(alloc * sizeof(RItem))
        item_of_group = <int32_t*>malloc(alloc * sizeof(int32_t))
        next_member = <int32_t*>malloc(alloc * sizeof(int32_t))
        last_member = <int32_t*>malloc(alloc * sizeof(int32_t))
        nxt = <Py_ssize_t*>malloc((alloc + 1) * sizeof(Py_ssize_t))
        take = <uint8_t*>calloc(alloc, 1)
        if (items == NULL or item_of_group == NULL or next_member == NULL
                or last_member == NULL or nxt == NULL or take == NULL):
            raise MemoryError()
        with nogil:
            for i in range(n):
                item_of_group[i] = -1
            for i in range(n):
                if not flags[i]:
                    continue
                wi = watts(power[i])
                ready = now if since[i] != since[i] else since[i] + min_off[i]
                overdue = since[i] == since[i] and now - since[i] >= max_shed[i]
                g = groups[i]
                next_member[i] = -1
                if g < 0 or item_of_group[g] < 0:
                    items[m].overdue = overdue
                    items[m].priority = prio[i]
                    items[m].rep = <int32_t>i
                    items[m].w = wi
                    items[m].ready_s = ready
                    items[m].first = <int32_t>i
                    last_member[m] = <int32_t>i
                    if g >= 0:
                        item_of_group[g] = <int32_t>m
                    m += 1
                else:
                    q = item_of_group[g]
                    next_member[last_member[q]] = <int32_t>i
                    last_member[q] = <int32_t>i
                    items[q].overdue = items[q].overdue or overdue
                    if prio[i] > items[q].priority:
                        items[q].priority = prio[i]
                    items[q].w = -1 if (wi < 0 or items[q].w < 0) else items[q].w + wi
                    if ready > items[q].ready_s:
                        items[q].ready_s = ready
            qsort(items, m, sizeof(RItem), cmp_restore)
            # nxt[m] is the list head; nxt[q] the item after q; m marks the end
            for q in range(m):
                nxt[q] = q + 1
            nxt[m] = 0 if m > 0 else m
            while nxt[m] != m:
                t_k = now + <double>k * step
                used = 0
                taken_any = False
                prev = m
                cur = nxt[m]
                while cur != m:
                    if items[cur].ready_s > t_k:
                        cur = nxt[cur]
                        continue
                    if not taken_any and (items[cur].w < 0 or items[cur].w > cap):
                        take[cur] = 1
                        taken_any = True
                        break
                    if items[cur].w < 0 or used + items[cur].w > cap:
                        break
                    used += items[cur].w
                    take[cur] = 1
                    taken_any = True
                    cur = nxt[cur]
                if taken_any:
                    n_steps += 1
                    prev = m
                    cur = nxt[m]
                    while cur != m:
                        if take[cur]:
                            member = items[cur].first
                            while member >= 0:
                                out_load[n_out] = member
                                out_time[n_out] = t_k
                                out_step[n_out] = <int32_t>k
                                n_out += 1
                                member = next_member[member]
                            nxt[prev] = nxt[cur]
                        else:
                            prev = cur
                        cur = nxt[cur]
                    k += 1
                else:
                    first_ready = 0.0
                    stop = True
                    cur = nxt[m]
                    while cur != m:
                        if stop or items[cur].ready_s < first_ready:
                            first_ready = items[cur].ready_s
                            stop = False
                        cur = nxt[cur]
                    k_next = <int64_t>ceil((first_ready - now) / step)
                    k = k + 1 if k + 1 > k_next else k_next
    finally:
        free(items)
        free(item_of_group)
        free(next_member)
        free(last_member)
        free(nxt)
        free(take)
    return RestorePlan(load_index=out_load_arr[:n_out].copy(),
                       restore_at_s=out_time_arr[:n_out].copy(),
                       step=out_step_arr[:n_out].copy(), n_steps=n_steps)
