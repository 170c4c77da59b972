"""FusedTeacher on real scifact-train text: per-query normalisation checked by hand, the same score for a pair
whatever else is scored, fusion retrieval, and `st-tasb score --teachers bm25 / fused:MODEL`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from st_tasb.cli import main
from st_tasb.data.beir import BeirData, load_beir
from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.retrieval.metrics import evaluate_run
from st_tasb.teachers import BiEncoderTeacher, BM25Teacher, FusedTeacher

DEPTH = 10


@pytest.fixture(scope="module")
def data(tiny_beir: Path) -> BeirData:
    """300 scifact-train passages and 52 claims."""
    return load_beir(tiny_beir, "dev")


@pytest.fixture(scope="module")
def dense(data: BeirData, small_student_path: str) -> BiEncoderTeacher:
    """The 2-layer MiniLM student as bi-encoder, with its embeddings of every claim and passage cached."""
    teacher = BiEncoderTeacher(small_student_path, similarity_fn_name="dot", device="cpu")
    teacher.build_cache(data.queries, data.corpus, show_progress_bar=False)
    return teacher


@pytest.fixture(scope="module")
def bm25(data: BeirData) -> BM25Teacher:
    return BM25Teacher(data.corpus, queries=data.queries)


def _normalised_by_hand(full: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Min-max of ``scores`` between the best and the DEPTH-th of ``full``, a query's scores of the whole corpus."""
    ranked = np.sort(full)[::-1]
    return (scores - ranked[DEPTH - 1]) / (ranked[0] - ranked[DEPTH - 1])


def test_fused_scores_are_the_weighted_per_query_min_max_computed_by_hand(
    data: BeirData, bm25: BM25Teacher, dense: BiEncoderTeacher
) -> None:
    queries, passages = np.arange(6), np.arange(len(data.corpus))
    every = torch.from_numpy(passages)
    lexical = bm25.score_indices(torch.from_numpy(queries), every).double().numpy()
    semantic = dense.score_indices(torch.from_numpy(queries), every).double().numpy()  # the raw scores of each side
    for weight in (0.0, 0.3, 1.0):
        fused = FusedTeacher(bm25, dense, bm25_weight=weight, depth=DEPTH)
        matrix = fused.score_indices(torch.from_numpy(queries), every).numpy()
        for query in queries:
            expected = weight * _normalised_by_hand(lexical[query], lexical[query]) + (1 - weight) * _normalised_by_hand(
                semantic[query], semantic[query]
            )
            np.testing.assert_allclose(matrix[query], expected, atol=1e-5)
            assert matrix[query].max() == pytest.approx(1.0, abs=1e-5) or 0 < weight < 1


def test_a_pair_scores_the_same_alone_with_its_query_and_in_a_batch(
    data: BeirData, bm25: BM25Teacher, dense: BiEncoderTeacher
) -> None:
    fused = FusedTeacher(bm25, dense, bm25_weight=0.7, depth=DEPTH)
    queries, passages = np.array([3, 0, 7]), np.array([5, 120, 299, 17])
    batch = fused.score_indices(torch.from_numpy(queries), torch.from_numpy(passages)).numpy()
    alone = [
        fused.score_pairs(data.queries, data.corpus, np.array([query]), np.array([passage]))[0]
        for query in queries for passage in passages
    ]
    # equal up to float32 rounding: the bi-encoder's dot products come from a matrix product or pair by pair
    np.testing.assert_allclose(np.reshape(alone, batch.shape), batch, rtol=1e-5, atol=1e-5)
    rows = np.repeat(queries, len(passages))
    fresh = FusedTeacher(bm25, dense, bm25_weight=0.7, depth=DEPTH)  # ranges computed anew, for all pairs at once
    together = fresh.score_pairs(data.queries, data.corpus, rows, np.tile(passages, len(queries)))
    np.testing.assert_allclose(together.reshape(batch.shape), batch, rtol=1e-5, atol=1e-5)
    labels = {"margin": torch.zeros(2), "query_index": torch.tensor([3, 0]), "positive_index": torch.tensor([5, 120]),
              "negative_index": torch.tensor([299, 17])}
    np.testing.assert_allclose(fused(labels).numpy(), batch[:2], rtol=1e-5, atol=1e-5)  # the in-batch role: [B, 2B]
    scaled = FusedTeacher(bm25, dense, bm25_weight=0.7, depth=DEPTH, scale=10)
    np.testing.assert_allclose(scaled(labels).numpy(), 10 * batch[:2], rtol=1e-5, atol=1e-5)
    assert scaled.name.endswith(" x 10")


def test_fusion_retrieval_ranks_the_union_of_both_lists(data: BeirData, bm25: BM25Teacher, dense: BiEncoderTeacher) -> None:
    fused = FusedTeacher(bm25, dense, bm25_weight=0.5, depth=DEPTH)
    hits = fused.search(data.queries)
    lexical = bm25.search(data.queries, top_k=DEPTH).positions
    every = torch.arange(len(data.corpus))
    semantic = dense.score_indices(torch.arange(len(data.queries)), every).topk(DEPTH, dim=1).indices.numpy()
    for row in range(len(data.queries)):
        found = hits.positions[row][hits.positions[row] >= 0]
        assert set(found) == set(lexical[row]) | set(semantic[row])
        assert (np.diff(hits.scores[row][: len(found)]) <= 0).all()
    judged = data.judged_queries()
    run = fused.search(data.queries).to_run(data.queries, data.corpus)
    assert evaluate_run({qid: run[qid] for qid in judged.ids.to_pylist()}, data.qrels)["ndcg@10"] > 0.3


