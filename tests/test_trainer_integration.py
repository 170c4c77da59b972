"""A real SentenceTransformerTrainer run with the TAS-Balanced sampler on scifact-train, and DDP with torchrun."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import (
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.losses import MarginMSELoss

from st_tasb.training.dataset import build_training_dataset
from st_tasb.training.sampler import TopicAwareBalancedBatchSampler

SCRIPTS = Path(__file__).parent / "scripts"


def margin_mse_on(model, dataset, rows: list[int]) -> float:
    """The MarginMSE loss of ``model`` on fixed rows of the training dataset (no gradient)."""
    examples = dataset[rows]
    features = [model.tokenize(examples[column]) for column in ("query", "positive", "negative")]
    with torch.no_grad():
        return float(MarginMSELoss(model)(features, torch.tensor(examples["label"])))


def test_trainer_trains_with_the_sampler_class(scifact_parts, small_student, tmp_path: Path) -> None:
    """Guards the whole integration: the sampler passed as a class is used (not silently replaced by batch size 1),
    rows resolve to text lazily through the default collator, and MarginMSE training lowers the loss."""
    dataset = build_training_dataset(
        scifact_parts.table,
        scifact_parts.data.queries, scifact_parts.data.corpus, scifact_parts.clusters
    )
    assert set(dataset[0]) == {"query", "positive", "negative", "label"}
    probe = list(range(0, len(dataset), max(1, len(dataset) // 64)))[:64]
    before = margin_mse_on(small_student, dataset, probe)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        num_train_epochs=3,
        learning_rate=2e-4,
        warmup_steps=2,
        seed=3,
        batch_sampler=TopicAwareBalancedBatchSampler,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=small_student, args=args, train_dataset=dataset, loss=MarginMSELoss(small_student))
    loader = trainer.get_train_dataloader()
    assert isinstance(loader.batch_sampler, TopicAwareBalancedBatchSampler)
    first = next(iter(loader))
    assert first["query_input_ids"].shape[0] == 16 and first["label"].shape == (16,)
    trainer.train()
    assert trainer.state.global_step == 3 * len(loader.batch_sampler)
    after = margin_mse_on(small_student, dataset, probe)
    assert after < 0.8 * before, (before, after)


def test_resume_replays_the_same_epoch(scifact_parts) -> None:
    """Guards reproducibility after a resume: a new sampler set to the same epoch yields the same batches."""
    dataset = build_training_dataset(
        scifact_parts.table,
        scifact_parts.data.queries, scifact_parts.data.corpus, scifact_parts.clusters
    )
    factory = partial(TopicAwareBalancedBatchSampler, n_bins=10)
    original = factory(dataset, batch_size=16, drop_last=False, valid_label_columns=None, generator=None, seed=9)
    original.set_epoch(2)
    resumed = factory(dataset, batch_size=16, drop_last=False, valid_label_columns=None, generator=None, seed=9)
    resumed.set_epoch(2)
    assert list(original) == list(resumed)


@pytest.mark.slow
def test_ddp_ranks_get_disjoint_batches_of_one_sequence(scifact_parts, small_student_path, tmp_path: Path, torchrun) -> None:
    """Guards DDP: under torchrun (gloo) both ranks build the same batch sequence, accelerate hands them disjoint
    batches (i % world_size == rank), the batches of one step form one topic-aware global batch, no rank hangs on a
    wrong __len__, and training finishes."""
    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    torchrun(
        str(SCRIPTS / "ddp_train.py"), small_student_path, str(scifact_parts.data_dir),
        str(scifact_parts.table_dir), str(scifact_parts.clusters_dir), str(out), env=env,
    )  # fmt: skip
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    expected = ranks[0]["expected"]
    assert ranks[1]["expected"] == expected  # every rank computed the identical sequence
    assert all(r["world_size"] == 2 for r in ranks)
    assert all(r["sampler"] == "TopicAwareBalancedBatchSampler" for r in ranks)
    steps = -(-len(expected) // 2)  # an odd last batch is completed from the start by accelerate (even_batches)
    own = [ranks[rank]["seen"][: len(expected[rank::2])] for rank in range(2)]
    for rank, record in enumerate(ranks):
        assert own[rank] == expected[rank::2]
        assert record["global_step"] == steps and np.isfinite(record["losses"]).all()
    seen = [q for batches in own for batch in batches for q in batch]
    assert len(seen) == len(set(seen)) == len(expected) * 8  # disjoint, and together the whole epoch
    # the batches of a step (one per rank) are one topic-aware global batch of 16
    assert ranks[0]["composition"] == ranks[0]["single_process_composition"]
    assert ranks[0]["composition"]["single_cluster_share"] > 0.5


def test_a_sampler_instance_in_the_training_arguments_is_refused(scifact_parts, small_student, tmp_path: Path) -> None:
    """Guards a silent failure: sentence-transformers, given a sampler instance as batch_sampler, would train on
    single rows in table order; st-tasb's sampler refuses to be used so, before the first step, saying what to pass."""
    dataset = build_training_dataset(
        scifact_parts.table, scifact_parts.data.queries, scifact_parts.data.corpus, scifact_parts.clusters
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, report_to="none", use_cpu=True,
        batch_sampler=TopicAwareBalancedBatchSampler(dataset, batch_size=16, drop_last=True),
    )
    trainer = SentenceTransformerTrainer(model=small_student, args=args, train_dataset=dataset, loss=MarginMSELoss(small_student))
    with pytest.raises(TypeError, match="takes the class TopicAwareBalancedBatchSampler or functools.partial"):
        trainer.get_train_dataloader()
