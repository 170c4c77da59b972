"""Benchmark: one epoch of TAS-Balanced batches (b = 32) over 400K queries, against NoDuplicatesBatchSampler.

The sampler is built as in ``bench_table_index.py`` (40M synthetic pairs, 400K queries, 2,000 clusters;
not timed here). Timed:

- ``sampler.epoch_batches()`` (the ``[n_batches, b]`` array) and ``list(sampler)`` (what the Trainer's
  DataLoader consumes: Python lists of row indices). Target: ``list(sampler)`` in at most 0.5 s.
- The baseline, sentence-transformers' ``NoDuplicatesBatchSampler`` over a dataset with the same rows
  (the teacher table's id columns; its margin column is the label, which the sampler ignores), built and
  iterated for as many batches as the TAS-B epoch has. Target: TAS-B faster. Its own epoch is one batch
  per 32 *rows* (40M rows: 1.25M batches); iterating it all would take hours, so that figure is
  extrapolated linearly from the measured batches (plus its measured start-up), and the output says so.
- Batch composition (``sampler.composition()``): the share of single-cluster batches and the mean share of a
  batch's largest cluster, for TAS-B and for random batches (``topic_aware=False``) of the same epoch.
  Target: at least 0.92 single-cluster batches with the synthetic clusters' lognormal sizes (mean 200).

    python benchmarks/bench_epoch.py                              # the real scale
    python benchmarks/bench_epoch.py --pairs 1e6 --queries 1e4 --passages 1e5 --clusters 50
"""

from __future__ import annotations

import itertools
import sys
import time

from bench_table_index import add_scale_arguments, build, build_inputs
from common import Figure, Report, measure, parser
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from st_tasb.training.sampler import TopicAwareBalancedBatchSampler

TIME_TARGET_S = 0.5
SINGLE_CLUSTER_TARGET = 0.92


def time_no_duplicates(table, batch_size: int, n_batches: int, seed: int) -> tuple[float, float, int]:
    """Build NoDuplicatesBatchSampler over the table's rows and draw ``n_batches`` batches.

    Returns:
        (start-up seconds: construction and the first batch, seconds per further batch, its batches per epoch).
    """
    start = time.perf_counter()
    sampler = NoDuplicatesBatchSampler(
        table.dataset, batch_size=batch_size, drop_last=True, valid_label_columns=["margin"], seed=seed
    )
    batches = iter(sampler)
    next(batches)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    drawn = sum(1 for _ in itertools.islice(batches, n_batches - 1))
    per_batch = (time.perf_counter() - start) / max(drawn, 1)
    return startup, per_batch, len(sampler)


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    add_scale_arguments(arguments)
    arguments.add_argument("--baseline-batches", type=int, default=None,
                           help="batches to draw from NoDuplicatesBatchSampler (default: as many as one TAS-B epoch)")
    arguments.add_argument("--epochs", type=int, default=3, help="TAS-B epochs timed (the best is reported)")
    args = arguments.parse_args(argv)
    args.profile = False
    report = Report("epoch of batches", {k: (int(v) if isinstance(v, float) else v) for k, v in vars(args).items()
                                         if k not in ("json", "profile")})
    arrays, queries, corpus, clusters = build_inputs(args, report)
    table, dataset, sampler, _ = build(arrays, queries, corpus, clusters, args, report)
    del arrays

    array_seconds, list_seconds = [], []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        with measure(f"TAS-B epoch {epoch}: epoch_batches()") as phase:
            sampler.epoch_batches()
        array_seconds.append(phase.seconds)
        report.phases.append(phase)
        with measure(f"TAS-B epoch {epoch}: list(sampler)") as phase:
            batches = list(sampler)
        list_seconds.append(phase.seconds)
        report.phases.append(phase)
    n_batches = len(batches)

    wanted = args.baseline_batches or n_batches
    with measure(f"NoDuplicatesBatchSampler: {wanted:,} batches") as phase:
        startup, per_batch, baseline_epoch = time_no_duplicates(table, args.batch_size, wanted, args.seed)
    report.phases.append(phase)
    same_count = startup + per_batch * (n_batches - 1)
    full_epoch = startup + per_batch * (baseline_epoch - 1)
    extrapolated = wanted < n_batches

    best = min(list_seconds)
    report.target(f"TAS-B list(sampler), {n_batches:,} batches", best, "s", TIME_TARGET_S)
    report.add(Figure("TAS-B epoch_batches() (numpy array)", min(array_seconds), "s"))
    report.add(Figure(
        f"TAS-B vs NoDuplicates, same {n_batches:,} batches", best, "s", "faster", best < same_count, same_count,
        best / same_count,
        note=f"baseline: start-up {startup:.2f} s + {per_batch * 1e3:.3f} ms/batch"
        + (f" (extrapolated from {wanted:,} batches)" if extrapolated else " (measured)"),
    ))
    report.add(Figure(
        "TAS-B epoch vs NoDuplicates' own epoch", best, "s", "faster", best < full_epoch, full_epoch, best / full_epoch,
        note=f"NoDuplicates' epoch is {baseline_epoch:,} batches (one per {args.batch_size} rows): "
        f"extrapolated linearly from {wanted:,} measured batches",
    ))
    composition = sampler.composition()
    random = TopicAwareBalancedBatchSampler(
        dataset, args.batch_size, drop_last=True, seed=args.seed, topic_aware=False
    ).composition()
    share = Figure(
        "single-cluster batches (TAS-B)", composition.single_cluster_share, "share",
        f">= {SINGLE_CLUSTER_TARGET}", composition.single_cluster_share >= SINGLE_CLUSTER_TARGET,
        random.single_cluster_share, note="baseline: random batches of the same queries",
    )
    report.add(share)
    report.add(Figure(
        "mean top-cluster share of a batch (TAS-B)", composition.mean_top_cluster_share, "share",
        baseline=random.mean_top_cluster_share, note="baseline: random batches of the same queries",
    ))
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
