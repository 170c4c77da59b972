"""Benchmark: the cost of gathering in-batch negatives across processes, 2 CPU processes (gloo), same per-device batch.

Two processes train the same DDP-wrapped student (2 layers of all-MiniLM-L6-v2) with ``DualTeacherMarginMSELoss``
(alpha 0.75, a cached bi-encoder in-batch teacher) on synthetic rows of MS MARCO length, each step one forward,
backward and optimizer step through DDP. Steps alternate (A B B A ...) between ``gather_across_devices=True`` (every
query against the passages of both processes' batches, the teacher scoring them all) and ``False`` (each process's
own batch), so that load hits both alike. Printed: mean step time of each and their ratio (target: gathering at
most 1.10 x), peak RSS of rank 0.

    python benchmarks/bench_gather.py                          # b = 16 per process, 20 timed steps each
    python benchmarks/bench_gather.py --batch-size 32 --steps 30
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_training_step import MINILM, synthetic_triples
from common import GB, Figure, Report, parser, rss_bytes
from torch.nn.parallel import DistributedDataParallel

from st_tasb.teachers import BiEncoderTeacher
from st_tasb.training.losses import DualTeacherMarginMSELoss
from st_tasb.training.student import make_student

RATIO_TARGET = 1.10
PROCESSES = 2


def worker(rank: int, port: int, args, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=PROCESSES)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    student = make_student(str(MINILM), num_layers=2, pooling="cls", max_seq_length=200, device="cpu")
    model = DistributedDataParallel(student, find_unused_parameters=True)  # as the Trainer wraps it (pooler unused)
    rows = synthetic_triples(PROCESSES * args.batch_size * 8, seed=1)
    rng = np.random.default_rng(2)
    cache = (rng.normal(size=(len(rows), 384)).astype(np.float32), rng.normal(size=(2 * len(rows), 384)).astype(np.float32))
    teacher = BiEncoderTeacher(cache=cache, similarity_fn_name="dot", device="cpu")
    losses = {gather: DualTeacherMarginMSELoss(student, teacher, alpha=0.75, gather_across_devices=gather)
              for gather in (True, False)}
    for loss in losses.values():
        loss.model = model  # what the Trainer does: the loss embeds through the DDP wrapper
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    schedule = [True, False] * args.warmup + [gather for i in range(args.steps) for gather in
                                              ((True, False) if i % 2 == 0 else (False, True))]
    for step, gather in enumerate(schedule):
        batch = (step * PROCESSES + rank) * args.batch_size % (len(rows) - args.batch_size)
        picked = rows[batch : batch + args.batch_size]
        features = [student.tokenize([row[column] for row in picked]) for column in range(3)]
        index = torch.arange(batch, batch + args.batch_size)
        labels = {"margin": torch.randn(args.batch_size), "query_index": index, "positive_index": 2 * index,
                  "negative_index": 2 * index + 1}
        dist.barrier()
        start = time.perf_counter()
        total = sum(losses[gather](features, labels).values())
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if step >= 2 * args.warmup:
            seconds[gather].append(elapsed)
    if rank == 0:
        np.savez(Path(folder, "result.npz"), gathered=seconds[True], local=seconds[False], rss=rss_bytes())
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--batch-size", type=int, default=16, help="rows per process")
    arguments.add_argument("--steps", type=int, default=20, help="timed steps of each kind")
    arguments.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind")
    args = arguments.parse_args(argv)
    report = Report("gathered in-batch negatives: step time, 2 CPU processes", {
        "processes": PROCESSES, "batch per process": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "torch threads per process": 1,
    })
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-gather-") as folder:
        start = time.perf_counter()
        mp.spawn(worker, args=(port, args, folder), nprocs=PROCESSES, join=True)
        wall = time.perf_counter() - start
        result = np.load(Path(folder, "result.npz"))
        gathered, local = float(statistics.mean(result["gathered"])), float(statistics.mean(result["local"]))
        rss = float(result["rss"])
    report.target("step with gathering / without", gathered / local, "x", RATIO_TARGET,
                  note=f"mean step: gathered {gathered * 1e3:.0f} ms (2 x {args.batch_size} = {2 * args.batch_size} rows "
                       f"in every query's batch), per process {local * 1e3:.0f} ms ({args.batch_size} rows); medians "
                       f"{statistics.median(result['gathered']) * 1e3:.0f} / {statistics.median(result['local']) * 1e3:.0f} ms")
    report.add(Figure("wall time of the benchmark", wall, "s"))
    report.add(Figure("RSS of rank 0 at the end", rss / GB, "GB"))
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
