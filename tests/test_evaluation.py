"""Tests of st_tasb.data.runs, st_tasb.retrieval.metrics, st_tasb.retrieval.search, st_tasb.retrieval.evaluation and st_tasb.data.models."""

from __future__ import annotations

import math
import random
import zlib

import numpy as np
import pytest
import pytrec_eval

from st_tasb.data.beir import BeirData, DataFormatError, load_beir
from st_tasb.data.models import (
    ModelLoadError,
    load_cross_encoder,
    load_sentence_transformer,
)
from st_tasb.data.runs import ranked, read_trec_run, truncate_run, write_trec_run
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.evaluation import evaluate_model
from st_tasb.retrieval.metrics import METRICS, evaluate_run, evaluate_run_details
from st_tasb.retrieval.search import Hits, IndexConfig, retrieve, search

# ---------------------------------------------------------------------------------------------- metrics

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1},
    "q2": {"d5": 1},
    "q3": {"d6": 1},  # judged, never retrieved
}
RUN = {
    # ranks: d2 (grade 1), d9 (unjudged), d1 (grade 2), d3 (grade 0); d4 is not retrieved
    "q1": {"d2": 0.95, "d9": 0.9, "d1": 0.8, "d3": 0.7},
    # nine unjudged documents, then three tied at 0.5: by id descending e1 (rank 10), d5 (11), a1 (12)
    "q2": {**{f"x{i}": 0.9 for i in range(9)}, "a1": 0.5, "d5": 0.5, "e1": 0.5},
    "q4": {"d1": 1.0},  # not judged: ignored
}


def test_metrics_match_hand_computation():
    """Guards the metric definitions themselves: graded linear-gain nDCG@10, MRR cut at 10 with trec_eval's
    tie order, recall and MAP over the whole run, judged-but-missing queries as zeros, unjudged ones ignored."""
    details = evaluate_run_details(RUN, QRELS)
    # q1: DCG = 1/log2(2) + 2/log2(4); ideal ranking of the grades 2, 1, 1: 2/log2(2) + 1/log2(3) + 1/log2(4)
    ndcg_q1 = (1 / math.log2(2) + 2 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4))
    # q1: relevant d1, d2, d4; hits at ranks 1 and 3 -> AP = (1/1 + 2/3) / 3, recall 2/3, RR 1
    ap_q1 = (1 / 1 + 2 / 3) / 3
    # q2: its one relevant document is at rank 11 -> RR@10 0, nDCG@10 0, AP 1/11, recall 1
    expected_q1 = {"ndcg@10": ndcg_q1, "mrr@10": 1.0, "recall@100": 2 / 3, "recall@1000": 2 / 3, "map": ap_q1}
    expected_q2 = {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 1.0, "recall@1000": 1.0, "map": 1 / 11}
    assert details.num_queries == 3
    assert details.missing_queries == ("q3",)
    assert details.ignored_queries == 1
    for name in METRICS:
        assert details.per_query["q1"][name] == pytest.approx(expected_q1[name], abs=1e-12), name
        assert details.per_query["q2"][name] == pytest.approx(expected_q2[name], abs=1e-12), name
        assert details.per_query["q3"][name] == 0.0
        assert details.metrics[name] == pytest.approx((expected_q1[name] + expected_q2[name]) / 3, abs=1e-12)
    assert list(evaluate_run(RUN, QRELS)) == list(METRICS)


def test_relevance_threshold_applies_to_binary_measures_only():
    """Guards the TREC-DL setting (grade >= 2 is relevant): binary measures change, nDCG keeps graded gains."""
    details = evaluate_run_details(RUN, QRELS, relevance_threshold=2, missing_as_zero=False)
    q1 = details.per_query["q1"]
    # only d1 (rank 3) is relevant now
    assert q1["mrr@10"] == pytest.approx(1 / 3)
    assert q1["map"] == pytest.approx(1 / 3)
    assert q1["recall@100"] == 1.0
    assert q1["ndcg@10"] == pytest.approx(evaluate_run_details(RUN, QRELS).per_query["q1"]["ndcg@10"])
    # q2's and q3's only judgements have grade 1: both score 0 on the binary measures; q3 is left out
    assert details.per_query["q2"]["map"] == 0.0
    assert details.num_queries == 2 and "q3" not in details.per_query


