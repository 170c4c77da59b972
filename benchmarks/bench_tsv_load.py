"""Benchmark: from the teacher file on disk to a ready sampler, cold and warm, against the original's line loop.

Writes synthetic teacher scores at the chosen scale (40M pairs, 400K queries, 8.8M passages by default; see
``synthetic.py``) in two layouts, once, into ``--work-dir``:

- the original MS MARCO file: ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``, no header;
- a Parquet file of the Hub layout (``sentence-transformers/msmarco``, ``bert-ensemble-margin-mse``):
  ``query_id, positive_id, negative_id, score`` (the margin).

Then times the whole path to a sampler, ``TeacherScoreTable.from_tsv`` (or ``datasets`` Parquet loading +
``TeacherScoreTable.from_dataset``) + ``build_training_dataset`` + ``TopicAwareBalancedBatchSampler``:

- cold: no cached Arrow file (the TSV is parsed; the Parquet file converted by ``datasets``);
- warm: the Arrow file cached by the cold run is memory-mapped again.

Targets at 40M pairs, for both layouts: cold <= 25 s, warm <= 12 s, peak RSS <= 2 GB above the start of each
run. RSS includes the pages of the memory-mapped Arrow table that the build reads (the kernel can drop them);
the anonymous memory (RSS less file pages) is printed beside it.
Baseline: the original code's way of loading the file, a Python loop over the lines that splits each one and
fills per-query lists (``matchmaker``'s TSV reader, rewritten here); it holds every pair as Python objects
(about 10 GB at 40M lines), so it runs on the first ``--baseline-lines`` lines and is extrapolated linearly,
as the output says.

    python benchmarks/bench_tsv_load.py                               # the real scale (writes ~1.6 GB once)
    python benchmarks/bench_tsv_load.py --pairs 4e6 --queries 4e4 --passages 1e6 --clusters 200
"""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import synthetic
from bench_table_index import add_scale_arguments
from common import GB, Figure, Report, measure, parser
from datasets import Dataset

from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.training.dataset import build_training_dataset
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler

COLD_TARGET_S = 25.0
WARM_TARGET_S = 12.0
MEMORY_TARGET_GB = 2.0


def write_inputs(args, folder: Path) -> tuple[Path, Path, np.ndarray]:
    """The TSV and Parquet files (reused when they exist with the same scale) and the query ids."""
    qids = synthetic.query_ids(int(args.queries), seed=args.seed)
    tag = f"{int(args.pairs)}-{int(args.queries)}-{int(args.passages)}-{args.seed}"
    tsv, parquet = folder / f"scores-{tag}.tsv", folder / f"scores-{tag}.parquet"
    if not (tsv.is_file() and parquet.is_file()):
        arrays = synthetic.pairs(int(args.pairs), qids, int(args.passages), seed=args.seed + 1)
        columns = {"pos_score": arrays.pos_scores, "neg_score": arrays.neg_scores, "query_id": arrays.query_ids,
                   "positive_id": arrays.positive_ids, "negative_id": arrays.negative_ids}
        pa_csv.write_csv(pa.table(columns), tsv, pa_csv.WriteOptions(include_header=False, delimiter="\t"))
        hub = {"query_id": arrays.query_ids, "positive_id": arrays.positive_ids, "negative_id": arrays.negative_ids,
               "score": arrays.pos_scores - arrays.neg_scores}
        pq.write_table(pa.table(hub), parquet)
    return tsv, parquet, qids


def original_line_loop(path: Path, max_lines: int) -> int:
    """The original reader's way: per line split, float() both scores, append to the query's list."""
    pairs_of_query: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle):
            if line_number == max_lines:
                break
            pos, neg, qid, pos_pid, neg_pid = line.rstrip("\n").split("\t")
            pairs_of_query[qid].append((pos_pid, neg_pid, float(pos) - float(neg)))
    return sum(len(v) for v in pairs_of_query.values())


def to_sampler(load, queries, corpus, clusters, batch_size: int, seed: int) -> TopicAwareBalancedBatchSampler:
    table = load()
    dataset = build_training_dataset(table, queries, corpus, clusters)
    return TopicAwareBalancedBatchSampler(dataset, batch_size=batch_size, drop_last=True, seed=seed)


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    add_scale_arguments(arguments)
    arguments.add_argument("--work-dir", help="where the input files and caches go (default: a temporary folder)")
    arguments.add_argument("--baseline-lines", type=float, default=4e6, help="lines read by the original-style loop")
    args = arguments.parse_args(argv)
    report = Report("teacher file -> ready sampler",
                    {k: (int(v) if isinstance(v, float) else v) for k, v in vars(args).items() if k != "json"})
    folder = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-tsv-"))
    folder.mkdir(parents=True, exist_ok=True)
    with measure("inputs: write TSV + Parquet (once)") as phase:
        tsv, parquet, qids = write_inputs(args, folder)
    report.phases.append(phase)
    queries = synthetic.id_store(qids, "queries")
    corpus = synthetic.id_store(np.arange(int(args.passages), dtype=np.int64), "corpus")
    clusters = synthetic.random_clusters(qids, args.clusters, seed=args.seed + 2)
    tsv_cache, parquet_cache = folder / "tsv-cache", folder / "parquet-cache"
    for cache in (tsv_cache, parquet_cache):
        shutil.rmtree(cache, ignore_errors=True)

    loaders = {
        "TSV": lambda: TeacherScoreTable.from_tsv(tsv, cache_dir=tsv_cache, show_progress_bar=False),
        "Parquet (Hub layout)": lambda: TeacherScoreTable.from_dataset(
            Dataset.from_parquet(str(parquet), cache_dir=str(parquet_cache))
        ),
    }
    seconds = {}
    for name, load in loaders.items():
        for state in ("cold", "warm"):
            gc.collect()
            with measure(f"{name} {state}: file -> sampler", anonymous=True) as phase:
                sampler = to_sampler(load, queries, corpus, clusters, args.batch_size, args.seed)
            report.phases.append(phase)
            seconds[name, state] = phase.seconds
            del sampler
            short = name.split()[0]
            target = COLD_TARGET_S if state == "cold" else WARM_TARGET_S
            report.target(f"{short} {state}: file -> sampler", phase.seconds, "s", target)
            report.target(f"{short} {state}: peak RSS above start", phase.peak_above / GB, "GB", MEMORY_TARGET_GB,
                          note="RSS counts the pages of the memory-mapped table that were read")
            report.add(Figure(f"{short} {state}: peak anonymous memory above start",
                              phase.anonymous_peak_above / GB, "GB",
                              note="RSS less memory-mapped file pages (RssAnon, sampled every 5 ms)"))

    lines = int(min(args.baseline_lines, args.pairs))
    with measure(f"baseline: original line loop, {lines:,} lines") as phase:
        original_line_loop(tsv, lines)
    report.phases.append(phase)
    extrapolated = phase.seconds * args.pairs / lines
    for state in ("cold", "warm"):
        report.add(Figure(
            f"TSV {state} vs the original line loop", seconds["TSV", state], "s", baseline=extrapolated,
            ratio=seconds["TSV", state] / extrapolated,
            note=f"baseline {phase.seconds:.1f} s for {lines:,} lines"
            + (f", extrapolated linearly to {int(args.pairs):,}" if lines < args.pairs else " (measured)")
            + "; it only reads the file: no sampler, no bins",
        ))
    if not args.work_dir:
        shutil.rmtree(folder, ignore_errors=True)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
