"""``st-tasb evaluate``: dense retrieval with faiss and trec_eval metrics, or metrics of an existing run."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from st_tasb.cli.options import Command, option

logger = logging.getLogger(__name__)


@dataclass
class EvaluateArguments:
    """Options of ``st-tasb evaluate``."""

    model: str | None = option(None, help="SentenceTransformer folder or Hub id to evaluate (with --data)")
    data: str | None = option(None, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    split: str = option("test", help="qrels split to evaluate (qrels/SPLIT.tsv)")
    run: str | None = option(None, help="evaluate this TREC run file instead of a model (with --qrels, or --data and --split)")
    qrels: str | None = option(None, help="qrels file for --run: BEIR TSV (query-id corpus-id score) or TREC (qid 0 docid rel)")
    run_output: str | None = option(None, help="write the model's run to this TREC run file (a new file, or --overwrite)")
    overwrite: bool = option(False, help="let --run-output replace an existing file")
    top_k: int = option(1000, help="passages retrieved per query")
    index: Literal["flat", "hnsw", "ivf"] = option(
        "flat", help="faiss index: flat (exact inner product), hnsw or ivf (approximate, for large corpora)"
    )
    nlist: int | None = option(None, help="ivf: number of lists (default: 4 * sqrt(corpus size))")
    nprobe: int = option(32, help="ivf: lists visited per query")
    ef_search: int = option(256, help="hnsw: search depth")
    similarity: Literal["dot", "cosine"] | None = option(
        None, help="score: inner product or cosine of the embeddings (default: the model's own, saved with it)"
    )
    batch_size: int = option(64, help="encoding batch size")
    query_max_length: int | None = option(None, help="query token cap (the paper: 30; default: the model's)")
    relevance_threshold: int = option(1, help="lowest grade counted relevant by the binary measures (TREC-DL: 2)")
    missing_as_zero: bool = option(True, help="judged queries without results count as 0 (trec_eval -c); off: left out")
    json: bool = option(False, help="print the metrics as one JSON object on the last line of stdout")
    update_card: bool = option(False, help="add the results to the model card of a model trained with st-tasb")
    device: str | None = option(None, help="cpu, cuda, cuda:1, ... (default: CUDA when available)")

    def __post_init__(self) -> None:
        if self.run is not None:
            if self.model is not None:
                raise ValueError("give either --model (retrieve and evaluate) or --run (evaluate a run file), not both")
            if self.qrels is None and self.data is None:
                raise ValueError("--run needs --qrels FILE (or --data DIR with --split NAME)")
            if self.update_card or self.run_output:
                raise ValueError("--update-card and --run-output need --model")
        elif self.model is None or self.data is None:
            raise ValueError("give --model and --data (retrieve and evaluate), or --run and --qrels (evaluate a run file)")
        elif self.qrels is not None:
            raise ValueError("--qrels goes with --run; with --model the qrels are DATA/qrels/SPLIT.tsv")


def run(args: EvaluateArguments) -> int:
    """Evaluate, print the metrics (a table, or JSON with ``--json``), write the run and update the card if asked."""
    from st_tasb.data.beir import load_beir, load_qrels
    from st_tasb.data.runs import read_trec_run
    from st_tasb.retrieval.metrics import evaluate_run

    if args.run is not None:
        qrels_path = Path(args.qrels) if args.qrels else Path(args.data) / "qrels" / f"{args.split}.tsv"
        run_file = read_trec_run(args.run)
        metrics = evaluate_run(
            run_file, load_qrels(qrels_path), relevance_threshold=args.relevance_threshold,
            missing_as_zero=args.missing_as_zero,
        )
        _report(metrics, f"{args.run} against {qrels_path}", args.json)
        return 0

    from st_tasb.data.files import check_output
    from st_tasb.data.models import load_sentence_transformer
    from st_tasb.retrieval.evaluation import evaluate_model
    from st_tasb.retrieval.search import IndexConfig, SearchSettings

    if args.run_output:  # before the work
        check_output(args.run_output, "--run-output", file=True, overwrite=args.overwrite)
    if args.update_card:  # before the work: a model st-tasb did not train has no card section to update
        from st_tasb.training.model_card import TASBModelCard

        TASBModelCard.load(args.model)
    data = load_beir(args.data, args.split)
    model = load_sentence_transformer(args.model, device=args.device)
    settings = SearchSettings(
        top_k=args.top_k, similarity=args.similarity, batch_size=args.batch_size, query_max_length=args.query_max_length,
        index=IndexConfig(args.index, nlist=args.nlist, nprobe=args.nprobe, ef_search=args.ef_search),
    )
    metrics = evaluate_model(
        model, data, settings, relevance_threshold=args.relevance_threshold, missing_as_zero=args.missing_as_zero,
        run_path=args.run_output,
    )
    if args.run_output:
        logger.info("wrote the run to %s", args.run_output)
    if args.update_card:
        from st_tasb.training.model_card import add_evaluation

        add_evaluation(args.model, f"{Path(args.data).name} ({args.split})", metrics)
        logger.info("added the results to %s", Path(args.model) / "README.md")
    _report(metrics, f"{args.model} on {args.data} ({args.split})", args.json)
    return 0


def _report(metrics: dict[str, float], what: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics), flush=True)
        return
    print(what)
    for name, value in metrics.items():
        print(f"  {name:<12} {value:.4f}")


COMMAND = Command(
    name="evaluate",
    description=(
        "Retrieve with a SentenceTransformer over a BEIR folder (faiss; exact inner product by default) and\n"
        "print nDCG@10 (graded gains), MRR@10, recall@100, recall@1000 and MAP as trec_eval computes them;\n"
        "or evaluate an existing TREC run file against a qrels file.\n\n"
        "examples:\n"
        "  st-tasb evaluate --model out/model --data scifact --split test --json\n"
        "  st-tasb evaluate --run run.trec --qrels qrels/test.tsv --relevance-threshold 2 --json"
    ),
    arguments=EvaluateArguments,
    run=run,
)
