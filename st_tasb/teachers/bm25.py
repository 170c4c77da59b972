"""BM25 as a teacher: any (query, passage) pair scored with the statistics of the whole corpus.

:class:`BM25Teacher` indexes a corpus with bm25s (its ``Tokenizer``: lower case, words of two or more
characters, English stop words; its default BM25 variant, Lucene's, ``k1 = 1.5``, ``b = 0.75``), the way
:func:`~st_tasb.prepare.mining.mine_candidates` does. A pair's score is read from bm25s's own score matrix:
the sum, over the query's tokens, of the passage's entries, added in the order bm25s adds them, so that it
is bit for bit the score ``bm25s.BM25.retrieve`` returns for that passage. A passage given as text (the
in-batch role with texts, :meth:`BM25Teacher.score`) goes through the same bm25s functions that filled
the index, with the corpus's document frequencies and average length: a corpus passage scores exactly as
from the index, and any other text as if it were scored against this corpus.

The three roles of a teacher:

* pairwise (:meth:`BM25Teacher.score_pairs`, used by :func:`~st_tasb.prepare.scoring.score_candidates`);
* in-batch by row positions (:meth:`BM25Teacher.score_indices`; give the training queries store as ``queries``);
* in-batch by texts (:meth:`BM25Teacher.score`).

In a training batch it reads the row positions when it has ``queries`` and the labels carry them
(``build_training_dataset(..., with_indices=True)``), the texts otherwise; both give the same scores.

BM25 scores are not calibrated across queries (a long query scores higher everywhere): a margin of the same
query is meaningful, a score compared with another query's is not. :class:`~st_tasb.teachers.fused.FusedTeacher`
normalises them per query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import bm25s
import numpy as np
import torch
from bm25s.scoring import (
    _build_idf_array,
    _build_scores_and_indices_for_matrix,
    _calculate_doc_freqs,
    _select_idf_scorer,
)
from bm25s.tokenization import Tokenizer
from torch import Tensor
from tqdm.auto import tqdm

from st_tasb.data.checks import check_number
from st_tasb.data.columns import INDEX_COLUMNS
from st_tasb.data.progress import progress_enabled
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.search import Hits
from st_tasb.teachers.base import InBatchTeacher, batch_indices

_TOKENIZE_CHUNK = 100_000  # passages tokenised at a time while indexing


class _TermScores:
    """A passages x vocabulary matrix of BM25 term scores in bm25s's CSC layout (rows sorted within a column)."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> None:
        self.data, self.indices, self.indptr = data, indices, indptr

    def pair_scores(self, query_tokens: Sequence[int], passages: np.ndarray) -> np.ndarray:
        """The BM25 score of one query (its token ids) against each passage row: float32 sums in bm25s's order."""
        total = np.zeros(len(passages), dtype=self.data.dtype)
        for token in query_tokens:
            start, stop = int(self.indptr[token]), int(self.indptr[token + 1])
            if start == stop:
                continue
            rows = self.indices[start:stop]
            at = np.minimum(np.searchsorted(rows, passages), stop - start - 1)
            found = rows[at] == passages
            total[found] += self.data[start + at[found]]
        return total


