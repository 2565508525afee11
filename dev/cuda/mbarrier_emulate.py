"""An mbarrier as the host emulations of the warp-specialized kernels model it
(wgmma_forward_protocol_emulate.py, wgmma_backward_protocol_emulate.py; warp_specialization.cuh):
arrivals counted in threads, a phase that completes when the count is reached, and waits that compare
only the parity of the phase they name, as the hardware's do."""


class MBarrier:
    def __init__(self, name, count):
        self.name, self.count, self.pending, self.phase = name, count, count, 0

    def arrive(self, threads):
        self.pending -= threads
        assert self.pending >= 0, f"{self.name}: more arrivals than its count"
        if self.pending == 0:
            self.phase, self.pending = self.phase + 1, self.count

    def done(self, phase):
        """mbarrier_wait(bar, phase) may return: the hardware compares parities only."""
        assert self.phase <= phase + 1, f"{self.name}: at phase {self.phase}, two past {phase}"
        return self.phase % 2 != phase % 2
