#!/usr/bin/env python3
"""Host emulation of the fused tensor-core attention backward's new parts (attention_tc_fused_dq.cuh,
attention_tc_backward.cu with kFusedDq, locate_tile_tile_major in attention_common.cuh), for checking
them on a machine without a GPU:
  1. locate_tile_tile_major: every tile of every sequence exactly once, in tile-major order, surplus
     blocks last, on random packed lengths (empty and one-row sequences among them);
  2. the dq piece at warp level: store_ds_transposed's dS^T tile, load_a_from_cols (ldmatrix.trans)
     and load_b_from_cols feeding mma.sync, the lanes' output elements, against dS K;
  3. the counter protocol at block level: tickets, the step order (query tiles descending, heads
     innermost), the wait for count j, the first/last additions and the count sent one step late, with
     blocks interleaved at random on 1 to many slots, against the exact reference gradients.
ldmatrix and mma come from attention_emulate.py (their PTX fragment layouts). Arithmetic is f64, so a
correct transcription agrees to ~1e-12; a wrong index, order or count shows as an O(1) error, a NaN
(an element never written) or a hang (reported as a deadlock). Not a substitute for the GPU tests.

    python3 dev/cuda/fused_dq_emulate.py      # needs numpy; about two minutes
"""
import random
import sys

import numpy as np

from attention_emulate import LANE, ldmatrix_x4, locate_tile, mma, reference

ROWS, KQ = 128, 32  # kTcBlockRows, BackwardTiling::kDkdvQ


def tiles(length, rows):
    return (length + rows - 1) // rows


# ---- 1. attention_common.cuh: locate_tile_tile_major (find_sequence as locate_tile's scan)

def locate_tile_tile_major(cu, n, rows, block_tile, threads):
    lows = [min(max(cu[s], 0), n) for s in range(len(cu) - 1)]
    lens = [min(max(cu[s + 1], lows[s]), n) - lows[s] for s in range(len(cu) - 1)]
    preceding = lambda j: sum(min(tiles(ln, rows), j) for ln in lens)  # C(j)
    lo, preceding_lo, hi = 0, 0, tiles(n, rows)
    if preceding(hi) <= block_tile:
        return None
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        c = preceding(mid)
        if c <= block_tile:
            lo, preceding_lo = mid, c
        else:
            hi = mid
    rank, before = block_tile - preceding_lo, 0
    for base in range(0, len(lens), threads):  # find_sequence over the flags tiles_s > lo
        for s in range(base, min(base + threads, len(lens))):
            if tiles(lens[s], rows) > lo:
                if before == rank:
                    return (lows[s], lens[s], lo)
                before += 1
    raise AssertionError("C(lo) <= block_tile < C(lo + 1) leaves a sequence to find")


def check_locate(rng):
    for _ in range(200):
        lens = [int(rng.choice([0, 1, rng.integers(0, 700), rng.integers(0, 3000)]))
                for _ in range(int(rng.integers(1, 300)))]
        cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        n, threads = int(cu[-1]), int(rng.choice([32, 128, 256]))
        bound = tiles(n, ROWS) + len(lens)  # attention_tile_blocks
        got = [locate_tile_tile_major(cu, n, ROWS, x, threads) for x in range(bound)]
        want = sorted(((int(cu[s]), lens[s], j)
                       for s in range(len(lens)) for j in range(tiles(lens[s], ROWS))),
                      key=lambda t: (t[2], t[0]))
        assert got == want + [None] * (bound - len(want)), lens
        # locate_tile (attention_emulate.py's transcription; its scan is find_sequence's): sequence-major.
        seq_major = [locate_tile(cu, n, ROWS, x, False, threads) for x in range(len(want))]
        assert [tuple(int(v) for v in t) for t in seq_major] == sorted(want), lens
    print("locate_tile_tile_major: ok")
    return True


# ---- 2. attention_tc_fused_dq.cuh: store_ds_transposed and add_dq_piece's product, per warp and lane

