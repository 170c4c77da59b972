"""Mining candidate (query, positive, negative) training pairs for a new domain.

Positives are the judged documents of each training query (grade >= ``positive_threshold``).
Negatives are retrieved: by BM25 (bm25s, English stop words, no stemming), by a dense
SentenceTransformer (:func:`st_tasb.retrieval.search.search`), or both. From each source's top ``top_k``
hits the first ``skip_top`` are dropped (they are often unjudged positives), documents judged
relevant at any grade >= 1 are never negatives, and BM25 hits without a single matching term are
dropped. The sources are merged rank by rank (on equal ranks in the order of ``sources``), each
document once, and the first ``max_negatives`` are kept. Every positive of a query is paired with every negative.

Queries whose judgements are all below the threshold are skipped and reported, as are queries left
without negatives. The pairs then get teacher scores (:mod:`st_tasb.prepare.scoring`); ``to_score`` lists
the distinct (query, document) pairs a teacher has to score.

Everything per pair is vectorised numpy/Arrow; per query only the hits matrix is held.

Example:
    >>> from st_tasb.data.beir import BeirData
    >>> from st_tasb.data.texts import TextStore
    >>> corpus = TextStore.from_records([("d1", "cats purr when content"), ("d2", "dogs bark at cats"),
    ...                                  ("d3", "cats and dogs"), ("d4", "stock markets fell")])
    >>> queries = TextStore.from_records([("q1", "why do cats purr"), ("q2", "unjudged query")])
    >>> data = BeirData(corpus, queries, qrels={"q1": {"d1": 1}, "q2": {"d4": 0}})
    >>> mined = mine_candidates(data, top_k=3, show_progress_bar=False)
    >>> mined.pairs.to_dict()
    {'query_id': ['q1', 'q1'], 'positive_id': ['d1', 'd1'], 'negative_id': ['d3', 'd2']}
    >>> mined.queries_without_positives, len(mined.to_score)
    (['q2'], 3)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import pyarrow as pa
from bm25s.tokenization import Tokenizer
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from st_tasb.data.beir import BeirData
from st_tasb.data.checks import check_number
from st_tasb.data.progress import progress_enabled
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.search import Hits, IndexConfig, SearchSettings, search

logger = logging.getLogger(__name__)

NEGATIVE_SOURCES = ("bm25", "dense")
_TOKENIZE_CHUNK = 100_000  # passages tokenised at a time


@dataclass(frozen=True)
class MinedCandidates:
    """Candidate training pairs and what they need from a teacher.

    Attributes:
        pairs: columns ``query_id``, ``positive_id``, ``negative_id`` (id types of the stores),
            grouped by query (in query-file order), then positive, then negative rank.
        to_score: the distinct ``(query_id, doc_id)`` pairs of ``pairs`` (positives and negatives).
        queries_without_positives: qrels queries skipped because no judgement reaches the threshold.
        queries_without_negatives: queries skipped because retrieval left no negative.
    """

    pairs: Dataset
    to_score: Dataset
    queries_without_positives: list[str | int]
    queries_without_negatives: list[str | int]


def mine_candidates(
    data: BeirData,
    *,
    sources: Sequence[str] = ("bm25",),
    model: SentenceTransformer | None = None,
    top_k: int = 100,
    skip_top: int = 0,
    max_negatives: int | None = None,
    positive_threshold: int = 1,
    index: str | IndexConfig = "flat",
    batch_size: int = 64,
    query_max_length: int | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
    show_progress_bar: bool = True,
) -> MinedCandidates:
    """Mine (query, positive, negative) candidates for every query of ``data.qrels`` (see the module docstring).

    Args:
        data: corpus, queries and the training qrels.
        sources: where negatives come from: ``"bm25"``, ``"dense"`` or both.
        model: the SentenceTransformer for ``"dense"`` (dot-product scores).
        top_k: retrieval depth per source.
        skip_top: hits dropped from the top of each source's ranking (``0 <= skip_top < top_k``).
        max_negatives: negatives kept per query (``None``: all that remain).
        positive_threshold: the lowest grade that makes a judged document a positive (>= 1).
        index: faiss index of the dense search (see :class:`~st_tasb.retrieval.search.IndexConfig`).
        batch_size, query_max_length: encoding settings of the dense search.
        exclude: documents never used as a query's negatives besides its judged relevant ones, by query id
            (near-copies of a positive, such as a pseudo-query's source document:
            :attr:`~st_tasb.prepare.pseudo_queries.PseudoQueries.exclude`).
        show_progress_bar: show progress of indexing, encoding and retrieval.

    Returns:
        :class:`MinedCandidates`; skipped queries are also logged as warnings.

    Raises:
        ValueError: for an unknown or missing source, ``"dense"`` without a model, invalid numbers,
            or qrels without any positive.
        UnknownIdError: if the qrels name a query or document absent from ``data``.
    """
    _check_settings(sources, model, top_k, skip_top, max_negatives, positive_threshold)
    corpus_size = len(data.corpus)
    qrel_queries, qrel_docs, grades = _flatten_qrels(data)
    is_positive = grades >= positive_threshold
    mined_queries = np.unique(qrel_queries[is_positive])  # positions, i.e. query-file order
    if len(mined_queries) == 0:
        raise ValueError(f"no qrels query has a judgement >= {positive_threshold}: nothing to mine")
    row_of_query = np.full(len(data.queries), -1, dtype=np.int64)
    row_of_query[mined_queries] = np.arange(len(mined_queries))

    query_store = TextStore(data.queries.dataset.select(mined_queries), name=data.queries.name)
    dense = SearchSettings(
        top_k=top_k, index=index, batch_size=batch_size, query_max_length=query_max_length,
        show_progress_bar=show_progress_bar,
    )
    rankings = [_ranking(source, data.corpus, query_store, model, dense, skip_top) for source in sources]
    not_negative_queries, not_negative_docs = _not_negatives(data, qrel_queries[grades >= 1], qrel_docs[grades >= 1], exclude)
    mined_row = row_of_query[not_negative_queries]
    judged_relevant = (mined_row * corpus_size + not_negative_docs)[mined_row >= 0]
    neg_rows, neg_docs = _merge_negatives(np.stack(rankings, axis=-1), judged_relevant, corpus_size, max_negatives)

    pos_rows, pos_docs = row_of_query[qrel_queries[is_positive]], qrel_docs[is_positive]
    order = np.lexsort((pos_docs, pos_rows))
    query_rows, positives, negatives = _cross(pos_rows[order], pos_docs[order], neg_rows, neg_docs)
    query_positions = mined_queries[query_rows]
    pair_queries, pair_docs, _, _ = distinct_pairs(query_positions, positives, negatives, corpus_size)

    query_ids, corpus_ids = data.queries.ids, data.corpus.ids
    pairs = pa.table(
        {
            "query_id": _take(query_ids, query_positions),
            "positive_id": _take(corpus_ids, positives),
            "negative_id": _take(corpus_ids, negatives),
        }
    )
    to_score = pa.table({"query_id": _take(query_ids, pair_queries), "doc_id": _take(corpus_ids, pair_docs)})
    without_positives = _take(query_ids, np.setdiff1d(qrel_queries, mined_queries)).to_pylist()
    no_negative = mined_queries[np.bincount(neg_rows, minlength=len(mined_queries)) == 0]
    without_negatives = _take(query_ids, no_negative).to_pylist()
    _log_outcome(pairs.num_rows, len(mined_queries), to_score.num_rows, without_positives, without_negatives,
                 positive_threshold)
    return MinedCandidates(Dataset(pairs), Dataset(to_score), without_positives, without_negatives)


def _ranking(
    source: str, corpus: TextStore, queries: TextStore, model: SentenceTransformer | None, dense: SearchSettings,
    skip_top: int,
) -> np.ndarray:
    """One source's ranked corpus positions per query, ``skip_top`` dropped, padded with -1 to a fixed depth."""
    if source == "bm25":
        hits = _bm25_hits(corpus, queries, dense.top_k, progress_enabled(dense.show_progress_bar))
    else:
        hits = search(model, corpus, queries, dense)
    return _pad(hits.positions[:, skip_top:], dense.top_k - skip_top)


