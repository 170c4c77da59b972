"""BM25Teacher on real SQuAD paragraphs and questions: its scores are bm25s's own, in every role."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import bm25s
import numpy as np
import pytest
import torch
from datasets import Dataset

from st_tasb.data.texts import TextStore
from st_tasb.prepare.scoring import score_candidates
from st_tasb.teachers import BM25Teacher

PASSAGES, QUESTIONS, DEPTH = 1500, 120, 20


def _records(path: Path, count: int, fields: tuple[str, ...]) -> list[tuple[str, str]]:
    """The first ``count`` records of a BEIR jsonl file as (id, text), texts joined as load_beir joins them."""
    with path.open(encoding="utf-8") as lines:
        rows = [json.loads(line) for line in islice(lines, count)]
    return [(row["_id"], " ".join(row[field] for field in fields if row.get(field))) for row in rows]


@pytest.fixture(scope="module")
def squad(datasets_dir: Path) -> tuple[TextStore, TextStore]:
    """The first 1,500 paragraphs of squad-train (the first articles) and the first 120 questions (on them)."""
    folder = datasets_dir / "squad-train"
    corpus = TextStore.from_records(_records(folder / "corpus.jsonl", PASSAGES, ("title", "text")), name="corpus")
    queries = TextStore.from_records(_records(folder / "queries.jsonl", QUESTIONS, ("text",)), name="queries")
    return corpus, queries


def _bm25s_top(corpus: TextStore, queries: TextStore, **settings: float) -> tuple[np.ndarray, np.ndarray]:
    """bm25s used as its README shows: tokenize, index, retrieve; the top DEPTH passages and their scores."""
    retriever = bm25s.BM25(**settings)
    retriever.index(bm25s.tokenize(corpus.texts(np.arange(len(corpus))), stopwords="en", show_progress=False),
                    show_progress=False)
    query_tokens = bm25s.tokenize(queries.texts(np.arange(len(queries))), stopwords="en", show_progress=False)
    documents, scores = retriever.retrieve(query_tokens, k=DEPTH, show_progress=False)
    return documents, scores


@pytest.mark.parametrize("settings", [{}, {"k1": 0.9, "b": 0.4}], ids=["defaults", "k1=0.9,b=0.4"])
def test_pair_scores_equal_bm25s_scores(squad: tuple[TextStore, TextStore], settings: dict[str, float]) -> None:
    corpus, queries = squad
    documents, expected = _bm25s_top(corpus, queries, **settings)
    teacher = BM25Teacher(corpus, queries=queries, **settings)

    query_positions = np.repeat(np.arange(len(queries)), DEPTH)
    pairs = teacher.score_pairs(queries, corpus, query_positions, documents.ravel())
    assert expected.max() > 5  # real matches, not an all-zero comparison
    np.testing.assert_array_equal(pairs, expected.ravel())

    rows = teacher.score_indices(torch.arange(4), torch.from_numpy(documents[:4].ravel()))
    for query in range(4):
        np.testing.assert_array_equal(rows[query, DEPTH * query : DEPTH * (query + 1)].numpy(), expected[query])

    texts = teacher.score(queries.texts(np.arange(4)), corpus.texts(documents[:4].ravel()))
    np.testing.assert_array_equal(texts.numpy(), rows.numpy())  # passages given as text score as from the index


def test_search_ranks_as_bm25s(squad: tuple[TextStore, TextStore]) -> None:
    corpus, queries = squad
    documents, expected = _bm25s_top(corpus, queries)
    hits = BM25Teacher(corpus).search(queries, top_k=DEPTH)
    np.testing.assert_array_equal(hits.scores, expected)
    padded = np.pad(expected, ((0, 0), (1, 1)), constant_values=np.nan)
    alone = (expected != padded[:, :-2]) & (expected != padded[:, 2:])  # tied hits may be ordered otherwise
    np.testing.assert_array_equal(hits.positions[alone], documents[alone])
    # the first questions were written on the first paragraphs: BM25 finds most of them at rank 1
    written_on = corpus.positions([qid.split("-p")[0] + "-" + qid.split("-p")[1].split("-q")[0]
                                   for qid in queries.ids.to_pylist()])
    assert (hits.positions[:, 0] == written_on).mean() > 0.5


def test_in_batch_scores_from_rows_equal_those_from_texts(squad: tuple[TextStore, TextStore]) -> None:
    corpus, queries = squad
    teacher = BM25Teacher(corpus, queries=queries)
    hits = teacher.search(queries.texts([0, 1, 2]), top_k=DEPTH).positions
    positives, negatives = hits[:, 0], hits[:, DEPTH - 1]
    rows = {"query_index": torch.tensor([0, 1, 2]), "positive_index": torch.from_numpy(positives),
            "negative_index": torch.from_numpy(negatives)}
    texts = {"query": queries.texts([0, 1, 2]), "positive": corpus.texts(positives), "negative": corpus.texts(negatives)}
    labels = {"margin": torch.zeros(3), "texts": texts, **rows}
    by_rows = teacher(labels)  # the [B, 2B] matrix of the in-batch role
    by_texts = BM25Teacher(corpus)(labels)
    assert by_rows.shape == (3, 6) and by_rows.max() > 5
    torch.testing.assert_close(by_rows, by_texts, rtol=0, atol=0)


def test_scores_a_passage_outside_the_corpus_with_the_corpus_statistics(squad: tuple[TextStore, TextStore]) -> None:
    corpus, queries = squad
    teacher = BM25Teacher(corpus)
    passage = corpus.texts(teacher.search(queries.texts([0]), top_k=1).positions[0])[0]
    extended = teacher.score(queries.texts([0]), [passage, passage + " zyxwvut qwertyuiop"])[0]
    assert extended[1] < extended[0]  # unknown words score nothing but lengthen the passage
    assert teacher.score(queries.texts([0]), [""])[0, 0] == 0


def test_scores_the_table_of_score_candidates(squad: tuple[TextStore, TextStore], tmp_path: Path) -> None:
    corpus, queries = squad
    teacher = BM25Teacher(corpus)
    pairs = Dataset.from_dict({"query_id": queries.ids.to_pylist()[:3], "positive_id": corpus.ids.to_pylist()[:3],
                               "negative_id": corpus.ids.to_pylist()[3:6]})
    table = score_candidates(teacher, pairs, queries, corpus, tmp_path, show_progress_bar=False)
    assert table.teacher["name"] == "bm25(k1=1.5,b=0.75)"
    positions = np.arange(3)
    np.testing.assert_array_equal(
        np.asarray(table.dataset["pos_score"], dtype=np.float32), teacher.score_pairs(queries, corpus, positions, positions)
    )


def test_errors_name_the_setting(squad: tuple[TextStore, TextStore]) -> None:
    corpus, queries = squad
    with pytest.raises(ValueError, match="b must be in"):
        BM25Teacher(corpus, b=1.5)
    with pytest.raises(ValueError, match="k1 must be"):
        BM25Teacher(corpus, k1=-1.0)
    teacher = BM25Teacher(corpus)
    with pytest.raises(ValueError, match="queries="):
        teacher.score_indices(torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="build the teacher on the corpus you score"):
        teacher.score_pairs(queries, queries, np.array([0]), np.array([0]))
