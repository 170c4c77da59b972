"""Topic-aware batch composition shared by st-tasb's samplers: whole chunks of one cluster per batch.

A sampler built on :class:`TopicBatchSampler` batches *units* (the queries of a teacher table, or the rows of
a plain sentence-transformers dataset), each with a topic cluster. One epoch visits every unit once. Every
cluster's units are shuffled and cut into chunks of ``c = batch_size // clusters_per_batch``; each full chunk
holds one cluster. Only each cluster's remainder (fewer than ``c`` units) is pooled: the remainders are packed,
largest first, into fill-up chunks that mix as few clusters as they can (:func:`pack_remainders`), as
Hofstätter et al. fill a batch from another cluster when one runs short. ``clusters_per_batch`` chunks of
distinct clusters (where the sizes allow) make a batch, and the batches are shuffled. Hofstätter et al. sample
clusters with replacement and have no epochs; an epoch is what the Trainer expects.

Units may carry a *spread group* (the rows of one anchor; the queries that share a positive): inside its
cluster, a group's units are then dealt out over the cluster's chunks (:class:`SpreadGroups`), so that they
share a chunk only when the group has more units than its cluster has chunks.

Every batch has exactly ``batch_size`` units, no unit twice, and ``len()`` is exact: the
``n_units % batch_size`` units that complete no batch (different ones each epoch) are left out with
``drop_last``; otherwise they form the last batch, topped up with units of the epoch's first batch. Batches
depend only on ``(seed, epoch)``, so every DDP rank computes the same sequence and a resumed run replays the
same epoch. :class:`BatchComposition` reports how topical an epoch is.

With ``N`` processes (DDP, ``world_size``), the rules above compose *global* batches of ``N * batch_size`` units
(chunks of ``N * batch_size // clusters_per_batch``), and each global batch is yielded as ``N`` consecutive
per-device slices: accelerate hands batch ``i`` to rank ``i % N``, so the ``N`` batches of one optimizer step
together are one topic-aware global batch, with no unit twice in it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np
from sentence_transformers.util import get_world_size

from st_tasb.data.checks import check_number
from st_tasb.data.compat import DefaultBatchSampler


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


def occurrence(codes: np.ndarray) -> np.ndarray:
    """For every unit, how many earlier units have the same code (0 for a code's first unit).

    Example:
        >>> occurrence(np.array([5, 3, 5, 5, 3])).tolist()
        [0, 0, 1, 2, 1]
    """
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - first
    return rank


@dataclass(frozen=True)
class SpreadGroups:
    """The spread groups of every unit inside its cluster, computed once; :meth:`positions` deals them each epoch.

    Attributes:
        cluster: every unit's cluster, as codes ``0..C-1``.
        pair: every unit's (cluster, group) code.
        size: the number of units of each (cluster, group) code.
        members: the number of units of each cluster.
    """

    cluster: np.ndarray
    pair: np.ndarray
    size: np.ndarray
    members: np.ndarray

    @classmethod
    def of(cls, cluster: np.ndarray, spread: np.ndarray) -> SpreadGroups:
        """The groups of units with cluster ``cluster`` and group code ``spread`` (any integers)."""
        codes = np.unique(cluster, return_inverse=True)[1].ravel()
        pair = np.unique(np.stack((codes, spread)), axis=1, return_inverse=True)[1].ravel()
        return cls(codes, pair, np.bincount(pair), np.bincount(codes))

    def positions(self, chunk: int, rng: np.random.Generator) -> np.ndarray:
        """A sort key that spreads the units of each group over their cluster's chunks as evenly as possible.

        Inside a cluster of ``n`` units, the groups get a random order (larger groups first) and their units, in a
        random order, are laid out group after group. The first ``K * chunk`` of them (``K = n // chunk``, the
        cluster's full chunks) are dealt out in turn to the ``K`` chunks: sorting by the key gives chunk 0's units,
        then chunk 1's, and so on, then the ``n mod chunk`` units left over (the smallest groups). A group of ``m``
        units dealt out in turn lands in ``min(m, K)`` chunks, at most ``ceil(m / K)`` in any one: no chunk holds a
        group twice unless it has more units than its cluster has chunks.

        Args:
            chunk: units per chunk.
            rng: the epoch's generator.

        Example:
            >>> groups = np.array([9, 7, 8, 7, 8, 7])  # one cluster of two chunks of 3: groups of 3, 2 and 1 units
            >>> key = SpreadGroups.of(np.zeros(6, dtype=np.int64), groups).positions(3, np.random.default_rng(0))
            >>> groups[np.argsort(key)].reshape(2, 3).tolist()  # 7 7 7 8 8 9 dealt out in turn to the two chunks
            [[7, 7, 8], [7, 8, 9]]
        """
        n, cluster, members = len(self.cluster), self.cluster, self.members
        group_rank = np.empty(len(self.size), dtype=np.int64)
        group_rank[np.lexsort((rng.random(len(self.size)), -self.size))] = np.arange(len(self.size))  # larger first
        laid_out = np.lexsort((rng.random(n), group_rank[self.pair], cluster))  # by cluster, then group after group
        first = np.cumsum(members) - members
        position = np.empty(n, dtype=np.int64)
        position[laid_out] = np.arange(n) - first[cluster[laid_out]]  # each unit's place in its cluster's layout
        chunks = (members // chunk)[cluster]
        dealt = position < chunks * chunk
        turns = np.maximum(chunks, 1)
        return np.where(dealt, position % turns * chunk + position // turns, position)


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


class TopicBatchSampler(DefaultBatchSampler):
    """The topic-aware composition of batches of units; subclasses say what a unit is and what a batch yields.

    A subclass calls ``super().__init__`` with the sentence-transformers sampler arguments, then
    :meth:`_set_units` with every unit's cluster, and yields rows built from :meth:`_epoch_units`.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: Any = None,
        seed: int = 0,
        *,
        clusters_per_batch: int = 1,
        topic_aware: bool = True,
        world_size: int | None = None,
    ) -> None:
        check_number("batch_size", batch_size, minimum=1)
        check_number("clusters_per_batch", clusters_per_batch, minimum=1)
        check_number("seed", seed)
        world_size = get_world_size() if world_size is None else world_size
        check_number("world_size", world_size, minimum=1)
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        self.world_size = world_size
        self.global_batch_size = batch_size * world_size
        if self.global_batch_size % clusters_per_batch:
            batch = f"the global batch ({batch_size} x {world_size} processes)" if world_size > 1 else f"batch_size ({batch_size})"
            raise ValueError(f"{batch} must be a positive multiple of clusters_per_batch ({clusters_per_batch})")
        self.clusters_per_batch = clusters_per_batch
        self.topic_aware = topic_aware
        self.unit_cluster = np.zeros(0, dtype=np.int64)
        self._group = self.unit_cluster
        self._spread: SpreadGroups | None = None

    def _set_units(self, unit_cluster: np.ndarray, what: str, spread: np.ndarray | None = None) -> None:
        """Record every unit's cluster (-1: none) and, optionally, its spread group (any integer codes).

        Units of one spread group are dealt out over their cluster's chunks (:class:`SpreadGroups`):
        the anchor sampler spreads the rows of an anchor, the pair sampler (``separate_positives``) the queries
        that share a positive.

        Raises:
            ValueError: for fewer units than one batch, or a unit without a cluster while topic-aware.
        """
        self.unit_cluster = np.asarray(unit_cluster, dtype=np.int64)
        n_units = len(self.unit_cluster)
        if n_units < self.global_batch_size:
            across = f" ({self.batch_size} x {self.world_size} processes)" if self.world_size > 1 else ""
            raise ValueError(f"the dataset has {n_units} {what}, fewer than one batch of {self.global_batch_size}"
                             f"{across}: lower the batch size")
        if self.topic_aware:
            self._group = np.unique(self.unit_cluster, return_inverse=True)[1].astype(np.int64)  # 0..C-1
        else:  # random batches: a single group
            self._group = np.zeros(n_units, dtype=np.int64)
        self._spread = None if spread is None else SpreadGroups.of(self._group, np.asarray(spread, dtype=np.int64))

    def __call__(self, *args: Any, **kwargs: Any) -> TopicBatchSampler:
        """Refuse being used as a sampler factory: ``batch_sampler=`` of the training arguments takes the class.

        sentence-transformers calls ``args.batch_sampler(dataset, batch_size=..., ...)`` and, given an instance
        that cannot be called, silently falls back to batches of single rows; this makes the mistake loud
        before training starts.

        Raises:
            TypeError: always, naming what to pass instead.
        """
        name = type(self).__name__
        raise TypeError(
            f"batch_sampler= of SentenceTransformerTrainingArguments takes the class {name} or "
            f"functools.partial({name}, ...), not an instance (sentence-transformers would train on single rows); "
            "an instance belongs in a DataLoader (st_tasb.fit)"
        )

    def __len__(self) -> int:
        full, rest = divmod(len(self.unit_cluster), self.global_batch_size)
        return (full + (1 if rest and not self.drop_last else 0)) * self.world_size

    def composition(self, epoch: int | None = None) -> BatchComposition:
        """How topical the (global) batches of ``epoch`` (default: the current one) are (see
        :class:`BatchComposition`)."""
        return BatchComposition.of(self.unit_cluster[self._epoch_global_units(epoch)])

    def _epoch_units(self, epoch: int | None = None) -> np.ndarray:
        """The units of every per-device batch of ``epoch``, shape ``[len(self), batch_size]``: each global batch
        of :meth:`_epoch_global_units` cut into ``world_size`` consecutive slices."""
        return self._per_device(self._epoch_global_units(epoch))

    def _per_device(self, global_batches: np.ndarray) -> np.ndarray:
        return global_batches.reshape(-1, self.batch_size)

    def _epoch_global_units(self, epoch: int | None = None) -> np.ndarray:
        """The units of every global batch of ``epoch`` (default: the current one), shape
        ``[len(self) // world_size, world_size * batch_size]`` (with one process: the batches themselves).

        Topic-aware: every cluster is shuffled and cut into chunks of ``batch_size // clusters_per_batch``
        units; only the remainders (fewer than a chunk per cluster) are pooled, largest first, into fill-up
        chunks. ``clusters_per_batch`` chunks of distinct clusters (where the cluster sizes allow) make a
        batch. Random batches: one permutation of the units cut into batches. The epoch's units that do not
        fill a last batch are dropped with ``drop_last``, else they form the last batch, topped up with units
        of the first batch. No unit appears twice in a batch.
        """
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng((self.seed, epoch))
        n_units = len(self.unit_cluster)
        if self.topic_aware:
            chunks, rest = self._topic_chunks(rng)
            per_batch = self.clusters_per_batch
        else:
            order = (rng.permutation(n_units) if self._spread is None
                     else np.argsort(self._spread.positions(self.global_batch_size, rng), kind="stable"))
            cut = len(order) - len(order) % self.global_batch_size
            chunks, rest = order[:cut].reshape(-1, self.global_batch_size), order[cut:]
            per_batch = 1
        n_full = n_units // self.global_batch_size
        chunks = chunks[rng.permutation(len(chunks))]
        batches = self._join_chunks(chunks[: n_full * per_batch], n_full, rng)
        if len(self) // self.world_size > n_full:  # the last batch: the leftover chunks and units, topped up from the first batch
            tail = np.concatenate((chunks[n_full * per_batch :].ravel(), rest))
            tail = np.concatenate((tail, batches[0, : self.global_batch_size - len(tail)]))
            batches = np.concatenate((batches, tail[None, :]))
        return batches

    def _topic_chunks(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Single-cluster chunks of every cluster, then fill-up chunks of the remainders; and the units left over.

        Returns:
            ``(chunks, rest)``: ``chunks`` of shape ``[K, batch_size // clusters_per_batch]``, and the fewer
            than one chunk of remainder units that complete none.
        """
        size = self.global_batch_size // self.clusters_per_batch
        n_clusters = int(self._group.max()) + 1
        rank = rng.permutation(n_clusters)[self._group]  # clusters in random order
        inside = (rng.random(len(rank)) if self._spread is None
                  else self._spread.positions(size, rng))
        order = np.lexsort((inside, rank))  # grouped by cluster, shuffled (and spread) inside
        rank_sorted = rank[order]
        members = np.bincount(rank, minlength=n_clusters)
        first = np.cumsum(members) - members
        in_full_chunk = np.arange(len(order)) - first[rank_sorted] < members[rank_sorted] // size * size
        full = order[in_full_chunk].reshape(-1, size)
        remainder = order[~in_full_chunk]  # still grouped by cluster rank
        seg_rank, seg_count = pack_remainders(members % size, size)  # fill-up chunks as (cluster, units) runs
        by_rank = np.argsort(seg_rank, kind="stable")  # each cluster's runs, in the order they were taken
        run_of_unit = np.repeat(by_rank, seg_count[by_rank])
        left = remainder[np.argsort(run_of_unit, kind="stable")]
        cut = len(left) - len(left) % size
        return np.concatenate((full, left[:cut].reshape(-1, size))), left[cut:]

    def _join_chunks(self, chunks: np.ndarray, n_batches: int, rng: np.random.Generator) -> np.ndarray:
        """``n_batches`` batches of ``len(chunks) // n_batches`` chunks each, in random order.

        Chunks are ordered by the cluster of their first unit and dealt out in turn, so the chunks of one
        batch come from distinct clusters unless a cluster holds more than ``n_batches`` chunks.
        """
        per_batch = len(chunks) // n_batches
        if per_batch > 1:
            cluster_rank = rng.permutation(int(self._group.max()) + 1)
            chunks = chunks[np.argsort(cluster_rank[self._group[chunks[:, 0]]], kind="stable")]
            chunks = chunks.reshape(per_batch, n_batches, -1).transpose(1, 0, 2)
        batches = chunks.reshape(n_batches, self.global_batch_size)
        return batches[rng.permutation(n_batches)]
