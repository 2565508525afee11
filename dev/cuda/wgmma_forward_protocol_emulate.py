#!/usr/bin/env python3
"""Host emulation of the wgmma attention forward's synchronisation (attention_wgmma_forward.cu,
attention_wgmma_loads.cuh, attention_wgmma_schedule.cuh), for checking it on a machine without a GPU:
the four producer warps, the two consumer warpgroups, the mbarriers (arrival counts in threads, waits
by phase parity as the hardware does them), the two named barriers of the turn-taking (thread counts)
and the producer's cp.async groups, with the agents interleaved at random, every block of a persistent
grid in turn, on random packed lengths. It reports
  * a deadlock (no agent can move),
  * a wgmma reading a Q slot or K/V stage that does not hold its tile, completely landed from all four
    producer warps (a full barrier arrived on too early, a stage refilled too soon),
  * a copy issued into a stage or slot while a wgmma still reads it,
  * a wait whose barrier has gone two phases past the one it names (the parity would lie),
  * a named barrier left with arrivals at exit, or an item computed other than once per warpgroup;
and checks that the warp-wide locate_tile_in_warp (32 lanes) finds what the block-wide locate_tile
does. Where a wgmma's read ends is where the kernel's wgmma_wait returns. Not a substitute for the GPU
tests: it checks the protocol as transcribed here, not the kernel's code.

    python3 dev/cuda/wgmma_forward_protocol_emulate.py [trials]   # needs numpy; a few seconds
"""
import random
import sys

from attention_emulate import locate_tile
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


def run_block(lens, heads, block, blocks, q_slots, rnd):
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
    kv_parts = [[None] * PRODUCER_WARPS for _ in range(STAGES)]
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
        g, pending, groups, queued = 0, False, [], []

        def land(keep):  # cp_async_wait<keep>
            while len(groups) > keep:
                for parts, index, value in groups.pop(0):
                    parts[index][warp] = (value, True)

        def copy(parts, index, value, keys):
            for key in keys:
                assert readers.get(key, 0) == 0, f"copy into {key} while a wgmma reads it"
            parts[index][warp] = (value, False)
            queued.append((parts, index, value))

        i = 0
        while True:
            found, head = work_item(i)
            if pending:
                land(0)
                full[(g - 1) % STAGES].arrive(32)
                pending = False
            yield
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
            copy(q_parts, i % q_slots, i, [("Q", i % q_slots)])
            for _ in range(tiles(kv_end, KV)):
                if g >= STAGES:
                    while not empty[g % STAGES].done(g // STAGES - 1):
                        yield
                copy(kv_parts, g % STAGES, g, [("K", g % STAGES), ("V", g % STAGES)])
                groups.append(queued[:])
                queued.clear()
                if rnd.random() < 0.5:
                    land(rnd.randint(0, len(groups)))  # copies land whenever they like
                if pending:
                    land(1)
                    full[(g - 1) % STAGES].arrive(32)
                pending = True
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
            return (kv_parts, g % STAGES, g, ("K", g % STAGES))

        def v(g):
            return (kv_parts, g % STAGES, g, ("V", g % STAGES))

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
            while not full[g0 % STAGES].done(g0 // STAGES):
                yield
            yield from turn()
            scores = issue(q(i), k(g0))
            hand_over()
            yield
            complete(scores)
            if count == 1:
                q_empty[i % q_slots].arrive(128)
            for t in range(1, count):
                g = g0 + t
                while not full[g % STAGES].done(g // STAGES):
                    yield
                yield from turn()
                scores = issue(q(i), k(g))
                pv = issue(v(g - 1))
                hand_over()
                yield
                complete(scores)
                if t == count - 1:
                    q_empty[i % q_slots].arrive(128)
                yield
                complete(pv)
                empty[(g - 1) % STAGES].arrive(128)
            last = g0 + count - 1
            yield from turn()
            pv = issue(v(last))
            hand_over()
            yield
            complete(pv)
            empty[last % STAGES].arrive(128)
            finished.append((found, head, wg))
            g0 += count
            i += 1
        if wg == 0:
            yield from turn()

    agents = [producer(w) for w in range(PRODUCER_WARPS)] + [consumer(0), consumer(1)]
    steps = 0
    while agents:
        agent = rnd.choice(agents)
        try:
            next(agent)
        except StopIteration:
            agents.remove(agent)
        steps += 1
        if steps > 1_000_000:
            raise RuntimeError(f"deadlock in block {block} of {blocks}")
    for barrier in turn_barriers:
        assert barrier.count == 0, f"{barrier.name}: {barrier.count} threads left arrived at exit"
    return finished


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    choices = [0, 1, 5, 64, 127, 128, 129, 255, 256, 300, 385, 700, 1000]
    for trial in range(trials):
        rnd = random.Random(trial)
        lens = [rnd.choice(choices) for _ in range(rnd.randint(1, 6))]
        heads, blocks, q_slots = rnd.choice([1, 2, 3]), rnd.choice([1, 2, 3, 5]), rnd.choice([1, 2])
        done = []
        for block in range(blocks):
            done += run_block(lens, heads, block, blocks, q_slots, rnd)
        want = sum(tiles(length, ROWS) for length in lens) * heads
        assert len(set(done)) == len(done), f"trial {trial}: an item computed twice"
        assert len(done) == 2 * want, f"trial {trial}: {len(done)} items computed, want {2 * want}"
    print(f"ok: {trials} random grids")


if __name__ == "__main__":
    main()
