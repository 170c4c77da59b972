"""The in-batch teacher of a run, built from its name on the command line, and the cached embeddings of a
bi-encoder teacher."""

from __future__ import annotations

import logging
import typing
from pathlib import Path
from typing import Literal

from st_tasb.data.models import load_cross_encoder, load_sentence_transformer
from st_tasb.data.texts import TextStore
from st_tasb.teachers import (
    BiEncoderTeacher,
    BM25Teacher,
    ColBERTTeacher,
    CrossEncoderTeacher,
    EmbeddingCache,
    FusedTeacher,
    InBatchTeacher,
)

logger = logging.getLogger(__name__)

InBatchTeacherKind = Literal["none", "bi-encoder", "colbert", "cross-encoder", "bm25", "fused"]


def build_inbatch_teacher(
    kind: InBatchTeacherKind,
    model: str | None,
    *,
    queries: TextStore | None = None,
    corpus: TextStore | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    scale: float = 1.0,
    fusion_weight: float | None = None,
    fusion_depth: int = 100,
    show_progress_bar: bool = True,
) -> InBatchTeacher | None:
    """Load the in-batch teacher named on the command line.

    Args:
        kind: ``"none"`` (no in-batch term), ``"bi-encoder"`` (a SentenceTransformer whose embeddings of all queries
            and passages are computed once and cached: nearly free), ``"colbert"`` (the paper's choice),
            ``"cross-encoder"`` (exact but slow), ``"bm25"`` (BM25 with the corpus's statistics, no model) or
            ``"fused"`` (BM25 and the cached bi-encoder ``model``, each min-max normalised per query, weighted:
            :class:`~st_tasb.teachers.FusedTeacher`).
        model: path or Hub id of the teacher model (not needed for ``"none"`` and ``"bm25"``).
        queries: the training queries (bi-encoder, bm25, fused: the teacher reads the batch's rows of them).
        corpus: the training passages (bi-encoder, bm25, fused).
        cache_dir: bi-encoder and fused: keep the cached embeddings in this folder (memory-mapped); a folder
            written earlier for the same stores is reused.
        device: where the teacher runs (default: CUDA when available).
        scale: bi-encoder and fused: factor on its scores (e.g. 10 for cosine scores and a dot-product student).
        fusion_weight: fused only: the weight on BM25, in [0, 1] (choose it on dev).
        fusion_depth: fused only: the rank whose score is each side's 0 in the per-query normalisation.
        show_progress_bar: show the caching progress.

    Returns:
        The teacher, or ``None`` for ``"none"``.

    Raises:
        ValueError: for an unknown kind, a missing model or fusion weight, an option the kind does not take, a
            teacher that needs the stores without them, or a cache whose rows do not match the stores.
        FileNotFoundError, st_tasb.data.models.ModelLoadError: if the model cannot be found.
    """
    check_inbatch_teacher(kind, model, scale=scale, fusion_weight=fusion_weight)
    if kind == "none":
        return None
    if kind == "colbert":
        return ColBERTTeacher(model, device=device)
    if kind == "cross-encoder":
        return CrossEncoderTeacher(load_cross_encoder(model, device=device), device=device)
    if queries is None or corpus is None:
        raise ValueError(f"a {kind} in-batch teacher needs the queries and corpus (it reads the batch's rows of them)")
    if kind == "bm25":
        return BM25Teacher(corpus, queries=queries)
    dense = BiEncoderTeacher(load_sentence_transformer(model, device=device), device=device,
                             scale=scale if kind == "bi-encoder" else 1.0)
    cached_embeddings(dense, queries, corpus, cache_dir, show_progress_bar=show_progress_bar)
    if kind == "bi-encoder":
        return dense
    return FusedTeacher(BM25Teacher(corpus, queries=queries), dense, bm25_weight=fusion_weight, depth=fusion_depth,
                        scale=scale)


def check_inbatch_teacher(
    kind: str, model: str | None, *, scale: float = 1.0, fusion_weight: float | None = None
) -> None:
    """Raise ``ValueError`` unless the in-batch teacher's options fit together (before any data is loaded).

    Example:
        >>> check_inbatch_teacher("fused", "models/minilm")
        Traceback (most recent call last):
        ...
        ValueError: the fused in-batch teacher needs --fusion-weight (the weight on BM25, chosen on dev)
    """
    kinds = typing.get_args(InBatchTeacherKind)
    if kind not in kinds:
        raise ValueError(f"unknown in-batch teacher {kind!r}; choose {', '.join(kinds)}")
    if scale != 1 and kind not in ("bi-encoder", "fused"):
        raise ValueError(f"only the bi-encoder and fused in-batch teachers take a scale, not the {kind} one")
    if fusion_weight is not None and kind != "fused":
        raise ValueError(f"--fusion-weight is for the fused in-batch teacher, not {kind}")
    if fusion_weight is None and kind == "fused":
        raise ValueError("the fused in-batch teacher needs --fusion-weight (the weight on BM25, chosen on dev)")
    if not model and kind not in ("none", "bm25"):
        raise ValueError(f"the {kind} in-batch teacher needs a model (--inbatch-teacher-model PATH)")


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