def test_missing_queries_counted_or_left_out():
    """Guards trec_eval's -c behaviour and its switch: a judged query without run entries is 0 or absent."""
    with_zero = evaluate_run(RUN, QRELS)
    without = evaluate_run(RUN, QRELS, missing_as_zero=False)
    for name in METRICS:
        assert with_zero[name] == pytest.approx(without[name] * 2 / 3)
    empty_entry = evaluate_run_details({**RUN, "q3": {}}, QRELS)
    assert empty_entry.missing_queries == ("q3",) and empty_entry.metrics == with_zero


def test_metric_input_errors():
    """Guards against silent zeros from id-type mismatches and against evaluating nothing."""
    with pytest.raises(TypeError, match="query id 1 is a int"):
        evaluate_run({1: {"d": 1.0}}, {"1": {"d": 1}})
    with pytest.raises(TypeError, match="document id 7"):
        evaluate_run({"1": {7: 1.0}}, {"1": {"d": 1}})
    with pytest.raises(ValueError, match="no query to evaluate"):
        evaluate_run({"a": {"d": 1.0}}, {"b": {"d": 1}}, missing_as_zero=False)
    with pytest.raises(ValueError, match="qrels are empty"):
        evaluate_run({"a": {"d": 1.0}}, {})


def _reference_rr_at_10(docs: dict[str, float], judged: dict[str, int], threshold: int) -> float:
    order = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)  # score desc, id desc
    for rank, (doc, _) in enumerate(order[:10], start=1):
        if judged.get(doc, 0) >= threshold:
            return 1 / rank
    return 0.0


@pytest.mark.parametrize("threshold", [1, 2])
def test_metrics_agree_with_pytrec_eval_on_a_random_run(threshold):
    """Guards against drift from trec_eval on realistic input: many queries, graded qrels, tied scores;
    MRR@10 is checked against an independent reference because trec_eval has no cut-off for it."""
    rng = random.Random(threshold)
    docs = [f"d{i}" for i in range(300)]
    qrels = {f"q{q}": {d: rng.randint(0, 3) for d in rng.sample(docs, rng.randint(1, 8))} for q in range(40)}
    run = {f"q{q}": {d: round(rng.random(), 1) for d in rng.sample(docs, 150)} for q in range(35)}
    ours = evaluate_run_details(run, qrels, relevance_threshold=threshold, missing_as_zero=False).per_query
    measures = {"ndcg_cut_10": "ndcg@10", "recall_100": "recall@100", "recall_1000": "recall@1000", "map": "map"}
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100,1000", "map"}, threshold).evaluate(
        run
    )
    assert set(ours) == set(reference) == set(run)
    for qid, values in reference.items():
        for measure, name in measures.items():
            assert ours[qid][name] == pytest.approx(values[measure], abs=1e-12)
        assert ours[qid]["mrr@10"] == pytest.approx(_reference_rr_at_10(run[qid], qrels[qid], threshold), abs=1e-12)


# ---------------------------------------------------------------------------------------------- run files


def test_trec_run_round_trip_and_ranks(tmp_path):
    """Guards the run file format: exact scores back, ranks in trec_eval's order (ties by id descending)."""
    rng = random.Random(0)
    run = {
        f"q{q}": {f"doc{d}": float(np.float32(round(rng.random(), 2))) for d in rng.sample(range(500), 60)}
        for q in range(20)
    }
    path = tmp_path / "sub" / "run.trec"
    write_trec_run(run, path, tag="mine")
    assert read_trec_run(path) == run
    lines = [line.split() for line in path.read_text().splitlines()]
    assert len(lines) == 20 * 60 and all(f[1] == "Q0" and f[5] == "mine" for f in lines)
    for qid in run:
        rows = [f for f in lines if f[0] == qid]
        assert [int(f[3]) for f in rows] == list(range(1, 61))
        ordered = sorted(rows, key=lambda f: (float(f[4]), f[2]), reverse=True)
        assert [f[2] for f in rows] == [f[2] for f in ordered]
    assert truncate_run(run, 5)["q0"] == dict(ranked(run["q0"])[:5])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("q1 Q0 d1 1 0.5", "expected 6 fields"),
        ("q1 Q0 d1 first 0.5 tag", "rank 'first' is not an integer"),
        ("q1 Q0 d1 1 high tag", "score 'high' is not a number"),
        ("q1 Q0 d1 1 nan tag", "score 'nan' is not finite"),
        ("q1 Q0 d0 2 0.25 tag", "document 'd0' is listed twice"),
    ],
)
def test_read_trec_run_names_file_and_line(tmp_path, line, message):
    """Guards error messages: a malformed run line is reported with file:line and the reason."""
    path = tmp_path / "bad.trec"
    path.write_text(f"q1 Q0 d0 1 0.5 tag\n\n{line}\n")
    with pytest.raises(DataFormatError, match=f"bad.trec:3: {message}"):
        read_trec_run(path)


