"""The alignment's compiled kernels (numba): one pass over a whole corpus per call, a rolling row
per pair, the GIL released. `alignment` imports this module on first need only: loading numba and
its compiled functions costs a process about 0.8 s and 150 MB, more than aligning a few thousand
short pairs in the interpreter (`alignment._interpreted_counts`), so a read command that scores a
handful of corrections never pays it."""

from __future__ import annotations

import numba
import numpy as np

from stt_flywheel.scoring.alignment import DEL, HIT, INS, SUB


@numba.njit(cache=True, nogil=True, inline="always")
def _is_space(c):  # type: ignore[no-untyped-def]
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 11 or c == 12


@numba.njit(cache=True, nogil=True)
def _dp_counts(a, na, b, nb, w_sub, w_ins, w_del, prev, cur):  # type: ignore[no-untyped-def]
    """(H, S, D, I) of the preferred minimum-cost path, carried forward along a rolling row.

    At each cell the diagonal step wins ties, then the insertion, then the deletion (sclite's order).
    """
    for j in range(nb + 1):
        prev[j, 0] = j * w_ins
        prev[j, 1] = 0
        prev[j, 2] = 0
        prev[j, 3] = 0
        prev[j, 4] = j
    for i in range(1, na + 1):
        cur[0, 0] = i * w_del
        cur[0, 1] = 0
        cur[0, 2] = 0
        cur[0, 3] = i
        cur[0, 4] = 0
        r = a[i - 1]
        for j in range(1, nb + 1):
            same = r == b[j - 1]
            diag = prev[j - 1, 0] + (0 if same else w_sub)
            ins = cur[j - 1, 0] + w_ins
            dele = prev[j, 0] + w_del
            if diag <= ins and diag <= dele:
                cur[j, 0] = diag
                cur[j, 1] = prev[j - 1, 1] + (1 if same else 0)
                cur[j, 2] = prev[j - 1, 2] + (0 if same else 1)
                cur[j, 3] = prev[j - 1, 3]
                cur[j, 4] = prev[j - 1, 4]
            elif ins <= dele:
                cur[j, 0] = ins
                cur[j, 1] = cur[j - 1, 1]
                cur[j, 2] = cur[j - 1, 2]
                cur[j, 3] = cur[j - 1, 3]
                cur[j, 4] = cur[j - 1, 4] + 1
            else:
                cur[j, 0] = dele
                cur[j, 1] = prev[j, 1]
                cur[j, 2] = prev[j, 2]
                cur[j, 3] = prev[j, 3] + 1
                cur[j, 4] = prev[j, 4]
        prev, cur = cur, prev
    return prev[nb, 1], prev[nb, 2], prev[nb, 3], prev[nb, 4]


@numba.njit(cache=True, nogil=True)
def _dp_counts_trimmed(a, na, b, nb, w_sub, w_ins, w_del, prev, cur):  # type: ignore[no-untyped-def]
    """`_dp_counts` with the common prefix and suffix counted as hits and left out of the DP.

    The same counts, for positive weights. Suffix: where the last tokens are equal the diagonal
    step is never dearer than the other two (dropping a[i-1] from any alignment of a[:i] with
    b[:j-1] costs at most an insertion), so it wins and the cell carries its diagonal neighbour's
    counts plus a hit. Prefix: where a[0] == b[0], every cheapest path to (1, j) is that hit and
    j-1 insertions (to (i, 1): the hit and i-1 deletions), the same counts as the trimmed problem's
    first row and column; every cell past them compares the same neighbours, so makes the same choice.
    `test_alignment.py` checks both against the whole DP on random sequences rich in ties.
    """
    p = 0
    while p < na and p < nb and a[p] == b[p]:
        p += 1
    s = 0
    while s < na - p and s < nb - p and a[na - 1 - s] == b[nb - 1 - s]:
        s += 1
    if p == 0 and s == 0:
        return _dp_counts(a, na, b, nb, w_sub, w_ins, w_del, prev, cur)
    h, sub, d, i = _dp_counts(
        a[p : na - s], na - p - s, b[p : nb - s], nb - p - s, w_sub, w_ins, w_del, prev, cur
    )
    return h + p + s, sub, d, i


