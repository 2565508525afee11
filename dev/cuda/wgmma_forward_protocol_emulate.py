#!/usr/bin/env python3
"""Host emulation of the wgmma attention forward's synchronisation (attention_wgmma_forward.cu,
attention_wgmma_loads.cuh: Note [wgmma forward load ring]; load_ring.cuh: Note [load ring protocol];
attention_wgmma_schedule.cuh), for checking it on a machine without a GPU: the four producer warps, the
two consumer warpgroups, the mbarriers (arrival counts in threads, waits by phase parity as the
hardware does them), the two named barriers of the turn-taking (thread counts) and the producer's
cp.async copies, with the agents interleaved at random, every block of a persistent grid in turn, on
random packed lengths. For each item the producer waits on q_empty for its Q slot, hands the item
over (item_full), copies Q, then for each key tile waits on empty for a stage, copies K and V and
arrives on full through mbarrier_arrive_on_copies: each warp's arrival is made later, as an event of
its own, once every copy the warp issued before it has landed (cp_async_emulate.py), so the item's
first tile's arrival covers its Q. The producer never waits for its copies and never flushes. A
consumer waits on full (wait_loaded) before it reads a tile; the proxy fence after that wait is not
modelled (nothing here has proxies). It reports
  * a deadlock (no agent can move),
  * a wgmma reading a Q slot or a K or V stage that does not hold its tile, completely landed from all
    four producer warps (a full barrier completed too early, a read without the wait, a stage
    refilled too soon),
  * a copy issued into a stage or slot while a wgmma still reads it, or before the copy there before
    it landed,
  * a wait whose barrier has gone two phases past the one it names (the parity would lie),
  * a named barrier left with arrivals at exit, or an item computed other than once per warpgroup;
and checks that the warp-wide locate_tile_in_warp (32 lanes) finds what the block-wide locate_tile
does. Where a wgmma's read ends is where the kernel's wgmma_wait returns. kStages is 3, as the
kernel has it.

--broken NAME runs a deliberately broken variant, which must fail:
  consumer-early-read  a consumer reads a tile without waiting on full for it;
  early-release        a consumer frees tile g - 1 as soon as it has issued P V(g - 1), before that
                       wgmma is done;
  eager-full           the producer arrives on full at once (mbarrier_arrive), before its copies land;
  producer-parity      the producer waits on the empty barrier's phase g / kStages instead of the one
                       before;
  late-q               the producer copies an item's Q after its first tile's arrival on full, which
                       then does not cover it.
Not a substitute for the GPU tests: it checks the protocol as transcribed here, not the kernel's code.

    python3 dev/cuda/wgmma_forward_protocol_emulate.py [trials] [--broken NAME]   # needs numpy; seconds
"""
import argparse
import random

from attention_emulate import locate_tile
from cp_async_emulate import WarpCopies, interleave
from mbarrier_emulate import MBarrier

ROWS = KV = 128  # kWgmmaRows, kWgmmaKv
STAGES = 3       # kWgmmaStages
PRODUCER_WARPS = 4


class NamedBarrier:
    def __init__(self, name):
        self.name, self.count, self.generation = name, 0, 0

    def arrive(self, threads):
        self.count += threads
        if self.count == 256:  # kWgmmaConsumerThreads
            self.count, self.generation = 0, self.generation + 1


def tiles(length, rows):
    return (length + rows - 1) // rows


