"""TAS-Balanced batch sampling: topic-aware batches of queries, each with a margin-balanced pair.

The sampler works on the dataset of :func:`st_tasb.training_data.build_training_dataset`, whose rows are
teacher-scored (query, positive, negative) pairs sorted by query and margin. Two structures are built
from its metadata columns with a few vectorised passes (no loop over rows):

- :class:`PairIndex`: the contiguous run of rows of every query, and inside it the runs of rows that fall
  into the same margin bin (``n_bins`` equal-width bins between the query's minimum and maximum margin);
- the query -> cluster map.

One epoch visits every query once (Hofstätter et al. sample clusters with replacement and have no epochs;
an epoch is what the Trainer expects). Its order is: clusters in random order, the queries of a cluster in
random order, cut into chunks of ``batch_size // clusters_per_batch`` queries; a chunk that runs past the
end of its cluster is filled up from the next (random) cluster, as the paper fills a batch from another
cluster when one is too small. Chunks are shuffled and ``clusters_per_batch`` of them make a batch. For every
query of a batch one pair is drawn: balanced sampling picks a non-empty margin bin uniformly, then a pair
uniformly inside it; uniform sampling picks any of the query's pairs.

Every batch has exactly ``batch_size`` rows and ``len()`` is exact: with ``drop_last`` the last
``n_queries % batch_size`` queries of the epoch order are left out (different ones each epoch), otherwise
the epoch is topped up with queries from its start. Batches depend only on ``(seed, epoch)``, so every DDP
rank computes the same sequence and a resumed run replays the same epoch.

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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sentence_transformers.sampler import DefaultBatchSampler

from st_tasb.training_data import metadata_columns

DEFAULT_N_BINS = 10
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

        # bin of every row, relative to its own query's margin range (in chunks: bounded float64 temporaries)
        low = margin[query_start].astype(np.float64)
        span = margin[query_end - 1].astype(np.float64) - low
        scale = np.divide(n_bins, span, out=np.zeros_like(span), where=span > 0)
        bins = np.empty(n_rows, dtype=np.int32)
        queries_before = 0
        for start in range(0, n_rows, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n_rows)
            query = np.cumsum(new_query[start:stop], dtype=np.int64) + (queries_before - 1)
            chunk_bins = (margin[start:stop] - low[query]) * scale[query]
            bins[start:stop] = np.minimum(chunk_bins, n_bins - 1)
            queries_before = int(query[-1]) + 1

        new_bin = new_query  # reused in place: a bin run starts at a new query or a new bin
        new_bin[1:] |= bins[1:] != bins[:-1]
        bin_start = np.flatnonzero(new_bin)
        bin_length = np.diff(np.append(bin_start, n_rows))
        query_of_bin = np.searchsorted(query_start, bin_start, side="right") - 1
        query_bin_count = np.bincount(query_of_bin, minlength=len(query_start))
        query_bin_offset = np.concatenate(([0], np.cumsum(query_bin_count)[:-1]))
        return cls(
            query_start=query_start,
            query_length=query_end - query_start,
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


class TopicAwareBalancedBatchSampler(DefaultBatchSampler):
    """TAS-Balanced batches: one topic cluster per batch, one margin-balanced pair per query.

    Pass the class (or a ``functools.partial`` of it) as ``batch_sampler`` of
    ``SentenceTransformerTrainingArguments``; the Trainer constructs it for every dataloader.

    Args:
        dataset: a dataset from ``TeacherScoreTable.training_dataset(...)``.
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
        n_bins: int = DEFAULT_N_BINS,
        clusters_per_batch: int = 1,
        topic_aware: bool = True,
        balanced: bool = True,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        if clusters_per_batch < 1 or batch_size % clusters_per_batch:
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
                "the training dataset has no query clusters: pass clusters= to training_dataset(), "
                "or use topic_aware=False for random batches"
            )
        if self.index.n_queries < batch_size:
            raise ValueError(
                f"the dataset has {self.index.n_queries} queries, fewer than one batch of {batch_size}: "
                "lower the batch size"
            )

    def __len__(self) -> int:
        full, rest = divmod(self.index.n_queries, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def epoch_batches(self, epoch: int | None = None) -> np.ndarray:
        """The row indices of every batch of ``epoch`` (default: the current one), shape ``[len(self), batch_size]``."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng((self.seed, epoch))
        n_queries = self.index.n_queries
        if self.topic_aware:
            clusters, cluster_of_query = np.unique(self.index.query_cluster, return_inverse=True)
            cluster_rank = rng.permutation(len(clusters))[cluster_of_query]
            order = np.lexsort((rng.random(n_queries), cluster_rank))
        else:
            order = rng.permutation(n_queries)
        n_rows = len(self) * self.batch_size
        order = np.concatenate((order, order[: max(n_rows - n_queries, 0)]))[:n_rows]
        chunks = order.reshape(-1, self.batch_size // self.clusters_per_batch)
        batches = chunks[rng.permutation(len(chunks))].reshape(len(self), self.batch_size)
        rows = self.index.draw_pairs(batches.ravel(), rng, balanced=self.balanced)
        return rows.reshape(batches.shape)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches().tolist()
