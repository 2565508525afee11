#!/usr/bin/env python3
"""A list-schedule model of the wgmma attention kernels' blocks (Note [Attention block order] in
runtime/src/cuda/attention_common.cuh): each block's work in steps (one tile pair of products), blocks
started in launch order, each on the first SM to come free, one block an SM. It prints how busy the SMs
are (work / (SMs x makespan)) for the order the kernels use and for alternatives, which is where the
Note's 84% and 93% come from. A model, not a measurement: it knows nothing of L2, of the blocks'
prologues or of how the GPU hands SMs between two kernels (it predicts 5% from running dk/dv and dq side
by side, which the GPU did not give: bench/RESULTS.md).

Steps, at tile_rows = 128 and D = 64:
  dk/dv   key tile j of T: the group's H/G query heads, each over the query tiles of 64 rows from the
          tile's own on: (H/G) * 2 (T - j)
  dq      query tile i: the key tiles up to its own: i + 1

Usage: attention_schedule.py [--seqs 2] [--rows 8192] [--heads 15] [--kv-heads 5] [--sms 132]
"""
import argparse
import heapq


def tile_major(tiles, seqs, longest_first_tile):
    """A group's blocks in rank order: every sequence's longest tile, then every second longest, ...;
    then the surplus blocks (one a sequence, no work). Yields tile indices (None for the surplus)."""
    for rank in range(tiles * seqs):
        t = rank // seqs
        yield t if longest_first_tile == 0 else tiles - 1 - t
    for _ in range(seqs):
        yield None


def lead_order(groups, per_group, lead):
    """(group, rank) of each launched block: L0, L1, R0, L2, R1, ..., R(G-1) (lead_ordered_block)."""
    order = []
    for block in range(groups * per_group):
        if block < lead:
            order.append((0, block))
            continue
        rest = block - lead
        rnd, r = rest // per_group + 1, rest % per_group
        if rnd == groups:
            order.append((groups - 1, lead + r))
        else:
            order.append((rnd if r < lead else rnd - 1, r))
    return order


def makespan(blocks, sms):
    """List schedule of block step counts, in order, on `sms` SMs: the time the last one ends."""
    free = [0.0] * sms
    heapq.heapify(free)
    end = 0.0
    for steps in blocks:
        start = heapq.heappop(free)
        heapq.heappush(free, start + steps)
        end = max(end, start + steps)
    return end


def busy(blocks, sms):
    total = sum(blocks)
    return total / (sms * makespan(blocks, sms)) if total else 1.0


def kernel_blocks(kind, args, lead_fraction):
    tiles = args.rows // 128
    if kind == "dkdv":
        groups, work = args.kv_heads, lambda t: (args.heads // args.kv_heads) * 2 * (tiles - t)
        longest = 0
    else:
        groups, work = args.heads, lambda t: t + 1
        longest = tiles - 1
    ranks = list(tile_major(tiles, args.seqs, longest))
    per_group = len(ranks)
    lead = round(per_group * lead_fraction)
    return [0 if ranks[r] is None else work(ranks[r]) for _, r in lead_order(groups, per_group, lead)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", type=int, default=2)
    p.add_argument("--rows", type=int, default=8192)
    p.add_argument("--heads", type=int, default=15)
    p.add_argument("--kv-heads", type=int, default=5)
    p.add_argument("--sms", type=int, default=132)
    args = p.parse_args()
    print(f"{args.seqs} x {args.rows} rows, {args.heads} heads / {args.kv_heads} KV heads, {args.sms} SMs")
    for kind in ("dkdv", "dq"):
        for lead in (0.0, 1 / 3):
            blocks = kernel_blocks(kind, args, lead)
            print(f"  {kind:5s} lead {lead:.2f}: {len(blocks)} blocks, longest {max(blocks)} steps, "
                  f"SMs busy {100 * busy(blocks, args.sms):.1f}%")
    dkdv, dq = kernel_blocks("dkdv", args, 1 / 3), kernel_blocks("dq", args, 1 / 3)
    heads = args.heads // args.kv_heads
    # dq's blocks cost about 3/4 of a dk/dv step a step (3 products against 4, the same tiles).
    dq = [0.75 * s for s in dq]
    apart = makespan(dkdv, args.sms) + makespan(dq, args.sms)
    together = makespan(dkdv + dq, args.sms)
    print(f"  dk/dv then dq: {apart:.0f} steps apart, {together:.0f} side by side "
          f"({100 * (1 - together / apart):.1f}% less)")
    # Orders the model ranks higher, ignoring what the Note's order is for (blocks running together read
    # the same head, which stays in L2): longest first over all heads, and the same with every dk/dv
    # block split by query head (its partial dK and dV then summed in a fixed order, not counted).
    lpt = sorted(dkdv, reverse=True)
    per_head = sorted((s / heads for s in dkdv for _ in range(heads)), reverse=True)
    print(f"  dk/dv longest first: SMs busy {100 * busy(lpt, args.sms):.1f}%; split by query head, longest "
          f"first: {100 * busy(per_head, args.sms):.1f}%")

if __name__ == "__main__":
    main()
