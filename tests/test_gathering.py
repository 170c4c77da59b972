"""Gathered in-batch negatives across processes: 2 gloo processes under torchrun (tests/scripts/ddp_gather.py)
against one process on the same global batch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from st_tasb.training.gathering import GatheredPassages, gather_labels, gather_passages, gathering_active
from st_tasb.training.losses import DualTeacherMarginMSELoss

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.mark.slow
def test_two_processes_with_gathering_equal_one_process_on_the_global_batch(small_student_path: str, tmp_path: Path,
                                                                           torchrun) -> None:
    """Guards the exactness of gathering: the loss (mean over ranks) and DDP's averaged gradients equal one
    process's on the same 8 rows (1e-5), for every in-batch form, a text and a cached teacher, and GradCache; one
    SGD step of a DDP encoder gives the same weights; each rank's rows are at their place among the gathered
    passages and teacher labels; TopicAwareBatchSampler's global batches for MNRL's own gathering hold no text
    twice and one cluster each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    torchrun(str(SCRIPTS / "ddp_gather.py"), small_student_path, str(tmp_path), env=env)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for record in ranks:
        assert record["world_size"] == 2 and record["alignment"]
        assert set(record["differences"]) == {"margin-mse, text teacher", "kl + contrastive, text teacher",
                                              "margin-mse, cached bi-encoder", "pairwise + contrastive, no teacher",
                                              "GradCache, text teacher"}
        for name, difference in record["differences"].items():
            assert difference["gradient_scale"] > 1e-3, name  # the comparison is not between zeros
            assert difference["loss"] < 1e-5 and difference["gradient"] < 1e-5, (name, difference)
        assert record["step_difference"] < 1e-6
        assert record["mnrl_global_batches_clean"] and record["mnrl_loss_finite"]
        assert all(len(clusters) == 1 for clusters in record["mnrl_global_batch_clusters"])


def test_one_process_gathers_nothing() -> None:
    """Guards the single-process path: gathering is off without a process group, and the loss with
    gather_across_devices=True equals the plain one."""
    assert not gathering_active(True)
    torch.manual_seed(0)
    query, positive, negative = (torch.randn(3, 4) for _ in range(3))
    labels = {"margin": torch.randn(3)}
    plain = DualTeacherMarginMSELoss(None, alpha=0.0, contrastive_weight=1.0)
    gathering = DualTeacherMarginMSELoss(None, alpha=0.0, contrastive_weight=1.0, gather_across_devices=True)
    assert plain.compute_loss_from_embeddings([query, positive, negative], labels) == pytest.approx(
        gathering.compute_loss_from_embeddings([query, positive, negative], labels))
    assert gathering.get_config_dict()["gather_across_devices"] is True
    local = gather_passages(positive, negative)  # no process group: the local tensors
    assert torch.equal(local.positive, positive) and local.offset == 0
    assert gather_labels({"margin": labels["margin"]}).keys() == {"margin"}
    assert GatheredPassages.local(positive, negative).offset == 0
