"""End to end: SentenceTransformerTrainer + TAS-Balanced sampler + DualTeacherMarginMSELoss on scifact-train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)

from st_tasb.data.texts import TextStore
from st_tasb.teachers import BiEncoderTeacher
from st_tasb.training.collator import TASBDataCollator
from st_tasb.training.dataset import build_training_dataset
from st_tasb.training.losses import DualTeacherMarginMSELoss
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler

COLUMNS = ("query", "positive", "negative")


def restricted(store: TextStore, ids: pa.Array) -> TextStore:
    """The rows of ``store`` whose ids occur in ``ids`` (so the teacher cache covers only what training reads)."""
    positions = np.unique(store.positions(pc.unique(ids)))
    return TextStore(store.dataset.select(positions), name=store.name)


def dual_loss_on(loss: DualTeacherMarginMSELoss, collator: TASBDataCollator, dataset, rows: list[int]) -> float:
    """The full dual-teacher loss of a fixed batch (student in eval mode, no gradient)."""
    batch = collator([dataset[row] for row in rows])
    features = [{key[len(c) + 1 :]: v for key, v in batch.items() if key.startswith(c + "_")} for c in COLUMNS]
    loss.model.eval()
    with torch.no_grad():
        return float(sum(loss(features, batch["label"]).values()))


def test_trainer_lowers_the_dual_teacher_loss(
    scifact_parts, small_student, minilm_path: str, small_student_path: str, tmp_path: Path
) -> None:
    """Guards the whole chain: TASBDataCollator labels reach the loss, the cached MiniLM in-batch teacher
    scores TAS-Balanced batches by row index, both components are logged, training lowers the loss on a
    fixed batch, and the teacher is never trained or swapped for the student."""
    pairs = scifact_parts.table.dataset.data
    queries = restricted(scifact_parts.data.queries, pairs.column("query_id"))
    corpus = restricted(
        scifact_parts.data.corpus,
        pa.chunked_array(pairs.column("positive_id").chunks + pairs.column("negative_id").chunks),
    )
    dataset = build_training_dataset(scifact_parts.table, queries, corpus, scifact_parts.clusters, with_indices=True)
    teacher_model = SentenceTransformer(minilm_path, device="cpu")
    teacher = BiEncoderTeacher(teacher_model, passage_max_length=64, device="cpu")
    teacher.build_cache(queries, corpus, show_progress_bar=False)
    teacher_weights = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    loss = DualTeacherMarginMSELoss(small_student, teacher, alpha=0.75)
    collator = TASBDataCollator.for_model(small_student)
    probe = list(range(0, len(dataset), max(1, len(dataset) // 32)))[:32]
    before = dual_loss_on(loss, collator, dataset, probe)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        num_train_epochs=1,
        learning_rate=2e-4,
        warmup_steps=2,
        seed=5,
        batch_sampler=TopicAwareBalancedBatchSampler,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=small_student, args=args, train_dataset=dataset, loss=loss, data_collator=collator
    )
    trainer.train()

    after = dual_loss_on(loss, collator, dataset, probe)
    assert after < 0.8 * before, (before, after)
    logged = [entry for entry in trainer.state.log_history if "pairwise" in entry]
    assert logged and all("in_batch" in entry and entry["in_batch"] > 0 for entry in logged)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized and optimized.isdisjoint(id(p) for p in teacher.parameters())
    assert all(not p.requires_grad and torch.equal(p, teacher_weights[name]) for name, p in teacher.named_parameters())
    # the trainer swaps a wrapped student into the loss (DDP, compile): the teacher's model must survive that
    trainer.override_model_in_loss(trainer.loss, SentenceTransformer(small_student_path, device="cpu"))
    assert trainer.loss.inbatch_teacher.encoder is teacher_model
