"""Benchmark: an epoch of TopicAwareBatchSampler over MS MARCO-sized (anchor, positive) rows, against NoDuplicatesBatchSampler.

Synthetic data shaped like MS MARCO's training pairs: 500K anchors (queries), 30K of them with a second
positive, positives drawn from 8.8M passage ids (so a few rows share a positive), 2,000 anchor clusters of
lognormal size; b = 32, drop_last. Both samplers get the same dataset and do what the Trainer does: construct
the sampler, then ``list(sampler)`` for epoch 0. Timed and measured (peak RSS above start):

- TopicAwareBatchSampler: construction (the texts read and encoded, the clusters looked up) and an epoch
  (the topic composition, then the rows that would repeat a text swapped out);
- the baseline, sentence-transformers' NoDuplicatesBatchSampler: construction and the same epoch.
  Target: TopicAwareBatchSampler's construction plus epoch no slower than NoDuplicatesBatchSampler's.

Also checked, on the epoch drawn: no batch repeats a text (both samplers), and the share of single-cluster
batches (target: at least 0.9; the baseline's random batches for comparison).

    python benchmarks/bench_anchor_sampler.py
    python benchmarks/bench_anchor_sampler.py --anchors 2e4 --clusters 100   # quick
"""

from __future__ import annotations

import sys

import numpy as np
from common import Figure, Report, measure, parser
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from st_tasb.training.anchor_sampler import TopicAwareBatchSampler
from st_tasb.training.topic_batches import BatchComposition

SINGLE_CLUSTER_TARGET = 0.9


def synthetic_pairs(n_anchors: int, n_passages: int, n_clusters: int, seed: int) -> tuple[Dataset, dict[str, int]]:
    """(anchor, positive) rows: every anchor once, 6 % of them twice (another positive); lognormal clusters."""
    rng = np.random.default_rng(seed)
    anchors = np.concatenate([np.arange(n_anchors), rng.choice(n_anchors, int(0.06 * n_anchors), replace=False)])
    positives = rng.integers(0, n_passages, len(anchors))
    sizes = rng.lognormal(0.0, 0.5, n_clusters)
    cluster = rng.choice(n_clusters, n_anchors, p=sizes / sizes.sum())
    dataset = Dataset.from_dict({"anchor": [f"query {a}" for a in anchors], "positive": [f"passage {p}" for p in positives]})
    return dataset, {f"query {a}": int(cluster[a]) for a in range(n_anchors)}


def repeated_text_batches(dataset: Dataset, batches: list[list[int]]) -> int:
    """How many batches hold some text twice (over both columns)."""
    texts = np.stack([np.asarray(dataset["anchor"]), np.asarray(dataset["positive"])], axis=1)
    return sum(len(set(texts[batch].ravel())) < texts[batch].size for batch in batches)


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--anchors", type=float, default=5e5, help="distinct anchors")
    arguments.add_argument("--passages", type=float, default=8.8e6, help="passage ids the positives are drawn from")
    arguments.add_argument("--clusters", type=int, default=2000, help="anchor clusters")
    arguments.add_argument("--batch-size", type=int, default=32)
    arguments.add_argument("--seed", type=int, default=0)
    args = arguments.parse_args(argv)
    report = Report("TopicAwareBatchSampler epoch", {k: v for k, v in vars(args).items() if k != "json"})
    with measure("build synthetic (anchor, positive) rows") as phase:
        dataset, topics = synthetic_pairs(int(args.anchors), int(args.passages), args.clusters, args.seed)
    report.phases.append(phase)

    with measure("TopicAwareBatchSampler: construct") as built:
        sampler = TopicAwareBatchSampler(dataset, args.batch_size, True, ["label", "score"], seed=args.seed,
                                         clusters=topics)
    with measure("TopicAwareBatchSampler: list(sampler)") as epoch:
        ours = list(sampler)
    with measure("NoDuplicatesBatchSampler: construct") as baseline_built:
        baseline = NoDuplicatesBatchSampler(dataset, args.batch_size, True, ["label", "score"], seed=args.seed)
    with measure("NoDuplicatesBatchSampler: list(sampler)") as baseline_epoch:
        theirs = list(baseline)
    report.phases += [built, epoch, baseline_built, baseline_epoch]

    total, baseline_total = built.seconds + epoch.seconds, baseline_built.seconds + baseline_epoch.seconds
    report.add(Figure(
        f"construct + epoch ({len(ours):,} batches)", total, "s", "<= baseline", total <= baseline_total,
        baseline_total, total / baseline_total,
        note=f"baseline: NoDuplicatesBatchSampler, {len(theirs):,} batches; epoch alone {epoch.seconds:.2f} s "
        f"vs {baseline_epoch.seconds:.2f} s",
    ))
    report.add(Figure("peak RSS above start, construct + epoch", max(built.peak_above, epoch.peak_above) / 2**30, "GB",
                      baseline=max(baseline_built.peak_above, baseline_epoch.peak_above) / 2**30))
    repeats, baseline_repeats = repeated_text_batches(dataset, ours), repeated_text_batches(dataset, theirs)
    report.add(Figure("batches that repeat a text", repeats, "batches", "0", repeats == 0, baseline_repeats))
    cluster = np.array([topics[a] for a in dataset["anchor"]])
    composition = BatchComposition.of(cluster[np.array(ours)])
    random = BatchComposition.of(cluster[np.array(theirs)])
    report.add(Figure(
        "single-cluster batches", composition.single_cluster_share, "share", f">= {SINGLE_CLUSTER_TARGET}",
        composition.single_cluster_share >= SINGLE_CLUSTER_TARGET, random.single_cluster_share,
        note="baseline: NoDuplicatesBatchSampler's random batches",
    ))
    report.add(Figure("mean top-cluster share of a batch", composition.mean_top_cluster_share, "share",
                      baseline=random.mean_top_cluster_share))
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
