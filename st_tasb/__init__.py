"""st-tasb: TAS-Balanced dense retriever training for sentence-transformers.

Topic-aware batches, balanced teacher-margin pairs and dual-teacher Margin-MSE (Hofstätter et al.,
SIGIR 2021) as a standard ``SentenceTransformerTrainer`` run. See the README for the workflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from st_tasb.beir import BeirData, DataFormatError, load_beir, load_qrels
    from st_tasb.cached_losses import CachedDualTeacherMarginMSELoss
    from st_tasb.clusters import QueryClusters
    from st_tasb.collator import TASBDataCollator
    from st_tasb.evaluation import evaluate_model, retrieve
    from st_tasb.losses import DualTeacherMarginMSELoss, dual_teacher_margin_mse
    from st_tasb.metrics import evaluate_run
    from st_tasb.mining import mine_candidates
    from st_tasb.pseudo_queries import PseudoQueries, make_pseudo_queries
    from st_tasb.sampler import BatchComposition, PairIndex, TopicAwareBalancedBatchSampler
    from st_tasb.scoring import score_candidates
    from st_tasb.settings import TrainingSettings
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

_MODULES = {
    "st_tasb.beir": ("BeirData", "DataFormatError", "load_beir", "load_qrels"),
    "st_tasb.cached_losses": ("CachedDualTeacherMarginMSELoss",),
    "st_tasb.clusters": ("QueryClusters",),
    "st_tasb.collator": ("TASBDataCollator",),
    "st_tasb.evaluation": ("evaluate_model", "retrieve"),
    "st_tasb.losses": ("DualTeacherMarginMSELoss", "dual_teacher_margin_mse"),
    "st_tasb.metrics": ("evaluate_run",),
    "st_tasb.mining": ("mine_candidates",),
    "st_tasb.pseudo_queries": ("PseudoQueries", "make_pseudo_queries"),
    "st_tasb.sampler": ("BatchComposition", "PairIndex", "TopicAwareBalancedBatchSampler"),
    "st_tasb.scoring": ("score_candidates",),
    "st_tasb.settings": ("TrainingSettings",),
    "st_tasb.student": ("make_student",),
    "st_tasb.table": ("TeacherScoreTable",),
    "st_tasb.teachers": (
        "BiEncoderTeacher",
        "ColBERTModel",
        "ColBERTTeacher",
        "CrossEncoderTeacher",
        "EmbeddingCache",
        "InBatchTeacher",
        "MissingScoreError",
        "PrecomputedTeacher",
    ),
    "st_tasb.texts": ("TextStore", "UnknownIdError"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "BatchComposition",
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
    "PseudoQueries",
    "QueryClusters",
    "TASBDataCollator",
    "TeacherScoreTable",
    "TextStore",
    "TopicAwareBalancedBatchSampler",
    "TrainingSettings",
    "UnknownIdError",
    "dual_teacher_margin_mse",
    "evaluate_model",
    "evaluate_run",
    "load_beir",
    "load_qrels",
    "make_pseudo_queries",
    "make_student",
    "mine_candidates",
    "retrieve",
    "score_candidates",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, so that ``st-tasb --help`` does not load torch."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'st_tasb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
