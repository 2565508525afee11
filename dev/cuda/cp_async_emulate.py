"""A producer warp's cp.async copies as the host emulations of the warp-specialized kernels model them
(wgmma_forward_protocol_emulate.py, wgmma_backward_protocol_emulate.py; load_ring.cuh: Note [load ring
protocol]), and the random interleaving of a block's agents with them.

A copy lands at a random later time, in no order with the warp's other copies. An arrival through
cp.async.mbarrier.arrive.noinc (mbarrier_arrive_on_copies) happens once every copy the warp issued
before it has landed: all of them, not only those of the load it follows, as the instruction tracks
all of the thread's earlier cp.async. The warp never waits for either: landings and arrivals are
events of their own, interleaved at random with the agents' moves. A warp is modelled as one thread
(its 32 threads copy their parts of a buffer and arrive together), so a buffer holds one part per
producer warp: (what it holds, landed). A copy into a part whose last copy has not landed is an
error: the two would race.

    python3 dev/cuda/cp_async_emulate.py   # checks the model itself: an arrival waits for all earlier copies
"""
import random

from mbarrier_emulate import MBarrier


class WarpCopies:
    """The copies one producer warp has in flight and its arrivals that wait on them."""

    def __init__(self, warp):
        self.warp = warp
        self.issued = 0       # copies issued so far
        self.in_flight = {}   # issue number -> (parts, index, value)
        self.arrivals = []    # (barrier, copies issued before the arrival)

    def copy(self, parts, index, value):
        """cp.async of `value` into this warp's part of parts[index]: it holds value, not landed."""
        held = parts[index][self.warp]
        assert held is None or held[1], f"a copy into {index} before the one of {held[0]} landed"
        parts[index][self.warp] = (value, False)
        self.in_flight[self.issued] = (parts, index, value)
        self.issued += 1

    def arrive_on_copies(self, barrier):
        """mbarrier_arrive_on_copies: the warp's 32 arrivals, made once its earlier copies landed."""
        self.arrivals.append((barrier, self.issued))

    def busy(self):
        return bool(self.in_flight or self.arrivals)

    def happen(self, rnd):
        """One event that may happen now: a copy in flight lands, or an arrival whose earlier copies
        have all landed is made (a pending arrival always has one or the other)."""
        oldest = min(self.in_flight, default=self.issued)  # copies before it have all landed
        ready = [a for a, (_, before) in enumerate(self.arrivals) if before <= oldest]
        kind, which = rnd.choice([("land", n) for n in self.in_flight] + [("arrive", a) for a in ready])
        if kind == "land":
            parts, index, value = self.in_flight.pop(which)
            parts[index][self.warp] = (value, True)
        else:
            barrier, _ = self.arrivals.pop(which)
            barrier.arrive(32)


def interleave(agents, warps, rnd, limit, what):
    """Runs `agents` (generators that yield wherever another agent may move) and the `warps`' copy
    events in a random order until every agent has returned and every copy has landed and arrived.
    A trial draws how often copy events come, so that some trials land copies at once and others
    leave them in flight for a long time. Raises a deadlock naming `what` after `limit` moves."""
    agents = list(agents)
    copy_rate = rnd.choice([0.03, 0.3, 0.7])
    for _ in range(limit):
        busy = [w for w in warps if w.busy()]
        if not agents and not busy:
            return
        if busy and (not agents or rnd.random() < copy_rate):
            rnd.choice(busy).happen(rnd)
            continue
        agent = rnd.choice(agents)
        try:
            next(agent)
        except StopIteration:
            agents.remove(agent)
    raise RuntimeError(f"deadlock: {what}")


def check_arrival_waits_for_all_earlier_copies(trials=200):
    """The model's own check: an arrival after the copies of loads 0 and 1 is made only once both
    have landed, whichever lands first, and every arrival is made in the end."""
    for trial in range(trials):
        rnd = random.Random(trial)
        warp, parts = WarpCopies(0), [[None], [None]]
        first, second = MBarrier("full[0]", 32), MBarrier("full[1]", 32)
        warp.copy(parts, 0, 0)
        warp.arrive_on_copies(first)
        warp.copy(parts, 1, 1)
        warp.arrive_on_copies(second)
        while warp.busy():
            warp.happen(rnd)
            assert first.phase == 0 or parts[0] == [(0, True)], "arrived before its copy landed"
            assert second.phase == 0 or parts == [[(0, True)], [(1, True)]], (
                "arrived before an earlier load's copy landed")
        assert first.phase == second.phase == 1, "an arrival never made"
    print(f"ok: {trials} random orders of two loads' copies and arrivals")


if __name__ == "__main__":
    check_arrival_waits_for_all_earlier_copies()
