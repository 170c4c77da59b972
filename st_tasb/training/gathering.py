"""In-batch negatives from every process: the passages of all ranks' batches, gathered for the loss.

With ``N`` processes of ``b`` rows each (DDP), the per-device batches of one step form one global batch (see
:mod:`~st_tasb.training.topic_batches`). Gathering lets every query see the ``2 * N * b`` passages of the global
batch instead of its own device's ``2 * b``:

- :func:`gather_passages` all-gathers the student's positive and negative embeddings in rank order. The gather is
  differentiable (``torch.distributed.nn.all_gather``): its backward pass sums, for each rank's slice, the
  gradients that every rank's loss sends it. With each rank's loss the mean over its own queries, DDP's average
  of the parameter gradients is then exactly the gradient of one process on the whole global batch.
- :func:`gather_labels` gives the in-batch teacher the same passages: the row indices (cached bi-encoder,
  precomputed scores) and the texts (ColBERT, cross-encoder) of every rank's positives and negatives, beside this
  rank's queries, so that it scores the ``[b, 2 * N * b]`` matrix the student is matched against.

With one process (or no initialised ``torch.distributed`` group) nothing is gathered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from sentence_transformers.util import all_gather, get_rank, get_world_size
from torch import Tensor

from st_tasb.data.columns import INDEX_COLUMNS


@dataclass(frozen=True)
class GatheredPassages:
    """The positives and negatives of every rank's batch, and where this rank's rows are among them.

    Attributes:
        positive: ``[G, d]`` positive embeddings of all ranks, rank 0 first (``G = N * b``).
        negative: ``[G, d]`` negative embeddings, in the same order.
        offset: the position of this rank's first row (``rank * b``): row ``i`` of this rank is row
            ``offset + i`` of the gathered tensors.

    Example:
        >>> local = GatheredPassages.local(torch.ones(2, 3), torch.zeros(2, 3))
        >>> local.positive.shape, local.offset
        (torch.Size([2, 3]), 0)
    """

    positive: Tensor
    negative: Tensor
    offset: int

    @classmethod
    def local(cls, positive: Tensor, negative: Tensor) -> GatheredPassages:
        """The passages of this process's batch alone (one process, or gathering off)."""
        return cls(positive, negative, 0)


def gathering_active(requested: bool) -> bool:
    """Whether to gather: requested, and more than one process in an initialised ``torch.distributed`` group."""
    return requested and get_world_size() > 1


def gather_passages(positive: Tensor, negative: Tensor) -> GatheredPassages:
    """All-gather the positive and negative embeddings of every rank, keeping the gradient path to each rank's own.

    Raises:
        ValueError: when ranks hold batches of different sizes (the samplers never yield them; naming the sizes).
    """
    sizes = _gathered_sizes(positive.shape[0], positive.device)
    if len(set(sizes)) > 1:
        raise ValueError(
            f"gathering in-batch negatives needs batches of one size on every process; the ranks hold {sizes}: use "
            "st-tasb's samplers (every batch full), or drop_last"
        )
    return GatheredPassages(all_gather(positive, with_grad=True), all_gather(negative, with_grad=True),
                            get_rank() * positive.shape[0])


def gather_labels(labels: Mapping[str, Any]) -> dict[str, Any]:
    """The labels of this rank's queries with the passages of every rank: ``positive_index``/``negative_index`` and
    ``texts["positive"]``/``texts["negative"]`` gathered in rank order; ``margin``, ``query_index`` and
    ``texts["query"]`` stay this rank's (an in-batch teacher then scores ``[b, 2 * N * b]``)."""
    gathered = dict(labels)
    for key in INDEX_COLUMNS[1:]:
        if key in labels:
            gathered[key] = all_gather(torch.as_tensor(labels[key]))
    texts = labels.get("texts")
    if isinstance(texts, Mapping):
        every_rank: list[Any] = [None] * get_world_size()
        dist.all_gather_object(every_rank, (list(texts["positive"]), list(texts["negative"])))
        gathered["texts"] = {**texts, "positive": [t for rank in every_rank for t in rank[0]],
                             "negative": [t for rank in every_rank for t in rank[1]]}
    return gathered


def _gathered_sizes(size: int, device: torch.device) -> list[int]:
    return [int(value) for value in all_gather(torch.tensor([size], device=device)).tolist()]
