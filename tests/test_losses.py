"""DualTeacherMarginMSELoss and its GradCache variant against the formulas of DESIGN 1.4."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.losses import MarginMSELoss

from st_tasb.teachers import BiEncoderTeacher, InBatchTeacher, PrecomputedTeacher
from st_tasb.training.cached_losses import CachedDualTeacherMarginMSELoss
from st_tasb.training.losses import (
    DualTeacherMarginMSELoss,
    ScaledSimilarity,
    dual_teacher_margin_mse,
    in_batch_kl,
    in_batch_margin_mse,
    positive_copies,
)

B, DIM = 5, 6
QUERIES = [f"query {i} about {'cell ' * i}biology" for i in range(B)]
POSITIVES = [f"passage {i}: proteins fold {'and misfold ' * (2 * i)}in cells" for i in range(B)]
NEGATIVES = [f"unrelated text number {i}" for i in range(B)]


def reference_components(q, p, n, margin, c, alpha):
    """The formulas of DESIGN 1.4 written out term by term (loops over i and j, no matrices)."""
    size = len(q)

    def s(a, b):
        return (a * b).sum()

    pair = sum(((s(q[i], p[i]) - s(q[i], n[i])) - margin[i]) ** 2 for i in range(size)) / size
    pos = [
        ((s(q[i], p[i]) - s(q[i], p[j])) - (c[i, i] - c[i, j])) ** 2 for i in range(size) for j in range(size) if j != i
    ]
    neg = [
        ((s(q[i], p[i]) - s(q[i], n[j])) - (c[i, i] - c[i, size + j])) ** 2
        for i in range(size)
        for j in range(size)
        if j != i
    ]
    return pair, alpha * (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


@pytest.fixture
def tensors():
    generator = torch.Generator().manual_seed(0)
    q, p, n = (torch.randn(B, DIM, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3))
    margin = torch.randn(B, generator=generator, dtype=torch.float64) * 3
    c = torch.randn(B, 2 * B, generator=generator, dtype=torch.float64) * 3
    return q, p, n, margin, c


def features_of(model: SentenceTransformer) -> list[dict[str, torch.Tensor]]:
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    return [preprocess(texts) for texts in (QUERIES, POSITIVES, NEGATIVES)]


def full_table_teacher(seed: int = 1) -> PrecomputedTeacher:
    """A precomputed teacher scoring query rows 0..B-1 against passage rows 0..2B-1 (positives, then negatives)."""
    rng = np.random.default_rng(seed)
    return PrecomputedTeacher(
        np.repeat(np.arange(B), 2 * B), np.tile(np.arange(2 * B), B), rng.normal(size=2 * B * B) * 3
    )


def index_labels(margin: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"margin": margin, "query_index": torch.arange(B), "positive_index": torch.arange(B),
            "negative_index": torch.arange(B, 2 * B)}  # fmt: skip


def gradients(model: SentenceTransformer) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_components_and_gradients_match_the_formulas(tensors) -> None:
    """Guards the loss itself: values and gradients of both terms equal a term-by-term computation of the
    formulas (own negative and diagonal excluded from the in-batch term, alpha applied)."""
    q, p, n, margin, c = tensors
    parts = dual_teacher_margin_mse(q, p, n, margin, c, alpha=0.75)
    expected = reference_components(q, p, n, margin, c, 0.75)
    for value, reference in zip((parts["pairwise"], parts["in_batch"]), expected):
        torch.testing.assert_close(value, reference.to(value.dtype), rtol=1e-5, atol=1e-6)
    ours = torch.autograd.grad(parts["pairwise"] + parts["in_batch"], (q, p, n))
    theirs = torch.autograd.grad(sum(expected), (q, p, n))
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.double(), reference, rtol=1e-4, atol=1e-6)


def reference_listwise_terms(q, p, n, c, scale):
    """The KL and contrastive terms written out per query with Python sums over the 2B passages (cosine x scale)."""
    size, passages = len(q), torch.cat([p, n])
    kl, contrastive = 0.0, 0.0
    for i in range(size):
        s = [scale * torch.dot(q[i], d) / (q[i].norm() * d.norm()) for d in passages]
        log_z_student = torch.log(sum(torch.exp(v) for v in s))
        log_z_teacher = torch.log(sum(torch.exp(v) for v in c[i]))
        for j in range(2 * size):
            teacher = torch.exp(c[i, j] - log_z_teacher)
            kl = kl + teacher * ((c[i, j] - log_z_teacher) - (s[j] - log_z_student))
        contrastive = contrastive - (s[i] - log_z_student)
    return kl / size, contrastive / size


def test_kl_and_contrastive_terms_match_the_formulas(tensors) -> None:
    """Guards the listwise options: with cosine x 20 scores, the KL term (alpha applied) and the contrastive term
    (its weight applied) and their gradients equal a per-query computation over all 2B passages, and the pairwise
    term is the one without them, times its weight."""
    q, p, n, margin, c = tensors
    similarity = ScaledSimilarity("cosine", 20)
    parts = dual_teacher_margin_mse(q, p, n, margin, c, alpha=0.5, similarity_fct=similarity, inbatch_loss="kl",
                                    contrastive_weight=2.0, pairwise_weight=0.25)
    assert set(parts) == {"pairwise", "in_batch", "contrastive"}
    kl, contrastive = reference_listwise_terms(q, p, n, c, 20.0)
    torch.testing.assert_close(parts["in_batch"], (0.5 * kl).to(parts["in_batch"].dtype), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["contrastive"], (2.0 * contrastive).to(parts["contrastive"].dtype), rtol=1e-5, atol=1e-6)
    plain = dual_teacher_margin_mse(q, p, n, margin, c, alpha=0.5, similarity_fct=similarity)
    torch.testing.assert_close(parts["pairwise"], 0.25 * plain["pairwise"])
    ours = torch.autograd.grad(parts["in_batch"] + parts["contrastive"], (q, p, n))
    theirs = torch.autograd.grad(0.5 * kl + 2.0 * contrastive, (q, p, n))
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.double(), reference, rtol=1e-4, atol=1e-6)


def test_kl_term_is_zero_only_where_the_distributions_agree() -> None:
    """Guards the KL direction and its invariances: a per-row offset of the teacher changes no softmax (zero
    loss); moving one passage's teacher score makes it positive."""
    student = torch.randn(3, 6)
    teacher = student + torch.randn(3, 1)
    assert in_batch_kl(student, teacher).item() == pytest.approx(0.0, abs=1e-6)
    teacher[0, 4] += 3.0
    assert in_batch_kl(student, teacher).item() > 0.01