class BM25Teacher(InBatchTeacher):
    """BM25 scores of (query, passage) pairs with the document frequencies and average length of ``corpus``.

    Args:
        corpus: the passages whose statistics every score uses; ``score_pairs`` and ``score_indices`` take row
            positions into it.
        queries: the queries store that ``score_indices`` reads row positions of (the training dataset's
            ``query_index``); not needed for the other roles.
        k1: BM25's term-frequency saturation.
        b: BM25's length normalisation (0: none, 1: full).
        stopwords: bm25s's stop word setting (``"en"``, a list of words, or ``None`` for none).
        name: how a scoring job's manifest names the teacher (default: ``bm25(k1=K1,b=B)``).
        show_progress_bar: show the progress of tokenising and indexing the corpus.

    Raises:
        ValueError: for an empty corpus, ``k1 < 0`` or ``b`` outside [0, 1].

    Example:
        >>> corpus = TextStore.from_records([("d1", "cats purr when content"), ("d2", "dogs bark at cats"),
        ...                                  ("d3", "stock markets fell")])
        >>> queries = TextStore.from_records([("q1", "why do cats purr"), ("q2", "markets")])
        >>> teacher = BM25Teacher(corpus, queries=queries)
        >>> teacher.score_pairs(queries, corpus, np.array([0, 0, 1]), np.array([0, 1, 2])).round(4)
        array([0.5324, 0.1969, 0.4108], dtype=float32)
        >>> teacher.score_indices(torch.tensor([0]), torch.tensor([0, 1, 2]))
        tensor([[0.5324, 0.1969, 0.0000]])
        >>> teacher.score(["why do cats purr"], ["cats purr when content", "purring cats"])  # any text
        tensor([[0.5324, 0.2293]])
        >>> teacher.search(["markets"], top_k=1).positions
        array([[2]])
    """

    def __init__(
        self,
        corpus: TextStore,
        *,
        queries: TextStore | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        stopwords: str | Sequence[str] | None = "en",
        name: str | None = None,
        show_progress_bar: bool = False,
    ) -> None:
        super().__init__()
        check_number("k1", k1, integer=False, minimum=0)
        check_number("b", b, integer=False, minimum=0)
        if b > 1:
            raise ValueError(f"b must be in [0, 1] (BM25's length normalisation), not {b!r}")
        if len(corpus) == 0:
            raise ValueError(f"BM25Teacher: the corpus {corpus.name} is empty")
        self.corpus, self.queries = corpus, queries
        self.k1, self.b = float(k1), float(b)
        self.stopwords = stopwords
        self.name = name or f"bm25(k1={k1:g},b={b:g})"
        self.tokenizer = Tokenizer(stopwords=self._stopwords())
        progress = progress_enabled(show_progress_bar)
        token_ids: list[list[int]] = []
        for start in tqdm(range(0, len(corpus), _TOKENIZE_CHUNK), desc="BM25 tokenizing", disable=not progress):
            chunk = corpus.texts(np.arange(start, min(start + _TOKENIZE_CHUNK, len(corpus))))
            token_ids += self.tokenizer.tokenize(chunk, update_vocab=True, return_as="ids", show_progress=False)
        self.retriever = bm25s.BM25(k1=self.k1, b=self.b)
        self.retriever.index(self.tokenizer.to_tokenized_tuple(token_ids), show_progress=progress)
        index = self.retriever.scores
        self._index = _TermScores(index["data"], index["indices"], index["indptr"])
        # what bm25s computed while indexing, kept to score passages given as text the same way
        self._avg_doc_len = np.array([len(ids) for ids in token_ids]).mean()
        frequencies = dict(enumerate(np.diff(index["indptr"]).tolist()))  # documents holding each token
        idf = _build_idf_array(frequencies, len(corpus), _select_idf_scorer(self.retriever.idf_method), self.retriever.dtype)
        self._idf = np.append(idf, np.float32(0))  # a last slot for words the corpus lacks: they only add length
        self.freeze()

    def _stopwords(self) -> str | list[str] | None:
        return self.stopwords if self.stopwords is None or isinstance(self.stopwords, str) else list(self.stopwords)

    def tokenize_queries(self, texts: Sequence[str]) -> list[list[int]]:
        """The bm25s token ids of query texts (words the corpus lacks are dropped, as bm25s drops them)."""
        return self.tokenizer.tokenize(list(texts), update_vocab=False, return_as="ids", show_progress=False)

    def _check_corpus(self, corpus: TextStore) -> None:
        if corpus is not self.corpus and (len(corpus) != len(self.corpus) or not corpus.ids.equals(self.corpus.ids)):
            raise ValueError(
                f"BM25Teacher indexed {self.corpus.name} ({len(self.corpus)} passages) and reads row positions of it; "
                f"it was given {corpus.name} ({len(corpus)} passages): build the teacher on the corpus you score"
            )

    def score_pairs(
        self, queries: TextStore, corpus: TextStore, query_positions: np.ndarray, doc_positions: np.ndarray
    ) -> np.ndarray:
        """One BM25 score per (query, passage) pair given by row positions; ``corpus`` must be the indexed one.

        Raises:
            ValueError: if ``corpus`` is not the corpus the teacher indexed.
        """
        self._check_corpus(corpus)
        query_positions = np.asarray(query_positions, dtype=np.int64)
        doc_positions = np.asarray(doc_positions, dtype=np.int64)
        unique, inverse = np.unique(query_positions, return_inverse=True)
        order = np.argsort(inverse, kind="stable")  # the pairs of each distinct query, together
        bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
        scores = np.empty(len(query_positions), dtype=np.float32)
        for row, tokens in enumerate(self.tokenize_queries(queries.texts(unique))):
            pairs = order[bounds[row] : bounds[row + 1]]
            scores[pairs] = self._index.pair_scores(tokens, doc_positions[pairs])
        return scores

    def score_indices(self, query_index: Tensor, passage_index: Tensor) -> Tensor:
        """Scores ``[Bq, P]`` of query rows of :attr:`queries` against passage rows of :attr:`corpus`.

        Raises:
            ValueError: if the teacher was built without ``queries``.
        """
        if self.queries is None:
            raise ValueError("BM25Teacher.score_indices reads query rows: build the teacher with queries=")
        passages = np.asarray(passage_index, dtype=np.int64)
        tokens = self.tokenize_queries(self.queries.texts(np.asarray(query_index, dtype=np.int64)))
        return torch.from_numpy(np.stack([self._index.pair_scores(query, passages) for query in tokens]))

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> Tensor:
        """Scores ``[Bq, P]`` of query texts against passage texts, with the corpus's statistics."""
        words = Tokenizer(stopwords=self._stopwords()).tokenize(
            list(passages), update_vocab=True, return_as="string", show_progress=False
        )
        unknown = len(self._idf) - 1
        token_ids = [[self.tokenizer.word_to_id.get(word, unknown) for word in passage] for passage in words]
        frequencies = _calculate_doc_freqs(token_ids, {token for ids in token_ids for token in ids}, show_progress=False)
        retriever = self.retriever
        data, rows, columns = _build_scores_and_indices_for_matrix(
            token_ids, self._idf, self._avg_doc_len, frequencies, retriever.k1, retriever.b, retriever.delta,
            None, method=retriever.method, dtype=retriever.dtype, int_dtype=retriever.int_dtype, show_progress=False,
        )
        matrix = _TermScores(*retriever._np_csc(data, rows, columns, (len(token_ids), len(self._idf))))
        every = np.arange(len(token_ids))
        return torch.from_numpy(np.stack([matrix.pair_scores(query, every) for query in self.tokenize_queries(queries)]))

    def score_batch(self, labels: Mapping[str, Any]) -> Tensor:
        """The batch's scores from row positions when the teacher has ``queries`` and the labels carry the index
        columns, from the texts otherwise."""
        if self.queries is not None and all(key in labels for key in INDEX_COLUMNS):
            return self.score_indices(*batch_indices(labels, "BM25Teacher"))
        return super().score_batch(labels)

    def search(self, queries: TextStore | Sequence[str], top_k: int = 1000) -> Hits:
        """Each query's ``top_k`` passages of the corpus by BM25 (bm25s's retrieval), in trec_eval's order.

        Args:
            queries: a queries store or query texts.
            top_k: hits per query (at most the corpus size).

        Returns:
            :class:`~st_tasb.retrieval.search.Hits` into :attr:`corpus`, one row per query (passages without a
            query word are kept, with score 0).
        """
        check_number("top_k", top_k, minimum=1)
        texts = queries.texts(np.arange(len(queries))) if isinstance(queries, TextStore) else list(queries)
        documents, scores = self.retriever.retrieve(
            self.tokenize_queries(texts), k=min(top_k, len(self.corpus)), show_progress=False
        )
        return Hits.from_unordered(documents, scores, self.corpus)

    def get_config_dict(self) -> dict[str, Any]:
        """The teacher's settings for the model card."""
        return {"k1": self.k1, "b": self.b, "method": self.retriever.method, "stopwords": self.stopwords,
                "corpus_size": len(self.corpus)}
