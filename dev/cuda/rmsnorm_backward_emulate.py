"""Host emulation of the work split of rmsnorm_backward_kernel (runtime/src/cuda/rmsnorm.cu), checked
without a GPU: block b owns rows [R b, R b + R) (R = backward_block_rows), warp w of its 8 takes rows
R b + w, R b + w + 8, ..., lane l holds chunks l, l + 32, ... (K of them, W elements each) of every
row it takes, and the warps' column accumulators meet in the shared sums[(k W + e) 32 + l] in warp order before the last warp writes row b
of the partials. Asserts that every dx element is written once, every partial once, no two lanes share
a shared-memory slot, and that the partials add up to the column sums; and that the launcher's choice
of K covers the row or sends it to the two-pass kernels. Run: python3 dev/cuda/rmsnorm_backward_emulate.py
"""

MAX_BLOCKS, WARPS, MAX_CHUNKS_PER_LANE = 256, 8, 8


def backward_block_rows(rows):
    """rows / MAX_BLOCKS rounded up to whole warps' rows, at least one row a warp."""
    per_block = -(-rows // MAX_BLOCKS)
    return max(WARPS, -(-per_block // WARPS) * WARPS)


def chunks_per_lane(chunks):
    """with_chunks_per_lane: the fewest K in {1, 2, 4, 8} with 32 K >= chunks, or None (two-pass)."""
    for k in (1, 2, 4, MAX_CHUNKS_PER_LANE):
        if chunks <= 32 * k:
            return k
    return None


def emulate(rows, cols, width):
    chunks = cols // width
    k_max = chunks_per_lane(chunks)
    if k_max is None:
        return False
    value = lambda row, col: ((row * 7919 + col * 104729) % 1000) - 500  # exact in a float
    written = [0] * (rows * cols)
    block_rows = backward_block_rows(rows)
    blocks = -(-rows // block_rows)
    assert blocks <= MAX_BLOCKS
    partial = [[None] * cols for _ in range(blocks)]
    for b in range(blocks):
        first, end = b * block_rows, min(b * block_rows + block_rows, rows)
        acc = {}
        for warp in range(WARPS):
            for lane in range(32):
                for row in range(first + warp, end, WARPS):
                    for k in range(k_max):
                        if lane + 32 * k < chunks:
                            for e in range(width):
                                col = (lane + 32 * k) * width + e
                                written[row * cols + col] += 1
                                key = (warp, lane, k, e)
                                acc[key] = acc.get(key, 0) + value(row, col)
        sums, owner = {}, {}
        for warp in range(WARPS):
            for lane in range(32):
                for k in range(k_max):
                    if lane + 32 * k >= chunks:
                        continue
                    for e in range(width):
                        slot = (k * width + e) * 32 + lane
                        assert owner.setdefault(slot, lane) == lane, "two lanes share a slot"
                        total = acc.get((warp, lane, k, e), 0) + (sums[slot] if warp else 0)
                        col = (lane + 32 * k) * width + e
                        if warp == WARPS - 1:
                            assert partial[b][col] is None, "a partial written twice"
                            partial[b][col] = total
                        else:
                            sums[slot] = total
    assert all(n == 1 for n in written), f"[{rows}, {cols}] W={width}: dx not written exactly once"
    for col in range(cols):
        want = sum(value(row, col) for row in range(rows))
        assert sum(partial[b][col] for b in range(blocks)) == want, f"[{rows}, {cols}]: column {col}"
    return True


def main():
    fused = 0
    for rows in (1, 7, 63, 64, 65, 130, 2049, 4097):
        for cols, width in ((1, 1), (33, 1), (256, 1), (257, 1), (96, 8), (960, 8), (2048, 8),
                            (2056, 8), (960, 4), (1024, 4), (256, 2)):
            if rows * cols <= 300_000:  # seconds of pure Python
                fused += emulate(rows, cols, width)
    print(f"ok: {fused} fused shapes checked; the rest take the two-pass kernels")


if __name__ == "__main__":
    main()
