"""Tests for st_tasb.prepare.clusters: spherical k-means query clusters, lookups, persistence, and fitting a real model."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest

from st_tasb.data.beir import load_beir
from st_tasb.prepare.clusters import CENTROIDS_FILE, SETTINGS_FILE, QueryClusters


def _blobs(n_blobs: int, per_blob: int, dim: int, seed: int, sign_pairs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Points along orthonormal directions (or +/- one direction), random lengths, small noise; returns (x, blob)."""
    rng = np.random.default_rng(seed)
    if sign_pairs:
        direction = rng.standard_normal(dim)
        directions = np.stack([direction, -direction]) / np.linalg.norm(direction)
    else:
        directions = np.linalg.qr(rng.standard_normal((dim, n_blobs)))[0].T
    blob = np.repeat(np.arange(n_blobs), per_blob)
    lengths = rng.uniform(1.0, 3.0, size=(len(blob), 1))
    x = directions[blob] * lengths + 0.05 * rng.standard_normal((len(blob), dim))
    order = rng.permutation(len(blob))  # interleave the blobs so row order carries no hint
    return x[order].astype(np.float32), blob[order]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two labelings group the items identically, whatever the label numbers."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_separated_blobs_are_recovered():
    """Guards against a wrong id <-> row alignment or renumbering that scrambles an obvious partition."""
    x, blob = _blobs(n_blobs=6, per_blob=30, dim=24, seed=3)
    ids = [f"q{i}" for i in range(len(x))]
    # random-init k-means can settle in a local optimum; restarts (kept by objective) make this exact
    clusters = QueryClusters.fit_embeddings(x, ids, k=6, seed=0, faiss_params={"nredo": 10})
    assert clusters.n_clusters == 6
    assert _same_partition(clusters.cluster_of(ids), blob)
    assert clusters.settings["faiss_params"] == {"nredo": 10}


def test_opposite_blobs_are_recovered_with_default_settings():
    """Guards against the default (paper) settings mis-clustering two antipodal topics."""
    x, blob = _blobs(n_blobs=2, per_blob=50, dim=16, seed=5, sign_pairs=True)
    clusters = QueryClusters.fit_embeddings(x, np.arange(len(x)), k=2)
    assert _same_partition(clusters.assignments, blob)


