"""The in-batch teacher interface: score every query of a batch against every passage of the batch.

A batch of ``B`` training rows ``(q_i, p_i+, p_i-)`` reaches the loss with the labels dict of
:class:`~st_tasb.training.collator.TASBDataCollator`. An :class:`InBatchTeacher` turns those labels into the
``[B, 2B]`` matrix ``C`` of teacher scores of each query against ``[p_1+, ..., p_B+, p_1-, ..., p_B-]``,
which :class:`~st_tasb.training.losses.DualTeacherMarginMSELoss` matches with its in-batch Margin-MSE term.

Teachers that read text implement :meth:`InBatchTeacher.score`; teachers that look scores up by
row position (cached embeddings, precomputed tables) implement :meth:`InBatchTeacher.score_indices`
and read the ``query_index`` / ``positive_index`` / ``negative_index`` labels instead. Either way a
teacher is frozen: its parameters never require gradients, it stays in eval mode, and it runs under
``torch.no_grad()``.

The same teachers score candidate pairs before training (:meth:`InBatchTeacher.score_pairs`, the
:class:`PairScorer` protocol of :func:`~st_tasb.prepare.scoring.score_candidates`): one model class per
kind of teacher, whichever of the two teachers of the loss it plays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from st_tasb.data.columns import INDEX_COLUMNS, TEXT_COLUMNS
from st_tasb.data.models import default_device
from st_tasb.data.texts import TextStore


@runtime_checkable
class PairScorer(Protocol):
    """Anything that scores (query, passage) pairs given by row positions into two text stores.

    Every :class:`InBatchTeacher` is one; so is :class:`~st_tasb.teachers.ensemble.EnsembleTeacher`.
    """

    name: str

    def score_pairs(
        self, queries: TextStore, corpus: TextStore, query_positions: np.ndarray, doc_positions: np.ndarray
    ) -> np.ndarray:
        """One float score per pair, ``score(queries[query_positions[i]], corpus[doc_positions[i]])``."""


class InBatchTeacher(nn.Module):
    """Base class of the in-batch teachers of :class:`~st_tasb.training.losses.DualTeacherMarginMSELoss`.

    Subclasses implement :meth:`score` (texts) or :meth:`score_indices` (row positions) and, for the
    latter, override :meth:`score_batch`. Calling the teacher on a labels dict (``teacher(labels)``)
    runs :meth:`score_batch` without gradients and checks the ``[B, 2B]`` shape.

    Teachers are frozen by :meth:`freeze`, which subclasses call once their modules are built:
    ``requires_grad`` is ``False`` on every parameter, and :meth:`train` keeps them in eval mode even
    when the enclosing loss is put into training mode.

    Attributes:
        name: how a scoring job's manifest names the teacher (a job is never resumed with another teacher).

    Example:
        >>> class LengthTeacher(InBatchTeacher):
        ...     def score(self, queries, passages):
        ...         return torch.tensor([[float(len(q) - len(p)) for p in passages] for q in queries])
        >>> texts = {"query": ["ab", "abc"], "positive": ["a", "abcd"], "negative": ["", "ab"]}
        >>> LengthTeacher()({"margin": torch.zeros(2), "texts": texts})
        tensor([[ 1., -2.,  2.,  0.],
                [ 2., -1.,  3.,  1.]])
        >>> queries = TextStore.from_records([("q1", "ab"), ("q2", "abc")])
        >>> corpus = TextStore.from_records([("d1", "a"), ("d2", "abcd")])
        >>> LengthTeacher().score_pairs(queries, corpus, np.array([1, 0, 1]), np.array([0, 1, 1]))
        array([ 2., -2., -1.], dtype=float32)
    """

    name: str = "teacher"

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> Tensor:
        """Teacher scores of every query against every passage.

        Args:
            queries: ``Bq`` query texts.
            passages: ``P`` passage texts.

        Returns:
            A ``[Bq, P]`` tensor of scores.

        Raises:
            NotImplementedError: for teachers that score row positions only.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not score texts; it reads row positions (see score_indices)"
        )

    def score_indices(self, query_index: Tensor, passage_index: Tensor) -> Tensor:
        """Teacher scores of every query row against every passage row (for index-based teachers).

        Args:
            query_index: ``Bq`` row positions into the queries store.
            passage_index: ``P`` row positions into the corpus store.

        Returns:
            A ``[Bq, P]`` tensor of scores.

        Raises:
            NotImplementedError: for teachers that score texts only.
        """
        raise NotImplementedError(f"{type(self).__name__} does not score row positions; it reads texts (see score)")

    def score_batch(self, labels: Mapping[str, Any]) -> Tensor:
        """The ``[B, 2B]`` scores of a batch: each query against all positives, then all negatives.

        The default reads ``labels["texts"]`` and calls :meth:`score`; index-based teachers override it.

        Args:
            labels: the labels dict of :class:`~st_tasb.training.collator.TASBDataCollator`.

        Returns:
            A ``[B, 2B]`` tensor.

        Raises:
            ValueError: if the labels lack the texts.
        """
        texts = batch_texts(labels, type(self).__name__)
        return self.score(texts["query"], texts["positive"] + texts["negative"])

    def forward(self, labels: Mapping[str, Any]) -> Tensor:
        """Score a batch without gradients and return a float32 ``[B, 2B]`` matrix (``[B, 2G]`` when the labels
        carry the ``G`` passages of every process).

        Raises:
            ValueError: if the labels lack what the teacher needs, or the scores have the wrong shape.
        """
        with torch.no_grad():
            scores = self.score_batch(labels)
        batch_size = labels_batch_size(labels)
        passages = _passages_per_side(labels, batch_size)
        if tuple(scores.shape) != (batch_size, 2 * passages):
            raise ValueError(
                f"{type(self).__name__} returned scores of shape {tuple(scores.shape)} for a batch of "
                f"{batch_size} rows; expected ({batch_size}, {2 * passages}): each query against all "
                "positives, then all negatives"
            )
        # clone() turns an inference-mode tensor (sentence-transformers' encode) into a normal one
        return scores.to(torch.float32).clone()

    def score_pairs(
        self, queries: TextStore, corpus: TextStore, query_positions: np.ndarray, doc_positions: np.ndarray
    ) -> np.ndarray:
        """One score per (query, passage) pair given by row positions: the teacher as pairwise teacher.

        The default scores each distinct query against its passages with :meth:`score`; teachers with a
        cheaper way (one forward pass per pair, cached embeddings) override it.

        Args:
            queries: the query texts.
            corpus: the passage texts.
            query_positions: ``N`` row positions into ``queries``.
            doc_positions: ``N`` row positions into ``corpus``.

        Returns:
            A float32 array of ``N`` scores.
        """
        query_positions, doc_positions = np.asarray(query_positions), np.asarray(doc_positions)
        scores = np.empty(len(query_positions), dtype=np.float32)
        order = np.argsort(query_positions, kind="stable")
        starts = np.flatnonzero(np.diff(query_positions[order])) + 1
        with torch.no_grad():
            for group in np.split(order, starts):
                if len(group):
                    query = queries.texts(query_positions[group[:1]])
                    scores[group] = self.score(query, corpus.texts(doc_positions[group]))[0].float().cpu().numpy()
        return scores

    def freeze(self) -> InBatchTeacher:
        """Stop gradients to every parameter and switch to eval mode; returns ``self``."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> InBatchTeacher:
        """Keep the teacher in eval mode whatever ``mode`` says (no dropout in teacher scores)."""
        return super().train(False)

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the model card (subclasses add theirs)."""
        return {}


