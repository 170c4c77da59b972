"""RetrievalEvaluator: the same numbers as sentence-transformers' InformationRetrievalEvaluator, inside the Trainer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from st_tasb.data.beir import BeirData, load_beir
from st_tasb.data.compat import HAS_SENTENCE_TRANSFORMERS_6
from st_tasb.retrieval.evaluation import RetrievalEvaluator


@pytest.fixture(scope="module")
def scifact_slice(scifact_dir: Path) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """60 real SciFact claims, their relevant abstracts and 400 other abstracts, as plain dicts."""
    data: BeirData = load_beir(scifact_dir, split="train")
    qids = sorted(data.qrels, key=int)[:60]
    relevant = {qid: set(data.qrels[qid]) for qid in qids}
    judged = sorted({doc for docs in relevant.values() for doc in docs})
    others = random.Random(0).sample(sorted(set(data.corpus.ids.to_pylist()) - set(judged)), 400)
    corpus = {doc: data.corpus[doc] for doc in judged + others}
    queries = {qid: data.queries[qid] for qid in qids}
    return queries, corpus, relevant


def information_retrieval_evaluator():
    if HAS_SENTENCE_TRANSFORMERS_6:
        from sentence_transformers.sentence_transformer.evaluation import (
            InformationRetrievalEvaluator,
        )
    else:
        from sentence_transformers.evaluation import InformationRetrievalEvaluator
    return InformationRetrievalEvaluator


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_metrics_equal_information_retrieval_evaluator(scifact_slice, small_student_path: str, similarity: str) -> None:
    """Guards the drop-in promise: on the same model, data and similarity, nDCG@10 and MRR@10 equal
    sentence-transformers' InformationRetrievalEvaluator's within 1e-4, and the primary metric is nDCG@10."""
    queries, corpus, relevant = scifact_slice
    model = SentenceTransformer(small_student_path, device="cpu")
    model.similarity_fn_name = similarity
    theirs = information_retrieval_evaluator()(queries, corpus, relevant, name="sf", write_csv=False)(model)
    ours = RetrievalEvaluator(queries, corpus, relevant, name="sf")(model)
    assert ours["sf_ndcg@10"] == pytest.approx(theirs[f"sf_{similarity}_ndcg@10"], abs=1e-4)
    assert ours["sf_mrr@10"] == pytest.approx(theirs[f"sf_{similarity}_mrr@10"], abs=1e-4)
    assert 0.05 < ours["sf_ndcg@10"] < 1  # a real, non-trivial ranking


def test_run_file_and_errors(scifact_slice, small_student_path: str, tmp_path: Path) -> None:
    """Guards the optional TREC run (named after the evaluator and the step) and clear errors for bad input."""
    queries, corpus, relevant = scifact_slice
    model = SentenceTransformer(small_student_path, device="cpu")
    evaluator = RetrievalEvaluator(queries, corpus, relevant, name="dev", write_run=True, top_k=20)
    evaluator(model, output_path=str(tmp_path), epoch=0, steps=40)
    lines = (tmp_path / "dev-epoch0-steps40.trec").read_text().splitlines()
    assert len(lines) == 20 * len(queries) and lines[0].split()[1] == "Q0"
    with pytest.raises(ValueError, match="no judged query"):
        RetrievalEvaluator(queries, corpus, {})
    with pytest.raises(ValueError, match="similarity must be one of"):
        RetrievalEvaluator(queries, corpus, relevant, similarity="manhattan")
    model.similarity_fn_name = "euclidean"
    with pytest.raises(ValueError, match="pass similarity="):
        RetrievalEvaluator(queries, corpus, relevant)(model)
