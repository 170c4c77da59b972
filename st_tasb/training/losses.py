"""Teacher distillation losses: dual-teacher Margin-MSE, the loss of TAS-Balanced (Hofstätter et al., SIGIR 2021,
section 4 of docs/method.md), and the terms st-tasb adds to it (:class:`TeacherDistillationLoss`).

For a batch of ``B`` rows ``(q_i, p_i+, p_i-)`` with student dot products ``s``, pairwise teacher
margins ``T_i+ - T_i-`` and in-batch teacher scores ``C``::

    L_pair = mean_i [ (s(q_i,p_i+) - s(q_i,p_i-)) - (T_i+ - T_i-) ]^2
    L_inb  = 1/2 * ( mean_{i, j != i} [ (s(q_i,p_i+) - s(q_i,p_j+)) - (C(q_i,p_i+) - C(q_i,p_j+)) ]^2
                   + mean_{i, j != i} [ (s(q_i,p_i+) - s(q_i,p_j-)) - (C(q_i,p_i+) - C(q_i,p_j-)) ]^2 )
    L      = L_pair + alpha * L_inb

The in-batch negatives of ``q_i`` are the positives and negatives of all other rows; its own negative
is scored by the pairwise term only. That is the paper's loss (:class:`DualTeacherMarginMSELoss`), and the default
of :class:`~st_tasb.training.terms.LossTerms`, which names every term and weight once.

Two terms the field added since (section 5 of docs/method.md) are options:

- ``inbatch_loss="kl"``: listwise in-batch distillation. ``L_inb`` becomes the KL divergence from the in-batch
  teacher's softmax over all ``2B`` passages of the batch to the student's, per query (RocketQAv2 and
  ColBERTv2 distil listwise; sentence-transformers' ``DistillKLDivLoss`` is the per-row version);
- ``contrastive_weight=w``: the labels as well as the teachers. ``w * L_con`` is added, where ``L_con`` is the
  cross-entropy of each query's own positive against all ``2B`` passages of the batch (its own negative
  included), the loss of sentence-transformers' ``MultipleNegativesRankingLoss``.

Both read the student's scores as logits: the temperature is the similarity's scale (e.g. cosine x 20,
MNRL's default).

**Shared positives.** A passage may be one row's positive and another row's positive or negative in the same batch
(SQuAD has about 4.6 questions per paragraph, and a batch of one topic often holds two of them). The contrastive term
leaves every copy of a row's own positive (the same corpus row, or the same text: :func:`positive_copies`) out of
that row's softmax, so it never pushes a query away from its positive. The in-batch Margin-MSE and KL terms keep the
copy: the in-batch teacher scores it as it scores the positive, so Margin-MSE's target margin to it is 0 and KL gives
both the same probability; the student meets both by scoring the same text the same, and neither term pushes the
query away (the paper's argument for learning in-batch negatives from a teacher rather than from labels).
sentence-transformers' MultipleNegativesRankingLoss has no such mask: the ``mnrl`` recipes rely on their samplers,
which never put a text twice in a batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import cos_sim, dot_score
from torch import Tensor, nn
from torch.nn import functional

from st_tasb.data.checks import check_number
from st_tasb.data.compat import embed_columns
from st_tasb.teachers.base import InBatchTeacher
from st_tasb.training.gathering import (
    GatheredPassages,
    gather_labels,
    gather_passages,
    gathering_active,
)
from st_tasb.training.terms import SIMILARITY_NAMES, LossTerms

TASB_CITATION = """
@inproceedings{hofstaetter2021tasb,
    title={Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling},
    author={Sebastian Hofst{\\"a}tter and Sheng-Chieh Lin and Jheng-Hong Yang and Jimmy Lin and Allan Hanbury},
    booktitle={Proceedings of the 44th International ACM SIGIR Conference on Research and Development in Information Retrieval},
    year={2021},
    eprint={2104.06967},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""

_COLLATOR_HINT = "pass data_collator=TASBDataCollator.for_model(model) to the SentenceTransformerTrainer"


def in_batch_margin_mse(student_scores: Tensor, teacher_scores: Tensor, offset: int = 0) -> Tensor:
    """The in-batch Margin-MSE ``L_inb`` of ``[B, 2B]`` score matrices (columns: positives, then negatives).

    Each row's own positive (column ``i``) is the anchor, and each row's own negative (column
    ``B + i``) is left out. A batch of one row has no in-batch negatives: the term is then zero.
    With passages gathered from several processes the matrices are ``[B, 2G]`` and row ``i``'s own passages are
    columns ``offset + i`` and ``G + offset + i``.

    Args:
        student_scores: ``[B, 2B]`` student scores.
        teacher_scores: ``[B, 2B]`` in-batch teacher scores (no gradient flows into them).
        offset: the position of this batch's rows among the gathered passages.

    Returns:
        A scalar tensor.

    Example:
        >>> student = torch.tensor([[3.0, 1.0, 0.0, 2.0], [0.0, 4.0, 1.0, 0.0]])
        >>> in_batch_margin_mse(student, student + torch.tensor([[0.0, 1.0, 5.0, 0.0], [0.0, 0.0, 3.0, 0.0]]))
        tensor(2.5000)
    """
    batch_size, passages = student_scores.shape[0], student_scores.shape[1] // 2
    if passages < 2:
        return student_scores.sum() * 0.0
    # (s_ii - s_ij) - (c_ii - c_ij) = g_ii - g_ij with g = s - c
    gap = student_scores - teacher_scores.detach()
    own = torch.arange(batch_size, device=gap.device)
    squared = (gap[own, own + offset].unsqueeze(1) - gap) ** 2
    others = torch.ones(batch_size, passages, dtype=torch.bool, device=gap.device)
    others[own, own + offset] = False
    positives = squared[:, :passages][others].mean()
    negatives = squared[:, passages:][others].mean()
    return (positives + negatives) / 2


def in_batch_kl(student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
    """The listwise in-batch distillation term: for each query, the KL divergence from the teacher's softmax over
    all ``2B`` passages of the batch to the student's, averaged over the queries.

    Args:
        student_scores: ``[B, 2B]`` student scores (logits: scale them for a temperature).
        teacher_scores: ``[B, 2B]`` in-batch teacher scores (logits; no gradient flows into them).

    Returns:
        A scalar tensor; zero when the student's distribution equals the teacher's.

    Example:
        >>> in_batch_kl(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
        tensor(0.)
        >>> round(in_batch_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])).item(), 4)  # log 2 - H(teacher)
        0.3278
    """
    teacher = functional.log_softmax(teacher_scores.detach(), dim=1)
    return functional.kl_div(functional.log_softmax(student_scores, dim=1), teacher, reduction="batchmean", log_target=True)


def in_batch_contrastive(student_scores: Tensor, offset: int = 0, positive_copies: Tensor | None = None) -> Tensor:
    """The labels' term: cross-entropy of each query's own positive (column ``offset + i``) against all passages but
    the copies of that positive.

    A passage can be a row's positive and, in the same batch, another row's positive or negative: about 4.6 SQuAD
    questions share each paragraph, so a batch of one topic often holds it twice. Scored as a negative, the copy would
    push the query away from its own positive; ``positive_copies`` (``[B, 2G]``, :func:`positive_copies`) leaves
    such columns out of the softmax, as if they were not in the batch.

    Example:
        >>> scores = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
        >>> round(in_batch_contrastive(scores).item(), 4)
        0.3408
        >>> copies = torch.tensor([[True, True, False, False], [True, True, False, False]])  # both rows: one passage
        >>> round(in_batch_contrastive(scores, positive_copies=copies).item(), 4)  # log(e^2 + 2) - 2 for row 0
        0.2395
    """
    rows = torch.arange(student_scores.shape[0], device=student_scores.device)
    if positive_copies is not None:
        if positive_copies.shape != student_scores.shape:
            raise ValueError(f"positive_copies has shape {tuple(positive_copies.shape)}; expected the scores' "
                             f"{tuple(student_scores.shape)}")
        others = positive_copies.to(student_scores.device).clone()
        others[rows, rows + offset] = False  # the own column is the target
        student_scores = student_scores.masked_fill(others, float("-inf"))
    return functional.cross_entropy(student_scores, rows + offset)


def positive_copies(labels: Any, columns: Mapping[str, Any] | None = None) -> Tensor | None:
    """Where the batch's passages are copies of each row's own positive: ``[B, 2G]``, True where column ``j`` (the
    positives, then the negatives of ``columns``: the labels of every process when gathered, by default ``labels``)
    is the same corpus row as row ``i``'s positive, or has the same text. ``None`` for labels that carry neither rows
    nor texts (a plain margin tensor).

    Example:
        >>> labels = {"positive_index": torch.tensor([4, 4, 7]), "negative_index": torch.tensor([7, 1, 2]),
        ...           "texts": {"positive": ["a", "a", "b"], "negative": ["b", "c", "a copy"]}}
        >>> positive_copies(labels).int().tolist()
        [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]]
    """
    if not isinstance(labels, Mapping):
        return None
    columns = labels if columns is None else columns
    copies = None
    if "positive_index" in labels and "negative_index" in labels:
        own = torch.as_tensor(labels["positive_index"]).cpu()
        column_rows = torch.cat([torch.as_tensor(columns[key]).cpu() for key in ("positive_index", "negative_index")])
        copies = own[:, None] == column_rows[None, :]
    texts, column_texts = labels.get("texts"), columns.get("texts")
    if isinstance(texts, Mapping) and "positive" in texts and "negative" in texts:
        codes: dict[str, int] = {}
        column_codes = torch.tensor([codes.setdefault(text, len(codes))
                                     for text in [*column_texts["positive"], *column_texts["negative"]]])
        own_codes = torch.tensor([codes.setdefault(text, len(codes)) for text in texts["positive"]])
        same_text = own_codes[:, None] == column_codes[None, :]
        copies = same_text if copies is None else copies | same_text
    return copies


SIMILARITIES = dict(zip(SIMILARITY_NAMES, (dot_score, cos_sim)))
"""The student's score functions by name (the name is recorded in the saved model)."""


class ScaledSimilarity:
    """A student score function: dot product or cosine similarity, times ``scale``.

    Callable on two embedding batches like sentence-transformers' ``util.dot_score``; ``name`` goes into the
    saved model (``similarity_fn_name``) so that it is evaluated with the score it was trained with.

    Example:
        >>> similarity = ScaledSimilarity("cosine", 20)
        >>> similarity(torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 4.0], [4.0, -3.0]]))
        tensor([[20.,  0.]])
        >>> similarity.__name__
        'cosine x 20'
    """

    def __init__(self, name: str = "dot", scale: float = 1.0) -> None:
        if name not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {tuple(SIMILARITIES)}, not {name!r}")
        check_number("the similarity scale", scale, integer=False, minimum=0, inclusive=False)
        self.name, self.scale = name, float(scale)
        self.__name__ = name if self.scale == 1 else f"{name} x {self.scale:g}"

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        scores = SIMILARITIES[self.name](a, b)
        return scores if self.scale == 1 else scores * self.scale

    def __repr__(self) -> str:
        return f"ScaledSimilarity({self.name!r}, {self.scale:g})"


def similarity_function(terms: LossTerms) -> Callable[[Tensor, Tensor], Tensor]:
    """The student's score function of ``terms``: sentence-transformers' own (``dot_score``, ``cos_sim``) unscaled,
    else a :class:`ScaledSimilarity`.

    Example:
        >>> similarity_function(LossTerms()).__name__, similarity_function(LossTerms(similarity="cosine", similarity_scale=20))
        ('dot_score', ScaledSimilarity('cosine', 20))
    """
    if terms.similarity_scale == 1:
        return SIMILARITIES[terms.similarity]
    return ScaledSimilarity(terms.similarity, terms.similarity_scale)


def loss_terms(terms: LossTerms | None = None, **term_values: Any) -> LossTerms:
    """The loss terms given as a :class:`~st_tasb.training.terms.LossTerms` or as its fields by keyword.

    Raises:
        TypeError: for both at once, or a keyword that is no term, naming the terms.
        ValueError: for a value :class:`~st_tasb.training.terms.LossTerms` refuses.

    Example:
        >>> loss_terms(alpha=0.5).alpha, loss_terms(LossTerms(alpha=0.25)).alpha
        (0.5, 0.25)
        >>> loss_terms(beta=1)
        Traceback (most recent call last):
        ...
        TypeError: unknown loss term 'beta'; the terms are pairwise_weight, alpha, inbatch_loss, contrastive_weight, similarity, similarity_scale
    """
    unknown = sorted(set(term_values) - set(LossTerms.fields()))
    if unknown:
        raise TypeError(f"unknown loss term {unknown[0]!r}; the terms are {', '.join(LossTerms.fields())}")
    if terms is not None and term_values:
        raise TypeError(f"give the loss terms as LossTerms or as keywords, not both ({', '.join(term_values)})")
    return terms if terms is not None else LossTerms(**term_values)


def dual_teacher_margin_mse(
    query: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: Tensor,
    inbatch_scores: Tensor | None = None,
    *,
    terms: LossTerms | None = None,
    similarity_fct: Callable[[Tensor, Tensor], Tensor] | None = None,
    passages: GatheredPassages | None = None,
    copies: Tensor | None = None,
    **term_values: Any,
) -> dict[str, Tensor]:
    """The loss components from embeddings and teacher scores (no model needed).

    Args:
        query: ``[B, d]`` query embeddings.
        positive: ``[B, d]`` positive passage embeddings.
        negative: ``[B, d]`` negative passage embeddings.
        margin: ``[B]`` pairwise teacher margins ``T_i+ - T_i-``.
        inbatch_scores: ``[B, 2B]`` in-batch teacher scores ``C`` of each query against all positives,
            then all negatives; ``None`` (or ``alpha == 0``) leaves the in-batch term out.
        terms: the terms and their weights (:class:`~st_tasb.training.terms.LossTerms`; default: the paper's), or
            their fields as keywords (``alpha=0.5, inbatch_loss="kl"``): weights of the pairwise term, the in-batch
            term (``"margin-mse"`` or listwise ``"kl"``, :func:`in_batch_kl`) and the labels' term
            :func:`in_batch_contrastive`, and the student's score.
        similarity_fct: a score function of two embedding batches to use instead of the terms' similarity.
        copies: ``[B, 2G]``, where a passage of the batch is a copy of the row's own positive (:func:`positive_copies`):
            the contrastive term leaves those out; ``None``: every passage but the own positive is a negative.
        passages: the in-batch passages when they were gathered from several processes
            (:func:`~st_tasb.training.gathering.gather_passages`): the in-batch terms then range over all ``2G``
            of them, and ``inbatch_scores`` is ``[B, 2G]``; ``None``: this batch's own.

    Returns:
        ``{"pairwise": pairwise_weight * L_pair}`` (when that weight is not 0), ``"in_batch": alpha * L_inb`` when
        there is an in-batch term, and ``"contrastive": contrastive_weight * L_con`` when that weight is not 0. The
        components sum to the loss.

    Raises:
        ValueError: if the shapes do not fit together, naming them, a term's value is refused by ``LossTerms``, or no
            term is left.

    Example:
        >>> q, p, n = torch.eye(2), torch.eye(2) * 2, torch.zeros(2, 2)
        >>> parts = dual_teacher_margin_mse(q, p, n, torch.tensor([1.0, 3.0]), torch.zeros(2, 4), alpha=0.5)
        >>> {name: round(value.item(), 4) for name, value in parts.items()}
        {'pairwise': 1.0, 'in_batch': 2.0}
    """
    terms = loss_terms(terms, **term_values)
    similarity_fct = similarity_fct or similarity_function(terms)
    batch_size = query.shape[0]
    if positive.shape != query.shape or negative.shape != query.shape:
        raise ValueError(
            f"query, positive and negative embeddings must have the same shape; got {tuple(query.shape)}, "
            f"{tuple(positive.shape)} and {tuple(negative.shape)}"
        )
    if margin.dim() == 2 and margin.shape[1] == 1:
        margin = margin.squeeze(1)
    if tuple(margin.shape) != (batch_size,):
        raise ValueError(
            f"the pairwise teacher margins have shape {tuple(margin.shape)}; expected ({batch_size},), one "
            "margin T+ - T- per row"
        )
    passages = passages or GatheredPassages.local(positive, negative)
    n_passages, offset = passages.positive.shape[0], passages.offset
    scores = similarity_fct(query, torch.cat([passages.positive, passages.negative])).float()  # [B, 2G]
    rows = torch.arange(batch_size, device=scores.device)
    student_margin = scores[rows, rows + offset] - scores[rows, rows + offset + n_passages]
    margin = margin.detach().to(device=scores.device, dtype=scores.dtype)
    weights = terms.used(has_inbatch_teacher=inbatch_scores is not None)
    if not weights:
        terms.check_teacher(inbatch_scores is not None)
    components = {}
    if "pairwise" in weights:
        components["pairwise"] = weights["pairwise"] * ((student_margin - margin) ** 2).mean()
    if "in_batch" in weights:
        if tuple(inbatch_scores.shape) != (batch_size, 2 * n_passages):
            raise ValueError(
                f"the in-batch teacher scores have shape {tuple(inbatch_scores.shape)}; expected "
                f"({batch_size}, {2 * n_passages}): each query against all positives, then all negatives"
            )
        inbatch_scores = inbatch_scores.to(device=scores.device, dtype=scores.dtype)
        in_batch = in_batch_kl(scores, inbatch_scores) if terms.inbatch_loss == "kl" else in_batch_margin_mse(
            scores, inbatch_scores, offset)
        components["in_batch"] = weights["in_batch"] * in_batch
    if "contrastive" in weights:
        components["contrastive"] = weights["contrastive"] * in_batch_contrastive(scores, offset, copies)
    return components


class TeacherDistillationLoss(nn.Module):
    """The student learns from teacher scores and labels: the terms of :class:`~st_tasb.training.terms.LossTerms`.

    ``loss = pairwise_weight * L_pair + alpha * L_inb + contrastive_weight * L_con`` (module docstring): pairwise
    Margin-MSE against the table's teacher margins (``labels["margin"]``), an in-batch term against an in-batch
    teacher that scores every query of a batch against every positive and negative of the batch (Margin-MSE, or
    listwise KL with ``inbatch_loss="kl"``), and a contrastive term on the labels. A term of weight 0 is neither
    computed nor logged. With the paper's terms (the defaults) this is the TAS-Balanced loss, under its published
    name :class:`DualTeacherMarginMSELoss`; the st-tasb recipe uses in-batch KL and the contrastive term with no
    pairwise term.

    Args:
        model: the student SentenceTransformer (``None`` to use :meth:`compute_loss_from_embeddings` only).
        inbatch_teacher: an :class:`~st_tasb.teachers.InBatchTeacher` (ColBERT, cross-encoder,
            bi-encoder or precomputed scores); frozen, its parameters never reach the optimizer.
        terms: the terms, their weights and the student's score (default: the paper's), or
            ``**term_values``: the same as keywords, e.g. ``alpha=0.75`` (``alpha=0`` or no teacher: only the
            pairwise term, sentence-transformers' ``MarginMSELoss``).
        similarity_fct: a score function of two embedding batches to use instead of the terms' similarity.
        gather_across_devices: with several processes (DDP), every query's in-batch terms range over the passages
            of all processes' batches (the global batch), and the in-batch teacher scores them all; DDP's averaged
            gradient is then that of one process on the global batch (:mod:`~st_tasb.training.gathering`).
            ``False``: each process's own batch. No effect with one process.

    References:
        - Hofstätter et al., Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware
          Sampling, SIGIR 2021: https://arxiv.org/abs/2104.06967
        - Margin-MSE: https://arxiv.org/abs/2010.02666

    Requirements:
        1. (query, positive, negative) triplets with the pairwise teacher margin as label.
        2. The labels dict of :class:`~st_tasb.training.collator.TASBDataCollator` (``data_collator=``): texts for
           text teachers, row indices (``with_indices=True`` datasets) for cached or precomputed teachers.
        3. Batches of topically related queries (``TopicAwareBalancedBatchSampler``) make the in-batch
           negatives informative.

    Inputs:
        +--------------------------------------+-----------------------------------------------------------+
        | Texts                                | Labels                                                    |
        +======================================+===========================================================+
        | (query, positive, negative) triplets | ``{"margin": T+ - T-, "texts": ..., "query_index": ...}`` |
        +--------------------------------------+-----------------------------------------------------------+

    Raises:
        ValueError: for terms :class:`~st_tasb.training.terms.LossTerms` refuses, ``alpha > 0`` without a teacher,
            no term left, or a teacher sharing parameters with the student.
        TypeError: if the teacher is not an ``InBatchTeacher``, or for an unknown term keyword.

    Example:
        ::

            from sentence_transformers import SentenceTransformerTrainer
            from st_tasb import DualTeacherMarginMSELoss, ColBERTTeacher, TASBDataCollator

            teacher = ColBERTTeacher("sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco")
            loss = DualTeacherMarginMSELoss(student, inbatch_teacher=teacher, alpha=0.75)
            trainer = SentenceTransformerTrainer(
                model=student, args=args, train_dataset=train_dataset, loss=loss,
                data_collator=TASBDataCollator.for_model(student),
            )
            trainer.train()

        Without a model, on embeddings:

        >>> from st_tasb.teachers import PrecomputedTeacher
        >>> loss = DualTeacherMarginMSELoss(None, PrecomputedTeacher([0, 0, 1, 1], [0, 1, 0, 1], [2.0, 1.0, 0.0, 3.0]))
        >>> labels = {"margin": torch.tensor([1.0, 0.0]), "query_index": torch.tensor([0, 1]),
        ...           "positive_index": torch.tensor([0, 1]), "negative_index": torch.tensor([1, 0])}
        >>> parts = loss.compute_loss_from_embeddings([torch.eye(2), torch.eye(2), torch.zeros(2, 2)], labels)
        >>> {name: round(value.item(), 4) for name, value in parts.items()}
        {'pairwise': 0.5, 'in_batch': 1.125}
    """

    def __init__(
        self,
        model: SentenceTransformer | None,
        inbatch_teacher: InBatchTeacher | None = None,
        terms: LossTerms | None = None,
        *,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] | None = None,
        gather_across_devices: bool = False,
        **term_values: Any,
    ) -> None:
        super().__init__()
        self.terms = loss_terms(terms, **term_values)
        self.terms.check_teacher(inbatch_teacher is not None)
        if inbatch_teacher is not None:
            if not isinstance(inbatch_teacher, InBatchTeacher):
                raise TypeError(
                    "inbatch_teacher must be an st_tasb InBatchTeacher (ColBERTTeacher, CrossEncoderTeacher, "
                    f"BiEncoderTeacher, PrecomputedTeacher), not {type(inbatch_teacher).__name__}"
                )
            student_parameters = set() if model is None else {id(p) for p in model.parameters()}
            if any(id(p) in student_parameters for p in inbatch_teacher.parameters()):
                raise ValueError(
                    "the in-batch teacher shares parameters with the student, and teachers are frozen: load the "
                    "teacher as a separate model (and reload the student, whose weights the teacher froze)"
                )
            inbatch_teacher.freeze()
        self.model = model
        self.inbatch_teacher = inbatch_teacher
        self.similarity_fct = similarity_fct or similarity_function(self.terms)
        self.gather_across_devices = bool(gather_across_devices)

    @property
    def uses_inbatch_teacher(self) -> bool:
        """Whether the loss has an in-batch term (a teacher and ``alpha > 0``)."""
        return self.inbatch_teacher is not None and self.terms.alpha > 0

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Any) -> dict[str, Tensor]:
        """Embed the (query, positive, negative) columns and return the loss components.

        Args:
            sentence_features: the tokenized query, positive and negative columns.
            labels: the labels dict of ``TASBDataCollator`` (a plain margin tensor works when there
                is no in-batch term).

        Returns:
            ``{"pairwise": ..., "in_batch": ..., "contrastive": ...}`` (the terms in use); the trainer logs each and
            optimises their sum.
        """
        features = self.check_features(sentence_features)
        if embed_columns is None:  # sentence-transformers 5: one forward pass per column
            embeddings = [self.model(column)["sentence_embedding"] for column in features]
        else:
            embeddings = embed_columns(self.model, features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Any) -> dict[str, Tensor]:
        """The loss components from the query, positive and negative embeddings and the labels."""
        columns = self.column_labels(labels)
        margin, inbatch_scores = self.teacher_targets(labels, batch_size=embeddings[0].shape[0], columns=columns)
        return dual_teacher_margin_mse(*embeddings, margin, inbatch_scores, terms=self.terms,
                                       similarity_fct=self.similarity_fct, passages=self.in_batch_passages(*embeddings[1:]),
                                       copies=self.positive_copies(labels, columns))

    def column_labels(self, labels: Any) -> Any:
        """The labels of the batch's passages, for the in-batch teacher and the copies of a positive: every process's,
        gathered once per step, when gathering across devices and a term needs them; else ``labels``."""
        needed = self.uses_inbatch_teacher or self.terms.contrastive_weight != 0
        if needed and isinstance(labels, Mapping) and gathering_active(self.gather_across_devices):
            return gather_labels(labels)
        return labels

    def positive_copies(self, labels: Any, columns: Any = None) -> Tensor | None:
        """Where the batch's passages (those of ``columns``: :meth:`column_labels`) are copies of each row's own
        positive (:func:`positive_copies`), for the contrastive term; ``None`` without one (nothing else needs them)."""
        if self.terms.contrastive_weight == 0:
            return None
        columns = self.column_labels(labels) if columns is None else columns
        return positive_copies(labels, columns if isinstance(columns, Mapping) else None)

    def in_batch_passages(self, positive: Tensor, negative: Tensor) -> GatheredPassages | None:
        """The passages of every process when gathering (see ``gather_across_devices``), else ``None``."""
        return gather_passages(positive, negative) if gathering_active(self.gather_across_devices) else None

    def check_features(self, sentence_features: Iterable[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The features as a list of exactly three columns.

        Raises:
            ValueError: naming the number of columns found.
        """
        features = list(sentence_features)
        if len(features) != 3:
            raise ValueError(
                f"{type(self).__name__} needs exactly three text columns (query, positive, negative); got "
                f"{len(features)}: drop other text columns from the training dataset"
            )
        return features

    def teacher_targets(
        self, labels: Any, batch_size: int | None = None, columns: Any = None
    ) -> tuple[Tensor, Tensor | None]:
        """The pairwise margins ``[B]`` and, with an in-batch term, the teacher's ``[B, 2B]`` scores.

        Args:
            labels: the labels dict of ``TASBDataCollator``, or a margin tensor.
            batch_size: the rows of the batch; the margins are checked against it before the teacher runs.
            columns: the labels of the batch's passages (:meth:`column_labels`), when the caller has them already.

        Raises:
            ValueError: if the labels are not what the loss and its teacher need, naming what is missing, or
                the margins do not match the batch (checked first, so the teacher is not blamed for them).
        """
        if isinstance(labels, Tensor):
            if self.uses_inbatch_teacher:
                raise ValueError(
                    f"{type(self).__name__} with an in-batch teacher got a plain label tensor, but it needs the "
                    f"labels dict of TASBDataCollator (margin, texts, row indices): {_COLLATOR_HINT}"
                )
            return labels, None
        if not isinstance(labels, Mapping) or "margin" not in labels:
            found = sorted(labels) if isinstance(labels, Mapping) else type(labels).__name__
            raise ValueError(
                f"{type(self).__name__} needs labels['margin'] (the pairwise teacher margins); got {found}: "
                f"{_COLLATOR_HINT}"
            )
        margin = torch.as_tensor(labels["margin"])
        if batch_size is not None and margin.reshape(-1).shape[0] != batch_size:
            raise ValueError(
                f"labels['margin'] holds {margin.reshape(-1).shape[0]} margins for a batch of {batch_size} rows: one "
                "pairwise teacher margin per (query, positive, negative) row"
            )
        if not self.uses_inbatch_teacher:
            return margin, None
        return margin, self.inbatch_teacher(self.column_labels(labels) if columns is None else columns)

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the model card."""
        return {
            **dataclasses.asdict(self.terms),
            "similarity_fct": getattr(self.similarity_fct, "__name__", type(self.similarity_fct).__name__),
            "inbatch_teacher": self.inbatch_teacher,
            "gather_across_devices": self.gather_across_devices,
        }

    @property
    def citation(self) -> str:
        """BibTeX of the TAS-Balanced paper, for the model card."""
        return TASB_CITATION


class DualTeacherMarginMSELoss(TeacherDistillationLoss):
    """The loss of TAS-Balanced under its published name: :class:`TeacherDistillationLoss` whose default terms are
    the paper's, pairwise Margin-MSE plus ``alpha`` (0.75) times in-batch Margin-MSE against the in-batch teacher,
    on dot-product scores.

    Example:
        >>> DualTeacherMarginMSELoss(None, alpha=0.0).terms.describe(has_inbatch_teacher=False)
        'pairwise Margin-MSE x 1'
    """
