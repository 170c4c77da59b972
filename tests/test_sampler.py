"""TopicAwareBalancedBatchSampler and PairIndex: batch invariants, bins, determinism, ablations, errors."""

from __future__ import annotations

import math
from collections import Counter
from functools import partial

import numpy as np
import pytest
from datasets import Dataset

from st_tasb.training.sampler import PairIndex, TopicAwareBalancedBatchSampler


def make_dataset(pairs_per_query: list[int], cluster_of_query: list[int], seed: int = 0) -> Dataset:
    """A sampler-ready dataset: rows grouped by query, margins random but sorted within each query."""
    rng = np.random.default_rng(seed)
    query_index = np.repeat(np.arange(len(pairs_per_query)), pairs_per_query).astype(np.int32)
    margin = rng.normal(size=len(query_index)).astype(np.float32)
    margin = margin[np.lexsort((margin, query_index))]
    cluster = np.repeat(cluster_of_query, pairs_per_query).astype(np.int32)
    return Dataset.from_dict({"query_index": query_index, "margin": margin, "cluster": cluster})


def sampler_for(dataset: Dataset, batch_size: int, drop_last: bool = True, seed: int = 13, **kwargs):
    return TopicAwareBalancedBatchSampler(dataset, batch_size=batch_size, drop_last=drop_last, seed=seed, **kwargs)


def queries_of(dataset: Dataset, batch: list[int]) -> list[int]:
    column = dataset.data.column("query_index").to_numpy()
    return column[batch].tolist()


def clusters_of(dataset: Dataset, batch: list[int]) -> set[int]:
    return set(dataset.data.column("cluster").to_numpy()[batch].tolist())


@pytest.fixture(scope="module")
def uneven() -> Dataset:
    """103 queries with 1..12 pairs in 9 clusters of uneven size (3..20 queries)."""
    rng = np.random.default_rng(1)
    sizes = [3, 20, 7, 15, 9, 11, 18, 6, 14]
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    return make_dataset(rng.integers(1, 13, size=len(clusters)).tolist(), clusters.tolist())


@pytest.mark.parametrize("batch_size", [1, 4, 8, 10, 32, 103])
@pytest.mark.parametrize("drop_last", [True, False])
def test_every_batch_is_full_and_len_is_exact(uneven: Dataset, batch_size: int, drop_last: bool) -> None:
    """Guards against a short last batch or a __len__ that differs from the batches yielded (hangs DDP)."""
    sampler = sampler_for(uneven, batch_size, drop_last=drop_last)
    batches = list(sampler)
    expected = 103 // batch_size if drop_last else math.ceil(103 / batch_size)
    assert len(batches) == len(sampler) == expected
    assert all(len(batch) == batch_size for batch in batches)


