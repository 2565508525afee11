#!/usr/bin/env python3
"""The peer of bench/allreduce_bench.cc: torch.distributed's NCCL all-reduce at the same sizes, timed the
same way (f32 sum, 1 MiB to --max-mb MiB in steps of 4x, 5 warm-ups, then the mean of 20 all-reduces by
the wall clock around a device synchronisation), printed in the same columns, so that dtrn's
communicator is read against what PyTorch gets from NCCL on the same machine in the same call.

    NCCL_NVLS_ENABLE=0 python3 -m torch.distributed.run --nproc_per_node 2 bench/peer_allreduce.py
"""
import argparse
import os
import time

import torch
import torch.distributed as dist

WARMUP, RUNS = 5, 20


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-mb", type=float, default=1024)
    args = parser.parse_args()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    n, rank = dist.get_world_size(), dist.get_rank()
    if rank == 0:
        print(f"peer: torch {torch.__version__} all-reduce (sum, f32) over {n} ranks, NCCL "
              f"{'.'.join(map(str, torch.cuda.nccl.version()))}")
        print(f"{'bytes':>12} {'time_us':>12} {'algbw_GB/s':>12} {'busbw_GB/s':>12}")
    mb = 1.0
    while mb <= args.max_mb:
        elements = int(mb * (1 << 20)) // 4
        t = torch.ones(elements, dtype=torch.float32, device="cuda")
        for _ in range(WARMUP):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(RUNS):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / RUNS
        algbw = elements * 4 / seconds / 1e9
        if rank == 0:
            print(f"{elements * 4:12.0f} {seconds * 1e6:12.1f} {algbw:12.2f} {algbw * 2 * (n - 1) / n:12.2f}")
        mb *= 4
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
