"""st-tasb: TAS-Balanced dense retriever training for sentence-transformers.

Topic-aware batches, balanced teacher-margin pairs and dual-teacher Margin-MSE (Hofstätter et al.,
SIGIR 2021) as a standard ``SentenceTransformerTrainer`` run. See the README for the workflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from st_tasb.data.beir import BeirData, DataFormatError, load_beir, load_qrels
    from st_tasb.data.texts import TextStore, UnknownIdError
    from st_tasb.prepare.clusters import QueryClusters
    from st_tasb.prepare.mining import mine_candidates
    from st_tasb.prepare.pseudo_queries import PseudoQueries, make_pseudo_queries
    from st_tasb.prepare.scoring import score_candidates
    from st_tasb.prepare.table import TeacherScoreTable
    from st_tasb.retrieval.evaluation import RetrievalEvaluator, evaluate_model
    from st_tasb.retrieval.metrics import evaluate_run
    from st_tasb.retrieval.search import SearchSettings, retrieve
    from st_tasb.teachers import (
        BiEncoderTeacher,
        BM25Teacher,
        ColBERTModel,
        ColBERTTeacher,
        CrossEncoderTeacher,
        EmbeddingCache,
        FusedTeacher,
        InBatchTeacher,
        MissingScoreError,
        PrecomputedTeacher,
    )
    from st_tasb.training.anchor_sampler import TopicAwareBatchSampler
    from st_tasb.training.cached_losses import CachedDualTeacherMarginMSELoss, CachedTeacherDistillationLoss
    from st_tasb.training.collator import TASBDataCollator
    from st_tasb.training.dataset import build_pair_dataset, build_training_dataset
    from st_tasb.training.fit import fit
    from st_tasb.training.losses import (
        DualTeacherMarginMSELoss,
        ScaledSimilarity,
        TeacherDistillationLoss,
        dual_teacher_margin_mse,
    )
    from st_tasb.training.recipes import RECIPES, Recipe
    from st_tasb.training.sampler import PairIndex, TopicAwareBalancedBatchSampler
    from st_tasb.training.settings import TrainingSettings
    from st_tasb.training.student import make_student
    from st_tasb.training.terms import LossTerms
    from st_tasb.training.topic_batches import BatchComposition

__version__ = "0.1.0"

_MODULES = {
    "st_tasb.data.beir": ("BeirData", "DataFormatError", "load_beir", "load_qrels"),
    "st_tasb.training.cached_losses": ("CachedDualTeacherMarginMSELoss", "CachedTeacherDistillationLoss"),
    "st_tasb.prepare.clusters": ("QueryClusters",),
    "st_tasb.training.collator": ("TASBDataCollator",),
    "st_tasb.training.dataset": ("build_pair_dataset", "build_training_dataset"),
    "st_tasb.training.fit": ("fit",),
    "st_tasb.retrieval.evaluation": ("RetrievalEvaluator", "evaluate_model"),
    "st_tasb.retrieval.search": ("SearchSettings", "retrieve"),
    "st_tasb.training.losses": ("DualTeacherMarginMSELoss", "ScaledSimilarity", "TeacherDistillationLoss",
                                "dual_teacher_margin_mse"),
    "st_tasb.training.recipes": ("RECIPES", "Recipe"),
    "st_tasb.training.terms": ("LossTerms",),
    "st_tasb.retrieval.metrics": ("evaluate_run",),
    "st_tasb.prepare.mining": ("mine_candidates",),
    "st_tasb.prepare.pseudo_queries": ("PseudoQueries", "make_pseudo_queries"),
    "st_tasb.training.sampler": ("PairIndex", "TopicAwareBalancedBatchSampler"),
    "st_tasb.training.anchor_sampler": ("TopicAwareBatchSampler",),
    "st_tasb.training.topic_batches": ("BatchComposition",),
    "st_tasb.prepare.scoring": ("score_candidates",),
    "st_tasb.training.settings": ("TrainingSettings",),
    "st_tasb.training.student": ("make_student",),
    "st_tasb.prepare.table": ("TeacherScoreTable",),
    "st_tasb.teachers": (
        "BiEncoderTeacher",
        "BM25Teacher",
        "ColBERTModel",
        "ColBERTTeacher",
        "CrossEncoderTeacher",
        "EmbeddingCache",
        "FusedTeacher",
        "InBatchTeacher",
        "MissingScoreError",
        "PrecomputedTeacher",
    ),
    "st_tasb.data.texts": ("TextStore", "UnknownIdError"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "BatchComposition",
    "BeirData",
    "BiEncoderTeacher",
    "BM25Teacher",
    "CachedDualTeacherMarginMSELoss",
    "CachedTeacherDistillationLoss",
    "ColBERTModel",
    "ColBERTTeacher",
    "CrossEncoderTeacher",
    "DataFormatError",
    "DualTeacherMarginMSELoss",
    "EmbeddingCache",
    "FusedTeacher",
    "InBatchTeacher",
    "LossTerms",
    "MissingScoreError",
    "PairIndex",
    "PrecomputedTeacher",
    "PseudoQueries",
    "QueryClusters",
    "RECIPES",
    "Recipe",
    "RetrievalEvaluator",
    "ScaledSimilarity",
    "SearchSettings",
    "TASBDataCollator",
    "TeacherDistillationLoss",
    "TeacherScoreTable",
    "TextStore",
    "TopicAwareBalancedBatchSampler",
    "TopicAwareBatchSampler",
    "TrainingSettings",
    "UnknownIdError",
    "build_pair_dataset",
    "build_training_dataset",
    "dual_teacher_margin_mse",
    "evaluate_model",
    "evaluate_run",
    "fit",
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
