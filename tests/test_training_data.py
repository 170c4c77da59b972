"""build_training_dataset: sorting, lazy text resolution, clusters, indices, errors, memory-mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from st_tasb.data.texts import TextStore, UnknownIdError
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.training.dataset import build_training_dataset, sort_by_query_and_margin


@pytest.fixture(scope="module")
def toy(msmarco_toy: Path):
    """The 100 real MS MARCO toy triples with ids; scores are passage lengths (deterministic, not from the code)."""
    rows = [line.rstrip("\n").split("\t") for line in msmarco_toy.read_text(encoding="utf-8").splitlines()]
    query_ids = {q: i for i, q in enumerate(dict.fromkeys(r[0] for r in rows))}
    passage_ids = {p: 1000 + i for i, p in enumerate(dict.fromkeys(t for r in rows for t in r[1:]))}
    queries = TextStore.from_records([(i, q) for q, i in query_ids.items()], name="queries")
    corpus = TextStore.from_records([(i, p) for p, i in passage_ids.items()], name="corpus")
    triples = [(query_ids[q], passage_ids[p], passage_ids[n], float(len(p) % 17), float(len(n) % 13)) for q, p, n in rows]
    table = TeacherScoreTable.from_scores(*map(list, zip(*triples)))
    return queries, corpus, table, rows


def test_rows_resolve_to_their_own_texts_and_margins(toy) -> None:
    """Guards the lazy id -> text transform: every row reads the query/passages and margin of its table row."""
    queries, corpus, table, rows = toy
    dataset = build_training_dataset(table, queries, corpus)
    expected = sorted(((q, p, n, np.float32(len(p) % 17) - np.float32(len(n) % 13)) for q, p, n in rows))
    got = sorted((r["query"], r["positive"], r["negative"], np.float32(r["label"])) for r in dataset)
    assert got == expected
    assert set(dataset[0]) == {"query", "positive", "negative", "label"}


def test_rows_are_grouped_by_query_and_sorted_by_margin(toy) -> None:
    """Guards the sampler's precondition: contiguous query runs with ascending margins."""
    queries, corpus, table, _ = toy
    data = build_training_dataset(table, queries, corpus).data
    query_index = data.column("query_index").to_numpy()
    margin = data.column("margin").to_numpy()
    assert (np.diff(query_index) >= 0).all()
    same_query = np.diff(query_index) == 0
    assert (np.diff(margin)[same_query] >= 0).all()
    assert (data.column("cluster").to_numpy() == -1).all()


def test_with_indices_exposes_positions_into_the_stores(toy) -> None:
    """Guards the cached-teacher path: the indices point at the very texts of the row."""
    queries, corpus, table, _ = toy
    dataset = build_training_dataset(table, queries, corpus, with_indices=True)
    for row in dataset.select(range(0, len(dataset), 7)):
        assert queries.texts([row["query_index"]])[0] == row["query"]
        assert corpus.texts([row["positive_index"], row["negative_index"]]) == [row["positive"], row["negative"]]


def test_cluster_column_follows_the_clustering(toy) -> None:
    """Guards cluster propagation: each row carries its query's cluster; unclustered queries are named."""
    queries, corpus, table, _ = toy
    ids = queries.ids.to_pylist()
    clusters = QueryClusters.from_assignments(ids, [i % 3 for i in range(len(ids))])
    data = build_training_dataset(table, queries, corpus, clusters).data
    query_ids = queries.ids.to_numpy()[data.column("query_index").to_numpy()]
    np.testing.assert_array_equal(data.column("cluster").to_numpy(), clusters.cluster_of(query_ids))
    partial = QueryClusters.from_assignments(ids[1:], [0] * (len(ids) - 1))
    with pytest.raises(ValueError, match=rf"1 query\(ies\) of the table have no cluster, e.g. \[{ids[0]}\]"):
        build_training_dataset(table, queries, corpus, partial)


def test_unknown_ids_are_named(toy) -> None:
    """Guards against silently dropping pairs whose passage is missing from the corpus."""
    queries, corpus, _, _ = toy
    table = TeacherScoreTable.from_scores([0, 0], [1000, 999999], [1001, 1002], [1.0, 2.0], [0.0, 0.0])
    with pytest.raises(UnknownIdError, match="999999"):
        build_training_dataset(table, queries, corpus)


