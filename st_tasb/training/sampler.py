"""TAS-Balanced batch sampling: topic-aware batches of queries, each with a margin-balanced pair.

The sampler works on the dataset of :func:`st_tasb.training.dataset.build_training_dataset`, whose rows are
teacher-scored (query, positive, negative) pairs sorted by query and margin. Two structures are built
from its metadata columns with a few vectorised passes (no loop over rows):

- :class:`PairIndex`: the contiguous run of rows of every query, and inside it the runs of rows that fall
  into the same margin bin (``n_bins`` equal-width bins between the query's minimum and maximum margin);
- the query -> cluster map.

One epoch visits every query once (Hofstätter et al. sample clusters with replacement and have no epochs;
an epoch is what the Trainer expects), and inside it batches are composed as the paper draws them. Every
cluster's queries are shuffled and cut into chunks of ``c = batch_size // clusters_per_batch``; each full
chunk holds one cluster. Only each cluster's remainder (fewer than ``c`` queries) is pooled: the remainders
are packed, largest first, into fill-up chunks that mix as few clusters as they can (:func:`pack_remainders`),
as the paper fills a batch from another cluster when one runs short. ``clusters_per_batch`` chunks of distinct clusters (where the
sizes allow) make a batch, and the batches are shuffled. For every query of a batch one pair is drawn:
balanced sampling picks a non-empty margin bin uniformly, then a pair uniformly inside it; uniform
sampling picks any of the query's pairs. :meth:`TopicAwareBalancedBatchSampler.composition` reports how
topical an epoch is (:class:`BatchComposition`).

Every batch has exactly ``batch_size`` rows, no query twice, and ``len()`` is exact: the
``n_queries % batch_size`` queries that complete no batch (leftover chunks and remainder queries, different
ones each epoch) are left out with ``drop_last``; otherwise they form the last batch, topped up with queries
of the epoch's first batch. Batches depend only on ``(seed, epoch)``, so every DDP rank computes the same
sequence and a resumed run replays the same epoch.

Example:
    >>> import numpy as np
    >>> from datasets import Dataset
    >>> toy = Dataset.from_dict({
    ...     "query_index": np.repeat(np.arange(8), 3).astype(np.int32),
    ...     "margin": np.tile([0.0, 1.0, 5.0], 8).astype(np.float32),
    ...     "cluster": np.repeat([0, 0, 0, 0, 1, 1, 1, 1], 3).astype(np.int32),
    ... })
    >>> sampler = TopicAwareBalancedBatchSampler(toy, batch_size=4, drop_last=True, seed=7)
    >>> batches = list(sampler)
    >>> len(batches) == len(sampler) == 2
    True
    >>> sorted({int(toy[i]["cluster"]) for i in batches[0]}) in ([0], [1])  # one topic per batch
    True
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from st_tasb.data.checks import check_number
from st_tasb.data.compat import DefaultBatchSampler
from st_tasb.training.dataset import metadata_columns
from st_tasb.training.settings import TrainingSettings

_CHUNK_ROWS = 1 << 22  # rows binned at a time


@dataclass(frozen=True)
class PairIndex:
    """Per-query runs of pairs and per-bin runs inside them, over a dataset sorted by (query, margin).

    Attributes:
        query_start: first row of each query's run (shape ``[Q]``).
        query_length: number of pairs of each query.
        query_cluster: cluster of each query (-1 when the dataset has none).
        bin_start: first row of each non-empty (query, bin) run, grouped by query (shape ``[S]``).
        bin_length: rows in each such run.
        query_bin_offset: index into ``bin_start`` of each query's first bin.
        query_bin_count: number of non-empty bins of each query (1 when all its margins are equal).
    """

    query_start: np.ndarray
    query_length: np.ndarray
    query_cluster: np.ndarray
    bin_start: np.ndarray
    bin_length: np.ndarray
    query_bin_offset: np.ndarray
    query_bin_count: np.ndarray

    @property
    def n_queries(self) -> int:
        return len(self.query_start)

    @classmethod
    def build(cls, query_index: np.ndarray, margin: np.ndarray, cluster: np.ndarray, n_bins: int) -> PairIndex:
        """Index rows sorted by ``(query_index, margin)``.

        Each query's margins are split into ``n_bins`` equal-width bins from its minimum to its maximum
        (the maximum falls in the last bin). A query whose margins are all equal has one bin.

        Raises:
            ValueError: for an empty dataset, ``n_bins < 1``, rows not grouped by query, margins not sorted
                inside a query, non-finite margins, or a query split across clusters.

        Example:
            >>> index = PairIndex.build(np.array([0, 0, 0, 1]), np.array([0.0, 0.5, 1.0, 3.0]),
            ...                         np.array([2, 2, 2, 2]), n_bins=2)
            >>> index.query_length.tolist(), index.query_bin_count.tolist(), index.bin_length.tolist()
            ([3, 1], [2, 1], [1, 2, 1])
        """
        n_rows = len(query_index)
        if n_rows == 0:
            raise ValueError("the training dataset is empty")
        if n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, not {n_bins}")
        new_query = np.empty(n_rows, dtype=bool)
        new_query[0] = True
        np.not_equal(query_index[1:], query_index[:-1], out=new_query[1:])
        query_start = np.flatnonzero(new_query)
        if (np.diff(query_index[query_start]) < 0).any():
            raise ValueError("rows are not grouped by query: build the dataset with TeacherScoreTable.training_dataset")
        if not np.isfinite(margin).all():
            raise ValueError("the margin column holds NaN or infinite values")
        descending = margin[1:] < margin[:-1]
        if (descending & ~new_query[1:]).any():
            raise ValueError("margins are not sorted within each query: build the dataset with training_dataset")
        query_end = np.append(query_start[1:], n_rows)
        query_cluster = cluster[query_start]
        if (np.maximum.reduceat(cluster, query_start) != np.minimum.reduceat(cluster, query_start)).any():
            raise ValueError("a query's pairs carry different clusters")

        # bin of every row, relative to its own query's margin range (whole queries at a time: bounded float64
        # temporaries, each query's minimum and scale repeated over its rows)
        query_length = query_end - query_start
        low = margin[query_start].astype(np.float64)
        span = margin[query_end - 1].astype(np.float64) - low
        scale = np.divide(n_bins, span, out=np.zeros_like(span), where=span > 0)
        bins = np.empty(n_rows, dtype=np.int32)
        bounds = np.unique(np.append(np.searchsorted(query_start, np.arange(0, n_rows, _CHUNK_ROWS)), len(query_start)))
        for first, last in zip(bounds[:-1], bounds[1:]):
            rows = slice(query_start[first], query_end[last - 1])
            values = margin[rows].astype(np.float64)
            values -= np.repeat(low[first:last], query_length[first:last])
            values *= np.repeat(scale[first:last], query_length[first:last])
            np.minimum(values, n_bins - 1, out=values)
            bins[rows] = values

        new_bin = new_query  # reused in place: a bin run starts at a new query or a new bin
        new_bin[1:] |= bins[1:] != bins[:-1]
        bin_start = np.flatnonzero(new_bin)
        bin_length = np.diff(np.append(bin_start, n_rows))
        query_of_bin = np.searchsorted(query_start, bin_start, side="right") - 1
        query_bin_count = np.bincount(query_of_bin, minlength=len(query_start))
        query_bin_offset = np.concatenate(([0], np.cumsum(query_bin_count)[:-1]))
        return cls(
            query_start=query_start,
            query_length=query_length,
            query_cluster=query_cluster.astype(np.int64),
            bin_start=bin_start,
            bin_length=bin_length,
            query_bin_offset=query_bin_offset,
            query_bin_count=query_bin_count,
        )

    def draw_pairs(self, queries: np.ndarray, rng: np.random.Generator, balanced: bool = True) -> np.ndarray:
        """One row (pair) for each query in ``queries``: balanced over margin bins, or uniform over pairs."""
        if balanced:
            offset = np.minimum(
                (rng.random(len(queries)) * self.query_bin_count[queries]).astype(np.int64),
                self.query_bin_count[queries] - 1,
            )
            chosen_bin = self.query_bin_offset[queries] + offset
            start, length = self.bin_start[chosen_bin], self.bin_length[chosen_bin]
        else:
            start, length = self.query_start[queries], self.query_length[queries]
        return start + np.minimum((rng.random(len(queries)) * length).astype(np.int64), length - 1)


@dataclass(frozen=True)
class BatchComposition:
    """How topical an epoch's batches are.

    Attributes:
        n_batches: batches in the epoch.
        single_cluster_share: share of batches whose queries all come from one cluster.
        mean_top_cluster_share: mean over batches of the share of its queries in its largest cluster.

    Example:
        >>> BatchComposition.of(np.array([[3, 3, 3, 3], [1, 1, 2, 2], [5, 5, 5, 0]]))
        BatchComposition(n_batches=3, single_cluster_share=0.333..., mean_top_cluster_share=0.75)
    """

    n_batches: int
    single_cluster_share: float
    mean_top_cluster_share: float

    @classmethod
    def of(cls, clusters: np.ndarray) -> BatchComposition:
        """The composition of batches given as a ``[n_batches, batch_size]`` array of cluster ids."""
        largest = cls.top_shares(clusters)
        return cls(
            n_batches=len(largest),
            single_cluster_share=float(np.mean(largest == 1.0)),
            mean_top_cluster_share=float(np.mean(largest)),
        )

    @staticmethod
    def top_shares(clusters: np.ndarray) -> np.ndarray:
        """For each batch (row of cluster ids), the share of its queries in its largest cluster.

        Example:
            >>> BatchComposition.top_shares(np.array([[3, 3, 3, 3], [1, 1, 2, 2], [5, 5, 5, 0]])).tolist()
            [1.0, 0.5, 0.75]
        """
        n_batches, batch_size = clusters.shape
        ordered = np.sort(clusters, axis=1).ravel()
        run_start = np.ones(len(ordered), dtype=bool)
        run_start[1:] = ordered[1:] != ordered[:-1]
        run_start[::batch_size] = True
        starts = np.flatnonzero(run_start)
        run_length = np.diff(np.append(starts, len(ordered)))
        first_run_of_batch = np.searchsorted(starts, np.arange(n_batches) * batch_size)
        return np.maximum.reduceat(run_length, first_run_of_batch) / batch_size


def pack_remainders(remainders: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pack per-cluster remainders (each below ``chunk_size``) into chunks that mix as few clusters as they can.

    Best-fit decreasing with splitting: a chunk starts with the largest remainder left, then takes the largest
    remainder that still fits whole; when none fits, the smallest one left is split and its rest goes back.
    Only the last chunk can be short. Ties keep the given order (callers pass clusters in random order).

    Args:
        remainders: queries left over in each cluster, indexed by cluster.
        chunk_size: queries per chunk.

    Returns:
        ``(cluster, count)`` arrays: consecutive runs of ``count`` queries of ``cluster``; cutting their
        concatenation every ``chunk_size`` queries gives the chunks.

    Example:
        >>> clusters, counts = pack_remainders(np.array([7, 5, 0, 4, 3, 1]), 10)
        >>> list(zip(clusters.tolist(), counts.tolist()))  # chunks [7 + 3] and [5 + 4 + 1]
        [(0, 7), (4, 3), (1, 5), (3, 4), (5, 1)]
    """
    items = sorted((int(r), -k) for k, r in enumerate(remainders) if r)  # ascending; equal sizes: earlier last
    runs: list[tuple[int, int]] = []
    while items:
        count, negative_cluster = items.pop()
        runs.append((-negative_cluster, count))
        space = chunk_size - count
        while space and items:
            fits = bisect.bisect_right(items, (space, 1)) - 1
            count, negative_cluster = items.pop(fits if fits >= 0 else 0)
            if count > space:  # nothing fits whole: split the smallest, its rest goes back
                bisect.insort(items, (count - space, negative_cluster))
                count = space
            runs.append((-negative_cluster, count))
            space -= count
    pairs = np.array(runs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


class TopicAwareBalancedBatchSampler(DefaultBatchSampler):
    """TAS-Balanced batches: one topic cluster per batch, one margin-balanced pair per query.

    Pass the class (or a ``functools.partial`` of it) as ``batch_sampler`` of
    ``SentenceTransformerTrainingArguments``; the Trainer constructs it for every dataloader.

    Args:
        dataset: a dataset from ``build_training_dataset(table, queries, corpus, ...)``.
        batch_size: queries (rows) per batch; every batch has exactly this many.
        drop_last: leave out the epoch's last incomplete batch (else it is topped up from the epoch's start).
        valid_label_columns: unused (part of the sentence-transformers sampler signature).
        generator: unused; randomness comes from ``seed`` and the epoch so that all ranks agree.
        seed: the random seed; batches are a function of ``(seed, epoch)``.
        n_bins: margin bins per query for balanced pair sampling (the paper: 10).
        clusters_per_batch: topic clusters per batch, ``n`` (the paper: 1 at batch size 32);
            ``batch_size`` must be divisible by it.
        topic_aware: ``False`` is the random-batches ablation: queries in random order, clusters ignored.
        balanced: ``False`` is the uniform-pairs ablation: any of a query's pairs with equal probability.

    Raises:
        ValueError: when the dataset lacks the metadata columns, has no clusters while ``topic_aware``,
            or has fewer queries than ``batch_size``.

    Example:
        >>> from functools import partial
        >>> sampler_factory = partial(TopicAwareBalancedBatchSampler, n_bins=5, clusters_per_batch=2)
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        *,
        n_bins: int = TrainingSettings.n_bins,
        clusters_per_batch: int = 1,
        topic_aware: bool = True,
        balanced: bool = True,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("n_bins", n_bins), ("clusters_per_batch", clusters_per_batch)):
            check_number(name, value, minimum=1)
        check_number("seed", seed)
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        if batch_size % clusters_per_batch:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of clusters_per_batch ({clusters_per_batch})"
            )
        self.n_bins = n_bins
        self.clusters_per_batch = clusters_per_batch
        self.topic_aware = topic_aware
        self.balanced = balanced
        columns = metadata_columns(dataset)
        self.index = PairIndex.build(columns["query_index"], columns["margin"], columns["cluster"], n_bins)
        if topic_aware and (self.index.query_cluster < 0).any():
            raise ValueError(
                "the training dataset has no query clusters: pass clusters= to build_training_dataset(), "
                "or use topic_aware=False for random batches"
            )
        # clusters numbered 0..C-1 (random batches: a single group)
        self._cluster = np.unique(self.index.query_cluster, return_inverse=True)[1] if topic_aware else np.zeros(
            self.index.n_queries, dtype=np.int64
        )
        if self.index.n_queries < batch_size:
            raise ValueError(
                f"the dataset has {self.index.n_queries} queries, fewer than one batch of {batch_size}: "
                "lower the batch size"
            )

    def __call__(self, *args: Any, **kwargs: Any) -> TopicAwareBalancedBatchSampler:
        """Refuse being used as a sampler factory: ``batch_sampler=`` of the training arguments takes the class.

        sentence-transformers calls ``args.batch_sampler(dataset, batch_size=..., ...)`` and, given an instance
        that cannot be called, silently falls back to batches of single rows; this makes the mistake loud
        before training starts.

        Raises:
            TypeError: always, naming what to pass instead.
        """
        raise TypeError(
            "batch_sampler= of SentenceTransformerTrainingArguments takes the class TopicAwareBalancedBatchSampler "
            "or functools.partial(TopicAwareBalancedBatchSampler, n_bins=..., clusters_per_batch=...), not an "
            "instance (sentence-transformers would train on single rows); an instance belongs in a DataLoader "
            "(st_tasb.fit)"
        )

    def __len__(self) -> int:
        full, rest = divmod(self.index.n_queries, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def epoch_queries(self, epoch: int | None = None) -> np.ndarray:
        """The query positions of every batch of ``epoch`` (default: the current one), shape ``[len(self), batch_size]``.

        Topic-aware: every cluster is shuffled and cut into chunks of ``batch_size // clusters_per_batch``
        queries; only the remainders (fewer than a chunk per cluster) are pooled, largest first, into fill-up
        chunks. ``clusters_per_batch`` chunks of distinct clusters (where the cluster sizes allow) make a
        batch. Random batches: one permutation of the queries cut into batches. The epoch's queries that do
        not fill a last batch are dropped with ``drop_last``, else they form the last batch, topped up with
        queries of the first batch. No query appears twice in a batch.
        """
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng((self.seed, epoch))
        if self.topic_aware:
            chunks, rest = self._topic_chunks(rng)
            per_batch = self.clusters_per_batch
        else:
            order = rng.permutation(self.index.n_queries)
            cut = len(order) - len(order) % self.batch_size
            chunks, rest = order[:cut].reshape(-1, self.batch_size), order[cut:]
            per_batch = 1
        n_full = self.index.n_queries // self.batch_size
        chunks = chunks[rng.permutation(len(chunks))]
        batches = self._join_chunks(chunks[: n_full * per_batch], n_full, rng)
        if len(self) > n_full:  # the last batch: the leftover chunks and queries, topped up from the first batch
            tail = np.concatenate((chunks[n_full * per_batch :].ravel(), rest))
            tail = np.concatenate((tail, batches[0, : self.batch_size - len(tail)]))
            batches = np.concatenate((batches, tail[None, :]))
        return batches

    def epoch_batches(self, epoch: int | None = None) -> np.ndarray:
        """The row indices of every batch of ``epoch`` (default: the current one), shape ``[len(self), batch_size]``.

        The queries are :meth:`epoch_queries`; each gets one of its pairs, balanced over margin bins or uniform.
        """
        epoch = self.epoch if epoch is None else epoch
        queries = self.epoch_queries(epoch)
        rng = np.random.default_rng((self.seed, epoch, 1))
        return self.index.draw_pairs(queries.ravel(), rng, balanced=self.balanced).reshape(queries.shape)

    def composition(self, epoch: int | None = None) -> BatchComposition:
        """How topical the batches of ``epoch`` are (see :class:`BatchComposition`)."""
        return BatchComposition.of(self.index.query_cluster[self.epoch_queries(epoch)])

    def _topic_chunks(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Single-cluster chunks of every cluster, then fill-up chunks of the remainders; and the queries left over.

        Returns:
            ``(chunks, rest)``: ``chunks`` of shape ``[K, batch_size // clusters_per_batch]``, and the fewer
            than one chunk of remainder queries that complete none.
        """
        size = self.batch_size // self.clusters_per_batch
        n_clusters = int(self._cluster.max()) + 1
        rank = rng.permutation(n_clusters)[self._cluster]  # clusters in random order
        order = np.lexsort((rng.random(len(rank)), rank))  # grouped by cluster, shuffled inside
        rank_sorted = rank[order]
        members = np.bincount(rank, minlength=n_clusters)
        first = np.cumsum(members) - members
        in_full_chunk = np.arange(len(order)) - first[rank_sorted] < members[rank_sorted] // size * size
        full = order[in_full_chunk].reshape(-1, size)
        remainder = order[~in_full_chunk]  # still grouped by cluster rank
        seg_rank, seg_count = pack_remainders(members % size, size)  # fill-up chunks as (cluster, queries) runs
        by_rank = np.argsort(seg_rank, kind="stable")  # each cluster's runs, in the order they were taken
        run_of_query = np.repeat(by_rank, seg_count[by_rank])
        left = remainder[np.argsort(run_of_query, kind="stable")]
        cut = len(left) - len(left) % size
        return np.concatenate((full, left[:cut].reshape(-1, size))), left[cut:]

    def _join_chunks(self, chunks: np.ndarray, n_batches: int, rng: np.random.Generator) -> np.ndarray:
        """``n_batches`` batches of ``len(chunks) // n_batches`` chunks each, in random order.

        Chunks are ordered by the cluster of their first query and dealt out in turn, so the chunks of one
        batch come from distinct clusters unless a cluster holds more than ``n_batches`` chunks.
        """
        per_batch = len(chunks) // n_batches
        if per_batch > 1:
            cluster_rank = rng.permutation(int(self._cluster.max()) + 1)
            chunks = chunks[np.argsort(cluster_rank[self._cluster[chunks[:, 0]]], kind="stable")]
            chunks = chunks.reshape(per_batch, n_batches, -1).transpose(1, 0, 2)
        batches = chunks.reshape(n_batches, self.batch_size)
        return batches[rng.permutation(n_batches)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches().tolist()
