"""st_tasb.fit: sentence-transformers' fit call, run on the Trainer with the DataLoader's TAS-Balanced sampler kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from st_tasb import (
    DualTeacherMarginMSELoss,
    TASBDataCollator,
    TopicAwareBalancedBatchSampler,
    build_training_dataset,
    fit,
)


class RecordingCollator(TASBDataCollator):
    """The TAS-B collator, recording the query rows of every batch it collates."""

    batches: list[list[int]]

    def __call__(self, features):
        self.batches.append([int(row["query_index"]) for row in features])
        return super().__call__(features)


def test_fit_trains_on_the_samplers_batches(scifact_parts, small_student, tmp_path: Path) -> None:
    """Guards the point of fit: the Trainer it runs draws exactly the batches of the DataLoader's sampler (same
    sampler settings and seed, epoch 0), through the DataLoader's own collator, and saves the trained model; where
    sentence-transformers' model.fit would have dropped the sampler."""
    dataset = build_training_dataset(
        scifact_parts.table, scifact_parts.data.queries, scifact_parts.data.corpus, scifact_parts.clusters,
        with_indices=True,
    )
    sampler = TopicAwareBalancedBatchSampler(dataset, batch_size=16, drop_last=True, seed=7, n_bins=4)
    collator = RecordingCollator.for_model(small_student)
    collator.batches = []
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)
    steps = 4
    trainer = fit(
        small_student, [(loader, DualTeacherMarginMSELoss(small_student, alpha=0.0))], epochs=1, steps_per_epoch=steps,
        warmup_steps=0, optimizer_params={"lr": 1e-4}, show_progress_bar=False, output_path=str(tmp_path / "model"),
        checkpoint_path=str(tmp_path / "checkpoints"),
    )
    expected = [[int(dataset.data.column("query_index")[row].as_py()) for row in batch] for batch in list(sampler)[:steps]]
    assert collator.batches[:steps] == expected  # accelerate's loader reads one batch ahead of the step
    assert trainer.state.global_step == steps and "train_loss" in trainer.state.log_history[-1]
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_fit_refuses_what_it_cannot_keep(scifact_parts, small_student) -> None:
    """Guards clear errors: a DataLoader without the TAS-B sampler, several objectives, an unknown scheduler."""
    dataset = build_training_dataset(scifact_parts.table, scifact_parts.data.queries, scifact_parts.data.corpus)
    loss = DualTeacherMarginMSELoss(small_student, alpha=0.0)
    with pytest.raises(TypeError, match="batch_sampler=TopicAwareBalancedBatchSampler"):
        fit(small_student, [(DataLoader(dataset, batch_size=8), loss)])
    sampler_loader = DataLoader(dataset, batch_sampler=TopicAwareBalancedBatchSampler(dataset, 8, True, topic_aware=False))
    with pytest.raises(ValueError, match="one \\(DataLoader, loss\\) objective, not 2"):
        fit(small_student, [(sampler_loader, loss), (sampler_loader, loss)])
    with pytest.raises(ValueError, match="unknown scheduler 'Linear'"):
        fit(small_student, [(sampler_loader, loss)], scheduler="Linear")