def test_the_similarity_is_recorded_and_checked() -> None:
    """Guards the recorded score: the loss's card config names the scaled similarity and the terms in use, and
    a bad similarity, scale, in-batch form or contrastive weight is refused with its name."""
    loss = DualTeacherMarginMSELoss(None, alpha=0.0, similarity_fct=ScaledSimilarity("cosine", 20),
                                    contrastive_weight=1.0)
    config = loss.get_config_dict()
    assert (config["similarity_fct"], config["inbatch_loss"], config["contrastive_weight"]) == ("cosine x 20", "margin-mse", 1.0)
    with pytest.raises(ValueError, match="similarity must be one of"):
        ScaledSimilarity("l2")
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        ScaledSimilarity("dot", 0)
    with pytest.raises(ValueError, match="inbatch_loss must be one of"):
        DualTeacherMarginMSELoss(None, alpha=0.0, inbatch_loss="listnet")
    with pytest.raises(ValueError, match="contrastive_weight must be a finite number >= 0"):
        DualTeacherMarginMSELoss(None, alpha=0.0, contrastive_weight=-1.0)
    with pytest.raises(ValueError, match="the loss has no term left"):
        DualTeacherMarginMSELoss(None, alpha=0.0, pairwise_weight=0.0)
    parts = dual_teacher_margin_mse(torch.eye(2), torch.eye(2), torch.zeros(2, 2), torch.zeros(2), pairwise_weight=0.0,
                                    contrastive_weight=1.0)
    assert set(parts) == {"contrastive"}  # a term of weight 0 is neither computed nor logged


