"""DDP worker for tests/test_gathering.py: gathered in-batch negatives under torchrun (2 gloo processes, CPU).

Every rank takes its slice of one global batch of rows and compares, against one process computing the same
global batch alone (each rank computes that reference itself, without gathering):

- the loss (the mean over ranks) and the gradient of every weight after DDP's averaging, for the dual-teacher
  loss with a text teacher and with a cached bi-encoder teacher, each in-batch form (Margin-MSE, KL, contrastive),
  and for the GradCache variant;
- the weights after one optimizer step of a DDP-wrapped encoder;
- where its rows are among the gathered passages and teacher labels (the alignment that a wrong order breaks);
- sentence-transformers' MultipleNegativesRankingLoss with ``gather_across_devices=True`` on batches of
  TopicAwareBatchSampler: the global batch holds no text twice.

Writes ``<out>/rank<r>.json``. Usage: torchrun --nproc_per_node 2 ddp_gather.py MODEL OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from torch.nn.parallel import DistributedDataParallel

from st_tasb.teachers import BiEncoderTeacher, InBatchTeacher
from st_tasb.training.anchor_sampler import TopicAwareBatchSampler
from st_tasb.training.cached_losses import CachedDualTeacherMarginMSELoss
from st_tasb.training.gathering import gather_labels, gather_passages
from st_tasb.training.losses import DualTeacherMarginMSELoss, ScaledSimilarity

PER_DEVICE, DIM, FEATURES = 4, 6, 5


class LengthTeacher(InBatchTeacher):
    """A text teacher: the score of (q, p) is a fixed function of their lengths."""

    def score(self, queries, passages):
        return torch.tensor([[len(q) * 0.3 - abs(len(q) - len(p)) * 0.2 for p in passages] for q in queries])


class Encoder(torch.nn.Module):
    """A tiny encoder of the rows' feature vectors (queries, positives and negatives share it)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(FEATURES, DIM)

    def forward(self, x):
        return torch.tanh(self.layer(x))


def global_batch(world_size: int) -> dict:
    """The rows of one global batch: feature vectors, margins, row indices and texts (the same on every rank)."""
    rows = PER_DEVICE * world_size
    generator = torch.Generator().manual_seed(1)
    features = {name: torch.randn(rows, FEATURES, generator=generator) for name in ("query", "positive", "negative")}
    return {
        "features": features,
        "margin": torch.randn(rows, generator=generator),
        "query_index": torch.arange(rows),
        "positive_index": torch.arange(rows) * 2,
        "negative_index": torch.arange(rows) * 2 + 1,
        "texts": {"query": [f"query {'q' * (i % 5)}" for i in range(rows)],
                  "positive": [f"positive {'p' * (i % 7)}" for i in range(rows)],
                  "negative": [f"negative {'n' * (i % 3)}" for i in range(rows)]},
    }


def labels_of(batch: dict, rows: slice) -> dict:
    return {"margin": batch["margin"][rows], **{key: batch[key][rows] for key in
                                                ("query_index", "positive_index", "negative_index")},
            "texts": {name: texts[rows] for name, texts in batch["texts"].items()}}


def loss_and_gradient(loss, encoder, batch, rows, ddp_average: bool) -> tuple[float, list[torch.Tensor]]:
    encoder.zero_grad()
    embeddings = [encoder(batch["features"][name][rows]) for name in ("query", "positive", "negative")]
    total = sum(loss.compute_loss_from_embeddings(embeddings, labels_of(batch, rows)).values())
    total.backward()
    gradients = [p.grad.clone() for p in encoder.parameters()]
    value = total.detach().clone()
    if ddp_average:  # what DDP does to gradients; the logged loss is the mean over ranks
        for gradient in [*gradients, value]:
            dist.all_reduce(gradient)
            gradient /= dist.get_world_size()
    return float(value), gradients


