"""In-batch teachers for :class:`~st_tasb.training.losses.DualTeacherMarginMSELoss`.

Each scores every query of a batch against every positive and negative of the batch (``[B, 2B]``):

* :class:`ColBERTTeacher`: late interaction, the paper's choice (original checkpoint layout or a
  sentence-transformers 6 multi-vector model);
* :class:`CrossEncoderTeacher`: any sentence-transformers ``CrossEncoder``;
* :class:`BiEncoderTeacher`: any ``SentenceTransformer``, nearly free with an :class:`EmbeddingCache`;
* :class:`PrecomputedTeacher`: scores from a table.
"""

from st_tasb.teachers.base import InBatchTeacher
from st_tasb.teachers.bi_encoder import BiEncoderTeacher, EmbeddingCache
from st_tasb.teachers.colbert import (
    ColBERTModel,
    ColBERTTeacher,
    late_interaction_scores,
)
from st_tasb.teachers.cross_encoder import CrossEncoderTeacher
from st_tasb.teachers.precomputed import MissingScoreError, PrecomputedTeacher

__all__ = [
    "BiEncoderTeacher",
    "ColBERTModel",
    "ColBERTTeacher",
    "CrossEncoderTeacher",
    "EmbeddingCache",
    "InBatchTeacher",
    "MissingScoreError",
    "PrecomputedTeacher",
    "late_interaction_scores",
]
