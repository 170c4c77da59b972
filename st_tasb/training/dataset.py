"""The training dataset: teacher-scored pairs as integer positions, sorted for the sampler, texts resolved lazily.

:func:`build_training_dataset` turns a :class:`~st_tasb.prepare.table.TeacherScoreTable` (ids) into the dataset that
:class:`~st_tasb.training.sampler.TopicAwareBalancedBatchSampler` and the Trainer consume:

- Arrow columns ``query_index``, ``positive_index``, ``negative_index`` (int32 row positions into the
  query and passage :class:`~st_tasb.data.texts.TextStore`), ``margin`` (float32, teacher pos - neg score) and
  ``cluster`` (int32 topic cluster of the query, -1 without clusters);
- rows sorted by ``(query_index, margin)``, so every query's pairs are one contiguous, margin-ordered run
  and the sampler builds its per-query margin bins with a few vectorised passes;
- a ``set_transform`` that reads rows as ``{"query", "positive", "negative", "label"}`` texts and margin
  (plus the three indices with ``with_indices=True``, for teachers that look embeddings up by position).

The sampler reads the metadata columns from the dataset's Arrow rows, which the transform does not touch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from datasets import Dataset, load_from_disk
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable

from st_tasb.data.arrow import rows
from st_tasb.data.columns import INDEX_COLUMNS, TEXT_COLUMNS
from st_tasb.data.texts import TextStore

if TYPE_CHECKING:
    from st_tasb.prepare.clusters import QueryClusters
    from st_tasb.prepare.table import TeacherScoreTable

SAMPLER_COLUMNS = ("query_index", "margin", "cluster")
_PARALLEL_SORT_ROWS = 1 << 20  # fewer rows are sorted in one thread


class ResolveTexts:
    """The lazy transform: index columns -> texts, ``margin`` -> ``label`` (picklable for dataloader workers)."""

    def __init__(self, queries: TextStore, corpus: TextStore, with_indices: bool = False) -> None:
        self.queries = queries
        self.corpus = corpus
        self.with_indices = with_indices

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        stores = (self.queries, self.corpus, self.corpus)
        resolved: dict[str, list[Any]] = {
            text: store.texts(batch[index]) for text, index, store in zip(TEXT_COLUMNS, INDEX_COLUMNS, stores)
        }
        resolved["label"] = list(batch["margin"])
        if self.with_indices:
            for column in INDEX_COLUMNS:
                resolved[column] = list(batch[column])
        return resolved


def build_training_dataset(
    table: TeacherScoreTable,
    queries: TextStore,
    corpus: TextStore,
    clusters: QueryClusters | None = None,
    *,
    with_indices: bool = False,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Build the sampler-ready training dataset from a teacher score table.

    Args:
        table: the teacher-scored (query, positive, negative) pairs.
        queries: query texts; every query id of the table must be in it.
        corpus: passage texts; every positive and negative id of the table must be in it.
        clusters: topic clusters of the queries; every query of the table must have one. Without
            clusters the ``cluster`` column is -1 and only random-query batching is possible.
        with_indices: also expose ``query_index``/``positive_index``/``negative_index`` in the rows
            (needed by cached or precomputed in-batch teachers; use it with
            :class:`~st_tasb.training.collator.TASBDataCollator`).
        cache_dir: write the sorted Arrow table here and reopen it memory-mapped (large tables);
            by default it is kept in memory (five int32/float32 columns, 20 bytes a pair).

    Returns:
        A ``datasets.Dataset`` as described in the module docstring.

    Raises:
        st_tasb.data.texts.UnknownIdError: naming the table's ids that are missing from queries or corpus.
        ValueError: naming queries of the table that have no cluster, or the first (query, positive, negative)
            pair that the table holds twice (it would be drawn twice as often): deduplicate the table first
            (:meth:`~st_tasb.prepare.table.TeacherScoreTable.deduplicate`).
        st_tasb.data.beir.DataFormatError: naming the first row whose negative is its positive.
    """
    data = table.dataset.data
    table.check_ids()

    def positions(store: TextStore, column: str) -> np.ndarray:
        found = store.positions(data.column(column), missing="mask")
        if len(found) and found.min() < 0:
            table.validate(queries, corpus)  # raises with file:line detail
            raise AssertionError("validate() accepted ids that TextStore.positions rejected")  # pragma: no cover
        return found

    query_pos = positions(queries, "query_id")
    pairs_of_query = np.bincount(query_pos, minlength=len(queries))
    if clusters is None:
        cluster_of_query = np.full(len(queries), -1, dtype=np.int32)
    else:
        cluster_of_query = clusters.cluster_of(queries.ids).astype(np.int32, copy=False)
        unclustered = np.flatnonzero((pairs_of_query > 0) & (cluster_of_query < 0))
        if len(unclustered):
            missing_ids = queries.ids.take(pa.array(unclustered[:5])).to_pylist()
            raise ValueError(
                f"{len(unclustered)} query(ies) of the table have no cluster, e.g. {missing_ids}; "
                "fit the clusters on the table's queries (QueryClusters.fit(..., only_ids=...))"
            )

    margin = data.column("margin").to_numpy().astype(np.float32, copy=False)
    order = sort_by_query_and_margin(query_pos, margin, pairs_of_query)
    del query_pos
    # sorted by query, the query and cluster columns are runs, written without a gather
    present = np.flatnonzero(pairs_of_query)
    runs = pairs_of_query[present]
    def passages_in_order(name: str, order: np.ndarray = order) -> np.ndarray:
        return positions(corpus, f"{name}_id").astype(np.int32, copy=False)[order]

    with ThreadPoolExecutor(2) as pool:  # lookups and gathers release the GIL: the columns side by side
        positives, negatives = pool.submit(passages_in_order, "positive"), pool.submit(passages_in_order, "negative")
        sorted_margin = pool.submit(np.take, margin, order)
        columns = {
            "query_index": np.repeat(present.astype(np.int32), runs),
            "positive_index": positives.result(),
            "negative_index": negatives.result(),
            "margin": sorted_margin.result(),
            "cluster": np.repeat(cluster_of_query[present], runs),
        }
    repeated = first_repeated_row(columns["query_index"], columns["positive_index"], columns["negative_index"])
    if repeated is not None:
        earlier, later = (table.where(int(order[row])) for row in repeated)
        raise ValueError(
            f"the table holds the pair at {later} twice (also at {earlier}): a repeated pair would be drawn twice as "
            "often. Keep one: table.deduplicate('first') or ('mean'), or st-tasb train --duplicates first|mean"
        )
    del order, margin
    arrow = pa.table({name: pa.array(values) for name, values in columns.items()})
    del columns
    # an explicit fingerprint: without one, datasets hashes every row (seconds and GBs at MS MARCO size)
    dataset = Dataset(InMemoryTable(arrow), fingerprint=generate_random_fingerprint())
    if cache_dir is not None:
        dataset.save_to_disk(str(cache_dir))
        dataset = load_from_disk(str(cache_dir))
    dataset.set_transform(ResolveTexts(queries, corpus, with_indices=with_indices))
    return dataset