def test_in_batch_term_ignores_the_own_negative_and_row_offsets() -> None:
    """Guards the index bookkeeping: a teacher that disagrees only on a row's own negative, or only by a
    per-row offset, costs nothing in the in-batch term; disagreeing on another row's passage does."""
    student = torch.randn(4, 8)
    teacher = student + torch.randn(4, 1)  # margins are unchanged by a per-row offset
    teacher[torch.arange(4), torch.arange(4) + 4] += 10.0  # own negatives: the pairwise term's business
    assert in_batch_margin_mse(student, teacher).item() == pytest.approx(0.0, abs=1e-5)
    teacher[0, 6] += 2.0  # row 0 against row 2's negative: one of the 12 negative terms
    assert in_batch_margin_mse(student, teacher).item() == pytest.approx(4.0 / 12 / 2, rel=1e-4)
    assert in_batch_margin_mse(student[:1, :2], teacher[:1, :2]).item() == 0.0  # one row: no in-batch negatives


def test_alpha_zero_is_sentence_transformers_margin_mse(small_student: SentenceTransformer) -> None:
    """Guards the reduction promised by the docs: without the in-batch term the loss and its gradients are
    sentence-transformers' MarginMSELoss, with the default collator's plain label tensor too."""
    small_student.eval()
    features, margin = features_of(small_student), torch.linspace(-2.0, 3.0, B)
    ours = DualTeacherMarginMSELoss(small_student, full_table_teacher(), alpha=0.0)(features, index_labels(margin))
    assert set(ours) == {"pairwise"}
    ours["pairwise"].backward()
    ours_grads = gradients(small_student)
    small_student.zero_grad()
    reference = MarginMSELoss(small_student)(features, margin)
    reference.backward()
    torch.testing.assert_close(ours["pairwise"], reference, rtol=1e-5, atol=1e-6)
    for name, grad in gradients(small_student).items():
        torch.testing.assert_close(ours_grads[name], grad, rtol=1e-4, atol=1e-5)
    plain = DualTeacherMarginMSELoss(small_student, alpha=0.0)(features, margin)
    torch.testing.assert_close(plain["pairwise"], reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("listwise", [False, True], ids=["paper", "kl-contrastive"])
def test_cached_loss_matches_the_plain_loss(small_student: SentenceTransformer, listwise: bool) -> None:
    """Guards the GradCache variant: on the same batch (dropout off) its loss components and every student
    gradient equal the plain loss's, with mini-batches that do not divide the batch, for the paper's terms and
    for the KL and contrastive ones."""
    small_student.eval()
    features, labels, teacher = (
        features_of(small_student),
        index_labels(torch.linspace(-2.0, 3.0, B)),
        full_table_teacher(),
    )
    terms = {"alpha": 0.75, "inbatch_loss": "kl", "contrastive_weight": 0.5,
             "similarity_fct": ScaledSimilarity("cosine", 20)} if listwise else {"alpha": 0.75}  # fmt: skip
    plain = DualTeacherMarginMSELoss(small_student, teacher, **terms)(features, labels)
    sum(plain.values()).backward()
    plain_grads = gradients(small_student)
    small_student.zero_grad()
    cached_loss = CachedDualTeacherMarginMSELoss(DualTeacherMarginMSELoss(small_student, teacher, **terms), mini_batch_size=2)
    assert cached_loss.get_config_dict()["mini_batch_size"] == 2
    cached = cached_loss(features_of(small_student), labels)
    assert set(cached) == set(plain) == {"pairwise", "in_batch", *(["contrastive"] if listwise else [])}
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name].detach(), rtol=1e-5, atol=1e-5)
    sum(cached.values()).backward()
    cached_grads = gradients(small_student)
    assert cached_grads.keys() == plain_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-3, atol=1e-5)


