"""Benchmark: clustering 400K x 768 query embeddings into 2,000 topic clusters (10 k-means iterations).

Times ``QueryClusters.fit_embeddings`` (faiss spherical k-means, then each query to its
max-inner-product centroid, empty clusters dropped). Target: at most 120 s. Baseline, in the same run:
the bare faiss calls with the same settings (``faiss.Kmeans(..., spherical=True).train`` + ``assign``),
so the ratio is the package's overhead (id handling, checks, renumbering).

The embeddings are synthetic: a mixture of ``--topics`` Gaussian topics (so k-means has structure to
find), float32, generated in blocks.

    python benchmarks/bench_clustering.py                                   # the real scale
    python benchmarks/bench_clustering.py --queries 2e4 --dim 64 --clusters 100
"""

from __future__ import annotations

import sys

import faiss
import numpy as np
from common import GB, Figure, Report, measure, parser

from st_tasb.prepare.clusters import QueryClusters

TIME_TARGET_S = 120.0


def topic_embeddings(n: int, dim: int, topics: int, seed: int = 0, block: int = 50_000) -> np.ndarray:
    """``n`` float32 vectors: a random topic direction plus Gaussian noise, built block by block."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((topics, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        out[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] += centers[rng.integers(0, topics, size=stop - start)]
    return out


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--queries", type=float, default=400e3)
    arguments.add_argument("--dim", type=int, default=768)
    arguments.add_argument("--clusters", type=int, default=2000, help="k")
    arguments.add_argument("--iterations", type=int, default=10)
    arguments.add_argument("--topics", type=int, default=5000, help="topics of the synthetic mixture")
    arguments.add_argument("--seed", type=int, default=42)
    arguments.add_argument("--no-baseline", action="store_true", help="skip the bare faiss run")
    arguments.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's)")
    args = arguments.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    n = int(args.queries)
    report = Report("query clustering", {"queries": n, "dim": args.dim, "k": args.clusters,
                                         "iterations": args.iterations, "faiss": faiss.__version__,
                                         "faiss threads": faiss.omp_get_max_threads()})

    with measure("inputs: synthetic embeddings") as phase:
        embeddings = topic_embeddings(n, args.dim, args.topics)
        ids = np.arange(n, dtype=np.int64) * 3 + 1
    report.phases.append(phase)

    with measure("QueryClusters.fit_embeddings") as phase:
        clusters = QueryClusters.fit_embeddings(embeddings, ids, args.clusters, n_iter=args.iterations, seed=args.seed)
    report.phases.append(phase)

    baseline = None
    if not args.no_baseline:
        with measure("baseline: faiss.Kmeans train + assign") as base:
            kmeans = faiss.Kmeans(args.dim, args.clusters, niter=args.iterations, seed=args.seed, spherical=True,
                                  min_points_per_centroid=1)
            kmeans.train(embeddings)
            _, nearest = kmeans.assign(embeddings)
        report.phases.append(base)
        baseline = base.seconds
        report.notes.append(f"bare faiss: {np.unique(nearest).size} non-empty clusters (package: {clusters.n_clusters})")

    report.target(f"cluster {n:,} x {args.dim} into {args.clusters:,}", phase.seconds, "s", TIME_TARGET_S,
                  baseline=baseline, note="baseline: bare faiss k-means with the same settings" if baseline else "")
    threads = faiss.omp_get_max_threads()
    report.add(Figure("CPU time / faiss threads", phase.cpu_seconds / threads, "s",
                      note="the wall time the clustering would take with the cores to itself (perfect scaling)"))
    report.add(Figure("peak RSS above start of clustering", phase.peak_above / GB, "GB",
                      note=f"the embeddings themselves: {embeddings.nbytes / GB:.2f} GB"))
    sizes = clusters.sizes()
    report.notes.append(f"{clusters.n_clusters} non-empty clusters, sizes min {sizes.min()} / median "
                        f"{np.median(sizes):g} / max {sizes.max()}")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
