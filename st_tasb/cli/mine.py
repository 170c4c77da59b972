"""``st-tasb mine``: candidate (query, positive, negative) pairs for every training query."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from st_tasb.cli.options import Command, option

SOURCES = ("bm25", "dense")

logger = logging.getLogger(__name__)

TEXTS_DIR = "texts"
"""With ``--pseudo-queries``: the BEIR folder of all texts mined (pseudo-queries and their positives added)."""
PAIRS_FILE = "pairs.parquet"
"""The candidates file in a ``st-tasb mine`` output folder (columns query_id, positive_id, negative_id)."""
SUMMARY_FILE = "mining.json"


@dataclass
class MineArguments:
    """Options of ``st-tasb mine``."""

    data: str = option(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    output: str = option(help=f"output folder; receives {PAIRS_FILE} (query_id, positive_id, negative_id) and {SUMMARY_FILE}")
    overwrite: bool = option(False, help="write into an --output folder that holds files st-tasb did not write (they may be replaced)")
    split: str = option("train", help="qrels split whose queries are mined (their judged documents are the positives)")
    sources: list[str] = option(  # noqa: RUF009 (option() makes a dataclass field)
        ("bm25",), help="where negatives come from: bm25, dense, or both (merged rank by rank)", metavar="{bm25,dense}"
    )
    model: str | None = option(None, help="SentenceTransformer folder or Hub id for dense negatives")
    top_k: int = option(100, help="retrieval depth per source")
    skip_top: int = option(0, help="hits dropped from the top of each ranking (often unjudged positives)")
    max_negatives: int | None = option(None, help="negatives kept per query (default: all that remain)")
    positive_threshold: int = option(1, help="lowest qrels grade that makes a document a positive")
    index: Literal["flat", "hnsw", "ivf"] = option("flat", help="faiss index of the dense search: flat, hnsw or ivf")
    batch_size: int = option(64, help="encoding batch size of the dense search")
    query_max_length: int | None = option(None, help="query token cap of the dense search (default: the model's)")
    device: str | None = option(None, help="cpu, cuda, ... for the dense model (default: CUDA when available)")
    pseudo_queries: Literal["title", "first-sentence"] | None = option(
        None, help="also make a pseudo-query of every document (its title, or the first sentence of its text; the rest "
        f"is the positive) and write all texts to OUTPUT/{TEXTS_DIR} for 'st-tasb score --data'. Without "
        "qrels/SPLIT.tsv only pseudo-queries are mined",
    )
    skip_unusable: bool = option(False, help="with --pseudo-queries: leave out documents with an empty title "
                                 "(or a one-sentence text) instead of stopping at the first")

    def __post_init__(self) -> None:
        unknown = [source for source in self.sources if source not in SOURCES]
        if unknown:
            raise ValueError(f"--sources takes {' and/or '.join(SOURCES)}, not {', '.join(unknown)}")


def run(args: MineArguments) -> int:
    """Mine the candidates, write them to the output folder and print a summary."""
    from st_tasb.data.files import check_output, write_json

    check_output(args.output, "--output", record=SUMMARY_FILE, overwrite=args.overwrite)  # before the work
    from st_tasb.data.beir import write_beir
    from st_tasb.data.models import load_sentence_transformer
    from st_tasb.prepare.mining import mine_candidates

    data, exclude = _mining_data(args)
    model = load_sentence_transformer(args.model, device=args.device) if args.model else None
    mined = mine_candidates(
        data, sources=args.sources, model=model, top_k=args.top_k, skip_top=args.skip_top,
        max_negatives=args.max_negatives, positive_threshold=args.positive_threshold, index=args.index,
        batch_size=args.batch_size, query_max_length=args.query_max_length, exclude=exclude,
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    mined.pairs.to_parquet(str(output / PAIRS_FILE))
    summary = {
        "settings": asdict(args),
        "pairs": len(mined.pairs),
        "queries": len(mined.pairs.unique("query_id")) if len(mined.pairs) else 0,
        "distinct_query_document_pairs": len(mined.to_score),
        "queries_without_positives": mined.queries_without_positives,
        "queries_without_negatives": mined.queries_without_negatives,
    }
    if args.pseudo_queries:
        write_beir(data, output / TEXTS_DIR, args.split)
        summary["texts"] = str(output / TEXTS_DIR)
    write_json(output / SUMMARY_FILE, summary)
    print(
        f"mined {summary['pairs']:,} pairs for {summary['queries']:,} queries "
        f"({summary['distinct_query_document_pairs']:,} (query, document) pairs to score) -> {output / PAIRS_FILE}"
        + (f"; texts -> {output / TEXTS_DIR} (score with --data {output / TEXTS_DIR})" if args.pseudo_queries else "")
    )
    return 0


def _mining_data(args: MineArguments) -> tuple[Any, dict[str, list[str]]]:
    """The data to mine (with pseudo-queries if asked) and the documents never used as negatives."""
    from st_tasb.data.beir import BeirData, load_beir
    from st_tasb.prepare.pseudo_queries import make_pseudo_queries

    if not args.pseudo_queries:
        return load_beir(args.data, args.split), {}
    pseudo = make_pseudo_queries(Path(args.data) / "corpus.jsonl", source=args.pseudo_queries, skip_unusable=args.skip_unusable)
    if not (Path(args.data) / "qrels" / f"{args.split}.tsv").is_file():
        return pseudo.data, pseudo.exclude
    judged = load_beir(args.data, args.split)
    return pseudo.with_judged(BeirData(pseudo.corpus, judged.queries, judged.qrels))


COMMAND = Command(
    name="mine",
    description=(
        "Mine training candidates for every judged query of a BEIR split: positives are its judged documents,\n"
        "negatives the top hits of BM25 (bm25s) and/or a dense SentenceTransformer that are not judged relevant.\n"
        "Every positive is paired with every negative. Score the result with 'st-tasb score'.\n\n"
        "example:\n"
        "  st-tasb mine --data scifact --split train --sources bm25 --top-k 50 --max-negatives 20 --output candidates\n"
        "  st-tasb mine --data my-corpus --pseudo-queries title --top-k 100 --output candidates   # a corpus alone"
    ),
    arguments=MineArguments,
    run=run,
)