def cached_loss_and_gradient(model, batch_rows, margins, teacher_labels, gather: bool):
    """The GradCache loss on a real (tiny) SentenceTransformer: loss value and the gradients of its weights."""
    loss = CachedDualTeacherMarginMSELoss(DualTeacherMarginMSELoss(
        model, LengthTeacher(), alpha=0.5, contrastive_weight=0.3, similarity_fct=ScaledSimilarity("cosine", 20),
        gather_across_devices=gather), mini_batch_size=2)
    model.zero_grad()
    features = [model.tokenize(batch_rows[name]) for name in ("query", "positive", "negative")]
    labels = {"margin": margins, "texts": teacher_labels}
    total = sum(loss(features, labels).values())
    total.backward()
    return total.detach().clone(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def main(model_path: str, out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    batch = global_batch(world_size)
    local, everything = slice(rank * PER_DEVICE, (rank + 1) * PER_DEVICE), slice(None)
    record: dict = {"world_size": world_size, "differences": {}}

    # alignment: this rank's rows sit at offset + i of the gathered passages and labels
    positive, negative = batch["features"]["positive"][local], batch["features"]["negative"][local]
    passages = gather_passages(positive, negative)
    labels = gather_labels(labels_of(batch, local))
    record["alignment"] = bool(
        torch.equal(passages.positive, batch["features"]["positive"])
        and torch.equal(passages.negative, batch["features"]["negative"])
        and passages.offset == rank * PER_DEVICE
        and torch.equal(labels["positive_index"], batch["positive_index"])
        and torch.equal(labels["negative_index"], batch["negative_index"])
        and torch.equal(labels["query_index"], batch["query_index"][local])
        and labels["texts"]["positive"] == batch["texts"]["positive"]
        and labels["texts"]["negative"] == batch["texts"]["negative"]
        and labels["texts"]["query"] == batch["texts"]["query"][local]
    )

    cache = (np.random.default_rng(2).normal(size=(32, 3)).astype(np.float32),
             np.random.default_rng(3).normal(size=(64, 3)).astype(np.float32))
    variants = {
        "margin-mse, text teacher": dict(inbatch_teacher=LengthTeacher(), alpha=0.75),
        "kl + contrastive, text teacher": dict(inbatch_teacher=LengthTeacher(), alpha=1.0, inbatch_loss="kl",
                                               contrastive_weight=1.0, pairwise_weight=0.0),
        "margin-mse, cached bi-encoder": dict(inbatch_teacher=BiEncoderTeacher(cache=cache, similarity_fn_name="dot",
                                                                               device="cpu"), alpha=0.75),
        "pairwise + contrastive, no teacher": dict(alpha=0.0, contrastive_weight=0.5),
    }
    for name, options in variants.items():
        encoder = Encoder()
        gathered = DualTeacherMarginMSELoss(None, gather_across_devices=True, **options)
        alone = DualTeacherMarginMSELoss(None, gather_across_devices=False, **options)
        value, gradients = loss_and_gradient(gathered, encoder, batch, local, ddp_average=True)
        reference_value, reference = loss_and_gradient(alone, encoder, batch, everything, ddp_average=False)
        record["differences"][name] = {
            "loss": abs(value - reference_value),
            "gradient": max(float((a - b).abs().max()) for a, b in zip(gradients, reference)),
            "gradient_scale": max(float(b.abs().max()) for b in reference),
        }

    # one optimizer step of a DDP-wrapped encoder from the same weights = one process's step on the global batch
    options = variants["margin-mse, text teacher"]
    ddp = DistributedDataParallel(Encoder())
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
    loss = DualTeacherMarginMSELoss(None, gather_across_devices=True, **options)
    embeddings = [ddp(batch["features"][name][local]) for name in ("query", "positive", "negative")]
    sum(loss.compute_loss_from_embeddings(embeddings, labels_of(batch, local)).values()).backward()
    optimizer.step()
    single = Encoder()
    single_optimizer = torch.optim.SGD(single.parameters(), lr=0.5)
    loss_and_gradient(DualTeacherMarginMSELoss(None, **options), single, batch, everything, ddp_average=False)
    single_optimizer.step()
    record["step_difference"] = max(float((a - b).abs().max()) for a, b in
                                    zip(ddp.module.parameters(), single.parameters()))

    # GradCache variant on a real SentenceTransformer (eval mode: no dropout, so both runs see the same network)
    model = SentenceTransformer(model_path, device="cpu")
    model.eval()
    rows = {name: texts for name, texts in batch["texts"].items()}
    value, gradients = cached_loss_and_gradient(
        model, {name: texts[local] for name, texts in rows.items()}, batch["margin"][local],
        {name: texts[local] for name, texts in rows.items()}, gather=True)
    for gradient in [*gradients, value]:
        dist.all_reduce(gradient)
        gradient /= world_size
    reference_value, reference = cached_loss_and_gradient(model, rows, batch["margin"], rows, gather=False)
    record["differences"]["GradCache, text teacher"] = {
        "loss": abs(float(value) - float(reference_value)),
        "gradient": max(float((a - b).abs().max()) for a, b in zip(gradients, reference)),
        "gradient_scale": max(float(b.abs().max()) for b in reference),
    }

    # TopicAwareBatchSampler + MNRL with sentence-transformers' own gathering
    anchors = [f"anchor {i}" for i in range(24)]
    pairs = Dataset.from_dict({"anchor": anchors, "positive": [f"shared {i % 12}" for i in range(24)]})
    topics = {anchor: i // 8 for i, anchor in enumerate(anchors)}
    sampler = TopicAwareBatchSampler(pairs, PER_DEVICE, True, seed=5, clusters=topics)
    mine = list(BatchSamplerShard(sampler, num_processes=world_size, process_index=rank))
    every_rank: list = [None] * world_size
    dist.all_gather_object(every_rank, mine)
    global_batches = [sum((shard[step] for shard in every_rank), []) for step in range(len(mine))]
    texts_of = [[pairs[i]["anchor"] for i in batch] + [pairs[i]["positive"] for i in batch] for batch in global_batches]
    record["mnrl_global_batches_clean"] = all(len(texts) == len(set(texts)) for texts in texts_of)
    record["mnrl_global_batch_clusters"] = [sorted({topics[pairs[i]["anchor"]] for i in batch}) for batch in global_batches]
    mnrl = MultipleNegativesRankingLoss(model, gather_across_devices=True)
    first = global_batches[0][rank * PER_DEVICE:(rank + 1) * PER_DEVICE]
    features = [model.tokenize([pairs[i][column] for i in first]) for column in ("anchor", "positive")]
    record["mnrl_loss_finite"] = bool(torch.isfinite(mnrl(features, torch.zeros(len(first)))).item())

    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