def _not_negatives(
    data: BeirData, relevant_queries: np.ndarray, relevant_docs: np.ndarray, exclude: Mapping[str, Sequence[str]] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(query, document) positions never paired as negatives: the judged relevant ones and the excluded ones."""
    if not exclude:
        return relevant_queries, relevant_docs
    excluded_queries = data.queries.positions([qid for qid, docs in exclude.items() for _ in docs], missing="mask")
    excluded_docs = data.corpus.positions([doc for docs in exclude.values() for doc in docs])
    known = excluded_queries >= 0  # queries without qrels are not mined
    return (np.concatenate((relevant_queries, excluded_queries[known])),
            np.concatenate((relevant_docs, excluded_docs[known])))


def _log_outcome(
    pairs: int, mined: int, to_score: int, without_positives: list, without_negatives: list, positive_threshold: int
) -> None:
    if without_positives:
        logger.warning(
            "%d queries have no judgement >= %d and were skipped, e.g. %s",
            len(without_positives),
            positive_threshold,
            without_positives[:5],
        )
    if without_negatives:
        logger.warning(
            "%d queries were left without negatives and were skipped, e.g. %s",
            len(without_negatives),
            without_negatives[:5],
        )
    logger.debug(  # the caller reports the outcome (st-tasb mine prints it)
        "mined %d pairs for %d queries (%d (query, doc) pairs to score)", pairs, mined - len(without_negatives), to_score
    )


def distinct_pairs(
    query_positions: np.ndarray, positive_positions: np.ndarray, negative_positions: np.ndarray, corpus_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (query, document) pairs of (query, positive, negative) triples, by row position.

    Args:
        query_positions, positive_positions, negative_positions: one position per triple.
        corpus_size: the number of passages (positions are below it).

    Returns:
        ``(pair_queries, pair_docs, positive_pair, negative_pair)``: the distinct pairs sorted by
        (query, document), and for each triple the index of its (query, positive) and
        (query, negative) pair.

    Example:
        >>> pq, pd, pos, neg = distinct_pairs(np.array([0, 0, 1]), np.array([5, 5, 5]), np.array([6, 7, 6]), 10)
        >>> pq.tolist(), pd.tolist(), pos.tolist(), neg.tolist()
        ([0, 0, 0, 1, 1], [5, 6, 7, 5, 6], [0, 0, 3], [1, 2, 4])
    """
    query_positions = np.asarray(query_positions, dtype=np.int64)
    keys = np.concatenate(
        [
            query_positions * corpus_size + np.asarray(positive_positions, dtype=np.int64),
            query_positions * corpus_size + np.asarray(negative_positions, dtype=np.int64),
        ]
    )
    unique, inverse = np.unique(keys, return_inverse=True)
    n = len(query_positions)
    return unique // corpus_size, unique % corpus_size, inverse[:n], inverse[n:]


def _check_settings(
    sources: Sequence[str],
    model: SentenceTransformer | None,
    top_k: int,
    skip_top: int,
    max_negatives: int | None,
    positive_threshold: int,
) -> None:
    unknown = [s for s in sources if s not in NEGATIVE_SOURCES]
    if unknown or not sources or len(set(sources)) != len(sources):
        raise ValueError(f"sources must be distinct names from {NEGATIVE_SOURCES}, not {list(sources)}")
    if "dense" in sources and model is None:
        raise ValueError("dense negatives need a model (a SentenceTransformer)")
    check_number("top_k", top_k, minimum=1)
    check_number("skip_top", skip_top, minimum=0)
    check_number("max_negatives", max_negatives, minimum=1, optional=True)
    check_number("positive_threshold", positive_threshold, minimum=1)
    if not skip_top < top_k:
        raise ValueError(f"need top_k >= 1 and 0 <= skip_top < top_k; got top_k={top_k}, skip_top={skip_top}")
    if max_negatives is not None and max_negatives < 1:
        raise ValueError(f"max_negatives must be at least 1 (or None), not {max_negatives}")
    if positive_threshold < 1:
        raise ValueError(f"positive_threshold must be at least 1, not {positive_threshold}")


def _flatten_qrels(data: BeirData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The qrels as arrays of query positions, document positions and grades (unknown ids raise)."""
    query_ids = [qid for qid, docs in data.qrels.items() for _ in docs]
    doc_ids = [docid for docs in data.qrels.values() for docid in docs]
    grades = np.fromiter((grade for docs in data.qrels.values() for grade in docs.values()), dtype=np.int64)
    return data.queries.positions(query_ids), data.corpus.positions(doc_ids), grades


def _bm25_hits(corpus: TextStore, queries: TextStore, top_k: int, show_progress_bar: bool) -> Hits:
    """BM25 (bm25s, Lucene variant) top-k; hits without any matching term are padding (-1)."""
    tokenizer = Tokenizer(stopwords="en")
    corpus_tokens: list[list[int]] = []
    for start in range(0, len(corpus), _TOKENIZE_CHUNK):
        chunk = corpus.texts(np.arange(start, min(start + _TOKENIZE_CHUNK, len(corpus))))
        corpus_tokens += tokenizer.tokenize(chunk, update_vocab=True, return_as="ids", show_progress=show_progress_bar)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=show_progress_bar)
    query_tokens = tokenizer.tokenize(
        queries.texts(np.arange(len(queries))), update_vocab=False, return_as="ids", show_progress=show_progress_bar
    )
    documents, scores = retriever.retrieve(query_tokens, k=min(top_k, len(corpus)), show_progress=show_progress_bar)
    return Hits.from_unordered(np.where(scores > 0, documents, -1), scores, corpus)


def _take(ids: pa.Array, positions: np.ndarray) -> pa.Array:
    return ids.take(pa.array(positions, type=pa.int64()))


def _pad(positions: np.ndarray, width: int) -> np.ndarray:
    """Pad a hits matrix with -1 columns up to ``width`` (a corpus smaller than ``top_k`` gives fewer)."""
    return np.pad(positions, ((0, 0), (0, width - positions.shape[1])), constant_values=-1)


def _merge_negatives(
    rankings: np.ndarray, judged_relevant: np.ndarray, corpus_size: int, max_negatives: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Negatives as (row, document) arrays sorted by row, then merged rank.

    ``rankings[row, rank, source]`` holds corpus positions (-1: none). Judged relevant (row, document)
    keys are dropped, a document found by several sources or at several ranks is kept at its best
    rank, and each row keeps its first ``max_negatives``.
    """
    rows, _, _ = np.nonzero(rankings >= 0)  # row-major: (row, rank, source) order
    docs = rankings[rankings >= 0]
    keys = rows * corpus_size + docs
    keep = ~np.isin(keys, judged_relevant)
    _, first = np.unique(keys[keep], return_index=True)
    first.sort()
    rows, docs = rows[keep][first], docs[keep][first]
    if max_negatives is not None:
        rank_in_row = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
        rows, docs = rows[rank_in_row < max_negatives], docs[rank_in_row < max_negatives]
    return rows, docs


def _cross(
    pos_rows: np.ndarray, pos_docs: np.ndarray, neg_rows: np.ndarray, neg_docs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair every positive with every negative of the same row; both inputs sorted by row."""
    n_rows = int(max(pos_rows.max(initial=-1), neg_rows.max(initial=-1))) + 1
    neg_count = np.bincount(neg_rows, minlength=n_rows)
    neg_start = np.concatenate([[0], np.cumsum(neg_count)[:-1]])
    repeats = neg_count[pos_rows]
    pair_pos = np.repeat(np.arange(len(pos_rows)), repeats)
    offsets = np.arange(len(pair_pos)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    pair_neg = neg_start[pos_rows[pair_pos]] + offsets
    return pos_rows[pair_pos], pos_docs[pair_pos], neg_docs[pair_neg]