def check_dq_piece(rng):
    ok = True
    for d in (64, 128):
        k_m = 2 if d == 64 else 1
        warps, warp_rows, ds_stride, k_stride = ROWS // (16 * k_m), 16 * k_m, KQ + 8, d + 8
        ds_t, keys = rng.uniform(-1, 1, (ROWS, KQ)), rng.uniform(-1, 1, (ROWS, d))
        s_ds = np.full(ROWS * ds_stride, np.nan)
        for warp in range(warps):  # the dk/dv kernel's dS^T C fragments, stored as the kernel does
            for lane in range(32):
                for mi in range(k_m):
                    for half in range(2):
                        row = warp * warp_rows + mi * 16 + lane // 4 + half * 8
                        for nt in range(KQ // 8):
                            col = nt * 8 + (lane % 4) * 2
                            at = row * ds_stride + col
                            s_ds[at:at + 2] = ds_t[row, col:col + 2]
        s_k = np.zeros((ROWS, k_stride))
        s_k[:, :d] = keys
        s_k = s_k.reshape(-1)
        got = np.full((KQ, d), np.nan)
        m_tiles, cols = KQ // 16, 32
        assert warps == m_tiles * (d // cols)
        for warp in range(warps):
            m0, c0 = (warp % m_tiles) * 16, (warp // m_tiles) * cols
            acc = np.zeros((cols // 8, 32, 4))
            for ks in range(ROWS // 16):
                k0 = ks * 16
                a_rows = k0 + LANE % 8 + (LANE // 16) * 8  # load_a_from_cols
                a = ldmatrix_x4(s_ds, a_rows * ds_stride + m0 + ((LANE // 8) % 2) * 8, trans=True)
                for cp in range(cols // 16):
                    n0 = c0 + cp * 16
                    b_rows = k0 + LANE % 8 + ((LANE // 8) % 2) * 8  # load_b_from_cols
                    b = ldmatrix_x4(s_k, b_rows * k_stride + n0 + (LANE // 16) * 8, trans=True)
                    acc[2 * cp] = mma(acc[2 * cp], a, b[0], b[1])
                    acc[2 * cp + 1] = mma(acc[2 * cp + 1], a, b[2], b[3])
            for lane in range(32):
                for half in range(2):
                    row = m0 + lane // 4 + half * 8
                    for nt in range(cols // 8):
                        col = c0 + (lane % 4) * 2 + nt * 8
                        got[row, col:col + 2] = acc[nt, lane, 2 * half:2 * half + 2]
        worst = float(np.max(np.abs(got - ds_t.T @ keys)))  # NaN fails the comparison below
        good = worst < 1e-12
        print(f"dq piece D {d:3d}: max error {worst:.1e} {'ok' if good else 'FAILED'}")
        ok = ok and good
    return ok


# ---- 3. The fused kernel's blocks at tile level, with the counter protocol

def fused_backward(q, k, v, cu, h, g, scale, lse, dout, delta, slots, rng):
    n, _, d = q.shape
    group, lens = h // g, [int(cu[s + 1] - cu[s]) for s in range(len(cu) - 1)]
    sums, dq = np.full(q.shape, np.nan), np.full(q.shape, np.nan)
    dk, dv = np.full(k.shape, np.nan), np.full(v.shape, np.nan)
    counters = np.zeros((h, n), dtype=np.int64)  # the workspace's counters after the memset
    grid_x = tiles(n, ROWS) + len(lens)

    def block(ticket):  # one block of tc_dkdv_kernel<D, true>; yields where it may wait
        x, kv = ticket // g, ticket % g  # take_ticket
        found = locate_tile_tile_major(cu, n, ROWS, x, 128)
        if found is None:
            return
        start, ln, tile = found
        k_lo = tile * ROWS
        k_rows = min(ROWS, ln - k_lo)
        s_k, s_v = np.zeros((ROWS, d)), np.zeros((ROWS, d))
        keys = slice(start + k_lo, start + k_lo + k_rows)
        s_k[:k_rows], s_v[:k_rows] = k[keys, kv], v[keys, kv]
        q_first = k_lo // KQ
        q_tiles = tiles(ln, KQ) - q_first
        dk_acc, dv_acc = np.zeros((ROWS, d)), np.zeros((ROWS, d))
        pending = None
        for step in range(group * q_tiles):
            head = kv * group + step % group  # step_head
            q_lo = (q_first + q_tiles - 1 - step // group) * KQ  # step_q_lo
            q_rows = min(KQ, ln - q_lo)
            rows = slice(start + q_lo, start + q_lo + q_rows)
            sq, sg, sl, sd = np.zeros((KQ, d)), np.zeros((KQ, d)), np.zeros(KQ), np.zeros(KQ)
            sq[:q_rows], sg[:q_rows] = q[rows, head], dout[rows, head]
            sl[:q_rows], sd[:q_rows] = lse[head, rows], delta[head, rows]
            key, col = k_lo + np.arange(ROWS)[:, None], np.arange(KQ)[None, :]
            live = (col < q_rows) & (key <= q_lo + col)
            p_t = np.where(live, np.exp(scale * s_k @ sq.T - sl[None, :]), 0.0)
            ds_t = p_t * (s_v @ sg.T - sd[None, :])
            dv_acc += p_t @ sg
            dk_acc += ds_t @ sq
            counter = (head, start + q_lo)
            if pending is not None:  # send_pending: the previous step's count
                counters[pending[0]] = pending[1]
                pending = None
            while counters[counter] != tile:  # wait(counter, tile.tile)
                yield
            piece = (ds_t.T @ s_k)[:q_rows]
            total = piece + (sums[rows, head] if tile > 0 else 0.0)
            if tile == (q_lo + q_rows - 1) // ROWS:
                dq[rows, head] = scale * total
            else:
                sums[rows, head] = total
            pending = (counter, tile + 1)
            yield
        if pending is not None:
            counters[pending[0]] = pending[1]
        dk[keys, kv], dv[keys, kv] = scale * dk_acc[:k_rows], dv_acc[:k_rows]

    # Blocks start in ticket order as slots free up (a ticket is taken by a running block), and the
    # running ones advance in a random order.
    next_ticket, running, idle_rounds = 0, [], 0
    while next_ticket < grid_x * g or running:
        while len(running) < slots and next_ticket < grid_x * g:
            running.append(block(next_ticket))
            next_ticket += 1
        before = counters.copy()
        finished = []
        for b in rng.permutation(len(running)):
            try:
                next(running[b])
            except StopIteration:
                finished.append(running[b])
        running = [b for b in running if all(b is not f for f in finished)]
        idle_rounds = idle_rounds + 1 if not finished and np.array_equal(before, counters) else 0
        if idle_rounds > 2 * len(running) + 2:
            raise AssertionError("deadlock: no block advanced")
    return dq, dk, dv


def check_protocol(rng):
    ok = True
    for trial in range(16):
        lens = [int(rng.choice([0, 1, rng.integers(1, 300), rng.integers(100, 700)]))
                for _ in range(int(rng.integers(1, 5)))]
        h, g = [(2, 2), (3, 1), (6, 2)][trial % 3]
        d, slots = 8, int(rng.choice([1, 2, 5, 1000]))
        cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        n, scale = int(cu[-1]), 1 / np.sqrt(d)
        q, k = rng.uniform(-2, 2, (n, h, d)), rng.uniform(-2, 2, (n, g, d))
        v, dout = rng.uniform(-1, 1, (n, g, d)), rng.uniform(-1, 1, (n, h, d))
        out, lse, dq_want, dk_want, dv_want = reference(q, k, v, cu, h, g, scale, dout)
        delta = np.einsum("nhd,nhd->hn", dout, out)
        got = fused_backward(q, k, v, cu, h, g, scale, lse, dout, delta, slots, rng)
        worst = max(float(np.max(np.abs(x - y))) if x.size else 0.0
                    for x, y in zip(got, (dq_want, dk_want, dv_want)))
        good = worst < 1e-12
        print(f"protocol H {h} G {g} slots {slots:4d} lengths {lens}: max error {worst:.1e} "
              f"{'ok' if good else 'FAILED'}")
        ok = ok and good
    return ok


def main():
    rng = np.random.default_rng(0)
    results = [check_locate(rng), check_dq_piece(rng), check_protocol(rng)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