def test_teacher_stays_frozen_through_a_training_step(
    small_student: SentenceTransformer, small_student_path: str
) -> None:
    """Guards against the optimizer training the teacher: after a step the student moved, the teacher's
    weights are bitwise unchanged, none requires grad, none is a student parameter, and it stays in eval mode."""
    teacher_model = SentenceTransformer(small_student_path, device="cpu")
    teacher = BiEncoderTeacher(teacher_model, device="cpu")
    loss = DualTeacherMarginMSELoss(small_student, teacher, alpha=0.75)
    before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    student_before = {name: p.detach().clone() for name, p in small_student.named_parameters()}
    optimizer = torch.optim.AdamW(loss.model.parameters(), lr=1e-3)
    loss.train()
    labels = {"margin": torch.ones(B), "texts": {"query": QUERIES, "positive": POSITIVES, "negative": NEGATIVES}}
    parts = loss(features_of(small_student), labels)
    sum(parts.values()).backward()
    optimizer.step()
    assert not teacher.training and not teacher_model.training
    assert not any(p.requires_grad or p.grad is not None for p in teacher.parameters())
    assert {id(p) for p in teacher.parameters()}.isdisjoint(
        id(p) for group in optimizer.param_groups for p in group["params"]
    )
    assert all(torch.equal(p, before[name]) for name, p in teacher.named_parameters())
    assert any(not torch.equal(p, student_before[name]) for name, p in small_student.named_parameters())


def test_a_teacher_sharing_the_students_weights_is_refused(small_student: SentenceTransformer) -> None:
    """Guards against passing the student itself as its own teacher, which would freeze the student."""
    with pytest.raises(ValueError, match="shares parameters with the student"):
        DualTeacherMarginMSELoss(small_student, BiEncoderTeacher(small_student, device="cpu"))


class _FixedTeacher(InBatchTeacher):
    """A text teacher returning a preset score matrix (to test the loss's input checks)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def score(self, queries, passages):
        return self.scores


def test_wrong_inputs_are_named() -> None:
    """Guards the error messages for each way the loss can be fed wrongly."""
    q = p = n = torch.zeros(2, 3)
    texts = {"query": ["a", "b"], "positive": ["c", "d"], "negative": ["e", "f"]}
    loss = DualTeacherMarginMSELoss(None, _FixedTeacher(torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="TASBDataCollator"):
        loss.compute_loss_from_embeddings([q, p, n], torch.zeros(2))
    with pytest.raises(ValueError, match=r"labels\['margin'\]"):
        loss.compute_loss_from_embeddings([q, p, n], {"texts": texts})
    with pytest.raises(ValueError, match="no 'texts'"):
        loss.compute_loss_from_embeddings([q, p, n], {"margin": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"with_indices=True"):
        DualTeacherMarginMSELoss(None, full_table_teacher()).compute_loss_from_embeddings(
            [q, p, n], {"margin": torch.zeros(2)}
        )
    with pytest.raises(ValueError, match=r"returned scores of shape \(2, 3\).*expected \(2, 4\)"):
        DualTeacherMarginMSELoss(None, _FixedTeacher(torch.zeros(2, 3))).compute_loss_from_embeddings(
            [q, p, n], {"margin": torch.zeros(2), "texts": texts}
        )
    with pytest.raises(ValueError, match=r"margins have shape \(3,\); expected \(2,\)"):
        dual_teacher_margin_mse(q, p, n, torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        dual_teacher_margin_mse(q, p, torch.zeros(3, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"in-batch teacher scores have shape \(2, 2\)"):
        dual_teacher_margin_mse(q, p, n, torch.zeros(2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="exactly three text columns"):
        loss(iter([{}, {}]), {"margin": torch.zeros(2)})
    with pytest.raises(ValueError, match="no inbatch_teacher"):
        DualTeacherMarginMSELoss(None, None, alpha=0.5)
    for alpha in (-1.0, float("nan"), float("inf"), "0.5"):  # the class and the function refuse the same weights
        with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
            DualTeacherMarginMSELoss(None, _FixedTeacher(torch.zeros(2, 4)), alpha=alpha)
        with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
            dual_teacher_margin_mse(q, p, n, torch.zeros(2), torch.zeros(2, 4), alpha=alpha)
    with pytest.raises(TypeError, match="InBatchTeacher"):
        DualTeacherMarginMSELoss(None, torch.nn.Linear(2, 2))


def test_model_card_config_and_citation() -> None:
    """Guards what the model card records: alpha, the student score, the teacher's own settings, the paper."""
    loss = DualTeacherMarginMSELoss(None, full_table_teacher(), alpha=0.5)
    config = loss.get_config_dict()
    assert config["alpha"] == 0.5 and config["similarity_fct"] == "dot_score"
    assert config["inbatch_teacher"].get_config_dict() == {"pairs": 2 * B * B}
    assert "Balanced Topic Aware Sampling" in loss.citation and "2104.06967" in loss.citation