def sort_by_query_and_margin(
    query_pos: np.ndarray, margin: np.ndarray, pairs_of_query: np.ndarray | None = None, threads: int | None = None
) -> np.ndarray:
    """The row order by ascending query position, then ascending margin, then row (the same for any ``threads``).

    One 64-bit key per row: the query position in the high 32 bits and the float32 margin's bits, mapped so
    that unsigned order is numeric order, in the low 32 bits; one argsort instead of a two-key lexsort. With
    several threads the rows are split into ranges of queries holding about equal numbers of rows, and each
    thread builds and argsorts its range's keys (numpy sorts without the GIL); the ranges, concatenated in
    query order, give the global order.

    Args:
        query_pos: the query position of every row (non-negative integers).
        margin: the margin of every row.
        pairs_of_query: ``np.bincount(query_pos)`` when the caller has it.
        threads: sorting threads (default: the CPUs this process may use, one below a million rows).

    Example:
        >>> sort_by_query_and_margin(np.array([1, 0, 1, 0]), np.array([-2.0, 3.0, -5.0, -0.5], dtype=np.float32)).tolist()
        [3, 1, 2, 0]
    """
    n = len(query_pos)
    if threads is None:
        threads = min(len(os.sched_getaffinity(0)), 255) if n >= _PARALLEL_SORT_ROWS else 1
    if threads < 2:
        return _argsort_ties_by_row(_sort_key(query_pos, margin))
    counts = np.bincount(query_pos) if pairs_of_query is None else pairs_of_query
    # query ranges of about n / threads rows each: the range of every query, then of every row
    range_of_query = np.minimum(np.cumsum(counts) * threads // max(n, 1), threads - 1).astype(np.uint8)
    range_of_row = range_of_query[query_pos]

    def sort_range(index: int) -> np.ndarray:
        rows = np.flatnonzero(range_of_row == index)
        return rows[_argsort_ties_by_row(_sort_key(query_pos[rows], margin[rows]))]

    with ThreadPoolExecutor(threads) as pool:
        return np.concatenate(list(pool.map(sort_range, range(threads))))


def _argsort_ties_by_row(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key)`` with equal keys in row order, so that the order does not depend on how the rows were
    split across threads (numpy's fast argsort is not stable; equal keys are rare, so only they are re-sorted)."""
    order = np.argsort(key)
    ordered = key[order]
    tie = ordered[1:] == ordered[:-1]
    if not tie.any():
        return order
    run_start = np.ones(len(order), dtype=bool)
    run_start[1:] = ~tie
    in_run = ~run_start
    in_run[:-1] |= tie
    members = np.flatnonzero(in_run)
    rows = order[members]
    order[members] = rows[np.lexsort((rows, np.cumsum(run_start[members])))]
    return order


def _sort_key(query_pos: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """``query << 32 | margin bits``, the bits mapped so that unsigned order is the floats' order."""
    key = query_pos.astype(np.uint64)
    key <<= np.uint64(32)
    bits = np.ascontiguousarray(margin, dtype=np.float32).view(np.uint32)
    sortable = bits >> np.uint32(31)  # 1 for negative margins: flip every bit; else flip the sign bit only
    sortable *= np.uint32(0x7FFFFFFF)
    sortable |= np.uint32(0x80000000)
    sortable ^= bits
    key |= sortable
    return key


_HASH_MULTIPLIERS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))
_DUPLICATE_CHUNK = 1 << 22  # rows hashed and sorted at a time (memory stays small at 40M pairs)


def first_repeated_row(query: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> tuple[int, int] | None:
    """``(first, repeat)``: two rows holding the same (query, positive, negative), or ``None``.

    Rows must be grouped by query (as the training dataset is), so a repeat lies in the same group. Each chunk
    of whole queries is hashed and sorted; a hash that repeats is confirmed on the values themselves.

    Example:
        >>> first_repeated_row(np.array([0, 0, 0, 1]), np.array([5, 5, 6, 5]), np.array([7, 8, 7, 7]))
        >>> first_repeated_row(np.array([0, 0, 0, 1]), np.array([5, 6, 5, 5]), np.array([7, 7, 7, 7]))
        (0, 2)
    """
    start = 0
    with np.errstate(over="ignore"):
        while start < len(query):
            stop = min(start + _DUPLICATE_CHUNK, len(query))
            if stop < len(query):  # end the chunk at a query boundary (after the group, if one group fills it)
                boundary = int(np.searchsorted(query, query[stop], side="left"))
                stop = boundary if boundary > start else int(np.searchsorted(query, query[stop], side="right"))
            rows = slice(start, stop)
            keys = (query[rows].astype(np.uint64) * _HASH_MULTIPLIERS[0]) ^ (
                positive[rows].astype(np.uint64) * _HASH_MULTIPLIERS[1]) ^ (
                negative[rows].astype(np.uint64) * _HASH_MULTIPLIERS[2])
            ordered = np.sort(keys)
            if (ordered[1:] == ordered[:-1]).any():
                triples = np.stack([query[rows], positive[rows], negative[rows]], axis=1).astype(np.int64)
                _, first, inverse = np.unique(triples, axis=0, return_index=True, return_inverse=True)
                repeats = np.flatnonzero(first[inverse.reshape(-1)] != np.arange(len(triples)))
                if len(repeats):
                    repeat = int(repeats[0])
                    return start + int(first[inverse.reshape(-1)[repeat]]), start + repeat
            start = stop
    return None


def metadata_columns(dataset: Dataset, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The sampler's view of a training dataset: its metadata columns (and the ``extra`` ones, e.g.
    ``positive_index``) as numpy arrays (zero-copy when possible).

    Raises:
        ValueError: when the dataset was not built by :func:`build_training_dataset`.
    """
    names = dataset.column_names if isinstance(dataset, Dataset) else []
    wanted = (*SAMPLER_COLUMNS, *extra)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(
            f"the dataset lacks the columns {missing} that TopicAwareBalancedBatchSampler needs; build it with "
            "build_training_dataset(table, queries, corpus, clusters)"
        )
    table = rows(dataset.select_columns(list(wanted)))
    return {c: table.column(c).to_numpy() for c in wanted}


def build_pair_dataset(
    table: TeacherScoreTable, queries: TextStore, corpus: TextStore, clusters: QueryClusters | None = None
) -> tuple[Dataset, dict[str, int] | None]:
    """The (anchor, positive) rows of a teacher score table, for losses that learn from labels and in-batch
    negatives only (``MultipleNegativesRankingLoss``: ``st-tasb train --loss mnrl``).

    Every distinct (query, positive) pair of the table is one row of texts, ordered by the query's and then the
    passage's position in the stores; the negatives and margins are not used.

    Args:
        table: the teacher-scored (query, positive, negative) pairs.
        queries: query texts; every query id of the table must be in it.
        corpus: passage texts; every positive id of the table must be in it.
        clusters: topic clusters of the queries, for :class:`~st_tasb.training.anchor_sampler.TopicAwareBatchSampler`.

    Returns:
        The dataset (columns ``anchor`` and ``positive``) and, with ``clusters``, each anchor text's cluster (a query
        text shared by several ids takes the cluster of the first).

    Example:
        >>> from st_tasb.prepare.table import TeacherScoreTable
        >>> table = TeacherScoreTable.from_margins(["q2", "q1", "q1"], ["d1", "d2", "d2"], ["d3", "d1", "d3"], [1.0, 2.0, 3.0])
        >>> q = TextStore.from_records([("q1", "first query"), ("q2", "second query")])
        >>> d = TextStore.from_records([("d1", "one"), ("d2", "two"), ("d3", "three")])
        >>> build_pair_dataset(table, q, d)[0].to_dict()
        {'anchor': ['first query', 'second query'], 'positive': ['two', 'one']}
    """
    data = table.dataset.data
    table.validate(queries, corpus)
    query_pos = queries.positions(data.column("query_id")).astype(np.int64)
    positive_pos = corpus.positions(data.column("positive_id")).astype(np.int64)
    keys = np.unique(query_pos * len(corpus) + positive_pos)
    anchor_pos, passage_pos = keys // len(corpus), keys % len(corpus)
    dataset = Dataset.from_dict({"anchor": queries.texts(anchor_pos), "positive": corpus.texts(passage_pos)})
    if clusters is None:
        return dataset, None
    distinct = np.unique(anchor_pos)
    topics: dict[str, int] = {}
    for text, cluster in zip(queries.texts(distinct), clusters.cluster_of(queries.ids.take(pa.array(distinct))).tolist()):
        topics.setdefault(text, int(cluster))
    return dataset, topics
