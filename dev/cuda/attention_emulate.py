#!/usr/bin/env python3
"""Host emulation of dtrn's CUDA attention kernels (runtime/src/cuda/attention_*.cu), for checking their
index arithmetic on a machine without a GPU. Each kernel is transcribed statement by statement: the
block-wide tile search over cu_seqlens, the generic kernels' thread layout (Note [Generic attention
layout]) and the tensor-core kernels' warp-level data movement, with ldmatrix, ldmatrix.trans and
mma.sync m16n8k16 modelled from their PTX fragment layouts (Note [mma.sync m16n8k16 fragments]).
Arithmetic is f64 without bf16 rounding, so a correct transcription agrees with the exact reference to
~1e-15 and any wrong index, mask or tile bound shows as an O(1) error; outputs start as NaN, so an
element no block writes shows as NaN. Not a substitute for the GPU tests (tests/runtime/
cuda_attention_test.cc): it checks the transcription, not the compiled code.

    python3 dev/cuda/attention_emulate.py      # needs numpy; about two minutes
"""
import sys

import numpy as np

NEG = -np.inf
THREADS = 128  # kAttentionThreads (generic kernels)
LANE = np.arange(32)
LOG2E = 1.4426950408889634


# ---- attention_common.cuh: locate_tile (the block-wide prefix sum, one round per `threads` sequences)

def locate_tile(cu, n, rows, block_tile, reverse, threads):
    num_seqs = len(cu) - 1
    before = 0
    for base in range(0, num_seqs, threads):
        lo, ln, tiles = (np.zeros(threads, dtype=np.int64) for _ in range(3))
        for t in range(threads):
            s = base + t
            if s < num_seqs:
                lo[t] = min(max(cu[s], 0), n)
                ln[t] = min(max(cu[s + 1], lo[t]), n) - lo[t]
                tiles[t] = (ln[t] + rows - 1) // rows
        inclusive = np.cumsum(tiles)
        found = None
        for t in range(threads):
            first = before + inclusive[t] - tiles[t]
            if tiles[t] > 0 and first <= block_tile < first + tiles[t]:
                local = block_tile - first
                found = (lo[t], ln[t], tiles[t] - 1 - local if reverse else local)
        before += inclusive[-1]
        if found is not None:
            return found
        if before > block_tile:
            break
    return None


