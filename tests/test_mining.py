"""Tests of st_tasb.prepare.mining: candidate (query, positive, negative) pairs from qrels, BM25 and a dense model."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from st_tasb.data.beir import BeirData, load_beir
from st_tasb.data.texts import TextStore, UnknownIdError
from st_tasb.prepare.mining import MinedCandidates, mine_candidates


@pytest.fixture(scope="module")
def scifact(scifact_dir) -> BeirData:
    return load_beir(scifact_dir, split="train")


@pytest.fixture(scope="module")
def scifact_small(scifact) -> BeirData:
    """40 SciFact queries and 150 passages (all their judged ones plus others)."""
    qids = sorted(scifact.qrels, key=int)[:40]
    judged = {d for q in qids for d in scifact.qrels[q]}
    keep = set(scifact.corpus.positions(sorted(judged)).tolist())
    extra = [p for p in range(len(scifact.corpus)) if p not in keep][: 150 - len(keep)]
    corpus = TextStore(scifact.corpus.dataset.select(sorted(keep | set(extra))), name="corpus")
    return BeirData(corpus=corpus, queries=scifact.queries, qrels={q: scifact.qrels[q] for q in qids})


def _negatives_by_query(mined: MinedCandidates) -> dict[str, list[str]]:
    """Each query's negatives in mined order (taken from its first positive's rows)."""
    rows = mined.pairs.to_dict()
    first_positive: dict[str, str] = {}
    negatives: dict[str, list[str]] = defaultdict(list)
    for q, p, n in zip(rows["query_id"], rows["positive_id"], rows["negative_id"]):
        if first_positive.setdefault(q, p) == p:
            negatives[q].append(n)
    return dict(negatives)


def test_bm25_candidates_on_scifact(scifact):
    """Guards the core contract: positives are exactly the qrels positives, negatives are never judged
    relevant, the cap holds, every positive meets every negative, and to_score is the distinct pair set."""
    mined = mine_candidates(scifact, top_k=30, max_negatives=5, show_progress_bar=False)
    rows = mined.pairs.to_dict()
    triples = list(zip(rows["query_id"], rows["positive_id"], rows["negative_id"]))
    assert len(triples) == len(set(triples)) > 0
    assert mined.queries_without_positives == []
    expected_positives = {
        (q, d)
        for q, docs in scifact.qrels.items()
        for d, g in docs.items()
        if g >= 1
        if q not in mined.queries_without_negatives
    }
    assert {(q, p) for q, p, _ in triples} == expected_positives
    negatives = defaultdict(set)
    for q, _, n in triples:
        assert scifact.qrels[q].get(n, 0) < 1, (q, n)
        negatives[q].add(n)
    for q, docs in negatives.items():
        assert 1 <= len(docs) <= 5
        n_pos = sum(1 for g in scifact.qrels[q].values() if g >= 1)
        assert sum(1 for t in triples if t[0] == q) == n_pos * len(docs)
    assert set(negatives) | set(mined.queries_without_negatives) == set(scifact.qrels)
    expected_to_score = {(q, p) for q, p, _ in triples} | {(q, n) for q, _, n in triples}
    to_score = mined.to_score.to_dict()
    assert sorted(zip(to_score["query_id"], to_score["doc_id"])) == sorted(expected_to_score)


def test_skip_and_cap_take_slices_of_the_ranking(scifact):
    """Guards skip_top and max_negatives: the cap keeps the best-ranked negatives, skipping drops the
    best-ranked ones, both in the order of the underlying BM25 ranking."""
    full = _negatives_by_query(mine_candidates(scifact, top_k=20, show_progress_bar=False))
    capped = _negatives_by_query(mine_candidates(scifact, top_k=20, max_negatives=4, show_progress_bar=False))
    skipped = _negatives_by_query(mine_candidates(scifact, top_k=20, skip_top=3, show_progress_bar=False))
    assert set(capped) == set(full)
    for q, negatives in full.items():
        assert capped[q] == negatives[:4]
        dropped = len(negatives) - len(skipped.get(q, []))
        assert 0 <= dropped <= 3
        assert skipped.get(q, []) == negatives[dropped:]
    assert any(len(full[q]) - len(skipped.get(q, [])) == 3 for q in full)


def test_dense_negatives_match_brute_force(scifact_small, small_student):
    """Guards dense mining: negatives are the model's highest dot-product passages, positives excluded,
    in rank order (checked against numpy, independent of faiss)."""
    data = scifact_small
    mined = mine_candidates(
        data, sources=("dense",), model=small_student, top_k=15, max_negatives=6, show_progress_bar=False
    )
    passages = small_student.encode_document(data.corpus.texts(np.arange(len(data.corpus))))
    corpus_ids = np.array(data.corpus.ids.to_pylist())
    mined_negatives = _negatives_by_query(mined)
    assert set(mined_negatives) == set(data.qrels)
    query_embeddings = small_student.encode_query([data.queries[q] for q in data.qrels])
    for (q, docs), query in zip(data.qrels.items(), query_embeddings):
        ranking = corpus_ids[np.argsort(-(passages @ query), kind="stable")][:15]
        expected = [d for d in ranking if docs.get(d, 0) < 1][:6]
        assert mined_negatives[q] == expected, q


def test_both_sources_are_merged_without_duplicates(scifact_small, small_student):
    """Guards merging BM25 and dense negatives: without a cap the union of both, each once; with a cap
    no more than the cap, all from the union."""
    data = scifact_small
    common = {"model": small_student, "top_k": 10, "show_progress_bar": False}
    bm25 = _negatives_by_query(mine_candidates(data, sources=("bm25",), **common))
    dense = _negatives_by_query(mine_candidates(data, sources=("dense",), **common))
    both = _negatives_by_query(mine_candidates(data, sources=("bm25", "dense"), **common))
    capped = _negatives_by_query(mine_candidates(data, sources=("bm25", "dense"), max_negatives=12, **common))
    for q in data.qrels:
        union = set(bm25.get(q, [])) | set(dense.get(q, []))
        assert len(both[q]) == len(set(both[q])) and set(both[q]) == union
        assert capped[q] == both[q][:12]
    assert any(len(both[q]) > max(len(bm25.get(q, [])), len(dense.get(q, []))) for q in data.qrels)


def test_queries_without_positives_or_negatives_are_reported():
    """Guards against silently dropped queries: those with only sub-threshold judgements and those left
    with no negative (no term in common with any passage) are reported and produce no pairs."""
    corpus = TextStore.from_records(
        [
            ("d1", "cats purr when content"),
            ("d2", "dogs bark at cats"),
            ("d3", "cats and dogs"),
            ("d4", "markets fell"),
            ("d5", "zebra stripes"),
        ]
    )
    queries = TextStore.from_records(
        [
            ("q1", "why do cats purr"),
            ("q2", "graded query about cats"),
            ("q3", "xylophone quartet"),
            ("q4", "dogs barking"),
        ]
    )
    qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}, "q3": {"d5": 2}, "q4": {"d2": 2}}
    mined = mine_candidates(BeirData(corpus, queries, qrels), top_k=5, positive_threshold=2, show_progress_bar=False)
    assert mined.queries_without_positives == ["q2"]
    assert mined.queries_without_negatives == ["q3"]
    rows = mined.pairs.to_dict()
    assert set(rows["query_id"]) == {"q1", "q4"}
    # q1: d2 has grade 1 (< threshold): not a positive, but judged relevant, so never a negative either
    assert {p for q, p in zip(rows["query_id"], rows["positive_id"]) if q == "q1"} == {"d1"}
    assert "d2" not in {n for q, n in zip(rows["query_id"], rows["negative_id"]) if q == "q1"}


def test_mining_argument_errors(scifact):
    """Guards clear errors for impossible settings and qrels that name unknown documents."""
    with pytest.raises(ValueError, match="no qrels query has a judgement >= 2"):
        mine_candidates(scifact, positive_threshold=2, show_progress_bar=False)
    with pytest.raises(ValueError, match="dense negatives need a model"):
        mine_candidates(scifact, sources=("dense",))
    with pytest.raises(ValueError, match="sources must be"):
        mine_candidates(scifact, sources=("bm25", "splade"))
    with pytest.raises(ValueError, match="skip_top"):
        mine_candidates(scifact, top_k=5, skip_top=5)
    with pytest.raises(ValueError, match="max_negatives"):
        mine_candidates(scifact, max_negatives=0)
    bad = BeirData(scifact.corpus, scifact.queries, {"0": {"no-such-doc": 1}})
    with pytest.raises(UnknownIdError, match="no-such-doc"):
        mine_candidates(bad, show_progress_bar=False)
