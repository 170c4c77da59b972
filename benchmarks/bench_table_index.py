"""Benchmark: teacher score table + training dataset + sampler index build at MS MARCO scale.

Synthetic int64 ids and float32 scores (40M pairs over 400K queries, 8.8M passages, 2,000 clusters, see
``synthetic.py``) go through the package's real path:

1. ``TeacherScoreTable.from_scores`` (the table);
2. ``build_training_dataset(table, queries, corpus, clusters)`` (id -> position, sort by query and margin);
3. ``TopicAwareBalancedBatchSampler(dataset, 32, drop_last=True)`` (the per-query / per-bin pair index).

Target: the three together in at most 10 s and at most 2 GB peak RSS above the RSS just before step 1
(the synthetic input arrays, the text stores and the clusters already exist then: they stand for the data
read from disk). The inputs' own build time and memory are printed too. With ``--profile`` each step runs
under cProfile and the functions that take the time are printed.

    python benchmarks/bench_table_index.py                      # the real scale
    python benchmarks/bench_table_index.py --pairs 1e6 --queries 1e4 --passages 1e5 --clusters 50
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import synthetic
from common import GB, Figure, Report, measure, parser, rss_bytes

from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.training.dataset import build_training_dataset
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler

TIME_TARGET_S = 10.0
MEMORY_TARGET_GB = 2.0


def add_scale_arguments(arguments) -> None:
    """The scale options shared with ``bench_epoch.py`` (defaults: MS MARCO passage)."""
    arguments.add_argument("--pairs", type=float, default=40e6, help="teacher-scored pairs")
    arguments.add_argument("--queries", type=float, default=400e3, help="training queries")
    arguments.add_argument("--passages", type=float, default=synthetic.MSMARCO_PASSAGES, help="corpus size")
    arguments.add_argument("--clusters", type=int, default=2000, help="query clusters")
    arguments.add_argument("--batch-size", type=int, default=32)
    arguments.add_argument("--seed", type=int, default=0)


@contextmanager
def profiled(enabled: bool, title: str, top: int = 12) -> Iterator[None]:
    """Run the block under cProfile when ``enabled`` and print the functions with most own time."""
    if not enabled:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
        print(f"--- cProfile of {title} (by own time) ---\n{out.getvalue()}", flush=True)


def build_inputs(args, report: Report):
    """The synthetic pair arrays, stores and clusters (measured, not part of the target)."""
    with measure("inputs: synthetic pair arrays") as phase:
        qids = synthetic.query_ids(int(args.queries), seed=args.seed)
        arrays = synthetic.pairs(int(args.pairs), qids, int(args.passages), seed=args.seed + 1)
    report.phases.append(phase)
    with measure("inputs: query + passage TextStores") as phase:
        queries = synthetic.id_store(qids, "queries")
        corpus = synthetic.id_store(np.arange(int(args.passages), dtype=np.int64), "corpus")
    report.phases.append(phase)
    with measure("inputs: QueryClusters") as phase:
        clusters = synthetic.random_clusters(qids, args.clusters, seed=args.seed + 2)
    report.phases.append(phase)
    return arrays, queries, corpus, clusters


def build(arrays, queries, corpus, clusters, args, report: Report):
    """Steps 1-3, each measured; returns the sampler and the list of the three phases."""
    steps = []
    with measure("1. TeacherScoreTable.from_scores") as phase, profiled(args.profile, phase.name):
        table = TeacherScoreTable.from_scores(
            arrays.query_ids, arrays.positive_ids, arrays.negative_ids, arrays.pos_scores, arrays.neg_scores
        )
    steps.append(phase)
    with measure("2. build_training_dataset") as phase, profiled(args.profile, phase.name):
        dataset = build_training_dataset(table, queries, corpus, clusters)
    steps.append(phase)
    with measure("3. TopicAwareBalancedBatchSampler(...)") as phase, profiled(args.profile, phase.name):
        sampler = TopicAwareBalancedBatchSampler(dataset, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    steps.append(phase)
    report.phases.extend(steps)
    return table, dataset, sampler, steps


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    add_scale_arguments(arguments)
    arguments.add_argument("--profile", action="store_true", help="print a cProfile summary of each step")
    args = arguments.parse_args(argv)
    report = Report(
        "table + sampler index build",
        {k: (int(v) if isinstance(v, float) else v) for k, v in vars(args).items() if k not in ("json",)},
    )
    python_baseline = rss_bytes()
    arrays, queries, corpus, clusters = build_inputs(args, report)
    gc.collect()
    before_build = rss_bytes()
    _, dataset, sampler, steps = build(arrays, queries, corpus, clusters, args, report)
    after_build = rss_bytes()

    total = sum(s.seconds for s in steps)
    # peaks are relative to each step's start; relative to the build's start, add what earlier steps kept
    peak = max(s.rss_before - before_build + s.peak_above for s in steps)
    with measure("baseline: one np.lexsort by (query, margin)") as sort_phase:
        np.lexsort((arrays.pos_scores - arrays.neg_scores, arrays.query_ids))
    report.phases.append(sort_phase)
    report.target("build time (steps 1-3)", total, "s", TIME_TARGET_S, baseline=sort_phase.seconds,
                  note="baseline: one numpy lexsort of the pairs by (query id, margin), the core of the build")
    report.target("peak RSS above start of build", peak / GB, "GB", MEMORY_TARGET_GB)
    report.add(Figure("RSS kept after build (table+dataset+index)", (after_build - before_build) / GB, "GB"))
    report.add(Figure("synthetic input arrays", arrays.nbytes / GB, "GB", note="held during the build, not counted"))
    report.add(Figure("process RSS: Python baseline -> peak", (before_build + peak - python_baseline) / GB, "GB",
                      note="from the interpreter after imports, inputs included"))
    report.notes.append(
        f"{len(dataset):,} rows, {sampler.index.n_queries:,} queries, {len(sampler.index.bin_start):,} "
        f"non-empty margin bins, {len(sampler):,} batches of {args.batch_size} per epoch"
    )
    if not report.passed and not args.profile:
        report.notes.append("rerun with --profile to see which functions take the time")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