def _shared_positive_batch() -> tuple[list[torch.Tensor], dict]:
    """Three rows over four passages: rows 0 and 1 have the same positive (corpus row 4), and row 2's negative is
    that passage too; row 2's positive (row 7) is row 0's negative."""
    generator = torch.Generator().manual_seed(0)
    q, p, n = (torch.randn(3, 4, generator=generator, requires_grad=True) for _ in range(3))
    labels = {"margin": torch.zeros(3), "positive_index": torch.tensor([4, 4, 7]),
              "negative_index": torch.tensor([7, 1, 4]),
              "texts": {"query": ["q0", "q1", "q2"], "positive": ["P4", "P4", "P7"], "negative": ["P7", "P1", "P4"]}}
    return [q, p, n], labels


def _contrastive_by_hand(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, same: list[list[int]]) -> torch.Tensor:
    """Mean over rows of -s(q_i, own positive) + log sum of exp over the passages that are not copies of it."""
    passages = torch.cat([p, n])
    total = torch.zeros((), dtype=q.dtype)
    for i in range(q.shape[0]):
        kept = [j for j in range(passages.shape[0]) if j == i or j not in same[i]]
        scores = torch.stack([q[i] @ passages[j] for j in kept])
        total = total - q[i] @ passages[i] + torch.logsumexp(scores, dim=0)
    return total / q.shape[0]


def test_the_contrastive_term_never_pushes_a_query_from_a_copy_of_its_positive() -> None:
    """Guards shared positives: a passage that is a row's positive and also another row's positive or negative in
    the batch is left out of that row's contrastive softmax (by corpus row, and by text alone when the rows are not
    carried); value and gradients equal the hand computation, and differ from treating the copy as a negative."""
    (q, p, n), labels = _shared_positive_batch()
    # copies of each row's positive among the columns [p0, p1, p2, n0, n1, n2]
    same = [[0, 1, 5], [0, 1, 5], [2, 3]]
    assert positive_copies(labels).nonzero().tolist() == [[i, j] for i in range(3) for j in same[i]]
    by_text = {key: value for key, value in labels.items() if not key.endswith("_index")}
    assert torch.equal(positive_copies(by_text), positive_copies(labels))
    loss = DualTeacherMarginMSELoss(None, alpha=0.0, pairwise_weight=0.0, contrastive_weight=1.0)
    ours = loss.compute_loss_from_embeddings([q, p, n], labels)["contrastive"]
    reference = _contrastive_by_hand(q, p, n, same)
    torch.testing.assert_close(ours, reference)
    for mine, theirs in zip(torch.autograd.grad(ours, (q, p, n)), torch.autograd.grad(reference, (q, p, n))):
        torch.testing.assert_close(mine, theirs)
    naive = _contrastive_by_hand(q, p, n, [[], [], []])
    assert abs(naive.item() - ours.item()) > 0.05  # the copies would have counted as negatives
    unlabelled = loss.compute_loss_from_embeddings([q, p, n], labels["margin"])["contrastive"]
    torch.testing.assert_close(unlabelled, naive)  # a plain margin tensor names no passage: nothing is left out


def test_the_in_batch_teacher_terms_ask_for_no_gap_to_a_copy() -> None:
    """Guards the documented behaviour of the in-batch terms on a shared positive: a teacher that scores the copy as
    the positive gives it a zero target margin, so when the student scores them alike the copy's column adds no
    Margin-MSE gradient, and the KL term's gradient at that column is zero when both distributions agree."""
    # two rows whose positives are one passage: columns 0 and 1 (the positives) are copies for both rows
    student = torch.tensor([[3.0, 3.0, 1.0, 0.5], [2.5, 2.5, 0.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[2.0, 2.0, 0.0, 1.0], [1.0, 1.0, 0.5, 0.0]])
    grad = torch.autograd.grad(in_batch_margin_mse(student, teacher), student)[0]
    assert grad[0, 1].item() == 0.0 and grad[1, 0].item() == 0.0
    kl_grad = torch.autograd.grad(in_batch_kl(student, student.detach().clone()), student)[0]
    assert kl_grad.abs().max().item() < 1e-7
