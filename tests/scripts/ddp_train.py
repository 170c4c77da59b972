"""DDP worker for tests/test_ddp.py: a real SentenceTransformerTrainer run under torchrun (gloo, CPU).

Every rank records the query rows of each batch it trains on into ``<out>/rank<r>.json``; the test checks
that the ranks received disjoint batches of one sequence, identical to the single-process sampler's.

Usage: torchrun --nproc_per_node 2 ddp_train.py MODEL DATA_DIR TABLE_DIR CLUSTERS_DIR OUT_DIR
"""

from __future__ import annotations

import dataclasses
import json
import sys
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.losses import MarginMSELoss

from st_tasb.data.beir import load_beir
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.training.collator import TASBDataCollator
from st_tasb.training.dataset import build_training_dataset
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler


class RecordingMarginMSE(torch.nn.Module):
    """MarginMSELoss on the collator's margin, recording the query rows of every training batch."""

    def __init__(self, model: SentenceTransformer) -> None:
        super().__init__()
        self.model = model
        self.inner = MarginMSELoss(model)
        self.seen: list[list[int]] = []

    def forward(self, features, labels):
        self.inner.model = self.model
        self.seen.append(labels["query_index"].tolist())
        return self.inner(features, labels["margin"])


def main(model_path: str, data_dir: str, table_dir: str, clusters_dir: str, out_dir: str) -> None:
    data = load_beir(data_dir, "train")
    table = TeacherScoreTable.load(table_dir)
    dataset = build_training_dataset(table, data.queries, data.corpus, QueryClusters.load(clusters_dir), with_indices=True)
    model = SentenceTransformer(model_path, device="cpu")
    loss = RecordingMarginMSE(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(out_dir) / "checkpoints"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        learning_rate=1e-4,
        seed=11,
        batch_sampler=partial(TopicAwareBalancedBatchSampler, n_bins=10),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        ddp_backend="gloo",
        dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, data_collator=TASBDataCollator.for_model(model)
    )
    trainer.train()
    rank = dist.get_rank() if dist.is_initialized() else 0
    query_index = dataset.data.column("query_index").to_numpy()
    sampler = trainer.get_train_dataloader().batch_sampler
    record = {
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "seen": loss.seen,
        "expected": [query_index[b].tolist() for b in TopicAwareBalancedBatchSampler(
            dataset, batch_size=8, drop_last=True, seed=11)],
        "global_step": trainer.state.global_step,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "sampler": type(getattr(sampler, "batch_sampler", sampler)).__name__,
        # the two per-device batches of a step form one global batch of 16, composed as one process's batch of 16
        "composition": dataclasses.asdict(TopicAwareBalancedBatchSampler(dataset, 8, True, seed=11).composition()),
        "single_process_composition": dataclasses.asdict(
            TopicAwareBalancedBatchSampler(dataset, 16, True, seed=11, world_size=1).composition()),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(*sys.argv[1:6])