def test_errors_name_the_setting(data: BeirData, bm25: BM25Teacher, dense: BiEncoderTeacher, small_student_path: str) -> None:
    with pytest.raises(ValueError, match="bm25_weight must be in"):
        FusedTeacher(bm25, dense, bm25_weight=1.5)
    with pytest.raises(ValueError, match="give the BiEncoderTeacher a cache"):
        FusedTeacher(bm25, BiEncoderTeacher(small_student_path, device="cpu"), bm25_weight=0.5)
    small = BiEncoderTeacher(cache=(dense.cache.queries, dense.cache.corpus[:10]), similarity_fn_name="dot")
    with pytest.raises(ValueError, match="build both on the same corpus"):
        FusedTeacher(bm25, small, bm25_weight=0.5)
    fused = FusedTeacher(BM25Teacher(data.corpus), dense, bm25_weight=0.5)
    with pytest.raises(ValueError, match="queries="):
        fused.score_indices(torch.tensor([0]), torch.tensor([0]))


def test_st_tasb_score_with_bm25_and_fused_teachers(
    candidates: Path, tiny_beir: Path, small_student_path: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    common = ["score", "--candidates", str(candidates), "--data", str(tiny_beir), "--device", "cpu"]
    assert main([*common, "--output", str(tmp_path / "bm25"), "--teachers", "bm25", "--bm25-k1", "1.2"]) == 0
    table = TeacherScoreTable.load(tmp_path / "bm25")
    assert table.teacher["name"] == "bm25(k1=1.2,b=0.75)"
    train = load_beir(tiny_beir, "train")
    row = table.dataset[0]
    expected = BM25Teacher(train.corpus, k1=1.2).score_pairs(
        train.queries, train.corpus, train.queries.positions([row["query_id"]] * 2),
        train.corpus.positions([row["positive_id"], row["negative_id"]]),
    )
    assert [row["pos_score"], row["neg_score"]] == expected.tolist()

    fused = [*common, "--teachers", f"fused:{small_student_path}", "--similarity", "dot"]
    assert main([*fused, "--output", str(tmp_path / "no-weight")]) == 2
    assert "--fusion-weight must be given with a fused: teacher" in capsys.readouterr().err
    assert main([*fused, "--output", str(tmp_path / "fused"), "--fusion-weight", "0.7", "--fusion-depth", "20"]) == 0
    table = TeacherScoreTable.load(tmp_path / "fused")
    assert table.teacher["name"] == (
        f"fused(bm25_weight=0.7,depth=20):bm25(k1=1.5,b=0.75)+bi-encoder:{small_student_path}:dot"
    )
    margins = table.dataset.to_pandas()["margin"]
    assert np.isfinite(margins).all() and (margins != 0).mean() > 0.9
    embeddings = next(Path(f"{tmp_path / 'fused'}.shards").glob("embeddings-*"))
    assert sorted(p.name for p in embeddings.iterdir()) == ["corpus.npy", "queries.npy"]


def test_an_ensemble_is_the_mean_of_its_members_in_both_roles(
    data: BeirData, bm25: BM25Teacher, dense: BiEncoderTeacher
) -> None:
    """Guards EnsembleTeacher (the paper's T2, the adapt command's several teachers): its in-batch [B, 2B] matrix and
    its pair scores are the means of its members' own, and a member that scores pairs only is refused in a batch."""
    from st_tasb.prepare.scoring import as_scorer
    from st_tasb.teachers import EnsembleTeacher

    ensemble = EnsembleTeacher([bm25, dense])
    labels = {"margin": torch.zeros(3), "query_index": torch.tensor([0, 4, 2]),
              "positive_index": torch.tensor([5, 9, 11]), "negative_index": torch.tensor([1, 0, 7])}
    expected = (bm25(labels).double() + dense(labels).double()) / 2
    torch.testing.assert_close(ensemble(labels).double(), expected, atol=1e-5, rtol=0)
    queries, passages = np.array([0, 0, 3, 5]), np.array([2, 8, 3, 1])
    by_hand = (bm25.score_pairs(data.queries, data.corpus, queries, passages).astype(np.float64)
               + dense.score_pairs(data.queries, data.corpus, queries, passages)) / 2
    np.testing.assert_allclose(ensemble.score_pairs(data.queries, data.corpus, queries, passages), by_hand, atol=1e-5)
    assert as_scorer([bm25, dense]).name == f"mean({bm25.name}, {dense.name})"

    class PairsOnly:
        name = "pairs only"

        def score_pairs(self, queries, corpus, query_positions, doc_positions):
            return np.zeros(len(query_positions), dtype=np.float32)

    with pytest.raises(TypeError, match="pairs only scores pairs only"):
        EnsembleTeacher([bm25, PairsOnly()])(labels)
