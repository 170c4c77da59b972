"""TopicAwareBatchSampler: topic-aware batches of plain sentence-transformers datasets, no text twice in a batch."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from sentence_transformers.sentence_transformer.losses import (
    CachedGISTEmbedLoss,
    CachedMultipleNegativesRankingLoss,
    GISTEmbedLoss,
    MarginMSELoss,
    MultipleNegativesRankingLoss,
)
from transformers import TrainerCallback

from st_tasb.data.beir import load_beir
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.training.anchor_sampler import TopicAwareBatchSampler
from st_tasb.training.topic_batches import occurrence

LABELS = ["label", "score"]  # what the Trainer passes as valid_label_columns


def pairs(sizes: list[int], repeats: dict[int, int] | None = None, shared: int = 0) -> tuple[Dataset, dict[str, int]]:
    """(anchor, positive) rows: ``sizes[c]`` anchors in cluster c; anchor i of ``repeats`` has that many rows
    (different positives); the first ``shared`` anchors of every cluster share one positive per cluster."""
    anchors, positives, topics = [], [], {}
    index = 0
    for cluster, size in enumerate(sizes):
        for k in range(size):
            anchor = f"anchor {index}"
            topics[anchor] = cluster
            for r in range((repeats or {}).get(index, 1)):
                anchors.append(anchor)
                positives.append(f"shared positive {cluster}" if k < shared and r == 0 else f"positive {index}.{r}")
            index += 1
    return Dataset.from_dict({"anchor": anchors, "positive": positives}), topics


def texts_of(dataset: Dataset, batch: list[int]) -> list[str]:
    return [value for i in batch for column, value in dataset[int(i)].items() if column not in LABELS]


def test_distinct_texts_give_the_topic_composition_exactly() -> None:
    """Guards the composition with nothing to separate: full chunks of b rows are single-cluster and only the
    remainders (size mod b per cluster) mix, as for the TAS-B sampler (sizes 10, 13, 25, 11, 17, 4 at b = 10:
    six single-cluster batches, per cluster 1, 1, 2, 1, 1)."""
    sizes = [10, 13, 25, 11, 17, 4]
    dataset, topics = pairs(sizes)
    cluster = np.array([topics[a] for a in dataset["anchor"]])
    for epoch in range(4):
        sampler = TopicAwareBatchSampler(dataset, 10, True, LABELS, seed=3, clusters=topics)
        sampler.set_epoch(epoch)
        batches = sampler.epoch_batches()
        assert batches.shape == (len(sampler), 10) == (8, 10)
        of_batch = cluster[batches]
        pure = (of_batch == of_batch[:, :1]).all(axis=1)
        assert Counter(int(of_batch[i, 0]) for i in np.flatnonzero(pure)) == Counter({0: 1, 1: 1, 2: 2, 3: 1, 4: 1})
        assert sampler.composition().single_cluster_share == 6 / 8


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("topic_aware", [True, False])
def test_no_text_twice_in_a_batch(drop_last: bool, topic_aware: bool) -> None:
    """Guards the no-duplicate promise on tiny datasets full of collisions: anchors with up to 3 rows and
    positives shared by 2 anchors of a cluster. Every batch has exactly b rows and no repeated text in any
    column; len() is exact; drop_last visits a row at most once, else every row at least once."""
    for sizes, repeats, shared in (([6, 6], {0: 3, 7: 2}, 2), ([5, 3, 8], {1: 2, 2: 2, 9: 3}, 2), ([12], {0: 3}, 3)):
        dataset, topics = pairs(sizes, repeats, shared)
        for batch_size in (3, 4):
            sampler = TopicAwareBatchSampler(dataset, batch_size, drop_last, LABELS, seed=1, clusters=topics,
                                             topic_aware=topic_aware)
            for epoch in range(5):
                sampler.set_epoch(epoch)
                batches = list(sampler)
                assert len(batches) == len(sampler)
                assert all(len(batch) == batch_size for batch in batches)
                for batch in batches:
                    texts = texts_of(dataset, batch)
                    assert len(set(texts)) == len(texts), (sizes, batch_size, epoch, texts)
                counts = Counter(i for batch in batches for i in batch)
                if drop_last:
                    assert max(counts.values()) == 1
                else:
                    assert set(counts) == set(range(len(dataset)))


def test_rows_of_one_anchor_spread_and_swaps_keep_clusters() -> None:
    """Guards the separation's topic cost: an anchor's extra rows are spread over its cluster's chunks, and a
    row that collides (two anchors of a cluster share a positive) is swapped with a row of its own cluster, so
    all 6 batches stay single-cluster as in the composition without collisions (b = 8; each cluster has 2
    chunks, so a positive shared by 2 anchors fits and the rows left out of the epoch are its spares)."""
    dataset, topics = pairs([16, 16, 16], repeats={0: 2, 1: 2, 16: 3, 40: 2}, shared=2)
    cluster = np.array([topics[a] for a in dataset["anchor"]])
    for epoch in range(5):
        sampler = TopicAwareBatchSampler(dataset, 8, True, LABELS, seed=4, clusters=topics)
        sampler.set_epoch(epoch)
        of_batch = cluster[sampler.epoch_batches()]
        assert all(len(texts_of(dataset, b)) == len(set(texts_of(dataset, b))) for b in sampler)
        pure = (of_batch == of_batch[:, :1]).all(axis=1)
        assert pure.all()


def test_occurrence_numbers_rows_of_each_anchor() -> None:
    """Guards the tier that spreads an anchor's rows: the k-th row of an anchor gets k, in row order."""
    assert occurrence(np.array([4, 4, 1, 4, 1, 9])).tolist() == [0, 1, 0, 2, 1, 0]