def test_assignment_is_argmax_inner_product_to_unit_centroids():
    """Guards against L2 assignment, stale (pre-update) assignments, or centroids that are not unit-norm."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((600, 16)) * rng.uniform(0.5, 4.0, size=(600, 1))).astype(np.float32)
    clusters = QueryClusters.fit_embeddings(x, np.arange(600), k=25, n_iter=5)
    centroids = clusters.centroids
    assert centroids.dtype == np.float32 and centroids.shape == (clusters.n_clusters, 16)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    expected = np.argmax(x.astype(np.float64) @ centroids.astype(np.float64).T, axis=1)
    assert clusters.assignments.dtype == np.int32
    np.testing.assert_array_equal(clusters.assignments, expected)


def test_as_many_clusters_as_queries_still_gives_unit_centroids():
    """Guards against faiss' n == k shortcut (points copied as centroids) leaking unnormalised centroids."""
    x = np.diag(np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)) + 0.1
    clusters = QueryClusters.fit_embeddings(x, ["a", "b", "c", "d"], k=4)
    np.testing.assert_allclose(np.linalg.norm(clusters.centroids, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clusters.assignments, np.argmax(x @ clusters.centroids.T, axis=1))


def test_empty_clusters_are_dropped_and_numbering_is_compact():
    """Guards against keeping empty clusters (batches from nothing) or gaps in the cluster numbers."""
    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((3, 8)).astype(np.float32)
    x = np.repeat(distinct, 4, axis=0)  # 3 distinct points: at most 3 of the k=5 clusters can be used
    clusters = QueryClusters.fit_embeddings(x, np.arange(12), k=5)
    n = clusters.n_clusters
    assert n <= 3
    assert sorted(set(clusters.assignments.tolist())) == list(range(n))
    assert (clusters.sizes() > 0).all() and clusters.sizes().sum() == 12
    assert clusters.centroids.shape == (n, 8)
    assert (clusters.assignments.reshape(3, 4) == clusters.assignments.reshape(3, 4)[:, :1]).all()
    assert clusters.settings["k"] == 5 and clusters.settings["n_clusters"] == n
    expected = np.argmax(x @ clusters.centroids.T, axis=1)
    np.testing.assert_array_equal(clusters.assignments, expected)


def test_from_assignments_renumbers_labels_and_keeps_their_centroids():
    """Guards against renumbering that reorders labels or pairs a cluster with another label's centroid."""
    centroids = np.arange(20, dtype=np.float32).reshape(10, 2)
    clusters = QueryClusters.from_assignments(["a", "b", "c", "d"], [7, 3, 7, 9], centroids=centroids)
    assert clusters.assignments.tolist() == [1, 0, 1, 2]
    np.testing.assert_array_equal(clusters.centroids, centroids[[3, 7, 9]])
    assert clusters.settings == {"n_queries": 4, "n_clusters": 3}


def test_same_seed_gives_same_clustering():
    """Guards against unseeded randomness (clusters that change between runs of the same recipe)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 12)).astype(np.float32)
    first = QueryClusters.fit_embeddings(x, np.arange(400), k=15, seed=7)
    second = QueryClusters.fit_embeddings(x, np.arange(400), k=15, seed=7)
    np.testing.assert_array_equal(first.assignments, second.assignments)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    assert first.settings["seed"] == 7 and first.settings["n_iter"] == 10


@pytest.mark.parametrize(
    ("embeddings", "ids", "k", "kwargs", "message"),
    [
        (np.ones((3, 2)), [1, 2, 3], 4, {}, "k must be between 1 and the number of queries"),
        (np.ones((3, 2)), [1, 2, 3], 0, {}, "k must be between 1"),
        (np.ones((3, 2)), [1, 2], 2, {}, "3 embedding rows but 2 query ids"),
        (np.ones(3), [1, 2, 3], 2, {}, "2-D"),
        (np.ones((3, 2)), ["a", "b", "a"], 2, {}, "unique.*'a'"),
        (np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0]]), ["a", "b", "c"], 2, {}, "row 1 \\(query id 'b'\\)"),
        (np.ones((3, 2)), [1, 2, 3], 2, {"n_iter": 0}, "n_iter"),
        (np.ones((3, 2)), [1, 2, 3], 2, {"faiss_params": {"spherical": False}}, "spherical"),
    ],
)
def test_fit_embeddings_rejects_bad_input(embeddings, ids, k, kwargs, message):
    """Guards against bad input reaching faiss (crashes, silent nonsense) instead of a clear error."""
    with pytest.raises(ValueError, match=message):
        QueryClusters.fit_embeddings(embeddings, ids, k, **kwargs)


@pytest.mark.parametrize(
    ("ids", "assignments", "message"),
    [
        ([1, 2], [0, 0, 1], "3 assignments but 2 query ids"),
        ([1, 2], [0, -1], "negative.*query 2"),
        ([1, 2], [0.0, 1.0], "integer"),
    ],
)
def test_from_assignments_rejects_bad_input(ids, assignments, message):
    """Guards against silently accepting unclustered (-1) queries or misaligned labels."""
    with pytest.raises(ValueError, match=message):
        QueryClusters.from_assignments(ids, assignments)


def test_constructor_requires_compact_numbering():
    """Guards against a clustering with an empty cluster slipping in through the constructor."""
    with pytest.raises(ValueError, match="from_assignments"):
        QueryClusters(["a", "b"], [0, 2])


def test_save_load_round_trip(tmp_path):
    """Guards against losing ids (or their type), assignments, centroids or settings on disk."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    clusters = QueryClusters.fit_embeddings(x, np.arange(100, 150), k=4, settings={"model": "toy"})
    loaded = QueryClusters.load(clusters.save(tmp_path / "clusters"))
    assert loaded.query_ids.type == pa.int64()
    assert loaded.query_ids.equals(clusters.query_ids)
    np.testing.assert_array_equal(loaded.assignments, clusters.assignments)
    np.testing.assert_array_equal(loaded.centroids, clusters.centroids)
    assert loaded.settings == clusters.settings and loaded.settings["model"] == "toy"
    np.testing.assert_array_equal(loaded.cluster_of(["120", 149]), clusters.assignments[[20, 49]])

    without_centroids = QueryClusters.from_assignments(["x", "y"], [0, 1])
    reloaded = QueryClusters.load(without_centroids.save(tmp_path / "plain"))
    assert reloaded.centroids is None and reloaded.query_ids.to_pylist() == ["x", "y"]


def test_load_rejects_missing_or_incomplete_folders(tmp_path):
    """Guards against loading half a clustering (e.g. an interrupted save) without noticing."""
    with pytest.raises(FileNotFoundError, match="not found"):
        QueryClusters.load(tmp_path / "nowhere")
    x = np.eye(3, dtype=np.float32)
    folder = QueryClusters.fit_embeddings(x, ["a", "b", "c"], k=3).save(tmp_path / "c")
    (folder / CENTROIDS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=CENTROIDS_FILE):
        QueryClusters.load(folder)
    (folder / SETTINGS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=SETTINGS_FILE):
        QueryClusters.load(folder)


def test_cluster_of_handles_unknown_and_mixed_type_ids():
    """Guards against crashes or wrong hits for unknown ids, and "123" vs 123 treated as different ids."""
    int_ids = QueryClusters.from_assignments([10, 20, 30], [0, 1, 1])
    assert int_ids.cluster_of(["20", 30, "abc", 40]).tolist() == [1, 1, -1, -1]
    assert int_ids.cluster_of(np.array([30, 10], dtype=np.int32)).tolist() == [1, 0]
    assert int_ids.cluster_of(pa.chunked_array([[10], [99]])).dtype == np.int32

    str_ids = QueryClusters.from_assignments(["7", "8", "x"], [1, 0, 0])
    assert str_ids.cluster_of([7, "8", "x", 9, "y"]).tolist() == [1, 0, 0, -1, -1]
    assert str_ids.cluster_of([]).tolist() == []


def test_sizes_stats_and_members():
    """Guards against wrong cluster bookkeeping (sizes, the share of queries in small clusters, membership)."""
    ids = [f"q{i}" for i in range(10)]
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2]  # sizes 6, 3, 1
    clusters = QueryClusters.from_assignments(ids, labels)
    assert clusters.sizes().tolist() == [6, 3, 1]
    stats = clusters.stats(batch_size=4)
    assert stats == {
        "n_queries": 10,
        "n_clusters": 3,
        "min_size": 1,
        "median_size": 3.0,
        "mean_size": 10 / 3,
        "max_size": 6,
        "batch_size": 4,
        "share_in_small_clusters": 0.4,  # 3 + 1 of 10 queries sit in clusters of fewer than 4
    }
    assert clusters.members(1).to_pylist() == ["q6", "q7", "q8"]
    with pytest.raises(IndexError):
        clusters.members(3)