def test_write_trec_run_rejects_unwritable_entries(tmp_path):
    """Guards against run files that could not be read back (ids with spaces, NaN scores, bad tags), against a
    failed write leaving a partial file behind (or replacing an earlier run), and against an empty run file being
    scored as zeros."""
    with pytest.raises(ValueError, match="document id"):
        write_trec_run({"q": {"two words": 1.0}}, tmp_path / "r")
    with pytest.raises(ValueError, match="not finite"):
        write_trec_run({"a": {"d": 1.0}, "b": {"d": float("nan")}}, tmp_path / "r")  # fails after writing query a
    with pytest.raises(ValueError, match="run tag"):
        write_trec_run({"q": {"d": 1.0}}, tmp_path / "r", tag="")
    assert list(tmp_path.iterdir()) == []  # no partial file, under its name or another
    write_trec_run({"q": {"d": 1.0}}, tmp_path / "r")
    with pytest.raises(ValueError, match="not finite"):
        write_trec_run({"q": {"d": float("nan")}}, tmp_path / "r")
    assert read_trec_run(tmp_path / "r") == {"q": {"d": 1.0}} and [p.name for p in tmp_path.iterdir()] == ["r"]
    with pytest.raises(FileNotFoundError):
        read_trec_run(tmp_path / "missing.trec")
    (tmp_path / "empty.trec").write_text("\n")
    with pytest.raises(DataFormatError, match="empty.trec: the run file holds no result line"):
        read_trec_run(tmp_path / "empty.trec")


# ---------------------------------------------------------------------------------------------- retrieval


@pytest.fixture(scope="module")
def scifact_subset(scifact_dir) -> BeirData:
    """50 SciFact training queries and 300 passages: all their judged ones plus others, in file order."""
    data = load_beir(scifact_dir, split="train")
    qids = sorted(data.qrels, key=int)[:50]
    judged = {d for q in qids for d in data.qrels[q]}
    all_ids = data.corpus.ids.to_pylist()
    keep = sorted(data.corpus.positions(sorted(judged)).tolist())
    others = [p for p in range(len(all_ids)) if all_ids[p] not in judged][: 300 - len(keep)]
    corpus = TextStore(data.corpus.dataset.select(sorted(keep + others)), name="corpus")
    queries = TextStore(data.queries.dataset.select(sorted(data.queries.positions(qids).tolist())), name="queries")
    return BeirData(corpus=corpus, queries=queries, qrels={q: data.qrels[q] for q in qids})


@pytest.fixture(scope="module")
def minilm(minilm_path):
    model = load_sentence_transformer(minilm_path, device="cpu")
    model.max_seq_length = 64  # both sides of the comparison use the same cap; keeps the test fast
    return model


