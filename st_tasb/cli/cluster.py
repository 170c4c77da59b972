"""``st-tasb cluster``: topic clusters of the training queries (encode, then spherical k-means)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from st_tasb.cli.options import Command, option

logger = logging.getLogger(__name__)


@dataclass
class ClusterArguments:
    """Options of ``st-tasb cluster``."""

    model: str = option(help="SentenceTransformer folder or Hub id that embeds the queries (the paper: a Margin-MSE retriever)")
    data: str = option(help="BEIR folder holding queries.jsonl and qrels/SPLIT.tsv")
    output: str = option(help="output folder (assignments.parquet, centroids.npy, settings.json)")
    split: str = option("train", help="qrels split whose judged queries are clustered (unless --table is given)")
    table: str | None = option(None, help="teacher score table folder: cluster exactly its queries (those that have pairs)")
    k: int = option(2000, help="number of k-means clusters (the paper: 2000 for 400K queries); empty ones are dropped")
    n_iter: int = option(10, help="k-means iterations (the paper: 10)")
    seed: int = option(42, help="k-means initialisation seed")
    batch_size: int = option(256, help="encoding batch size (texts per forward pass of --model)")
    train_batch_size: int = option(32, help="the training batch size, only for the summary: the share of queries in "
                                   "clusters too small to fill a batch")
    query_max_length: int | None = option(30, help="query token cap while encoding (the paper: 30)")
    device: str | None = option(None, help="cpu, cuda, ... (default: CUDA when available)")


def run(args: ClusterArguments) -> int:
    """Cluster the queries, save the clustering and print its size statistics."""
    from st_tasb.data.files import check_output

    check_output(args.output, "--output")  # before the work, not after it
    from st_tasb.data.beir import load_beir
    from st_tasb.data.models import load_sentence_transformer
    from st_tasb.prepare.clusters import QueryClusters
    from st_tasb.prepare.table import TeacherScoreTable

    data = load_beir(args.data, args.split)
    if args.table is not None:
        table = TeacherScoreTable.load(args.table)
        table.validate(data.queries, data.corpus)
        query_ids = table.query_ids
    else:
        query_ids = data.judged_queries().ids
    n_queries = len(query_ids.unique())
    if args.k > n_queries:
        logger.warning("k=%d is more than the %d queries: using k=%d", args.k, n_queries, n_queries)
    model = load_sentence_transformer(args.model, device=args.device)
    clusters = QueryClusters.fit(
        model, data.queries, k=min(args.k, n_queries), n_iter=args.n_iter, seed=args.seed,
        batch_size=args.batch_size, max_seq_length=args.query_max_length, only_ids=query_ids,
    )
    clusters.save(args.output)
    stats = clusters.stats(args.train_batch_size)
    print(
        f"{stats['n_queries']:,} queries in {stats['n_clusters']:,} clusters -> {args.output}; cluster sizes: min "
        f"{stats['min_size']}, median {stats['median_size']:g}, max {stats['max_size']}; "
        f"{stats['share_in_small_clusters']:.1%} of the queries are in clusters smaller than a training batch of "
        f"{args.train_batch_size} (such a cluster cannot fill a batch alone)"
    )
    return 0


COMMAND = Command(
    name="cluster",
    description=(
        "Embed the training queries with a dense retriever and cluster them with spherical k-means (faiss),\n"
        "as the paper does: each TAS-Balanced batch then draws its queries from one cluster. k is capped at\n"
        "the number of queries.\n\n"
        "example:\n"
        "  st-tasb cluster --model sentence-transformers/msmarco-distilbert-base-tas-b --data scifact \\\n"
        "      --table teacher-scores --k 2000 --output clusters"
    ),
    arguments=ClusterArguments,
    run=run,
)
