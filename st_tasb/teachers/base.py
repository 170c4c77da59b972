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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

#: The labels keys holding the row positions of a batch (contract of the training dataset).
INDEX_KEYS = ("query_index", "positive_index", "negative_index")
#: The keys of ``labels["texts"]``.
TEXT_KEYS = ("query", "positive", "negative")


class InBatchTeacher(nn.Module):
    """Base class of the in-batch teachers of :class:`~st_tasb.training.losses.DualTeacherMarginMSELoss`.

    Subclasses implement :meth:`score` (texts) or :meth:`score_indices` (row positions) and, for the
    latter, override :meth:`score_batch`. Calling the teacher on a labels dict (``teacher(labels)``)
    runs :meth:`score_batch` without gradients and checks the ``[B, 2B]`` shape.

    Teachers are frozen by :meth:`freeze`, which subclasses call once their modules are built:
    ``requires_grad`` is ``False`` on every parameter, and :meth:`train` keeps them in eval mode even
    when the enclosing loss is put into training mode.

    Example:
        >>> class LengthTeacher(InBatchTeacher):
        ...     def score(self, queries, passages):
        ...         return torch.tensor([[float(len(q) - len(p)) for p in passages] for q in queries])
        >>> texts = {"query": ["ab", "abc"], "positive": ["a", "abcd"], "negative": ["", "ab"]}
        >>> LengthTeacher()({"margin": torch.zeros(2), "texts": texts})
        tensor([[ 1., -2.,  2.,  0.],
                [ 2., -1.,  3.,  1.]])
    """

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
        """Score a batch without gradients and return a float32 ``[B, 2B]`` matrix.

        Raises:
            ValueError: if the labels lack what the teacher needs, or the scores have the wrong shape.
        """
        with torch.no_grad():
            scores = self.score_batch(labels)
        batch_size = labels_batch_size(labels)
        if tuple(scores.shape) != (batch_size, 2 * batch_size):
            raise ValueError(
                f"{type(self).__name__} returned scores of shape {tuple(scores.shape)} for a batch of "
                f"{batch_size} rows; expected ({batch_size}, {2 * batch_size}): each query against all "
                "positives, then all negatives"
            )
        # clone() turns an inference-mode tensor (sentence-transformers' encode) into a normal one
        return scores.to(torch.float32).clone()

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
    missing = [key for key in TEXT_KEYS if key not in texts]
    if missing:
        raise ValueError(f"{teacher}: labels['texts'] lacks {missing}; it needs {list(TEXT_KEYS)}")
    return {key: list(texts[key]) for key in TEXT_KEYS}


def batch_indices(labels: Mapping[str, Any], teacher: str) -> tuple[Tensor, Tensor]:
    """The query rows ``[B]`` and the passage rows ``[2B]`` (positives, then negatives) of a batch.

    Raises:
        ValueError: naming the teacher and the missing index keys.
    """
    missing = [key for key in INDEX_KEYS if not isinstance(labels, Mapping) or key not in labels]
    if missing:
        raise ValueError(
            f"{teacher} looks scores up by row position, but the labels lack {missing}: build the training "
            "dataset with build_training_dataset(table, ..., with_indices=True)"
        )
    query_index, positive_index, negative_index = (torch.as_tensor(labels[key]).long().cpu() for key in INDEX_KEYS)
    return query_index, torch.cat([positive_index, negative_index])


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


@contextmanager
def capped_length(model: Any, max_length: int | None) -> Iterator[None]:
    """Within the block, cut a sentence-transformers model's inputs at ``max_length`` tokens (never raises it).

    Uses ``max_seq_length`` (sentence-transformers 6, and SentenceTransformer in 5) or ``max_length``
    (CrossEncoder in 5) and restores the model's own value afterwards.
    """
    attribute = "max_seq_length" if hasattr(type(model), "max_seq_length") else "max_length"
    own = getattr(model, attribute, None)
    if max_length is None or (own is not None and own <= max_length):
        yield
        return
    setattr(model, attribute, max_length)
    try:
        yield
    finally:
        setattr(model, attribute, own)
