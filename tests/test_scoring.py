"""Tests of st_tasb.prepare.scoring: teacher scores of candidate pairs, ensembles, and resuming a sharded job."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from datasets import Dataset

from st_tasb.data.beir import BeirData, load_beir
from st_tasb.data.texts import TextStore
from st_tasb.prepare.scoring import as_scorer, score_candidates
from st_tasb.teachers import BiEncoderTeacher, CrossEncoderTeacher, EnsembleTeacher


@pytest.fixture(scope="module")
def scifact(scifact_dir) -> BeirData:
    return load_beir(scifact_dir, split="train")


@pytest.fixture(scope="module")
def triples(scifact) -> Dataset:
    """Real SciFact triples: 4 queries, each positive paired with 3 random negatives (positives repeat)."""
    rng = random.Random(0)
    corpus_ids = scifact.corpus.ids.to_pylist()
    rows = {"query_id": [], "positive_id": [], "negative_id": []}
    for qid in sorted(scifact.qrels, key=int)[:4]:
        for positive in scifact.qrels[qid]:
            for negative in rng.sample(corpus_ids, 3):
                rows["query_id"].append(qid)
                rows["positive_id"].append(positive)
                rows["negative_id"].append(negative)
    return Dataset.from_dict(rows)


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path, device="cpu")
    model.max_seq_length = 64
    return model


@pytest.fixture(scope="module")
def cross_encoder(minilm_path):
    """A real CrossEncoder: MiniLM weights with a randomly initialised (seeded) one-output head."""
    from sentence_transformers.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder(minilm_path, num_labels=1, max_length=96, device="cpu")
    return model


def _texts(data: BeirData, triples: Dataset) -> tuple[list[str], list[str], list[str]]:
    return (
        [data.queries[q] for q in triples["query_id"]],
        [data.corpus[d] for d in triples["positive_id"]],
        [data.corpus[d] for d in triples["negative_id"]],
    )


def test_bi_encoder_scores_are_dot_products(scifact, triples, minilm, tmp_path):
    """Guards the bi-encoder teacher and the assembly of the table: each row's scores are the dot products
    of its own query and passages (computed independently from the texts), in the order of the input."""
    table = score_candidates(minilm, triples, scifact.queries, scifact.corpus, tmp_path, show_progress_bar=False)
    queries, positives, negatives = _texts(scifact, triples)
    q = minilm.encode(queries)
    expected_pos = np.einsum("ij,ij->i", q, minilm.encode(positives))
    expected_neg = np.einsum("ij,ij->i", q, minilm.encode(negatives))
    result = table.dataset
    assert result["query_id"] == triples["query_id"] and result["negative_id"] == triples["negative_id"]
    np.testing.assert_allclose(result["pos_score"], expected_pos, atol=1e-5)
    np.testing.assert_allclose(result["neg_score"], expected_neg, atol=1e-5)
    np.testing.assert_allclose(result["margin"], expected_pos - expected_neg, atol=2e-5)


def test_ensemble_is_the_mean_of_cross_encoder_and_bi_encoder(scifact, triples, minilm, cross_encoder, tmp_path):
    """Guards the ensemble (the paper's T2 is a mean of teachers) and the cross-encoder teacher's raw logits
    (the default activation, a sigmoid, would squash the margins)."""
    pairs = triples.select(range(8))
    table = score_candidates(
        [cross_encoder, minilm], pairs, scifact.queries, scifact.corpus, tmp_path, batch_size=4, show_progress_bar=False
    )
    queries, positives, _ = _texts(scifact, pairs)
    logits = cross_encoder.predict(list(zip(queries, positives)), activation_fn=torch.nn.Identity())
    dots = np.einsum("ij,ij->i", minilm.encode(queries), minilm.encode(positives))
    np.testing.assert_allclose(table.dataset["pos_score"], (logits + dots) / 2, atol=1e-4)

    positions = (scifact.queries.positions(pairs["query_id"]), scifact.corpus.positions(pairs["positive_id"]))
    squashed = CrossEncoderTeacher(
        cross_encoder, activation_fn=torch.nn.Sigmoid(), max_length=None, batch_size=4, device="cpu"
    ).score_pairs(scifact.queries, scifact.corpus, *positions)
    np.testing.assert_allclose(squashed, 1 / (1 + np.exp(-logits)), atol=1e-5)


class _RecordingTeacher:
    """A fast, deterministic stand-in teacher that records the pairs it scores and can fail on one call."""

    name = "recording"

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.seen: list[tuple[str, str]] = []

    def score_pairs(self, queries, corpus, query_positions, doc_positions):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("interrupted")
        self.seen += list(
            zip(queries.ids.take(query_positions).to_pylist(), corpus.ids.take(doc_positions).to_pylist())
        )
        return _expected_score(np.asarray(query_positions), np.asarray(doc_positions))


def _expected_score(query_positions: np.ndarray, doc_positions: np.ndarray) -> np.ndarray:
    return np.sin(query_positions * 31.0 + doc_positions).astype(np.float32)


def _distinct_pairs(triples: Dataset) -> set[tuple[str, str]]:
    return set(zip(triples["query_id"], triples["positive_id"])) | set(zip(triples["query_id"], triples["negative_id"]))


def test_each_distinct_pair_is_scored_once(scifact, triples, tmp_path):
    """Guards against scoring repeated (query, passage) pairs (a positive is in many triples) and against
    mixing up which score belongs to which triple."""
    teacher = _RecordingTeacher()
    table = score_candidates(
        teacher, triples, scifact.queries, scifact.corpus, tmp_path, shard_size=7, show_progress_bar=False
    )
    assert len(teacher.seen) == len(set(teacher.seen)) == len(_distinct_pairs(triples)) < 2 * len(triples)
    assert set(teacher.seen) == _distinct_pairs(triples)
    q = scifact.queries.positions(triples["query_id"])
    np.testing.assert_array_equal(
        table.dataset["pos_score"], _expected_score(q, scifact.corpus.positions(triples["positive_id"]))
    )
    np.testing.assert_array_equal(
        table.dataset["neg_score"], _expected_score(q, scifact.corpus.positions(triples["negative_id"]))
    )


def test_resume_after_interruption(scifact, triples, tmp_path):
    """Guards resumability: after a crash the finished shards stay on disk, a rerun scores only the rest
    (never a finished pair again, finished shard files untouched) and the result equals an uninterrupted run."""
    args = (triples, scifact.queries, scifact.corpus)
    uninterrupted = score_candidates(_RecordingTeacher(), *args, tmp_path / "a", shard_size=5, show_progress_bar=False)

    work = tmp_path / "b"
    crashing = _RecordingTeacher(fail_on_call=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        score_candidates(crashing, *args, work, shard_size=5, show_progress_bar=False)
    finished = sorted(work.glob("shard-*.parquet"))
    assert [p.name for p in finished] == ["shard-00000.parquet", "shard-00001.parquet"]
    assert not list(work.glob("*.tmp")) and len(crashing.seen) == 10
    stamps = {p: p.stat().st_mtime_ns for p in finished}

    resumed = _RecordingTeacher()
    table = score_candidates(resumed, *args, work, shard_size=5, show_progress_bar=False)
    assert not set(resumed.seen) & set(crashing.seen)
    assert set(resumed.seen) | set(crashing.seen) == _distinct_pairs(triples)
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps
    assert table.dataset.to_dict() == uninterrupted.dataset.to_dict()

    again = _RecordingTeacher()
    score_candidates(again, *args, work, shard_size=5, show_progress_bar=False)
    assert again.calls == 0


def test_work_folder_of_another_job_is_refused(tmp_path):
    """Guards against resuming into a folder of a different job, which would mix scores of other pairs
    or another teacher into the table."""
    queries = TextStore.from_records([("q", "query")])
    corpus = TextStore.from_records([(f"d{i}", f"passage {i}") for i in range(5)])
    first = Dataset.from_dict({"query_id": ["q", "q"], "positive_id": ["d0", "d0"], "negative_id": ["d1", "d2"]})
    other = Dataset.from_dict({"query_id": ["q", "q"], "positive_id": ["d0", "d0"], "negative_id": ["d3", "d4"]})
    score_candidates(_RecordingTeacher(), first, queries, corpus, tmp_path, show_progress_bar=False)
    with pytest.raises(ValueError, match="does not hold the expected"):
        score_candidates(_RecordingTeacher(), other, queries, corpus, tmp_path, show_progress_bar=False)
    renamed = _RecordingTeacher()
    renamed.name = "another teacher"
    with pytest.raises(ValueError, match="holds another scoring job.*teacher"):
        score_candidates(renamed, first, queries, corpus, tmp_path, show_progress_bar=False)
    with pytest.raises(ValueError, match="shard_size"):
        score_candidates(_RecordingTeacher(), first, queries, corpus, tmp_path, shard_size=1, show_progress_bar=False)


def test_bad_teachers_and_inputs_are_reported(tmp_path, minilm_path):
    """Guards clear errors: non-finite or missing teacher scores, multi-output cross-encoders, unknown
    teacher objects, and pairs that lack an id column."""
    from sentence_transformers.cross_encoder import CrossEncoder

    queries = TextStore.from_records([("q", "query")])
    corpus = TextStore.from_records([("d0", "a"), ("d1", "b")])
    pairs = Dataset.from_dict({"query_id": ["q"], "positive_id": ["d0"], "negative_id": ["d1"]})

    class Broken(_RecordingTeacher):
        def __init__(self, result):
            super().__init__()
            self.result = result

        def score_pairs(self, *args, **kwargs):
            return self.result

    with pytest.raises(ValueError, match="non-finite score .* query q, document d1"):
        score_candidates(
            Broken(np.array([1.0, np.nan])), pairs, queries, corpus, tmp_path / "a", show_progress_bar=False
        )
    with pytest.raises(ValueError, match="shape"):
        score_candidates(Broken(np.array([1.0])), pairs, queries, corpus, tmp_path / "b", show_progress_bar=False)
    with pytest.raises(ValueError, match="missing \\['negative_id'\\]"):
        score_candidates(_RecordingTeacher(), pairs.remove_columns("negative_id"), queries, corpus, tmp_path / "c")
    with pytest.raises(ValueError, match="one output"):
        CrossEncoderTeacher(CrossEncoder(minilm_path, num_labels=2, device="cpu"), device="cpu")
    with pytest.raises(TypeError, match="cannot use a str as a teacher"):
        as_scorer("cross-encoder/ms-marco-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="l2"):
        BiEncoderTeacher(None, cache=(np.ones((1, 2)), np.ones((1, 2))), similarity_fn_name="l2")
    assert EnsembleTeacher([_RecordingTeacher(), _RecordingTeacher()]).name == "mean(recording, recording)"