@numba.njit(cache=True, nogil=True)
def _tokenize(buf, start, end, tok_start, tok_end, tok_hash):  # type: ignore[no-untyped-def]
    """Whitespace-separated tokens of buf[start:end]: their spans and FNV-1a hashes; returns the count."""
    n = 0
    i = start
    while i < end:
        while i < end and _is_space(buf[i]):
            i += 1
        if i >= end:
            break
        s = i
        h = np.uint64(14695981039346656037)
        while i < end and not _is_space(buf[i]):
            h = (h ^ np.uint64(buf[i])) * np.uint64(1099511628211)
            i += 1
        tok_start[n] = s
        tok_end[n] = i
        tok_hash[n] = h
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _local_ids(buf, n, tok_start, tok_end, tok_hash, ids, first):  # type: ignore[no-untyped-def]
    """Give equal tokens equal ids: hashes first, then the bytes, so the ids are exact."""
    n_distinct = 0
    for t in range(n):
        found = -1
        for u in range(n_distinct):
            p = first[u]
            if tok_hash[t] != tok_hash[p] or tok_end[p] - tok_start[p] != tok_end[t] - tok_start[t]:
                continue
            equal = True
            for k in range(tok_end[p] - tok_start[p]):
                if buf[tok_start[p] + k] != buf[tok_start[t] + k]:
                    equal = False
                    break
            if equal:
                found = u
                break
        if found < 0:
            first[n_distinct] = t
            found = n_distinct
            n_distinct += 1
        ids[t] = found
    return n_distinct


@numba.njit(cache=True, nogil=True)
def _longest_text(rstarts, hstarts):  # type: ignore[no-untyped-def]
    """Length (in code units, separator included) of the longest text on either side, at least 1."""
    longest = 1
    for k in range(len(rstarts) - 1):
        longest = max(longest, rstarts[k + 1] - rstarts[k], hstarts[k + 1] - hstarts[k])
    return longest


@numba.njit(cache=True, nogil=True)
def _word_kernel(rbuf, rstarts, hbuf, hstarts, w_sub, w_ins, w_del):  # type: ignore[no-untyped-def]
    n_pairs = len(rstarts) - 1
    out = np.zeros((n_pairs, 4), dtype=np.int64)
    max_len = _longest_text(rstarts, hstarts)
    cap = max_len // 2 + 1  # at most this many tokens in one text
    both = 2 * cap
    tok_start = np.empty(both, dtype=np.int64)
    tok_end = np.empty(both, dtype=np.int64)
    tok_hash = np.empty(both, dtype=np.uint64)
    ids = np.empty(both, dtype=np.int64)
    first = np.empty(both, dtype=np.int64)
    prev = np.zeros((cap + 1, 5), dtype=np.int64)
    cur = np.zeros((cap + 1, 5), dtype=np.int64)
    # the pair's bytes, reference then hypothesis, so both sides' tokens are spans of one buffer
    scratch = np.empty(2 * max_len, dtype=np.uint8)
    for k in range(n_pairs):
        r0, r1 = rstarts[k], rstarts[k + 1] - 1
        h0, h1 = hstarts[k], hstarts[k + 1] - 1
        lr = r1 - r0
        scratch[:lr] = rbuf[r0:r1]
        scratch[lr : lr + (h1 - h0)] = hbuf[h0:h1]
        na = _tokenize(scratch, 0, lr, tok_start, tok_end, tok_hash)
        nb = _tokenize(scratch, lr, lr + (h1 - h0), tok_start[na:], tok_end[na:], tok_hash[na:])
        _local_ids(scratch, na + nb, tok_start, tok_end, tok_hash, ids, first)
        res = _dp_counts_trimmed(ids[:na], na, ids[na : na + nb], nb, w_sub, w_ins, w_del, prev, cur)
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = res
    return out


