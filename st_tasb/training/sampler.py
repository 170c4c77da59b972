"""TAS-Balanced batch sampling: topic-aware batches of queries, each with a margin-balanced pair.

The sampler works on the dataset of :func:`st_tasb.training.dataset.build_training_dataset`, whose rows are
teacher-scored (query, positive, negative) pairs sorted by query and margin. Two structures are built
from its metadata columns with a few vectorised passes (no loop over rows):

- :class:`PairIndex`: the contiguous run of rows of every query, and inside it the runs of rows that fall
  into the same margin bin (``n_bins`` equal-width bins between the query's minimum and maximum margin);
- the query -> cluster map.

Batches of queries are composed by :class:`~st_tasb.training.topic_batches.TopicBatchSampler`, the paper's
topic-aware composition: whole chunks of one cluster, exact sizes, no query twice in a batch, an exact
``len()``, and a sequence that depends only on ``(seed, epoch)`` (the same on every DDP rank and after a
resume). For every query of a batch one pair is drawn: balanced sampling picks a non-empty margin bin
uniformly, then a pair uniformly inside it; uniform sampling picks any of the query's pairs.
:meth:`~st_tasb.training.topic_batches.TopicBatchSampler.composition` reports how topical an epoch is.

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

from st_tasb.data.checks import check_number
from st_tasb.training.dataset import metadata_columns
from st_tasb.training.topic_batches import TopicBatchSampler

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


class TopicAwareBalancedBatchSampler(TopicBatchSampler):
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
        separate_positives: spread the queries that share a positive (that of their first pair: their only one in
            data with one judged passage per query) over their cluster's batches, so that a passage is seldom one
            row's positive and another row's in-batch negative (:class:`~st_tasb.training.topic_batches.SpreadGroups`:
            two such queries share a batch only when more queries of their cluster share the positive than the
            cluster fills batches).
        world_size: processes that train together (default: the initialised ``torch.distributed`` group's size,
            else 1); their per-device batches of one step form one global batch (see
            :mod:`~st_tasb.training.topic_batches`).

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
        n_bins: int = 10,
        clusters_per_batch: int = 1,
        topic_aware: bool = True,
        world_size: int | None = None,
        balanced: bool = True,
        separate_positives: bool = False,
    ) -> None:
        check_number("n_bins", n_bins, minimum=1)
        super().__init__(
            dataset,
            batch_size,
            drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
            clusters_per_batch=clusters_per_batch,
            topic_aware=topic_aware,
            world_size=world_size,
        )
        self.n_bins = n_bins
        self.balanced = balanced
        self.separate_positives = separate_positives
        columns = metadata_columns(dataset, ("positive_index",) if separate_positives else ())
        self.index = PairIndex.build(columns["query_index"], columns["margin"], columns["cluster"], n_bins)
        if topic_aware and (self.index.query_cluster < 0).any():
            raise ValueError(
                "the training dataset has no query clusters: pass clusters= to build_training_dataset(), "
                "or use topic_aware=False for random batches"
            )
        spread = columns["positive_index"][self.index.query_start] if separate_positives else None
        self._set_units(self.index.query_cluster, "queries", spread=spread)

    def epoch_queries(self, epoch: int | None = None) -> np.ndarray:
        """The query positions of every (per-device) batch of ``epoch`` (default: the current one), shape
        ``[len(self), batch_size]``.

        The topic-aware composition of :mod:`st_tasb.training.topic_batches`, with queries as its units.
        """
        return self._epoch_units(epoch)

    def epoch_batches(self, epoch: int | None = None) -> np.ndarray:
        """The row indices of every batch of ``epoch`` (default: the current one), shape ``[len(self), batch_size]``.

        The queries are :meth:`epoch_queries`; each gets one of its pairs, balanced over margin bins or uniform.
        """
        epoch = self.epoch if epoch is None else epoch
        queries = self.epoch_queries(epoch)
        rng = np.random.default_rng((self.seed, epoch, 1))
        return self.index.draw_pairs(queries.ravel(), rng, balanced=self.balanced).reshape(queries.shape)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches().tolist()