@pytest.mark.parametrize("batch_size", [4, 10, 32])
def test_each_query_at_most_once_per_epoch(uneven: Dataset, batch_size: int) -> None:
    """Guards against queries repeated inside an epoch (drop_last) and against queries never visited."""
    sampler = sampler_for(uneven, batch_size, drop_last=True)
    seen = [q for batch in sampler for q in queries_of(uneven, batch)]
    assert len(seen) == len(set(seen)) == (103 // batch_size) * batch_size
    topped_up = sampler_for(uneven, batch_size, drop_last=False)
    counts = Counter(q for batch in topped_up for q in queries_of(uneven, batch))
    assert set(counts) == set(range(103))
    assert sum(c - 1 for c in counts.values()) == len(topped_up) * batch_size - 103
    for batch in topped_up:  # a top-up never repeats a query inside one batch
        assert len(set(queries_of(uneven, batch))) == batch_size


def test_one_cluster_per_batch_when_clusters_divide_evenly() -> None:
    """Guards against topic mixing: clusters whose sizes are multiples of b give pure batches."""
    sizes = [16, 8, 24, 8, 32]
    clusters = np.repeat(np.arange(len(sizes)), sizes).tolist()
    dataset = make_dataset([3] * sum(sizes), clusters)
    for epoch in range(3):
        sampler = sampler_for(dataset, 8)
        sampler.set_epoch(epoch)
        assert all(len(clusters_of(dataset, batch)) == 1 for batch in sampler)


def test_n_clusters_per_batch_fill_each_slice_from_one_cluster() -> None:
    """Guards the clusters_per_batch option: each b/n slice of a batch comes from a single cluster."""
    sizes = [12, 6, 18, 24, 6, 30]
    clusters = np.repeat(np.arange(len(sizes)), sizes).tolist()
    dataset = make_dataset([2] * sum(sizes), clusters)
    sampler = sampler_for(dataset, 12, clusters_per_batch=2)
    batches = list(sampler)
    assert len(batches) == sum(sizes) // 12
    mixed = 0
    for batch in batches:
        first, second = clusters_of(dataset, batch[:6]), clusters_of(dataset, batch[6:])
        assert len(first) == len(second) == 1
        mixed += first != second
    assert mixed > len(batches) // 2  # most batches hold two different topics


def test_full_chunks_are_single_cluster_and_only_remainders_mix() -> None:
    """Guards the paper's composition: a cluster of >= b/n queries yields floor(size / (b/n)) single-cluster
    chunks, and only the remainders (size mod b/n of each cluster) are pooled into mixed fill-up chunks."""
    sizes = [10, 13, 25, 11, 17, 4]  # b = 10: remainders 0, 3, 5, 1, 7, 4 -> 20 queries in two fill-up chunks
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    dataset = make_dataset([2] * sum(sizes), clusters.tolist())
    for epoch in range(5):
        sampler = sampler_for(dataset, 10, drop_last=True)
        sampler.set_epoch(epoch)
        batches = sampler.epoch_queries()
        batch_clusters = clusters[batches]
        pure = (batch_clusters == batch_clusters[:, :1]).all(axis=1)
        assert pure.sum() == sum(size // 10 for size in sizes) == 6
        per_cluster = Counter(int(batch_clusters[i, 0]) for i in np.flatnonzero(pure))
        assert per_cluster == Counter({0: 1, 1: 1, 2: 2, 3: 1, 4: 1})
        for batch in batches[~pure]:  # a fill-up chunk holds remainder queries only, largest remainders first
            held = Counter(clusters[batch].tolist())
            assert all(count <= size % 10 for cluster, count in held.items() for size in [sizes[cluster]])
            assert len(held) <= 3


def test_composition_reports_single_cluster_share_and_top_share() -> None:
    """Guards the composition report against a hand count: 6 pure batches of 8, 2 fill-up batches."""
    sizes = [10, 13, 25, 11, 17, 4]
    dataset = make_dataset([2] * sum(sizes), np.repeat(np.arange(len(sizes)), sizes).tolist())
    sampler = sampler_for(dataset, 10, drop_last=True)
    composition = sampler.composition()
    clusters = np.repeat(np.arange(len(sizes)), sizes)[sampler.epoch_queries()]
    tops = [max(Counter(row.tolist()).values()) / 10 for row in clusters]
    assert composition.n_batches == 8 and composition.single_cluster_share == 6 / 8
    assert composition.mean_top_cluster_share == pytest.approx(np.mean(tops))
    random = sampler_for(dataset, 10, topic_aware=False).composition()
    assert random.single_cluster_share < composition.single_cluster_share


@pytest.mark.parametrize("clusters_per_batch", [1, 2, 4])
@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("topic_aware", [True, False])
def test_no_query_twice_in_a_batch(clusters_per_batch: int, drop_last: bool, topic_aware: bool) -> None:
    """Guards against a repeated query inside a batch (a false in-batch negative), whatever n and drop_last,
    on tiny tables where top-ups and fill-up chunks are most of the epoch."""
    for sizes in ([12], [5, 7], [3, 3, 2, 1, 3], [9, 1, 2], [6, 6, 6, 6, 1]):
        clusters = np.repeat(np.arange(len(sizes)), sizes).tolist()
        dataset = make_dataset([2] * sum(sizes), clusters)
        for batch_size in (4, 8):
            if batch_size > sum(sizes):
                continue
            sampler = sampler_for(dataset, batch_size, drop_last=drop_last, topic_aware=topic_aware,
                                  clusters_per_batch=clusters_per_batch)
            for epoch in range(4):
                sampler.set_epoch(epoch)
                batches = sampler.epoch_queries()
                assert batches.shape == (len(sampler), batch_size)
                assert all(len(set(batch)) == batch_size for batch in batches.tolist()), (sizes, batch_size)
                counts = Counter(batches.ravel().tolist())
                assert max(counts.values()) == 1 if drop_last else set(counts) == set(range(sum(sizes)))


def test_clusters_per_batch_joins_distinct_clusters() -> None:
    """Guards n > 1: the chunks of a batch come from n distinct clusters when no cluster dominates the epoch."""
    sizes = [8, 16, 8, 8, 16, 8, 8, 16, 8]
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    dataset = make_dataset([2] * sum(sizes), clusters.tolist())
    for n in (2, 4):
        sampler = sampler_for(dataset, 16, clusters_per_batch=n)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            for batch in clusters[sampler.epoch_queries()]:
                chunks = batch.reshape(n, -1)
                assert (chunks == chunks[:, :1]).all()  # every chunk of b/n is one cluster (sizes divide)
                assert len(set(chunks[:, 0].tolist())) == n


def test_topic_purity_beats_random_batches(uneven: Dataset) -> None:
    """Guards against the topic-aware order being silently ignored: far fewer clusters per batch than random."""
    aware = np.mean([len(clusters_of(uneven, b)) for b in sampler_for(uneven, 8)])
    random = np.mean([len(clusters_of(uneven, b)) for b in sampler_for(uneven, 8, topic_aware=False)])
    assert aware <= 2.0 < random


def test_same_seed_and_epoch_give_same_batches(uneven: Dataset) -> None:
    """Guards reproducibility: ranks and resumed runs rebuild the identical sequence from (seed, epoch)."""
    first, second = sampler_for(uneven, 8, seed=5), sampler_for(uneven, 8, seed=5)
    first.set_epoch(3)
    first.set_epoch(3)  # set twice per epoch by the Trainer: must be idempotent
    second.set_epoch(3)
    assert list(first) == list(second) == list(first)
    second.set_epoch(4)
    assert list(first) != list(second)
    assert list(sampler_for(uneven, 8, seed=6)) != list(sampler_for(uneven, 8, seed=5))


def test_ignores_torch_generator_state(uneven: Dataset) -> None:
    """Guards against rank-dependent randomness leaking in through the Trainer's shared torch generator."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = TopicAwareBalancedBatchSampler(uneven, 8, True, generator=generator, seed=2)
    torch.randint(0, 10, (100,), generator=generator)
    b = TopicAwareBalancedBatchSampler(uneven, 8, True, generator=generator, seed=2)
    assert list(a) == list(b)


def independent_bins(margins: np.ndarray, n_bins: int) -> np.ndarray:
    """Reference bin assignment of one query's margins, written out per element."""
    low, high = float(margins.min()), float(margins.max())
    if high == low:
        return np.zeros(len(margins), dtype=int)
    return np.array([min(int((m - low) * (n_bins / (high - low))), n_bins - 1) for m in margins.astype(np.float64)])


@pytest.mark.parametrize("n_bins", [1, 3, 10])
def test_pair_index_bins_match_per_query_reference(uneven: Dataset, n_bins: int) -> None:
    """Guards the vectorised bin construction against a per-query computation of equal-width bins."""
    query_index = uneven.data.column("query_index").to_numpy()
    margin = uneven.data.column("margin").to_numpy()
    index = PairIndex.build(query_index, margin, uneven.data.column("cluster").to_numpy(), n_bins)
    for q in range(index.n_queries):
        start, length = index.query_start[q], index.query_length[q]
        assert (query_index[start : start + length] == q).all() and (query_index == q).sum() == length
        reference = independent_bins(margin[start : start + length], n_bins)
        expected_runs = [int(c) for c in np.bincount(reference) if c]
        offset, count = index.query_bin_offset[q], index.query_bin_count[q]
        assert index.bin_length[offset : offset + count].tolist() == expected_runs
        assert index.bin_start[offset] == start


def test_balanced_pairs_are_uniform_over_non_empty_bins() -> None:
    """Guards balanced sampling: bins are drawn uniformly (not pairs), empty bins never, pairs inside a bin
    uniformly; uniform sampling instead follows the pair counts."""
    # one query: 90 pairs with margin ~0 (bin 0), 6 pairs at 5.0 (bin 5), 4 pairs at 10 (bin 9); bins 1-4,6-8 empty
    margin = np.concatenate([np.linspace(0.0, 0.5, 90), np.full(6, 5.0), np.full(4, 10.0)]).astype(np.float32)
    index = PairIndex.build(np.zeros(100, dtype=np.int64), margin, np.zeros(100, dtype=np.int64), n_bins=10)
    assert index.query_bin_count.tolist() == [3]
    rng = np.random.default_rng(0)
    draws = index.draw_pairs(np.zeros(60_000, dtype=np.int64), rng, balanced=True)
    share = np.array([(draws < 90).mean(), ((draws >= 90) & (draws < 96)).mean(), (draws >= 96).mean()])
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.01)
    inside = np.bincount(draws[draws < 90], minlength=90) / (draws < 90).sum()
    assert inside.min() > 0.5 / 90 and inside.max() < 1.5 / 90
    uniform = index.draw_pairs(np.zeros(60_000, dtype=np.int64), rng, balanced=False)
    np.testing.assert_allclose((uniform < 90).mean(), 0.9, atol=0.01)


def test_equal_margins_and_single_pairs_are_sampled_not_crashed() -> None:
    """Guards the original code's crash on equal margins: such a query has one bin and all its pairs are drawn."""
    margin = np.array([2.0, 2.0, 2.0, 2.0, 7.0], dtype=np.float32)  # query 0: 4 equal margins; query 1: one pair
    index = PairIndex.build(np.array([0, 0, 0, 0, 1]), margin, np.array([0, 0, 0, 0, 0]), n_bins=10)
    assert index.query_bin_count.tolist() == [1, 1]
    draws = index.draw_pairs(np.array([0] * 4000 + [1] * 10), np.random.default_rng(1))
    assert set(draws[:4000].tolist()) == {0, 1, 2, 3} and set(draws[4000:].tolist()) == {4}


def test_rows_drawn_belong_to_the_batch_queries(uneven: Dataset) -> None:
    """Guards against a pair outside its query: every row is one of its query's own rows."""
    query_index = uneven.data.column("query_index").to_numpy()
    for balanced in (True, False):
        sampler = sampler_for(uneven, 10, balanced=balanced)
        index = sampler.index
        for batch in sampler:
            for row in batch:
                q = query_index[row]
                assert index.query_start[q] <= row < index.query_start[q] + index.query_length[q]


def test_random_query_ablation_needs_no_clusters() -> None:
    """Guards the ablation switch: random batches work on a dataset built without clusters, topic-aware refuses."""
    dataset = make_dataset([2] * 20, [-1] * 20)
    assert len(list(sampler_for(dataset, 4, topic_aware=False))) == 5
    with pytest.raises(ValueError, match="no query clusters"):
        sampler_for(dataset, 4)


def test_partial_is_accepted_by_the_trainer_hook(uneven: Dataset) -> None:
    """Guards the documented partial(...) form: the Trainer calls it with the DefaultBatchSampler signature."""
    factory = partial(TopicAwareBalancedBatchSampler, n_bins=3, clusters_per_batch=2)
    sampler = factory(uneven, batch_size=8, drop_last=True, valid_label_columns=None, generator=None, seed=1)
    assert sampler.n_bins == 3 and sampler.clusters_per_batch == 2 and len(list(sampler)) == len(sampler)


@pytest.mark.parametrize(
    ("dataset", "kwargs", "message"),
    [
        (Dataset.from_dict({"query": ["a"], "label": [1.0]}), {}, "lacks the columns"),
        (make_dataset([2] * 3, [0] * 3), {}, "fewer than one batch"),
        (make_dataset([2] * 12, [0] * 12), {"clusters_per_batch": 3, "batch_size": 8}, "multiple of clusters_per_batch"),
        (
            Dataset.from_dict({"query_index": [1, 0], "margin": [0.0, 0.0], "cluster": [0, 0]}),
            {"batch_size": 1},
            "not grouped by query",
        ),
        (
            Dataset.from_dict({"query_index": [0, 0], "margin": [1.0, 0.0], "cluster": [0, 0]}),
            {"batch_size": 1},
            "not sorted",
        ),
        (
            Dataset.from_dict({"query_index": [0, 0], "margin": [0.0, float("nan")], "cluster": [0, 0]}),
            {"batch_size": 1},
            "NaN",
        ),
    ],
)
def test_bad_datasets_raise_clear_errors(dataset: Dataset, kwargs: dict, message: str) -> None:
    """Guards against silent nonsense on malformed input: each case names what is wrong."""
    kwargs = {"batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        TopicAwareBalancedBatchSampler(dataset, drop_last=True, seed=0, **kwargs)


def with_positives(dataset: Dataset, positive_of_query: np.ndarray) -> Dataset:
    """``dataset`` with a ``positive_index`` column: every pair of a query has the query's positive."""
    query_index = dataset.data.column("query_index").to_numpy()
    return dataset.add_column("positive_index", positive_of_query[query_index].astype(np.int32))


def shared_positive_rows(batches: np.ndarray, positive_of_query: np.ndarray) -> int:
    """Rows, over all batches, whose positive another row of their batch also has."""
    positives = positive_of_query[batches]
    ordered = np.sort(positives, axis=1)
    repeated = np.zeros(ordered.shape, dtype=bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeated[:, :-1] |= repeated[:, 1:]
    return int(repeated.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separate_positives_keeps_queries_of_one_positive_in_different_batches(seed: int) -> None:
    """Guards separate_positives: in clusters of G >= b positives with m queries each (G * m a multiple of b, so every
    batch is a single-cluster chunk and a cluster fills G * m / b >= m batches), no batch holds a positive twice;
    without the option, many batches do."""
    rng = np.random.default_rng(seed)
    batch_size, shapes = 8, [(8, 3), (12, 2), (8, 5), (16, 4)]  # (G positives, m queries each) per cluster
    cluster = np.concatenate([np.full(g * m, c) for c, (g, m) in enumerate(shapes)])
    first = np.cumsum([0] + [g for g, _ in shapes])
    positive = np.concatenate([first[c] + np.repeat(np.arange(g), m) for c, (g, m) in enumerate(shapes)])
    order = rng.permutation(len(cluster))  # queries in random order: nothing follows from their positions
    cluster, positive = cluster[order], positive[order]
    dataset = with_positives(make_dataset(rng.integers(1, 4, size=len(cluster)).tolist(), cluster.tolist()), positive)
    separated = sampler_for(dataset, batch_size, seed=seed, separate_positives=True)
    plain = sampler_for(dataset, batch_size, seed=seed)
    for epoch in range(3):
        batches = separated.epoch_queries(epoch)
        assert sorted(batches.ravel().tolist()) == list(range(len(cluster)))  # every query once per epoch
        assert (cluster[batches] == cluster[batches][:, :1]).all()  # still one cluster per batch
        assert shared_positive_rows(batches, positive) == 0
        assert shared_positive_rows(plain.epoch_queries(epoch), positive) > len(cluster) // 4
        assert (separated.epoch_batches(epoch) == sampler_for(dataset, batch_size, seed=seed, separate_positives=True)
                .epoch_batches(epoch)).all()  # a function of (seed, epoch)
    assert not (separated.epoch_queries(0) == separated.epoch_queries(1)).all()


def test_separate_positives_spreads_as_far_as_the_cluster_allows() -> None:
    """Guards the layout when a positive has more queries than its cluster fills batches: 6 queries of positive 0
    over 2 batches must share them, 3 in each (the fewest possible), and the positives with 4 queries 2 in each."""
    cluster = np.zeros(16, dtype=np.int64)  # two batches of 8: positives 0 x 6, 1, 2, and 3 x 4, 4 x 4
    positive = np.array([0] * 6 + [1, 2] + [3] * 4 + [4] * 4)
    dataset = with_positives(make_dataset([2] * 16, cluster.tolist()), positive)
    for seed in range(5):
        batches = sampler_for(dataset, 8, seed=seed, separate_positives=True).epoch_queries(0)
        for batch in batches:
            copies = Counter(positive[batch].tolist())
            assert (copies[0], copies[3], copies[4], copies[1] + copies[2]) == (3, 2, 2, 1)


def test_separate_positives_needs_a_teacher_recipe() -> None:
    """Guards the settings check: mnrl's own sampler already keeps texts apart, so the option is refused there."""
    from st_tasb.training.settings import TrainingSettings

    assert TrainingSettings(recipe="st-tasb", separate_positives=True).sampler_kwargs()["separate_positives"]
    with pytest.raises(ValueError, match="separate_positives"):
        TrainingSettings(recipe="mnrl", separate_positives=True)