def test_matches_sentence_transformers_information_retrieval_evaluator(minilm, scifact_subset):
    """Guards agreement with sentence-transformers' own IR evaluator (nDCG@10, MRR@10 to 1e-4) on real data."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    data = scifact_subset
    assert len(data.corpus) == 300 and len(data.queries) == 50
    run = retrieve(minilm, data.corpus, data.queries, top_k=100, similarity="cosine", show_progress_bar=False)
    ours = evaluate_run(run, data.qrels)
    for docs in run.values():  # the comparison is only meaningful without ties in the top 10
        top = [score for _, score in ranked(docs)[:11]]
        assert len(set(top)) == len(top)
    evaluator = InformationRetrievalEvaluator(
        queries=dict(zip(data.queries.ids.to_pylist(), data.queries.texts(range(len(data.queries))))),
        corpus=dict(zip(data.corpus.ids.to_pylist(), data.corpus.texts(range(len(data.corpus))))),
        relevant_docs={q: set(docs) for q, docs in data.qrels.items()},
        write_csv=False,
    )
    theirs = evaluator(minilm)
    assert ours["ndcg@10"] == pytest.approx(theirs["cosine_ndcg@10"], abs=1e-4)
    assert ours["mrr@10"] == pytest.approx(theirs["cosine_mrr@10"], abs=1e-4)
    assert 0.3 < ours["ndcg@10"] < 1.0  # a real pretrained retriever on an easy 300-passage corpus


class _TextHashEncoder:
    """A stand-in bi-encoder for index mechanics: one fixed random vector per distinct text (fast, exact)."""

    dim = 32
    similarity_fn_name = "dot"

    def encode_document(self, texts: list[str], normalize_embeddings: bool = False, **_: object) -> np.ndarray:
        vectors = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts])
        if normalize_embeddings:
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.astype(np.float32)

    encode_query = encode_document


def test_approximate_indexes_agree_with_flat():
    """Guards the HNSW and IVF options: IVF probing every list is exact; HNSW is near-identical; the flat
    index is exact (checked against numpy) and cosine normalises both sides."""
    encoder = _TextHashEncoder()
    corpus = TextStore.from_records([(f"p{i}", f"passage {i}") for i in range(2000)], name="corpus")
    queries = TextStore.from_records([(f"q{i}", f"query {i}") for i in range(100)], name="queries")
    common = {"top_k": 50, "show_progress_bar": False, "corpus_chunk_size": 300}
    flat = search(encoder, corpus, queries, **common)
    passages = encoder.encode_document(corpus.texts(range(2000)))
    exact = encoder.encode_query(queries.texts(range(100))) @ passages.T
    np.testing.assert_array_equal(flat.positions, np.argsort(-exact, axis=1, kind="stable")[:, :50])
    np.testing.assert_allclose(flat.scores, np.sort(exact, axis=1)[:, ::-1][:, :50], rtol=1e-5)

    ivf = search(encoder, corpus, queries, index=IndexConfig("ivf", nlist=16, nprobe=16), **common)
    np.testing.assert_array_equal(ivf.positions, flat.positions)
    hnsw = search(encoder, corpus, queries, index=IndexConfig("hnsw", hnsw_m=16), **common)
    overlap = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(flat.positions, hnsw.positions)])
    assert overlap > 0.95
    qrels = {f"q{i}": {f"p{(i * 7) % 2000}": 1, f"p{flat.positions[i, 3]}": 1} for i in range(100)}
    flat_metrics = evaluate_run(flat.to_run(queries, corpus), qrels)
    hnsw_metrics = evaluate_run(hnsw.to_run(queries, corpus), qrels)
    for name in ("ndcg@10", "mrr@10"):
        assert hnsw_metrics[name] == pytest.approx(flat_metrics[name], abs=0.02)

    cosine = search(encoder, corpus, queries, similarity="cosine", **common)
    norms = np.linalg.norm(encoder.encode_query(queries.texts(range(100))), axis=1)[:, None] * np.linalg.norm(
        passages, axis=1
    )
    np.testing.assert_allclose(cosine.scores[:, 0], (exact / norms).max(axis=1), rtol=1e-5)
    # without similarity=, the model's own score: a model saved as cosine is searched by cosine, a dot one by dot
    for name, expected in (("cosine", cosine), ("dot", flat)):
        encoder.similarity_fn_name = name
        np.testing.assert_allclose(search(encoder, corpus, queries, **common).scores, expected.scores, rtol=1e-5)


def test_scores_are_dot_products_with_capped_queries(small_student):
    """Guards the scoring itself (dot product, every passage at full length) and the query length cap,
    which must apply to queries only and be undone afterwards."""
    corpus = TextStore.from_records(
        [
            ("p1", "the mitochondria is the powerhouse of the cell"),
            ("p2", "stock markets fell sharply on monday"),
            ("p3", "cells divide by mitosis"),
        ]
    )
    queries = TextStore.from_records([("q1", "what is the powerhouse of the cell in biology class"), ("q2", "markets")])
    before = small_student.max_seq_length
    hits = search(small_student, corpus, queries, top_k=3, query_max_length=4, show_progress_bar=False)
    assert small_student.max_seq_length == before
    passages = small_student.encode_document(corpus.texts([0, 1, 2]))
    small_student.max_seq_length = 4
    capped = small_student.encode_query(queries.texts([0, 1]))
    small_student.max_seq_length = before
    expected = capped @ passages.T
    for row in range(2):
        np.testing.assert_allclose(hits.scores[row], expected[row, hits.positions[row]], rtol=1e-4, atol=1e-4)
        assert sorted(hits.positions[row]) == [0, 1, 2]
        assert list(hits.scores[row]) == sorted(hits.scores[row], reverse=True)


def test_tied_passages_are_ranked_by_id_descending(small_student, tmp_path):
    """Guards deterministic ranking: duplicate passages tie, and the run (and its file) order them as
    trec_eval does, by document id descending, whatever their corpus order."""
    text = "aspirin lowers the risk of heart attacks"
    corpus = TextStore.from_records([("b", text), ("a", text), ("zz", "unrelated words about sailing"), ("c", text)])
    queries = TextStore.from_records([("q", "does aspirin prevent heart attacks")])
    run = retrieve(small_student, corpus, queries, top_k=4, show_progress_bar=False)
    assert list(run["q"])[:3] == ["c", "b", "a"]
    assert len({run["q"][d] for d in "abc"}) == 1
    write_trec_run(run, tmp_path / "run.trec")
    assert [line.split()[2] for line in (tmp_path / "run.trec").read_text().splitlines()][:3] == ["c", "b", "a"]


def test_hits_padding_and_to_run():
    """Guards hits with fewer than k results (approximate indexes, tiny corpora): padding never reaches the run."""
    corpus = TextStore.from_records([(10, "x"), (2, "y"), (30, "z")])
    queries = TextStore.from_records([("q1", ""), ("q2", "")])
    hits = Hits.from_unordered(np.array([[2, -1, 0], [-1, -1, 1]]), np.array([[0.5, 9.0, 0.5], [0, 0, 0.1]]), corpus)
    # ids as strings: "30" > "10" -> position 2 (id 30) first on the tie
    assert hits.positions.tolist() == [[2, 0, -1], [1, -1, -1]]
    assert hits.to_run(queries, corpus) == {"q1": {"30": 0.5, "10": 0.5}, "q2": {"2": pytest.approx(0.1)}}
    with pytest.raises(ValueError, match="2 rows of hits, but 1 queries"):
        hits.to_run(TextStore.from_records([("q1", "")]), corpus)


def test_search_argument_errors(small_student):
    """Guards clear errors for settings that would otherwise fail deep inside faiss or silently."""
    store = TextStore.from_records([("a", "text")])
    with pytest.raises(ValueError, match="index kind"):
        search(small_student, store, store, index="annoy")
    with pytest.raises(ValueError, match="similarity"):
        search(small_student, store, store, similarity="l2")
    with pytest.raises(ValueError, match="top_k"):
        search(small_student, store, store, top_k=0)
    with pytest.raises(ValueError, match="is empty"):
        search(small_student, TextStore.from_records([], name="corpus"), store)
    assert IndexConfig("ivf").lists(100) == 2 and IndexConfig("ivf", nlist=500).lists(100) == 100


def test_evaluate_model_counts_unavailable_queries_as_zero():
    """Guards evaluate_model: it retrieves for the judged queries only, and a judged query missing from
    the query file counts as zero instead of vanishing."""
    encoder = _TextHashEncoder()
    corpus = TextStore.from_records([(f"p{i}", f"passage {i}") for i in range(200)], name="corpus")
    queries = TextStore.from_records([(f"q{i}", f"query {i}") for i in range(30)], name="queries")
    hits = search(encoder, corpus, queries, top_k=5, show_progress_bar=False)
    qrels = {f"q{i}": {f"p{hits.positions[i, i % 5]}": 1} for i in range(20)}  # q20..q29 are not judged
    metrics = evaluate_model(encoder, BeirData(corpus, queries, qrels), top_k=20, show_progress_bar=False)
    assert metrics == {
        "ndcg@10": pytest.approx(np.mean([1 / math.log2(i % 5 + 2) for i in range(20)])),
        "mrr@10": pytest.approx(np.mean([1 / (i % 5 + 1) for i in range(20)])),
        "recall@100": 1.0,
        "recall@1000": 1.0,
        "map": pytest.approx(np.mean([1 / (i % 5 + 1) for i in range(20)])),
    }
    widened = evaluate_model(
        encoder, BeirData(corpus, queries, {**qrels, "no-such-query": {"p0": 1}}), top_k=20, show_progress_bar=False
    )
    for name in METRICS:
        assert widened[name] == pytest.approx(metrics[name] * 20 / 21)


# ---------------------------------------------------------------------------------------------- models


def test_model_loading_errors(monkeypatch):
    """Guards the loader's errors: a missing folder names the path; an unreachable Hub id names the id
    and the offline remedy (instead of a bare connection error)."""
    import huggingface_hub.constants

    with pytest.raises(FileNotFoundError, match="model folder not found: ./missing-model"):
        load_sentence_transformer("./missing-model")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_cross_encoder("/tmp/no/such/cross-encoder")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, never touch the network
    with pytest.raises(ModelLoadError, match=r"'st-tasb-tests/no-such-model'.*HF_HUB_OFFLINE=1"):
        load_sentence_transformer("st-tasb-tests/no-such-model", device="cpu")