@pytest.mark.parametrize("as_pairs", [False, True])
def test_fit_skips_and_reports_absent_ids(small_student, caplog, as_pairs):
    """Guards against absent requested ids vanishing silently, or dict / (id, text) inputs being mishandled."""
    queries = {"a": "heart disease risk", "b": "cardiac arrest", "c": "gene expression", "d": "dna methylation"}
    source = list(queries.items()) if as_pairs else queries
    with caplog.at_level(logging.WARNING, logger="st_tasb.prepare.clusters"):
        clusters = QueryClusters.fit(
            small_student, source, k=2, only_ids=["d", "a", "zz1", "a", "zz2"], show_progress_bar=False
        )
    assert clusters.query_ids.to_pylist() == ["a", "d"]
    assert "2 of the 4 requested query ids are not in" in caplog.text and "zz1" in caplog.text
    with pytest.raises(ValueError, match="none of the 1 requested"):
        QueryClusters.fit(small_student, source, k=1, only_ids=["zz"], show_progress_bar=False)


def test_fit_real_student_on_scifact(small_student, scifact_dir):
    """Guards against a broken encode -> cluster pipeline on real data, an unapplied or unrestored length cap."""
    data = load_beir(scifact_dir, "train")
    store_order = data.queries.ids.to_pylist()
    wanted = set(sorted(data.qrels)[:200])
    ids = [query_id for query_id in store_order if query_id in wanted]
    assert len(ids) == 200
    texts = [data.queries[query_id] for query_id in ids]
    original_length = small_student.max_seq_length

    clusters = QueryClusters.fit(
        small_student, data.queries, k=12, max_seq_length=8, only_ids=sorted(wanted), show_progress_bar=False
    )
    assert small_student.max_seq_length == original_length == 64
    assert clusters.query_ids.to_pylist() == ids
    assert (clusters.cluster_of(ids) >= 0).all()
    assert 1 < clusters.n_clusters <= 12 and (clusters.sizes() > 0).all()
    assert clusters.settings["max_seq_length"] == 8 and clusters.settings["n_queries"] == 200

    # the same pipeline by hand: the 8-token cap must have been applied while encoding
    small_student.max_seq_length = 8
    capped = small_student.encode_query(texts, batch_size=256, convert_to_numpy=True)
    small_student.max_seq_length = original_length
    uncapped = small_student.encode_query(texts, batch_size=256, convert_to_numpy=True)
    assert not np.allclose(capped, uncapped)
    by_hand = QueryClusters.fit_embeddings(capped, ids, k=12)
    np.testing.assert_array_equal(clusters.assignments, by_hand.assignments)
    np.testing.assert_array_equal(clusters.centroids, by_hand.centroids)
