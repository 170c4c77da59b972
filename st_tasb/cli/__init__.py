"""The ``st-tasb`` command line: one subcommand per step of the TAS-Balanced pipeline.

========  ==========================================================================================
mine      candidate (query, positive, negative) pairs: positives from qrels, negatives from BM25 / a dense model
score     a teacher score table: a cross-encoder, bi-encoder or an ensemble scores the candidates (resumable)
cluster   topic clusters of the training queries (encode + spherical k-means)
train     TAS-Balanced training of a student with the dual-teacher Margin-MSE loss
evaluate  dense retrieval + trec_eval metrics over a BEIR folder, or metrics of an existing TREC run
push      upload a trained model folder to the Hugging Face Hub (or --dry-run)
demo      the whole pipeline, offline, on a BEIR folder (scifact-train in a few minutes on a CPU)
========  ==========================================================================================

Every option can also come from a YAML or JSON file (``--config``); flags override it. Bad input (a
missing file, a malformed line, an unknown id, a model that cannot be found) is reported in one line
on stderr with exit status 2; ``st-tasb --traceback ...`` shows the full traceback instead.

Example:
    >>> main(["evaluate", "--run", "missing.trec", "--qrels", "missing.tsv"])
    2
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from st_tasb import __version__
from st_tasb.cli.arguments import Command, add_arguments, parse_arguments

COMMAND_MODULES = ("mine", "score", "cluster", "train", "evaluate", "push", "demo")
"""The driver modules under ``st_tasb.cli``, one per subcommand, in pipeline order."""


def commands() -> list[Command]:
    """The subcommands, imported on demand (each driver imports its heavy libraries only when run)."""
    return [importlib.import_module(f"st_tasb.cli.{name}").COMMAND for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    """The ``st-tasb`` argument parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="st-tasb",
        description="TAS-Balanced dense retriever training for sentence-transformers "
        "(Hofstätter et al., SIGIR 2021). Run 'st-tasb COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"st-tasb {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of errors instead of one line")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for command in commands():
        subparser = subparsers.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_arguments(subparser, command.arguments)
        subparser.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``st-tasb`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Errors caused by the input (missing or malformed files, unknown ids, invalid options, a model or
    Hub repository that cannot be reached) print ``st-tasb COMMAND: error: ...`` on stderr and return 2.
    """
    namespace = build_parser().parse_args(argv)
    command: Command = namespace._command
    show_traceback = namespace.traceback
    del namespace._command, namespace.command, namespace.traceback
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("st_tasb").setLevel(logging.INFO)
    from st_tasb.texts import UnknownIdError

    try:
        arguments = parse_arguments(command.arguments, namespace)
        return int(command.run(arguments) or 0)
    except (OSError, ValueError, UnknownIdError) as error:
        if show_traceback:
            raise
        message = str(error) or type(error).__name__
        print(f"st-tasb {command.name}: error: {message}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "commands", "main"]