@numba.njit(cache=True, nogil=True)
def _char_kernel(rbuf, rstarts, hbuf, hstarts, w_sub, w_ins, w_del):  # type: ignore[no-untyped-def]
    n_pairs = len(rstarts) - 1
    out = np.zeros((n_pairs, 4), dtype=np.int64)
    max_len = _longest_text(rstarts, hstarts)
    a = np.empty(max_len, dtype=np.int64)
    b = np.empty(max_len, dtype=np.int64)
    prev = np.zeros((max_len + 1, 5), dtype=np.int64)
    cur = np.zeros((max_len + 1, 5), dtype=np.int64)
    for k in range(n_pairs):
        na = 0
        for i in range(rstarts[k], rstarts[k + 1] - 1):
            if not _is_space(rbuf[i]):
                a[na] = rbuf[i]
                na += 1
        nb = 0
        for i in range(hstarts[k], hstarts[k + 1] - 1):
            if not _is_space(hbuf[i]):
                b[nb] = hbuf[i]
                nb += 1
        res = _dp_counts_trimmed(a, na, b, nb, w_sub, w_ins, w_del, prev, cur)
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = res
    return out


@numba.njit(cache=True, nogil=True)
def _ops_kernel(ref_ids, ref_off, hyp_ids, hyp_off, w_sub, w_ins, w_del):  # type: ignore[no-untyped-def]
    """The same path as `_count_kernel`, as operations: (ops, ref index, hyp index) in CSR form."""
    n_pairs = len(ref_off) - 1
    total = 0
    for k in range(n_pairs):
        total += (ref_off[k + 1] - ref_off[k]) + (hyp_off[k + 1] - hyp_off[k])
    ops = np.empty(total, dtype=np.int8)
    ref_pos = np.empty(total, dtype=np.int32)
    hyp_pos = np.empty(total, dtype=np.int32)
    op_off = np.zeros(n_pairs + 1, dtype=np.int64)
    pos = 0
    for k in range(n_pairs):
        r0, h0 = ref_off[k], hyp_off[k]
        n, m = ref_off[k + 1] - r0, hyp_off[k + 1] - h0
        cost = np.empty((n + 1, m + 1), dtype=np.int64)
        step = np.empty((n + 1, m + 1), dtype=np.int8)
        for j in range(m + 1):
            cost[0, j] = j * w_ins
            step[0, j] = INS
        for i in range(1, n + 1):
            cost[i, 0] = i * w_del
            step[i, 0] = DEL
            r = ref_ids[r0 + i - 1]
            for j in range(1, m + 1):
                same = r == hyp_ids[h0 + j - 1]
                diag = cost[i - 1, j - 1] + (0 if same else w_sub)
                ins = cost[i, j - 1] + w_ins
                dele = cost[i - 1, j] + w_del
                if diag <= ins and diag <= dele:
                    cost[i, j] = diag
                    step[i, j] = HIT if same else SUB
                elif ins <= dele:
                    cost[i, j] = ins
                    step[i, j] = INS
                else:
                    cost[i, j] = dele
                    step[i, j] = DEL
        length = 0
        i, j = n, m
        while i > 0 or j > 0:
            op = step[i, j]
            ops[pos + length] = op
            if op == INS:
                j -= 1
                ref_pos[pos + length] = -1
                hyp_pos[pos + length] = j
            elif op == DEL:
                i -= 1
                ref_pos[pos + length] = i
                hyp_pos[pos + length] = -1
            else:
                i -= 1
                j -= 1
                ref_pos[pos + length] = i
                hyp_pos[pos + length] = j
            length += 1
        ops[pos : pos + length] = ops[pos : pos + length][::-1].copy()
        ref_pos[pos : pos + length] = ref_pos[pos : pos + length][::-1].copy()
        hyp_pos[pos : pos + length] = hyp_pos[pos : pos + length][::-1].copy()
        pos += length
        op_off[k + 1] = pos
    return ops[:pos], ref_pos[:pos], hyp_pos[:pos], op_off
