"""The in-batch teacher of a run, built from its name on the command line, and the cached embeddings of a
bi-encoder teacher."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from st_tasb.data.models import load_cross_encoder, load_sentence_transformer
from st_tasb.data.texts import TextStore
from st_tasb.teachers import (
    BiEncoderTeacher,
    ColBERTTeacher,
    CrossEncoderTeacher,
    EmbeddingCache,
    InBatchTeacher,
)

logger = logging.getLogger(__name__)

InBatchTeacherKind = Literal["none", "bi-encoder", "colbert", "cross-encoder"]


def build_inbatch_teacher(
    kind: InBatchTeacherKind,
    model: str | None,
    *,
    queries: TextStore | None = None,
    corpus: TextStore | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    scale: float = 1.0,
    show_progress_bar: bool = True,
) -> InBatchTeacher | None:
    """Load the in-batch teacher named on the command line.

    Args:
        kind: ``"none"`` (pairwise Margin-MSE only), ``"bi-encoder"`` (a SentenceTransformer whose
            embeddings of all queries and passages are computed once and cached: nearly free),
            ``"colbert"`` (the paper's choice) or ``"cross-encoder"`` (exact but slow).
        model: path or Hub id of the teacher model (not needed for ``"none"``).
        queries: the training queries (bi-encoder: the cache is aligned with them).
        corpus: the training passages (bi-encoder).
        cache_dir: bi-encoder only: keep the cached embeddings in this folder (memory-mapped); a folder
            written earlier for the same stores is reused.
        device: where the teacher runs (default: CUDA when available).
        scale: bi-encoder only: factor on its scores (e.g. 10 for cosine scores and a dot-product student).
        show_progress_bar: show the caching progress.

    Returns:
        The teacher, or ``None`` for ``"none"``.

    Raises:
        ValueError: for an unknown kind, a missing model, a bi-encoder without the stores, or a cache
            whose rows do not match the stores.
        FileNotFoundError, st_tasb.data.models.ModelLoadError: if the model cannot be found.
    """
    if kind == "none":
        return None
    if scale != 1 and kind != "bi-encoder":
        raise ValueError(f"only the bi-encoder in-batch teacher takes a scale, not the {kind} one")
    if kind not in ("bi-encoder", "colbert", "cross-encoder"):
        raise ValueError(f"unknown in-batch teacher {kind!r}; choose none, bi-encoder, colbert or cross-encoder")
    if not model:
        raise ValueError(f"the {kind} in-batch teacher needs a model (--inbatch-teacher-model PATH)")
    if kind == "colbert":
        return ColBERTTeacher(model, device=device)
    if kind == "cross-encoder":
        return CrossEncoderTeacher(load_cross_encoder(model, device=device), device=device)
    if queries is None or corpus is None:
        raise ValueError("a bi-encoder in-batch teacher needs the queries and corpus to cache their embeddings")
    teacher = BiEncoderTeacher(load_sentence_transformer(model, device=device), device=device, scale=scale)
    cached_embeddings(teacher, queries, corpus, cache_dir, show_progress_bar=show_progress_bar)
    return teacher


def cached_embeddings(
    teacher: BiEncoderTeacher,
    queries: TextStore,
    corpus: TextStore,
    cache_dir: str | Path | None,
    *,
    show_progress_bar: bool = True,
) -> EmbeddingCache:
    """Give ``teacher`` the embeddings of all queries and passages: read from ``cache_dir`` if written there
    before, else encoded (and written there). Delete the folder when the model or the texts change.

    Returns:
        The cache, also set as ``teacher.cache``.

    Raises:
        ValueError: if the cache in ``cache_dir`` has other row counts than ``queries`` and ``corpus``.
    """
    if cache_dir is None or not (Path(cache_dir) / "corpus.npy").is_file():
        return teacher.build_cache(queries, corpus, path=cache_dir, show_progress_bar=show_progress_bar)
    cache = EmbeddingCache.load(cache_dir)
    if len(cache.queries) != len(queries) or len(cache.corpus) != len(corpus):
        raise ValueError(
            f"the embedding cache {cache_dir} has {len(cache.queries)} queries and {len(cache.corpus)} passages, "
            f"but the data has {len(queries)} and {len(corpus)}: delete it or choose another cache folder"
        )
    teacher.cache = cache
    logger.info("reusing the teacher embeddings cached in %s", cache_dir)
    return cache