def test_cache_dir_gives_a_memory_mapped_dataset(toy, tmp_path: Path) -> None:
    """Guards the MS MARCO path: with cache_dir the training table lives on disk, not in memory."""
    queries, corpus, table, _ = toy
    dataset = build_training_dataset(table, queries, corpus, cache_dir=tmp_path / "train")
    assert dataset.cache_files and all(Path(f["filename"]).is_relative_to(tmp_path) for f in dataset.cache_files)
    assert len(dataset) == len(table) and dataset[0]["query"]


def test_one_key_sort_equals_lexsort_including_signed_zero_and_negatives() -> None:
    """Guards the packed 64-bit sort key: same order as numpy's two-key lexsort for any float32 margins."""
    rng = np.random.default_rng(0)
    query = rng.integers(0, 500, 50_000).astype(np.int32)
    margin = (rng.normal(size=50_000) * 10).astype(np.float32)
    margin[::5] = 0.0
    margin[::7] = -0.0
    margin[::11] = np.float32(-3.5)
    order = sort_by_query_and_margin(query, margin)
    reference = np.lexsort((margin, query))
    np.testing.assert_array_equal(query[order], query[reference])
    np.testing.assert_array_equal(margin[order], margin[reference])


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_threaded_sort_equals_lexsort(threads: int) -> None:
    """Guards the query-range split of the threaded sort: ranges in query order, skewed query sizes, empty ranges
    (7 threads over 3 queries) and every row exactly once."""
    rng = np.random.default_rng(1)
    query = np.concatenate([np.zeros(30_000, dtype=np.int32), rng.integers(0, 3, 20_000).astype(np.int32)])
    rng.shuffle(query)
    margin = rng.normal(size=len(query)).astype(np.float32)
    order = sort_by_query_and_margin(query, margin, threads=threads)
    assert np.array_equal(np.sort(order), np.arange(len(query)))
    reference = np.lexsort((margin, query))
    np.testing.assert_array_equal(query[order], query[reference])
    np.testing.assert_array_equal(margin[order], margin[reference])


def test_many_chunk_id_columns_find_the_same_positions() -> None:
    """Guards the grouped lookup of a column in many small chunks (Parquet-loaded tables): same positions as
    one array, unknown ids still -1."""
    from st_tasb.data.texts import IdIndex, _chunk_groups

    index = IdIndex(np.arange(100, 200))
    requested = np.concatenate([np.arange(150, 250), np.arange(99, 120)])
    chunked = pa.chunked_array([requested[i : i + 7] for i in range(0, len(requested), 7)])
    expected = index.positions(requested)
    np.testing.assert_array_equal(index.positions(chunked), expected)
    assert [sum(map(len, g)) for g in _chunk_groups(chunked.chunks, 50)] == [56, 56, 9]


def test_consecutive_integer_ids_are_their_own_positions() -> None:
    """Guards the table-free lookup of ids low, low + 1, ... (MS MARCO passage ids): the same positions as a
    general index, unknown ids -1 on both sides of the range, and repeated ids still refused."""
    from st_tasb.data.texts import IdIndex

    consecutive, shuffled = IdIndex(np.arange(7, 107)), IdIndex(np.random.default_rng(0).permutation(np.arange(7, 107)))
    assert consecutive._integer.consecutive and not shuffled._integer.consecutive
    requested = np.array([7, 106, 6, 107, 50, -3])
    assert consecutive.positions(requested).tolist() == [0, 99, -1, -1, 43, -1]
    order = np.asarray(shuffled.ids)
    assert order[shuffled.positions(requested[[0, 1, 4]])].tolist() == [7, 106, 50]
    with pytest.raises(ValueError, match="repeated ids include \\[8\\]"):
        IdIndex(np.array([7, 8, 8, 9]))


def test_equal_margins_keep_row_order_whatever_the_threads() -> None:
    """Guards reproducibility across machines: rows with the same query and margin come out in row order, so a
    different number of sorting threads cannot change the training dataset (and the batches of a seed)."""
    rng = np.random.default_rng(2)
    query = rng.integers(0, 50, 60_000).astype(np.int32)
    margin = rng.integers(-3, 4, 60_000).astype(np.float32)  # a few distinct values: ties everywhere
    reference = np.lexsort((np.arange(len(query)), margin, query))
    for threads in (None, 1, 2, 5):
        np.testing.assert_array_equal(sort_by_query_and_margin(query, margin, threads=threads), reference)