def run_block(lens, heads, block, blocks, q_slots, broken, rnd):
    """One persistent block; returns the (tile, head, warpgroup) its consumers finished."""
    cu = [0]
    for length in lens:
        cu.append(cu[-1] + length)
    n = cu[-1]
    items = (tiles(n, ROWS) + len(lens)) * heads  # attention_tile_blocks(shape, 128) H
    full = [MBarrier(f"full[{s}]", 128) for s in range(STAGES)]
    empty = [MBarrier(f"empty[{s}]", 256) for s in range(STAGES)]
    item_full = [MBarrier(f"item_full[{s}]", 128) for s in range(q_slots)]
    q_empty = [MBarrier(f"q_empty[{s}]", 256) for s in range(q_slots)]
    turn_barriers = [NamedBarrier("turn 0"), NamedBarrier("turn 1")]
    # What each producer warp's part of a buffer holds: (tile or item, landed).
    k_parts = [[None] * PRODUCER_WARPS for _ in range(STAGES)]
    v_parts = [[None] * PRODUCER_WARPS for _ in range(STAGES)]
    q_parts = [[None] * PRODUCER_WARPS for _ in range(q_slots)]
    item_slots = [None] * q_slots
    readers = {}  # ('K' | 'V', stage) or ('Q', slot) -> wgmmas reading it
    finished = []

    def work_item(i):
        w = i * blocks + (block if i % 2 == 0 else blocks - 1 - block)
        if w >= items:
            return None, 0
        x = w // heads
        found = locate_tile(cu, n, ROWS, x, True, 32)
        assert found == locate_tile(cu, n, ROWS, x, True, 384), "warp and block locate differ"
        return found, w % heads

    def producer(warp):
        copies = warps[warp]

        def copy(parts, index, value, key):
            assert readers.get(key, 0) == 0, f"copy into {key} while a wgmma reads it"
            copies.copy(parts, index, value)

        def copy_q(i):
            copy(q_parts, i % q_slots, i, ("Q", i % q_slots))

        g, i = 0, 0
        while True:
            found, head = work_item(i)
            if i >= q_slots:
                while not q_empty[i % q_slots].done(i // q_slots - 1):
                    yield
            if warp == 0:
                item_slots[i % q_slots] = (i, found, head)
            item_full[i % q_slots].arrive(32)
            yield
            if found is None:
                return
            _, length, tile = found
            q_lo = tile * ROWS
            kv_end = q_lo + min(ROWS, length - q_lo)
            if broken != "late-q":
                copy_q(i)
            for t in range(tiles(kv_end, KV)):
                if g >= STAGES:  # LoadRingProducer::acquire
                    phase = g // STAGES if broken == "producer-parity" else g // STAGES - 1
                    while not empty[g % STAGES].done(phase):
                        yield
                copy(k_parts, g % STAGES, g, ("K", g % STAGES))
                copy(v_parts, g % STAGES, g, ("V", g % STAGES))
                if broken == "eager-full":
                    full[g % STAGES].arrive(32)
                else:  # LoadRingProducer::commit
                    copies.arrive_on_copies(full[g % STAGES])
                if broken == "late-q" and t == 0:
                    copy_q(i)
                g += 1
                yield
            i += 1

    def consumer(wg):
        def turn():
            barrier = turn_barriers[wg]
            generation = barrier.generation
            barrier.arrive(128)
            while barrier.generation == generation:
                yield

        def hand_over():
            turn_barriers[1 - wg].arrive(128)

        def issue(*buffers):  # a commit group of wgmmas reading these buffers
            for parts, index, value, key in buffers:
                assert all(p == (value, True) for p in parts[index]), (
                    f"warpgroup {wg} reads {key} for {value}, holds {parts[index]}")
                readers[key] = readers.get(key, 0) + 1
            return [key for _, _, _, key in buffers]

        def complete(keys):  # wgmma_wait returned for that group
            for key in keys:
                readers[key] -= 1

        def q(i):
            return (q_parts, i % q_slots, i, ("Q", i % q_slots))

        def k(g):
            return (k_parts, g % STAGES, g, ("K", g % STAGES))

        def v(g):
            return (v_parts, g % STAGES, g, ("V", g % STAGES))

        def wait_loaded(g):
            while broken != "consumer-early-read" and not full[g % STAGES].done(g // STAGES):
                yield

        def free(g, early):  # the arrival on empty for tile g: once its P V is done, or (early) issued
            if early == (broken == "early-release"):
                empty[g % STAGES].arrive(128)

        if wg == 1:
            hand_over()
        g0, i = 0, 0
        while True:
            while not item_full[i % q_slots].done(i // q_slots):
                yield
            tag, found, head = item_slots[i % q_slots]
            assert tag == i, "a stale item"
            if found is None:
                break
            _, length, tile = found
            q_lo = tile * ROWS
            count = tiles(q_lo + min(ROWS, length - q_lo), KV)
            yield from wait_loaded(g0)
            yield from turn()
            scores = issue(q(i), k(g0))
            hand_over()
            yield
            complete(scores)
            if count == 1:
                q_empty[i % q_slots].arrive(128)
            for t in range(1, count):
                g = g0 + t
                yield from wait_loaded(g)
                yield from turn()
                scores = issue(q(i), k(g))
                pv = issue(v(g - 1))
                free(g - 1, early=True)
                hand_over()
                yield
                complete(scores)
                if t == count - 1:
                    q_empty[i % q_slots].arrive(128)
                yield
                complete(pv)
                free(g - 1, early=False)
            last = g0 + count - 1
            yield from turn()
            pv = issue(v(last))
            free(last, early=True)
            hand_over()
            yield
            complete(pv)
            free(last, early=False)
            finished.append((found, head, wg))
            g0 += count
            i += 1
        if wg == 0:
            yield from turn()

    warps = [WarpCopies(w) for w in range(PRODUCER_WARPS)]
    agents = [producer(w) for w in range(PRODUCER_WARPS)] + [consumer(0), consumer(1)]
    interleave(agents, warps, rnd, 1_000_000, f"block {block} of {blocks}")
    for barrier in turn_barriers:
        assert barrier.count == 0, f"{barrier.name}: {barrier.count} threads left arrived at exit"
    return finished


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trials", nargs="?", type=int, default=300)
    parser.add_argument("--broken", choices=["consumer-early-read", "early-release", "eager-full",
                                             "producer-parity", "late-q"])
    args = parser.parse_args()
    choices = [0, 1, 5, 64, 127, 128, 129, 255, 256, 300, 385, 700, 1000]
    for trial in range(args.trials):
        rnd = random.Random(trial)
        lens = [rnd.choice(choices) for _ in range(rnd.randint(1, 6))]
        heads, blocks, q_slots = rnd.choice([1, 2, 3]), rnd.choice([1, 2, 3, 5]), rnd.choice([1, 2])
        done = []
        for block in range(blocks):
            done += run_block(lens, heads, block, blocks, q_slots, args.broken, rnd)
        want = sum(tiles(length, ROWS) for length in lens) * heads
        assert len(set(done)) == len(done), f"trial {trial}: an item computed twice"
        assert len(done) == 2 * want, f"trial {trial}: {len(done)} items computed, want {2 * want}"
    print(f"ok: {args.trials} random grids")


if __name__ == "__main__":
    main()
