#!/usr/bin/env python3
"""Host emulation of the wgmma attention backward's synchronisation (attention_wgmma_backward.cu,
load_ring.cuh: Note [load ring protocol], Note [wgmma backward overlap]), for checking it on a machine
without a GPU: one block of each kernel, its four producer warps and two consumer warpgroups, the full
and empty mbarriers (arrival counts in threads, waits by phase parity as the hardware does them), the
producer's cp.async copies and the consumers' wgmma commit groups (reading their shared operands from
issue until the wgmma_wait that retires them), interleaved at random. The producer waits on empty for a
stage, issues its load's copies and arrives on full through mbarrier_arrive_on_copies: each warp's
arrival is made later, as an event of its own, once every copy the warp issued before it has landed
(cp_async_emulate.py); the producer never waits for its copies. A consumer waits on full (wait_loaded)
before it reads a load; the proxy fence after that wait is not modelled (nothing here has proxies).
It reports
  * a deadlock (no agent can move),
  * a wgmma or a shared load reading a buffer that does not hold its load, completely landed from all
    four producer warps (a full barrier completed too early, a read without the wait, a stage refilled
    too soon),
  * a copy issued into a buffer while a wgmma still reads it (an empty barrier arrived on too early),
    or before the copy there before it landed,
  * a wait whose barrier has gone two phases past the one it names (the parity would lie),
  * a step computed other than once per warpgroup.
Blocks are independent (no persistent schedule), so one block per trial, with 1 .. 12 steps: one step,
exactly kStages, and many times around the ring; kStages 4 as the kernels have it, and 3 as the
forward's ring has.

A consumer holds two stages at once: it waits for load t while it still holds load t - 1, which it
frees once step t - 1's dK or dQ, issued with S(t), is done. With one stage that is a cycle, and
--stages 1 deadlocks. --stages 2 passes: load t needs only load t - 2 freed, which both warpgroups
did in their step t - 1, so nothing waits in a cycle; but the producer can then queue load t + 1
only once both warpgroups have done S(t), so no load is in flight while they finish a step. The
kernels' three stages or more are for that overlap, not for the protocol's correctness.

--broken NAME runs a deliberately broken variant, which must fail:
  consumer-early-read  a consumer reads a load without waiting on full for it;
  early-release        a consumer frees a step's stage at the end of the step, as a kernel without
                       the overlap would, forgetting that the step's last product (dK, dQ) is issued
                       and read in the next one;
  eager-full           the producer arrives on full at once (mbarrier_arrive), before its copies land;
  producer-parity      the producer waits on the empty barrier's phase g / kStages instead of the one
                       before.
Not a substitute for the GPU tests: it checks the protocol as transcribed here, not the kernel's code.

    python3 dev/cuda/wgmma_backward_protocol_emulate.py [trials] [--stages N] [--broken NAME]   # seconds
"""
import argparse
import random

from cp_async_emulate import WarpCopies, interleave
from mbarrier_emulate import MBarrier

PRODUCER_WARPS = 4


class Kernel:
    """What one block's loads write and what a consumer step reads, by buffer name."""

    def __init__(self, name, fixed, staged, carried, first_reads, reads_after_s, second_reads,
                 reads_after_dp):
        self.name = name
        self.fixed = fixed                # written once, with load 0
        self.staged = staged              # written per load into its stage
        self.carried = carried            # read by the step before's last product, issued in this step
        self.first_reads = first_reads    # the S and dP groups: (buffer names) each
        self.reads_after_s = reads_after_s    # the consumer threads' shared loads once S landed
        self.second_reads = second_reads      # the dV group (dk/dv) or none (dq)
        self.reads_after_dp = reads_after_dp  # their shared loads once dP landed


DKDV = Kernel("dkdv", fixed=["K", "V"], staged=["Q", "dO", "lse", "delta"], carried=["Q"],
              first_reads=[["K", "Q"], ["V", "dO"]], reads_after_s=["lse"], second_reads=["dO"],
              reads_after_dp=["delta"])
DQ = Kernel("dq", fixed=["Q", "dO"], staged=["K", "V"], carried=["K"],
            first_reads=[["Q", "K"], ["dO", "V"]], reads_after_s=[], second_reads=None,
            reads_after_dp=[])