def blocks(cu, rows, reverse, threads=THREADS):
    n = cu[-1]
    for bx in range((n + rows - 1) // rows + len(cu) - 1):
        found = locate_tile(cu, n, rows, bx, reverse, threads)
        if found is not None:
            yield found


def staged(x, first, rows, valid):
    """rows x D tile of x[first + r] for r < valid, zeros below (stage_rows, tc_stage)."""
    tile = np.zeros((rows,) + x.shape[1:])
    tile[:valid] = x[first:first + valid]
    return tile


# ---- Generic kernels (attention_generic.cuh, attention_forward.cu, attention_backward.cu), f32 layout

ROWS, GROUPS, CHUNK = 32, THREADS // 32, 16
R_OF = np.arange(THREADS) // GROUPS
CG_OF = np.arange(THREADS) % GROUPS


def group_dot(a_rows, b_row):
    """Per thread: its partial dot over columns cg, cg + GROUPS, ...; then the row-group sum."""
    d = a_rows.shape[1]
    part = np.array([sum(a_rows[R_OF[t], c] * b_row(t)[c] for c in range(CG_OF[t], d, GROUPS))
                     for t in range(THREADS)])
    return part.reshape(ROWS, GROUPS).sum(axis=1).repeat(GROUPS)


def generic_forward(q, k, v, cu, h, g, scale):
    n, _, d = q.shape
    out, lse = np.full(q.shape, np.nan), np.full((h, n), np.nan)
    for start, ln, tile in blocks(cu, ROWS, True):
        for head in range(h):
            kv = head // (h // g)
            q_lo = tile * ROWS
            q_rows = min(ROWS, ln - q_lo)
            i = q_lo + R_OF
            s_q = staged(q[:, head], start + q_lo, ROWS, q_rows)
            s_o = np.zeros((ROWS, d))
            m, l = np.full(THREADS, NEG), np.zeros(THREADS)
            kv_end = q_lo + q_rows
            for k0 in range(0, kv_end, CHUNK):
                k_rows = min(CHUNK, kv_end - k0)
                s_k = staged(k[:, kv], start + k0, CHUNK, k_rows)
                s_v = staged(v[:, kv], start + k0, CHUNK, k_rows)
                s = np.array([np.where((jj < k_rows) & (k0 + jj <= i),
                                       group_dot(s_q, lambda t: s_k[jj]) * scale, NEG)
                              for jj in range(CHUNK)])
                m_new = np.maximum(m, s.max(axis=0))
                m_use = np.where(m_new == NEG, 0, m_new)
                correction = np.exp(m - m_use)
                p = np.exp(s - m_use)
                l = l * correction + p.sum(axis=0)
                m = m_new
                for t in range(THREADS):
                    for c in range(CG_OF[t], d, GROUPS):
                        s_o[R_OF[t], c] = s_o[R_OF[t], c] * correction[t] + p[:, t] @ s_v[:, c]
            for t in range(THREADS):
                if R_OF[t] < q_rows:
                    row = start + i[t]
                    for c in range(CG_OF[t], d, GROUPS):
                        out[row, head, c] = s_o[R_OF[t], c] / l[t]
                    if CG_OF[t] == 0:
                        lse[head, row] = m[t] + np.log(l[t])
    return out, lse


def generic_dq(q, k, v, cu, h, g, scale, lse, dout, delta):
    d = q.shape[2]
    dq = np.full(q.shape, np.nan)
    for start, ln, tile in blocks(cu, ROWS, True):
        for head in range(h):
            kv = head // (h // g)
            q_lo = tile * ROWS
            q_rows = min(ROWS, ln - q_lo)
            i = q_lo + R_OF
            valid = R_OF < q_rows
            s_q = staged(q[:, head], start + q_lo, ROWS, q_rows)
            s_g = staged(dout[:, head], start + q_lo, ROWS, q_rows)
            s_dq = np.zeros((ROWS, d))
            row_lse = np.where(valid, lse[head, np.minimum(start + i, len(q) - 1)], 0)
            row_delta = np.where(valid, delta[head, np.minimum(start + i, len(q) - 1)], 0)
            kv_end = q_lo + q_rows
            for k0 in range(0, kv_end, CHUNK):
                k_rows = min(CHUNK, kv_end - k0)
                s_k = staged(k[:, kv], start + k0, CHUNK, k_rows)
                s_v = staged(v[:, kv], start + k0, CHUNK, k_rows)
                ds = np.zeros((CHUNK, THREADS))
                for jj in range(CHUNK):
                    s = group_dot(s_q, lambda t: s_k[jj])
                    dp = group_dot(s_g, lambda t: s_v[jj])
                    live = valid & (jj < k_rows) & (k0 + jj <= i)
                    p = np.where(live, np.exp(s * scale - row_lse), 0)
                    ds[jj] = p * (dp - row_delta)
                for t in range(THREADS):
                    for c in range(CG_OF[t], d, GROUPS):
                        s_dq[R_OF[t], c] += ds[:, t] @ s_k[:, c]
            for t in range(THREADS):
                if valid[t]:
                    for c in range(CG_OF[t], d, GROUPS):
                        dq[start + i[t], head, c] = scale * s_dq[R_OF[t], c]
    return dq


def generic_dkdv(q, k, v, cu, h, g, scale, lse, dout, delta):
    d = q.shape[2]
    dk, dv = np.full(k.shape, np.nan), np.full(v.shape, np.nan)
    group = h // g
    for start, ln, tile in blocks(cu, ROWS, False):
        for kv in range(g):
            k_lo = tile * ROWS
            k_rows = min(ROWS, ln - k_lo)
            j = k_lo + R_OF
            key_valid = R_OF < k_rows
            s_k = staged(k[:, kv], start + k_lo, ROWS, k_rows)
            s_v = staged(v[:, kv], start + k_lo, ROWS, k_rows)
            s_dk, s_dv = np.zeros((ROWS, d)), np.zeros((ROWS, d))
            for head in range(kv * group, (kv + 1) * group):
                for i0 in range(k_lo, ln, CHUNK):
                    q_rows = min(CHUNK, ln - i0)
                    s_q = staged(q[:, head], start + i0, CHUNK, q_rows)
                    s_g = staged(dout[:, head], start + i0, CHUNK, q_rows)
                    s_lse = staged(lse[head], start + i0, CHUNK, q_rows)
                    s_delta = staged(delta[head], start + i0, CHUNK, q_rows)
                    p, ds = np.zeros((CHUNK, THREADS)), np.zeros((CHUNK, THREADS))
                    for ii in range(CHUNK):
                        s = group_dot(s_k, lambda t: s_q[ii])
                        dp = group_dot(s_v, lambda t: s_g[ii])
                        live = key_valid & (ii < q_rows) & (j <= i0 + ii)
                        p[ii] = np.where(live, np.exp(s * scale - s_lse[ii]), 0)
                        ds[ii] = p[ii] * (dp - s_delta[ii])
                    for t in range(THREADS):
                        for c in range(CG_OF[t], d, GROUPS):
                            s_dk[R_OF[t], c] += ds[:, t] @ s_q[:, c]
                            s_dv[R_OF[t], c] += p[:, t] @ s_g[:, c]
            for t in range(THREADS):
                if key_valid[t]:
                    for c in range(CG_OF[t], d, GROUPS):
                        dk[start + j[t], kv, c] = scale * s_dk[R_OF[t], c]
                        dv[start + j[t], kv, c] = s_dv[R_OF[t], c]
    return dk, dv


# ---- Warp primitives (attention_mma.cuh). Registers: pairs [32 lanes][2]; C fragments [32][4].

def ldmatrix_x4(mem, addr, trans=False):
    """addr[l]: element offset of the row lane l addresses (row l % 8 of matrix l // 8)."""
    out = np.zeros((4, 32, 2))
    for i in range(4):
        for l in range(32):
            if trans:
                out[i, l] = (mem[addr[8 * i + 2 * (l % 4)] + l // 4],
                             mem[addr[8 * i + 2 * (l % 4) + 1] + l // 4])
            else:
                a = addr[8 * i + l // 4]
                out[i, l] = mem[a + 2 * (l % 4)], mem[a + 2 * (l % 4) + 1]
    return out


def mma(c, a, b0, b1):
    A, B, C = np.zeros((16, 16)), np.zeros((16, 8)), np.zeros((16, 8))
    for l in range(32):
        g, t = l // 4, l % 4
        A[g, 2 * t:2 * t + 2], A[g + 8, 2 * t:2 * t + 2] = a[0][l], a[1][l]
        A[g, 2 * t + 8:2 * t + 10], A[g + 8, 2 * t + 8:2 * t + 10] = a[2][l], a[3][l]
        B[2 * t:2 * t + 2, g], B[2 * t + 8:2 * t + 10, g] = b0[l], b1[l]
        C[g, 2 * t:2 * t + 2], C[g + 8, 2 * t:2 * t + 2] = c[l, 0:2], c[l, 2:4]
    C = C + A @ B
    out = np.zeros((32, 4))
    for l in range(32):
        g, t = l // 4, l % 4
        out[l, 0:2], out[l, 2:4] = C[g, 2 * t:2 * t + 2], C[g + 8, 2 * t:2 * t + 2]
    return out


def c_pair_to_a(left, right):
    return np.stack([left[:, 0:2], left[:, 2:4], right[:, 0:2], right[:, 2:4]])


# ---- attention_tc.cuh: padded tiles, fragment loads, the two product shapes

TC_WARPS = 8                # kTcWarps
TC_THREADS = 32 * TC_WARPS  # kTcThreads
TC_ROWS = 16 * TC_WARPS     # kTcBlockRows: query rows (forward, dq) or keys (dk/dv) of a block
TC_KV = 64                  # kTcKvRows: keys of a K/V tile (forward, dq)


def tc_tile(x, first, rows, valid, d):
    """A tile as flat shared memory with rows padded to d + 8 elements."""
    mem = np.zeros((rows, d + 8))
    mem[:valid, :d] = x[first:first + valid]
    return mem.reshape(-1)


def load_a(s, d, row0, col0):
    return ldmatrix_x4(s, (row0 + LANE % 16) * (d + 8) + col0 + (LANE // 16) * 8)


def load_b_from_rows(s, d, n0, k0):
    return ldmatrix_x4(s, (n0 + LANE % 8 + (LANE // 16) * 8) * (d + 8) + k0 + ((LANE // 8) % 2) * 8)


def load_b_from_cols(s, d, k0, n0):
    return ldmatrix_x4(s, (k0 + LANE % 8 + ((LANE // 8) % 2) * 8) * (d + 8) + n0 + (LANE // 16) * 8,
                       trans=True)


def mma_rows_by_rows(c, s_a, row0, s_x, d, kn):
    for kk in range(d // 16):
        a = load_a(s_a, d, row0, kk * 16)
        for pair in range(kn // 16):
            b = load_b_from_rows(s_x, d, pair * 16, kk * 16)
            c[2 * pair] = mma(c[2 * pair], a, b[0], b[1])
            c[2 * pair + 1] = mma(c[2 * pair + 1], a, b[2], b[3])


def mma_regs_by_tile(acc, w, s_x, d, kk_rows):
    for ks in range(kk_rows // 16):
        a = c_pair_to_a(w[2 * ks], w[2 * ks + 1])
        for pair in range(d // 16):
            b = load_b_from_cols(s_x, d, ks * 16, pair * 16)
            acc[2 * pair] = mma(acc[2 * pair], a, b[0], b[1])
            acc[2 * pair + 1] = mma(acc[2 * pair + 1], a, b[2], b[3])


def store_rows(dst, acc, factor, rows_valid, warp, index_of_row):
    for half in range(2):
        for lane in range(32):
            row = warp * 16 + lane // 4 + half * 8
            if row < rows_valid:
                for dt in range(acc.shape[0]):
                    c = dt * 8 + (lane % 4) * 2
                    dst[index_of_row(row) + (slice(c, c + 2),)] = acc[dt, lane, 2 * half:2 * half + 2] * factor


# ---- attention_tc_forward.cu

def tc_forward(q, k, v, cu, h, g, scale):
    n, _, d = q.shape
    out, lse = np.full(q.shape, np.nan), np.full((h, n), np.nan)
    scale_log2 = scale * LOG2E
    for start, ln, tile in blocks(cu, TC_ROWS, True, TC_THREADS):
        for head in range(h):
            kv = head // (h // g)
            q_lo = tile * TC_ROWS
            q_rows = min(TC_ROWS, ln - q_lo)
            kv_end = q_lo + q_rows
            s_q = tc_tile(q[:, head], start + q_lo, TC_ROWS, q_rows, d)
            for warp in range(TC_WARPS):
                row0 = warp * 16 + LANE // 4
                warp_q_first = q_lo + warp * 16
                q_frag = [load_a(s_q, d, warp * 16, kk * 16) for kk in range(d // 16)]
                o = np.zeros((d // 8, 32, 4))
                m, l = np.full((2, 32), NEG), np.zeros((2, 32))
                for t in range((kv_end + TC_KV - 1) // TC_KV):
                    kv_lo = t * TC_KV
                    if kv_lo > warp_q_first + 15:
                        continue
                    sk = tc_tile(k[:, kv], start + kv_lo, TC_KV, min(TC_KV, kv_end - kv_lo), d)
                    sv = tc_tile(v[:, kv], start + kv_lo, TC_KV, min(TC_KV, kv_end - kv_lo), d)
                    s = np.zeros((TC_KV // 8, 32, 4))
                    for kk in range(d // 16):
                        for pair in range(TC_KV // 16):
                            b = load_b_from_rows(sk, d, pair * 16, kk * 16)
                            s[2 * pair] = mma(s[2 * pair], q_frag[kk], b[0], b[1])
                            s[2 * pair + 1] = mma(s[2 * pair + 1], q_frag[kk], b[2], b[3])
                    diagonal = kv_lo + TC_KV - 1 > warp_q_first
                    tile_max = np.full((2, 32), NEG)
                    for nt in range(TC_KV // 8):
                        for e in range(4):
                            key = kv_lo + nt * 8 + (LANE % 4) * 2 + (e & 1)
                            query = q_lo + row0 + (e // 2) * 8
                            if diagonal:
                                s[nt, :, e] = np.where(key > query, NEG, s[nt, :, e])
                            tile_max[e // 2] = np.maximum(tile_max[e // 2], s[nt, :, e])
                    m_scaled, correction = np.zeros((2, 32)), np.zeros((2, 32))
                    for half in range(2):
                        mx = tile_max[half]
                        mx = np.maximum(mx, mx[LANE ^ 1])
                        mx = np.maximum(mx, mx[LANE ^ 2])
                        m_new = np.maximum(m[half], mx)
                        m_scaled[half] = np.where(m_new == NEG, 0, m_new * scale_log2)
                        correction[half] = np.exp2(m[half] * scale_log2 - m_scaled[half])
                        m[half] = m_new
                        l[half] *= correction[half]
                    for nt in range(TC_KV // 8):
                        for e in range(4):
                            p = np.exp2(s[nt, :, e] * scale_log2 - m_scaled[e // 2])
                            s[nt, :, e] = p
                            l[e // 2] += p
                    o[:, :, 0:2] *= correction[0][None, :, None]
                    o[:, :, 2:4] *= correction[1][None, :, None]
                    mma_regs_by_tile(o, s, sv, d, TC_KV)
                for half in range(2):
                    l[half] = l[half] + l[half][LANE ^ 1]
                    l[half] = l[half] + l[half][LANE ^ 2]
                    for lane in range(32):
                        row = warp * 16 + lane // 4 + half * 8
                        if row < q_rows:
                            o[:, lane, 2 * half:2 * half + 2] /= l[half][lane]
                            if lane % 4 == 0:
                                lse[head, start + q_lo + row] = m[half][lane] * scale + np.log(l[half][lane])
                store_rows(out, o, 1.0, q_rows, warp, lambda row: (start + q_lo + row, head))
    return out, lse


# ---- attention_tc_backward.cu

def tc_dkdv(q, k, v, cu, h, g, scale, lse, dout, delta):
    d = q.shape[2]
    kq = 32 if d == 128 else 64
    dk, dv = np.full(k.shape, np.nan), np.full(v.shape, np.nan)
    group = h // g
    for start, ln, tile in blocks(cu, TC_ROWS, False, TC_THREADS):
        for kv in range(g):
            k_lo = tile * TC_ROWS
            k_rows = min(TC_ROWS, ln - k_lo)
            s_k = tc_tile(k[:, kv], start + k_lo, TC_ROWS, k_rows, d)
            s_v = tc_tile(v[:, kv], start + k_lo, TC_ROWS, k_rows, d)
            q_first = k_lo // kq
            q_tiles = (ln + kq - 1) // kq - q_first
            for warp in range(TC_WARPS):
                warp_k_first = k_lo + warp * 16
                key0 = warp_k_first + LANE // 4
                dk_acc, dv_acc = np.zeros((d // 8, 32, 4)), np.zeros((d // 8, 32, 4))
                for step in range(group * q_tiles):
                    head = kv * group + step // q_tiles
                    q_lo = (q_first + step % q_tiles) * kq
                    q_rows = min(kq, ln - q_lo)
                    if q_lo + kq - 1 < warp_k_first:
                        continue
                    sq = tc_tile(q[:, head], start + q_lo, kq, q_rows, d)
                    sg = tc_tile(dout[:, head], start + q_lo, kq, q_rows, d)
                    sl = staged(lse[head], start + q_lo, kq, q_rows)
                    sd = staged(delta[head], start + q_lo, kq, q_rows)
                    p, ds = np.zeros((kq // 8, 32, 4)), np.zeros((kq // 8, 32, 4))
                    mma_rows_by_rows(p, s_k, warp * 16, sq, d, kq)
                    mma_rows_by_rows(ds, s_v, warp * 16, sg, d, kq)
                    for nt in range(kq // 8):
                        for e in range(4):
                            col = nt * 8 + (LANE % 4) * 2 + (e & 1)
                            key = key0 + (e // 2) * 8
                            live = (col < q_rows) & (key <= q_lo + col)
                            pe = np.where(live, np.exp2(p[nt, :, e] * scale * LOG2E - sl[col] * LOG2E), 0.0)
                            p[nt, :, e] = pe
                            ds[nt, :, e] = pe * (ds[nt, :, e] - sd[col])
                    mma_regs_by_tile(dv_acc, p, sg, d, kq)
                    mma_regs_by_tile(dk_acc, ds, sq, d, kq)
                store_rows(dk, dk_acc, scale, k_rows, warp, lambda row: (start + k_lo + row, kv))
                store_rows(dv, dv_acc, 1.0, k_rows, warp, lambda row: (start + k_lo + row, kv))
    return dk, dv


def tc_dq(q, k, v, cu, h, g, scale, lse, dout, delta):
    d = q.shape[2]
    dq = np.full(q.shape, np.nan)
    for start, ln, tile in blocks(cu, TC_ROWS, True, TC_THREADS):
        for head in range(h):
            kv = head // (h // g)
            q_lo = tile * TC_ROWS
            q_rows = min(TC_ROWS, ln - q_lo)
            kv_end = q_lo + q_rows
            s_q = tc_tile(q[:, head], start + q_lo, TC_ROWS, q_rows, d)
            s_g = tc_tile(dout[:, head], start + q_lo, TC_ROWS, q_rows, d)
            for warp in range(TC_WARPS):
                row0 = warp * 16 + LANE // 4
                warp_q_first = q_lo + warp * 16
                lse_log2, row_delta = np.zeros((2, 32)), np.zeros((2, 32))
                for half in range(2):
                    row = row0 + half * 8
                    stat = np.minimum(start + q_lo + row, len(q) - 1)
                    lse_log2[half] = np.where(row < q_rows, lse[head, stat] * LOG2E, np.inf)
                    row_delta[half] = np.where(row < q_rows, delta[head, stat], 0)
                acc = np.zeros((d // 8, 32, 4))
                for t in range((kv_end + TC_KV - 1) // TC_KV):
                    kv_lo = t * TC_KV
                    if kv_lo > warp_q_first + 15:
                        continue
                    sk = tc_tile(k[:, kv], start + kv_lo, TC_KV, min(TC_KV, kv_end - kv_lo), d)
                    sv = tc_tile(v[:, kv], start + kv_lo, TC_KV, min(TC_KV, kv_end - kv_lo), d)
                    p, ds = np.zeros((TC_KV // 8, 32, 4)), np.zeros((TC_KV // 8, 32, 4))
                    mma_rows_by_rows(p, s_q, warp * 16, sk, d, TC_KV)
                    mma_rows_by_rows(ds, s_g, warp * 16, sv, d, TC_KV)
                    diagonal = kv_lo + TC_KV - 1 > warp_q_first
                    for nt in range(TC_KV // 8):
                        for e in range(4):
                            key = kv_lo + nt * 8 + (LANE % 4) * 2 + (e & 1)
                            query = q_lo + row0 + (e // 2) * 8
                            live = (not diagonal) | (key <= query)
                            pe = np.where(live, np.exp2(p[nt, :, e] * scale * LOG2E - lse_log2[e // 2]), 0.0)
                            ds[nt, :, e] = pe * (ds[nt, :, e] - row_delta[e // 2])
                    mma_regs_by_tile(acc, ds, sk, d, TC_KV)
                store_rows(dq, acc, scale, q_rows, warp, lambda row: (start + q_lo + row, head))
    return dq


# ---- The exact reference (cpu/attention.cc's definition, dense per sequence)

def reference(q, k, v, cu, h, g, scale, dout):
    out, lse = np.zeros_like(q), np.zeros((h, len(q)))
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for s in range(len(cu) - 1):
        a, b = cu[s], cu[s + 1]
        if a == b:
            continue
        for head in range(h):
            kv = head // (h // g)
            Q, K, V, dO = q[a:b, head], k[a:b, kv], v[a:b, kv], dout[a:b, head]
            S = np.where(np.tril(np.ones((b - a, b - a))) > 0, scale * Q @ K.T, NEG)
            mx = S.max(axis=1, keepdims=True)
            z = np.exp(S - mx).sum(axis=1, keepdims=True)
            P = np.exp(S - mx) / z
            O = P @ V
            out[a:b, head], lse[head, a:b] = O, (mx + np.log(z))[:, 0]
            dS = P * (dO @ V.T - (dO * O).sum(axis=1, keepdims=True))
            dq[a:b, head] = scale * dS @ K
            dk[a:b, kv] += scale * dS.T @ Q
            dv[a:b, kv] += P.T @ dO
    return out, lse, dq, dk, dv


def check(name, kernels, lens, h, g, d, rng):
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    n, scale = cu[-1], 1 / np.sqrt(d)
    q, k = rng.uniform(-2, 2, (n, h, d)), rng.uniform(-2, 2, (n, g, d))
    v, dout = rng.uniform(-1, 1, (n, g, d)), rng.uniform(-1, 1, (n, h, d))
    forward, dq_kernel, dkdv_kernel = kernels
    out, lse = forward(q, k, v, cu, h, g, scale)
    delta = np.einsum("nhd,nhd->hn", dout, out)  # attention_delta_kernel
    dq = dq_kernel(q, k, v, cu, h, g, scale, lse, dout, delta)
    dk, dv = dkdv_kernel(q, k, v, cu, h, g, scale, lse, dout, delta)
    want = reference(q, k, v, cu, h, g, scale, dout)
    worst = max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip((out, lse, dq, dk, dv), want))
    ok = worst < 1e-12  # NaN compares false
    print(f"{name:8s} H {h} G {g} D {d:3d} lengths {lens}: max error {worst:.1e} {'ok' if ok else 'FAILED'}")
    return ok


def main():
    rng = np.random.default_rng(0)
    generic = (generic_forward, generic_dq, generic_dkdv)
    tensor_cores = (tc_forward, tc_dq, tc_dkdv)
    results = [
        check("generic", generic, [1, 0, 37, 5], 3, 1, 4, rng),
        check("generic", generic, [20, 0, 1, 33], 2, 2, 12, rng),
        check("tc", tensor_cores, [1, 0, 70, 5, 130], 2, 1, 64, rng),
        check("tc", tensor_cores, [200, 17, 129, 300], 4, 2, 64, rng),
        check("tc", tensor_cores, [67], 3, 3, 128, rng),
        check("tc", tensor_cores, [150, 64], 2, 1, 128, rng),
        check("tc", tensor_cores, [0, 1, 64, 2], 3, 1, 128, rng),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
