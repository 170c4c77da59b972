"""st-tasb: TAS-Balanced dense retriever training for sentence-transformers.

Topic-aware batches, balanced teacher-margin pairs and dual-teacher Margin-MSE (Hofstätter et al.,
SIGIR 2021) as a standard ``SentenceTransformerTrainer`` run. See the README for the workflow.
"""

from st_tasb.beir import BeirData, DataFormatError, load_beir, load_qrels
from st_tasb.cached_losses import CachedDualTeacherMarginMSELoss
from st_tasb.clusters import QueryClusters
from st_tasb.collator import TASBDataCollator
from st_tasb.evaluation import evaluate_model, retrieve
from st_tasb.losses import DualTeacherMarginMSELoss, dual_teacher_margin_mse
from st_tasb.metrics import evaluate_run
from st_tasb.mining import mine_candidates
from st_tasb.sampler import PairIndex, TopicAwareBalancedBatchSampler
from st_tasb.scoring import score_candidates
from st_tasb.student import make_student
from st_tasb.table import TeacherScoreTable
from st_tasb.teachers import (
    BiEncoderTeacher,
    ColBERTModel,
    ColBERTTeacher,
    CrossEncoderTeacher,
    EmbeddingCache,
    InBatchTeacher,
    MissingScoreError,
    PrecomputedTeacher,
)
from st_tasb.texts import TextStore, UnknownIdError

__version__ = "0.1.0"

__all__ = [
    "BeirData",
    "BiEncoderTeacher",
    "CachedDualTeacherMarginMSELoss",
    "ColBERTModel",
    "ColBERTTeacher",
    "CrossEncoderTeacher",
    "DataFormatError",
    "DualTeacherMarginMSELoss",
    "EmbeddingCache",
    "InBatchTeacher",
    "MissingScoreError",
    "PairIndex",
    "PrecomputedTeacher",
    "QueryClusters",
    "TASBDataCollator",
    "TeacherScoreTable",
    "TextStore",
    "TopicAwareBalancedBatchSampler",
    "UnknownIdError",
    "dual_teacher_margin_mse",
    "evaluate_model",
    "evaluate_run",
    "load_beir",
    "load_qrels",
    "make_student",
    "mine_candidates",
    "retrieve",
    "score_candidates",
]