def test_batches_depend_only_on_seed_and_epoch() -> None:
    """Guards DDP and resume: two samplers (two ranks) with different torch generator states give the same
    batches for the same seed and epoch; another epoch or seed gives others."""
    dataset, topics = pairs([9, 7, 12], repeats={2: 2}, shared=2)
    first = TopicAwareBatchSampler(dataset, 4, True, LABELS, torch.Generator().manual_seed(0), seed=5, clusters=topics)
    second = TopicAwareBatchSampler(dataset, 4, True, LABELS, torch.Generator().manual_seed(9), seed=5, clusters=topics)
    first.set_epoch(2)
    second.set_epoch(2)
    assert list(first) == list(second)
    second.set_epoch(3)
    assert list(first) != list(second)
    other = TopicAwareBatchSampler(dataset, 4, True, LABELS, seed=6, clusters=topics)
    other.set_epoch(2)
    assert list(other) != list(first)


def test_label_columns_are_not_texts_and_query_clusters_work() -> None:
    """Guards label handling and the QueryClusters input: a numeric label column is left out of the duplicate
    check (equal labels are no duplicates), and clusters keyed by the anchor texts are looked up by text."""
    dataset = Dataset.from_dict({"query": [f"q{i}" for i in range(8)], "passage": [f"p{i}" for i in range(8)],
                                 "score": [1.0] * 8})
    clusters = QueryClusters([f"q{i}" for i in range(8)], [0, 0, 0, 0, 1, 1, 1, 1])
    sampler = TopicAwareBatchSampler(dataset, 4, True, LABELS, seed=0, clusters=clusters)
    assert sampler.text_columns == ["query", "passage"]
    assert sorted(sorted({int(q[1]) // 4 for q in dataset[batch]["query"]}) for batch in sampler) == [[0], [1]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, t: TopicAwareBatchSampler(d, 4, True, LABELS, clusters=t, anchor_column="question"),
         r"anchor_column 'question' is not a column of the dataset; its columns are \['anchor', 'positive'\]"),
        (lambda d, t: TopicAwareBatchSampler(d, 4, True, LABELS), "needs clusters="),
        (lambda d, t: TopicAwareBatchSampler(d, 4, True, LABELS, clusters={k: v for k, v in t.items() if k != "anchor 5"}),
         "1 of 12 rows have an anchor \\('anchor'\\) without a cluster, e.g. row 5: 'anchor 5'"),
        (lambda d, t: TopicAwareBatchSampler(d, 16, True, LABELS, clusters=t), "12 rows, fewer than one batch of 16"),
        (lambda d, t: TopicAwareBatchSampler(d.add_column("rank", list(range(12))), 4, True, LABELS, clusters=t),
         "column 'rank' holds int64, not text"),
    ],
)
def test_bad_input_is_named(make, message: str) -> None:
    """Guards the errors a user meets first: a missing anchor column, no clusters, an anchor without a cluster,
    too few rows, and an unlabelled non-text column each say what is wrong and where."""
    dataset, topics = pairs([6, 6])
    with pytest.raises(ValueError, match=message):
        make(dataset, topics)


def test_a_text_in_more_rows_than_batches_is_refused() -> None:
    """Guards an impossible request: a positive shared by 4 rows cannot be kept to one per batch in 3 batches."""
    dataset = Dataset.from_dict({"anchor": [f"a{i}" for i in range(12)],
                                 "positive": ["same"] * 4 + [f"p{i}" for i in range(8)]})
    with pytest.raises(ValueError, match=r"the text 'same' \(column 'positive', row 0\) is in 4 rows, more than the 3"):
        TopicAwareBatchSampler(dataset, 4, True, LABELS, topic_aware=False)


def test_an_instance_as_batch_sampler_is_refused() -> None:
    """Guards the Trainer's silent fallback: an instance (not the class or a partial) would train on single rows."""
    dataset, topics = pairs([6, 6])
    sampler = TopicAwareBatchSampler(dataset, 4, True, LABELS, clusters=topics)
    with pytest.raises(TypeError, match=r"functools.partial\(TopicAwareBatchSampler"):
        sampler(dataset, batch_size=4, drop_last=True)


