"""A data collator that carries teacher inputs (margins, raw texts, row indices) to the loss.

sentence-transformers' default collator turns the label column into ``labels`` and tokenizes every other
column, so integer index columns cannot pass through it. :class:`TASBDataCollator` takes them out first
and returns ``labels`` as a dictionary:

``{"margin": FloatTensor[B], "texts": {"query": [...], "positive": [...], "negative": [...]},
"query_index": LongTensor[B], "positive_index": LongTensor[B], "negative_index": LongTensor[B]}``

(the index keys only when the rows carry them, i.e. ``build_training_dataset(..., with_indices=True)``). The
raw texts let an in-batch teacher with its own tokenizer score the batch; the indices let a cached
teacher look its embeddings up.

Example:
    >>> collator = TASBDataCollator(preprocess_fn=lambda texts, **kwargs: {"input_ids": [len(t) for t in texts]})
    >>> batch = collator([
    ...     {"query": "q1", "positive": "p1", "negative": "n1", "label": 0.5, "query_index": 3,
    ...      "positive_index": 7, "negative_index": 9},
    ...     {"query": "q2", "positive": "p2", "negative": "n2", "label": -1.0, "query_index": 4,
    ...      "positive_index": 8, "negative_index": 2},
    ... ])
    >>> batch["label"]["margin"].tolist(), batch["label"]["negative_index"].tolist()
    ([0.5, -1.0], [9, 2])
    >>> batch["label"]["texts"]["positive"], sorted(k for k in batch if k != "label")
    (['p1', 'p2'], ['negative_input_ids', 'positive_input_ids', 'query_input_ids'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from st_tasb.data.columns import INDEX_COLUMNS, TEXT_COLUMNS
from st_tasb.data.compat import SentenceTransformerDataCollator


@dataclass
class TASBDataCollator(SentenceTransformerDataCollator):
    """Tokenizes query/positive/negative like the default collator; labels become a dict of teacher inputs.

    Construct it like the default collator (``TASBDataCollator(preprocess_fn=model.preprocess)``, or
    :meth:`for_model`) and pass it as ``data_collator`` to ``SentenceTransformerTrainer``.
    """

    @classmethod
    def for_model(cls, model: Any, **kwargs: Any) -> TASBDataCollator:
        """The collator for a SentenceTransformer ``model`` (sentence-transformers 6: ``preprocess``; 5: ``tokenize``)."""
        preprocess = getattr(model, "preprocess", None) or model.tokenize
        return cls(preprocess_fn=preprocess, **kwargs) if _has_preprocess_fn() else cls(tokenize_fn=preprocess, **kwargs)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            return {}
        missing = [c for c in (*TEXT_COLUMNS, "label") if c not in features[0]]
        if missing:
            raise ValueError(
                f"TASBDataCollator needs rows with columns {list(TEXT_COLUMNS) + ['label']}; missing {missing}. "
                "Build the dataset with build_training_dataset(table, queries, corpus, ...)"
            )
        teacher: dict[str, Any] = {
            "margin": torch.tensor([float(row["label"]) for row in features], dtype=torch.float32),
            "texts": {c: [row[c] for row in features] for c in TEXT_COLUMNS},
        }
        for column in INDEX_COLUMNS:
            if column in features[0]:
                teacher[column] = torch.tensor([int(row[column]) for row in features], dtype=torch.long)
        text_rows = [{c: row[c] for c in TEXT_COLUMNS} for row in features]
        batch = super().__call__(text_rows)
        batch["label"] = teacher
        return batch


def _has_preprocess_fn() -> bool:
    return "preprocess_fn" in SentenceTransformerDataCollator.__dataclass_fields__
