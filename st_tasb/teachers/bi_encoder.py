"""Bi-encoder in-batch teacher: any SentenceTransformer, live or from cached embeddings.

A bi-encoder scores a query and a passage from two independent embeddings, so the in-batch scores of
a whole training run can come from embeddings computed once: :meth:`BiEncoderTeacher.build_cache`
encodes every query and passage of the training stores, and the teacher then scores a batch by
looking up its rows (``query_index``, ``positive_index``, ``negative_index`` of the training dataset)
with no teacher forward pass. The scores are exactly those the live model would give. As pairwise
teacher (:meth:`BiEncoderTeacher.score_pairs`) it encodes each distinct query and passage once, or reads
the cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, SimilarityFunction
from torch import Tensor
from tqdm.auto import tqdm

from st_tasb.data.models import capped_length, model_name
from st_tasb.data.progress import progress_enabled
from st_tasb.data.texts import TextStore
from st_tasb.teachers.base import (
    InBatchTeacher,
    batch_indices,
    resolve_device,
    resolve_dtype,
)

_FILES = {"queries": "queries.npy", "corpus": "corpus.npy"}


@dataclass(frozen=True)
class EmbeddingCache:
    """Teacher embeddings of all queries and passages, rows aligned with the queries / corpus stores.

    Args:
        queries: ``[n_queries, dim]`` array (may be a read-only memory map).
        corpus: ``[n_passages, dim]`` array.

    Raises:
        ValueError: if an array is not 2-D or the two dimensions differ.

    Example:
        >>> import tempfile
        >>> cache = EmbeddingCache(np.eye(2, 3, dtype=np.float32), np.ones((4, 3), dtype=np.float32))
        >>> loaded = EmbeddingCache.load(cache.save(tempfile.mkdtemp()))
        >>> loaded.queries.shape, loaded.corpus.shape, type(loaded.corpus).__name__
        ((2, 3), (4, 3), 'memmap')
    """

    queries: np.ndarray
    corpus: np.ndarray

    def __post_init__(self) -> None:
        for name in _FILES:
            array = getattr(self, name)
            if np.ndim(array) != 2:
                raise ValueError(f"EmbeddingCache.{name} must be a 2-D array [rows, dim], not shape {np.shape(array)}")
        if self.queries.shape[1] != self.corpus.shape[1]:
            raise ValueError(
                f"EmbeddingCache: query embeddings have dimension {self.queries.shape[1]} but passage embeddings "
                f"have {self.corpus.shape[1]}"
            )

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return int(self.queries.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``queries.npy`` and ``corpus.npy`` into the folder ``path``; returns the folder."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for name, filename in _FILES.items():
            np.save(folder / filename, getattr(self, name))
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, mmap_mode: str | None = "r") -> EmbeddingCache:
        """Read a saved cache, memory-mapped by default (MS MARCO's passages need not fit in memory).

        Raises:
            FileNotFoundError: naming the missing file.
        """
        folder = Path(path)
        arrays = {}
        for name, filename in _FILES.items():
            if not (folder / filename).is_file():
                raise FileNotFoundError(f"embedding cache {folder}: {filename} not found")
            arrays[name] = np.load(folder / filename, mmap_mode=mmap_mode)
        return cls(**arrays)

    @classmethod
    def coerce(cls, cache: Any) -> EmbeddingCache:
        """An :class:`EmbeddingCache` from itself, a folder path, a ``(queries, corpus)`` pair or a mapping.

        Raises:
            TypeError: for anything else.
        """
        if isinstance(cache, EmbeddingCache):
            return cache
        if isinstance(cache, (str, os.PathLike)):
            return cls.load(cache)
        if isinstance(cache, Mapping):
            return cls(np.asarray(cache["queries"]), np.asarray(cache["corpus"]))
        if isinstance(cache, (tuple, list)) and len(cache) == 2:
            return cls(np.asarray(cache[0]), np.asarray(cache[1]))
        raise TypeError(
            "cache must be an EmbeddingCache, a folder of queries.npy and corpus.npy, a (queries, corpus) pair "
            f"of arrays or a mapping with those keys, not {type(cache).__name__}"
        )

    def rows(self, name: str, index: np.ndarray) -> np.ndarray:
        """The embeddings at row positions ``index`` of ``"queries"`` or ``"corpus"``.

        Raises:
            IndexError: naming the first out-of-range position and the number of rows.
        """
        array = getattr(self, name)
        bad = (index < 0) | (index >= len(array))
        if bad.any():
            raise IndexError(
                f"row {int(index[bad][0])} is out of range for the cached {name} embeddings ({len(array)} rows): "
                "the cache was built from other stores than the training dataset's"
            )
        return np.asarray(array[index])


class BiEncoderTeacher(InBatchTeacher):
    """A frozen SentenceTransformer teacher; exact in-batch scores from cached embeddings when given a cache.

    Args:
        model: a SentenceTransformer or its path / Hub id; may be ``None`` when ``cache`` holds all the
            embeddings needed (then ``similarity_fn_name`` is required). The teacher takes the model
            over: its parameters are frozen and it is moved to ``device`` and ``dtype``.
        cache: embeddings of all queries and passages (an :class:`EmbeddingCache`, a folder saved by
            :meth:`EmbeddingCache.save`, or a ``(queries, corpus)`` pair of arrays), rows aligned with
            the training dataset's ``query_index`` / ``positive_index`` / ``negative_index``.
        similarity_fn_name: ``"dot"``, ``"cosine"``, ... (default: the model's own).
        query_max_length: query token cap for live encoding (never raises the model's own cap).
        passage_max_length: passage token cap for live encoding.
        batch_size: texts per encoding batch.
        device: where the teacher runs (default: CUDA when available, else CPU).
        dtype: compute dtype of the model (default: bf16, or fp16 where unsupported, on CUDA; fp32 on CPU).
        scale: factor on every score (e.g. to bring cosine scores in [-1, 1] to the range of a student's
            unnormalised dot products).
        name: how a scoring job's manifest names the teacher (default: ``bi-encoder:MODEL:SIMILARITY``,
            with `` x SCALE`` when scaled).

    Raises:
        ValueError: without a model and a cache, without a similarity, or if the cache's dimension
            differs from the model's.

    Example:
        >>> cache = EmbeddingCache(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[3.0, 1.0], [1.0, 1.0], [0.0, 1.0]]))
        >>> teacher = BiEncoderTeacher(cache=cache, similarity_fn_name="dot", device="cpu")
        >>> teacher.score_indices(torch.tensor([1, 0]), torch.tensor([0, 2]))
        tensor([[2., 2.],
                [3., 0.]])
        >>> store = TextStore.from_records([("a", "unused"), ("b", "unused"), ("c", "unused")])
        >>> teacher.score_pairs(store, store, np.array([1, 0]), np.array([0, 2]))
        array([2., 0.], dtype=float32)
    """

    def __init__(
        self,
        model: SentenceTransformer | str | None = None,
        *,
        cache: EmbeddingCache | str | os.PathLike | tuple[np.ndarray, np.ndarray] | None = None,
        similarity_fn_name: str | None = None,
        query_max_length: int | None = 30,
        passage_max_length: int | None = 200,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        scale: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if model is None and cache is None:
            raise ValueError("BiEncoderTeacher needs a model, a cache of embeddings, or both")
        self._device = resolve_device(device)
        if model is not None and not isinstance(model, SentenceTransformer):
            model = SentenceTransformer(str(model), device=str(self._device))
        self.encoder = (
            None if model is None else model.to(device=self._device, dtype=resolve_dtype(dtype, self._device))
        )
        similarity_fn_name = similarity_fn_name or (None if model is None else model.similarity_fn_name)
        if similarity_fn_name is None:
            raise ValueError("BiEncoderTeacher without a model needs similarity_fn_name ('dot', 'cosine', ...)")
        self.similarity_fn_name = SimilarityFunction(similarity_fn_name).value
        self.similarity = SimilarityFunction.to_similarity_fn(self.similarity_fn_name)
        self.pairwise_similarity = SimilarityFunction.to_similarity_pairwise_fn(self.similarity_fn_name)
        self.scale = scale
        described = model_name(model) if model is not None else "cached"
        scaled = f" x {scale:g}" if scale != 1 else ""
        self.name = name or f"bi-encoder:{described}:{self.similarity_fn_name}{scaled}"
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.batch_size = batch_size
        self.cache = None if cache is None else self._checked(EmbeddingCache.coerce(cache))
        self.freeze()

    def _checked(self, cache: EmbeddingCache) -> EmbeddingCache:
        model_dim = None
        if self.encoder is not None:  # sentence-transformers 6 renamed get_sentence_embedding_dimension
            dimension = getattr(self.encoder, "get_embedding_dimension", None)
            model_dim = dimension() if dimension else self.encoder.get_sentence_embedding_dimension()
        if model_dim is not None and model_dim != cache.dim:
            raise ValueError(
                f"BiEncoderTeacher: the cached embeddings have dimension {cache.dim} but the model's have "
                f"{model_dim}; rebuild the cache with this model (build_cache)"
            )
        return cache

    def build_cache(
        self,
        queries: TextStore,
        corpus: TextStore,
        *,
        path: str | os.PathLike | None = None,
        dtype: str | np.dtype = "float32",
        chunk_size: int = 1024,
        show_progress_bar: bool = True,
    ) -> EmbeddingCache:
        """Encode every query and passage once and use the embeddings from now on.

        Args:
            queries: the queries store the training dataset's ``query_index`` points into.
            corpus: the corpus store its ``positive_index`` / ``negative_index`` point into.
            path: folder to write ``queries.npy`` / ``corpus.npy`` into as they are encoded (memory-mapped,
                for corpora larger than memory); in memory when ``None``.
            dtype: storage dtype (``"float16"`` halves the size; scores are computed in float32).
            chunk_size: texts read from a store and encoded per step (one progress-bar update).
            show_progress_bar: show a tqdm bar per store.

        Returns:
            The cache, also set as :attr:`cache`.

        Raises:
            ValueError: if the teacher has no model.
        """
        if self.encoder is None:
            raise ValueError("BiEncoderTeacher.build_cache needs a model to encode with")
        folder = None if path is None else Path(path)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, store in (("queries", queries), ("corpus", corpus)):
            target = None if folder is None else folder / _FILES[name]
            arrays[name] = self.encode_store(store, is_query=name == "queries", path=target, dtype=dtype,
                                             chunk_size=chunk_size, show_progress_bar=show_progress_bar)
        return self.use_cache(EmbeddingCache.load(folder) if folder is not None else EmbeddingCache(**arrays))

    def use_cache(self, cache: EmbeddingCache) -> EmbeddingCache:
        """Score from ``cache`` from now on (rows aligned with the training stores); returns it.

        Raises:
            ValueError: if its dimension is not the model's.
        """
        self.cache = self._checked(cache)
        return self.cache

    def encode_store(
        self,
        store: TextStore,
        *,
        is_query: bool,
        path: str | os.PathLike | None = None,
        dtype: str | np.dtype = "float32",
        chunk_size: int = 1024,
        show_progress_bar: bool = True,
    ) -> np.ndarray:
        """The embeddings of every text of ``store`` in row order, as queries or as passages.

        Args:
            store: the texts.
            is_query: encode them as queries (``encode_query``, the query length cap) or as passages.
            path: an ``.npy`` file to write them into as they are encoded (returned memory-mapped); in memory
                when ``None``.
            dtype, chunk_size, show_progress_bar: as in :meth:`build_cache`.

        Raises:
            ValueError: if the store is empty or the teacher has no model.
        """
        target = None if path is None else Path(path)
        dtype = np.dtype(dtype)
        out = None
        bar = tqdm(total=len(store), desc=f"Encoding {store.name}", unit="text",
                   disable=not progress_enabled(show_progress_bar))
        for start in range(0, len(store), chunk_size):
            stop = min(start + chunk_size, len(store))
            embeddings = self._encode(store.texts(np.arange(start, stop)), is_query).float().cpu().numpy()
            if out is None:
                shape = (len(store), embeddings.shape[1])
                out = (
                    np.empty(shape, dtype) if target is None else np.lib.format.open_memmap(target, "w+", dtype, shape)
                )
            out[start:stop] = embeddings
            bar.update(stop - start)
        bar.close()
        if out is None:
            raise ValueError(f"{store.name} is empty: nothing to cache")
        if isinstance(out, np.memmap):
            out.flush()
        return out

    def _encode(self, texts: Sequence[str], is_query: bool) -> Tensor:
        if self.encoder is None:
            raise ValueError("this BiEncoderTeacher has no model, so it can only score cached rows (score_indices)")
        encode = self.encoder.encode_query if is_query else self.encoder.encode_document
        with (
            torch.no_grad(),
            capped_length(self.encoder, self.query_max_length if is_query else self.passage_max_length),
        ):
            return encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> Tensor:
        """Scores ``[Bq, P]`` from live embeddings of the texts."""
        return self.scale * self.similarity(self._encode(queries, True).float(), self._encode(passages, False).float())

    def score_indices(self, query_index: Tensor, passage_index: Tensor) -> Tensor:
        """Scores ``[Bq, P]`` from the cached embeddings of query rows and passage rows.

        Raises:
            ValueError: without a cache.
            IndexError: for a row outside the cache.
        """
        if self.cache is None:
            raise ValueError("BiEncoderTeacher has no cache: pass cache= or call build_cache first")
        query_rows = self.cache.rows("queries", np.asarray(query_index, dtype=np.int64))
        passage_rows = self.cache.rows("corpus", np.asarray(passage_index, dtype=np.int64))
        query_embeddings = torch.from_numpy(query_rows).to(self._device, torch.float32)
        passage_embeddings = torch.from_numpy(passage_rows).to(self._device, torch.float32)
        return self.scale * self.similarity(query_embeddings, passage_embeddings)

    def score_pairs(
        self, queries: TextStore, corpus: TextStore, query_positions: np.ndarray, doc_positions: np.ndarray
    ) -> np.ndarray:
        """One score per (query, passage) pair: from the cache when there is one, else each distinct query and
        passage encoded once."""
        unique_queries, query_index = np.unique(np.asarray(query_positions, dtype=np.int64), return_inverse=True)
        unique_docs, doc_index = np.unique(np.asarray(doc_positions, dtype=np.int64), return_inverse=True)
        if self.cache is not None:
            query_embeddings = torch.from_numpy(self.cache.rows("queries", unique_queries)).float()
            doc_embeddings = torch.from_numpy(self.cache.rows("corpus", unique_docs)).float()
        else:
            query_embeddings = self._encode(queries.texts(unique_queries), True).float().cpu()
            doc_embeddings = self._encode(corpus.texts(unique_docs), False).float().cpu()
        scores = self.pairwise_similarity(query_embeddings[query_index], doc_embeddings[doc_index])
        return (self.scale * scores).numpy().astype(np.float32)

    def score_batch(self, labels: Mapping[str, Any]) -> Tensor:
        """Cached scores when there is a cache (needs the index labels), live scores of the texts otherwise."""
        if self.cache is None:
            return super().score_batch(labels)
        return self.score_indices(*batch_indices(labels, "BiEncoderTeacher with a cache"))

    def get_config_dict(self) -> dict[str, Any]:
        """The teacher's settings for the model card."""
        base_model = None if self.encoder is None else getattr(self.encoder.model_card_data, "base_model", None)
        return {
            "model": base_model,
            "similarity_fn_name": self.similarity_fn_name,
            "scale": self.scale,
            "cached": self.cache is not None,
        }
