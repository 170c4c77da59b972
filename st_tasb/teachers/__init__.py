"""The teachers of TAS-Balanced, one class per kind of model.

Each plays either role. As in-batch teacher of :class:`~st_tasb.training.losses.DualTeacherMarginMSELoss` it
scores every query of a batch against every positive and negative of the batch (``[B, 2B]``); as pairwise
teacher it scores candidate pairs before training (``score_pairs``, used by
:func:`~st_tasb.prepare.scoring.score_candidates`):

* :class:`ColBERTTeacher`: late interaction, the paper's choice (original checkpoint layout or a
  sentence-transformers 6 multi-vector model);
* :class:`CrossEncoderTeacher`: any sentence-transformers ``CrossEncoder``;
* :class:`BiEncoderTeacher`: any ``SentenceTransformer``, nearly free with an :class:`EmbeddingCache`;
* :class:`PrecomputedTeacher`: scores from a table;
* :class:`BM25Teacher`: BM25 (bm25s) with the statistics of the whole corpus;
* :class:`FusedTeacher`: BM25 and a cached bi-encoder, each normalised per query, then weighted;
* :class:`EnsembleTeacher`: the mean of several teachers (the paper's T2).
"""

from st_tasb.teachers.base import InBatchTeacher
from st_tasb.teachers.bi_encoder import BiEncoderTeacher, EmbeddingCache
from st_tasb.teachers.bm25 import BM25Teacher
from st_tasb.teachers.colbert import (
    ColBERTModel,
    ColBERTTeacher,
    late_interaction_scores,
)
from st_tasb.teachers.cross_encoder import CrossEncoderTeacher
from st_tasb.teachers.ensemble import EnsembleTeacher
from st_tasb.teachers.fused import FusedTeacher
from st_tasb.teachers.precomputed import MissingScoreError, PrecomputedTeacher

__all__ = [
    "BM25Teacher",
    "BiEncoderTeacher",
    "ColBERTModel",
    "ColBERTTeacher",
    "CrossEncoderTeacher",
    "EmbeddingCache",
    "EnsembleTeacher",
    "FusedTeacher",
    "InBatchTeacher",
    "MissingScoreError",
    "PrecomputedTeacher",
    "late_interaction_scores",
]