@pytest.fixture(scope="module")
def scifact_pairs(scifact_dir: Path, minilm_path: str) -> tuple[Dataset, QueryClusters]:
    """64 real (claim, cited abstract) rows of scifact-train and 4 clusters of the claims (MiniLM, k-means)."""
    data = load_beir(scifact_dir, "train")
    anchors, positives = [], []
    for query_id in sorted(data.qrels)[:56]:
        for doc_id in sorted(data.qrels[query_id]):
            anchors.append(data.queries[query_id])
            positives.append(data.corpus[doc_id][:300])
    dataset = Dataset.from_dict({"anchor": anchors[:64], "positive": positives[:64]})
    model = SentenceTransformer(minilm_path, device="cpu")
    return dataset, TopicAwareBatchSampler.cluster_anchors(model, dataset, k=4, seed=0, show_progress_bar=False)


class KeepSampler(TrainerCallback):
    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.sampler = train_dataloader.batch_sampler


def train(model: SentenceTransformer, dataset: Dataset, loss, clusters: QueryClusters, folder: Path, steps: int,
          batch_size: int = 16) -> tuple[KeepSampler, SentenceTransformerTrainer]:
    keep = KeepSampler()
    arguments = SentenceTransformerTrainingArguments(
        output_dir=str(folder), per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=5e-5,
        batch_sampler=partial(TopicAwareBatchSampler, clusters=clusters), save_strategy="no", report_to="none",
        logging_steps=1, disable_tqdm=True, use_cpu=True, seed=0,
    )
    trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=dataset, loss=loss, callbacks=[keep])
    trainer.train()
    return keep, trainer


def test_trainer_with_mnrl_learns_on_topic_batches(scifact_pairs, small_student_path: str, tmp_path: Path) -> None:
    """Guards the main use: a real SentenceTransformerTrainer run with MultipleNegativesRankingLoss, the default
    collator and the sampler as a partial. The Trainer builds our sampler; MNRL's loss over one epoch's batches,
    measured before and after 3 epochs of training, goes down."""
    dataset, clusters = scifact_pairs
    model = SentenceTransformer(small_student_path, device="cpu")
    loss = MultipleNegativesRankingLoss(model)
    collate = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
    probe = TopicAwareBatchSampler(dataset, 16, True, LABELS, seed=0, clusters=clusters)

    def epoch_loss() -> float:
        with torch.no_grad():
            values = []
            for batch in probe:
                features = collate([dataset[i] for i in batch])
                inputs = [{k.removeprefix(f"{c}_"): v for k, v in features.items() if k.startswith(f"{c}_")}
                          for c in ("anchor", "positive")]
                values.append(float(loss(inputs, None)))
        return float(np.mean(values))

    before = epoch_loss()
    keep, _ = train(model, dataset, loss, clusters, tmp_path, steps=12)
    assert isinstance(keep.sampler, TopicAwareBatchSampler)
    assert epoch_loss() < before - 0.05


@pytest.mark.parametrize("loss_name", ["cached-mnrl", "gist", "cached-gist", "margin-mse"])
def test_other_losses_train_with_the_sampler(loss_name: str, scifact_pairs, small_student_path: str,
                                             minilm_path: str, tmp_path: Path) -> None:
    """Guards the losses the issue names: CachedMNRL, GISTEmbedLoss and CachedGISTEmbedLoss (guide: the MiniLM
    teacher), and MarginMSELoss with two negatives and a list label, each for two steps with the default collator;
    the sampler's batches reach the loss (16 rows, no repeated text)."""
    dataset, clusters = scifact_pairs
    model = SentenceTransformer(small_student_path, device="cpu")
    if loss_name == "margin-mse":
        dataset = dataset.add_column("negative_1", [f"unrelated to: {a}" for a in dataset["anchor"]])
        dataset = dataset.add_column("negative_2", [f"{p[:80]} (truncated)" for p in dataset["positive"]])
        dataset = dataset.add_column("label", [[0.5, 1.0]] * len(dataset))
        loss = MarginMSELoss(model)
    else:
        guide = SentenceTransformer(minilm_path, device="cpu")
        loss = {
            "cached-mnrl": lambda: CachedMultipleNegativesRankingLoss(model, mini_batch_size=4),
            "gist": lambda: GISTEmbedLoss(model, guide),
            "cached-gist": lambda: CachedGISTEmbedLoss(model, guide, mini_batch_size=4),
        }[loss_name]()
    keep, trainer = train(model, dataset, loss, clusters, tmp_path, steps=2)
    assert trainer.state.global_step == 2
    batch = next(iter(keep.sampler))
    texts = texts_of(dataset, batch)
    assert len(batch) == 16 and len(set(texts)) == len(texts)