def run_block(kernel, steps, stages, broken, rnd):
    """One block of `steps` loads; returns the steps its consumer warpgroups finished."""
    full = [MBarrier(f"full[{s}]", 128) for s in range(stages)]
    empty = [MBarrier(f"empty[{s}]", 256) for s in range(stages)]
    # What each producer warp's part of a buffer holds: (load, landed).
    parts = {}
    for name in kernel.fixed:
        parts[name] = [None] * PRODUCER_WARPS
    for name in kernel.staged:
        for s in range(stages):
            parts[(name, s)] = [None] * PRODUCER_WARPS
    readers = {}  # buffer -> wgmma groups reading it
    finished = []

    def key_of(name, g):
        return name if name in kernel.fixed else (name, g % stages)

    def producer(warp):
        copies = warps[warp]

        def copy(key, g):
            assert readers.get(key, 0) == 0, f"copy of load {g} into {key} while a wgmma reads it"
            copies.copy(parts, key, g)

        for g in range(steps):
            if g >= stages:  # LoadRingProducer::acquire
                phase = g // stages if broken == "producer-parity" else g // stages - 1
                while not empty[g % stages].done(phase):
                    yield
            if g == 0:
                for name in kernel.fixed:
                    copy(name, 0)
            for name in kernel.staged:
                copy((name, g % stages), g)
            if broken == "eager-full":
                full[g % stages].arrive(32)
            else:  # LoadRingProducer::commit
                copies.arrive_on_copies(full[g % stages])
            yield

    def consumer(wg):
        in_flight = []  # commit groups, oldest first: the buffers each reads

        def issue(names, g):
            keys = []
            for name in names:
                key = key_of(name, g)
                assert all(p == (g if key not in kernel.fixed else 0, True) for p in parts[key]), (
                    f"{kernel.name} warpgroup {wg} step {g} reads {key}, holds {parts[key]}")
                readers[key] = readers.get(key, 0) + 1
                keys.append(key)
            in_flight.append(keys)

        def wait(keep):  # wgmma_wait<keep>
            while len(in_flight) > keep:
                for key in in_flight.pop(0):
                    readers[key] -= 1

        def read(name, g):  # a thread's own shared load
            key = key_of(name, g)
            assert all(p == (g, True) for p in parts[key]), (
                f"{kernel.name} warpgroup {wg} step {g} loads {key}, holds {parts[key]}")

        for t in range(steps):
            while broken != "consumer-early-read" and not full[t % stages].done(t // stages):
                yield  # wait_loaded
            if t > 0:
                issue(kernel.carried, t - 1)  # the step before's dK or dQ
            for names in kernel.first_reads:
                issue(names, t)
            yield
            wait(1)
            if t > 0 and broken != "early-release":
                empty[(t - 1) % stages].arrive(128)
            for name in kernel.reads_after_s:
                read(name, t)
            yield
            if kernel.second_reads is None:
                wait(0)
            else:
                issue(kernel.second_reads, t)
                yield
                wait(1)
            for name in kernel.reads_after_dp:
                read(name, t)
            yield
            wait(0)
            if broken == "early-release":
                empty[t % stages].arrive(128)
            finished.append((t, wg))
        issue(kernel.carried, steps - 1)
        yield
        wait(0)
        if broken != "early-release":
            empty[(steps - 1) % stages].arrive(128)

    warps = [WarpCopies(w) for w in range(PRODUCER_WARPS)]
    agents = [producer(w) for w in range(PRODUCER_WARPS)] + [consumer(0), consumer(1)]
    interleave(agents, warps, rnd, 200_000, f"{kernel.name} block of {steps} steps, {stages} stages")
    assert all(count == 0 for count in readers.values()), "a wgmma group never retired"
    return finished


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trials", nargs="?", type=int, default=400)
    parser.add_argument("--broken", choices=["consumer-early-read", "early-release", "eager-full",
                                             "producer-parity"])
    parser.add_argument("--stages", type=int, help="kStages for every trial (default: 3 or 4)")
    args = parser.parse_args()
    for trial in range(args.trials):
        rnd = random.Random(trial)
        stages = args.stages or rnd.choice([3, 4])
        steps = rnd.choice([1, 2, stages, stages + 1, 7, 12])
        for kernel in (DKDV, DQ):
            done = run_block(kernel, steps, stages, args.broken, rnd)
            assert sorted(done) == sorted((t, wg) for t in range(steps) for wg in (0, 1)), (
                f"trial {trial}: {kernel.name} computed {sorted(done)}")
    print(f"ok: {args.trials} random blocks of each kernel")

if __name__ == "__main__":
    main()