def _passages_per_side(labels: Mapping[str, Any], batch_size: int) -> int:
    """How many positives (and as many negatives) the labels carry: the batch's own, or every process's when they
    were gathered (:func:`~st_tasb.training.gathering.gather_labels`)."""
    if "positive_index" in labels:
        return len(labels["positive_index"])
    texts = labels.get("texts")
    return len(texts["positive"]) if isinstance(texts, Mapping) and "positive" in texts else batch_size


def labels_batch_size(labels: Mapping[str, Any]) -> int:
    """The number of rows of a labels dict (the length of its ``margin``)."""
    margin = labels.get("margin") if isinstance(labels, Mapping) else None
    if margin is None:
        raise ValueError(
            "the labels have no 'margin': in-batch teachers need the labels dict of TASBDataCollator "
            "(pass data_collator=TASBDataCollator.for_model(model) to the trainer)"
        )
    return len(margin)


def batch_texts(labels: Mapping[str, Any], teacher: str) -> dict[str, list[str]]:
    """``labels["texts"]`` as lists of strings, checked for completeness.

    Raises:
        ValueError: naming the teacher and the missing keys.
    """
    texts = labels.get("texts") if isinstance(labels, Mapping) else None
    if not isinstance(texts, Mapping):
        raise ValueError(
            f"{teacher} scores texts, but the labels have no 'texts' dict: use TASBDataCollator, whose labels "
            "carry the query, positive and negative texts"
        )
    missing = [key for key in TEXT_COLUMNS if key not in texts]
    if missing:
        raise ValueError(f"{teacher}: labels['texts'] lacks {missing}; it needs {list(TEXT_COLUMNS)}")
    return {key: list(texts[key]) for key in TEXT_COLUMNS}


def batch_indices(labels: Mapping[str, Any], teacher: str) -> tuple[Tensor, Tensor]:
    """The query rows ``[B]`` and the passage rows ``[2B]`` (positives, then negatives) of a batch.

    Raises:
        ValueError: naming the teacher and the missing index keys.
    """
    missing = [key for key in INDEX_COLUMNS if not isinstance(labels, Mapping) or key not in labels]
    if missing:
        raise ValueError(
            f"{teacher} looks scores up by row position, but the labels lack {missing}: build the training "
            "dataset with build_training_dataset(table, ..., with_indices=True)"
        )
    query_index, positive_index, negative_index = (torch.as_tensor(labels[key]).long().cpu() for key in INDEX_COLUMNS)
    return query_index, torch.cat([positive_index, negative_index])


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available, else CPU."""
    return torch.device(device if device is not None else default_device())


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The teacher's compute dtype: ``dtype``, or bf16 (fp16 where bf16 is unsupported) on CUDA, fp32 elsewhere.

    Example:
        >>> resolve_dtype(None, torch.device("cpu")), resolve_dtype("float16", torch.device("cpu"))
        (torch.float32, torch.float16)
    """
    if dtype is not None:
        resolved = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype must be a torch dtype or its name, not {dtype!r}")
        return resolved
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
