"""The sentence-transformers names whose import path differs between versions 5 and 6, imported in one place.

st-tasb supports sentence-transformers 5 and 6. On 6.x every name comes from its current path, so no
DeprecationWarning is raised on st-tasb's behalf; on 5.x the old paths are used, and the names that 5.x
does not have at all are ``None`` (or, for the GradCache mixin, an empty stand-in class), so the
features built on them can say that they need version 6. No other st-tasb module imports a path that
moved.

Example:
    >>> HAS_SENTENCE_TRANSFORMERS_6 == (MultiVectorEncoder is not None)
    True
"""

from __future__ import annotations

from importlib.util import find_spec

HAS_SENTENCE_TRANSFORMERS_6 = find_spec("sentence_transformers.base") is not None
"""Whether the installed sentence-transformers has the 6.x layout (``sentence_transformers.base``)."""

if HAS_SENTENCE_TRANSFORMERS_6:
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
    from sentence_transformers.base.losses.gradcache import (
        CachedLossMixin,
        has_static_embedding_input,
    )
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler
    from sentence_transformers.sentence_transformer.data_collator import (
        SentenceTransformerDataCollator,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
else:  # sentence-transformers 5
    from sentence_transformers.data_collator import SentenceTransformerDataCollator
    from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.models import Normalize, Pooling
    from sentence_transformers.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler

    MultiVectorEncoder = None
    embed_columns = None
    has_static_embedding_input = None

    class CachedLossMixin:  # type: ignore[no-redef]
        """Stands in for the 6.x GradCache mixin so that the cached loss can be defined (and refuse to run) on 5.x."""


__all__ = [
    "HAS_SENTENCE_TRANSFORMERS_6",
    "BaseEvaluator",
    "CachedLossMixin",
    "DefaultBatchSampler",
    "MultiVectorEncoder",
    "MultipleNegativesRankingLoss",
    "NoDuplicatesBatchSampler",
    "Normalize",
    "Pooling",
    "SentenceTransformerDataCollator",
    "embed_columns",
    "has_static_embedding_input",
]
