"""The ``st-tasb`` command line: one subcommand per step of the TAS-Balanced pipeline.

Run ``st-tasb COMMAND --help`` for the options of a command. Every option can also come from a YAML
or JSON file (``--config``); flags given on the command line override it. Bad input (a missing file, a
malformed line, an unknown id, a model that cannot be found) is reported in one line on stderr with
exit status 2; ``st-tasb --traceback COMMAND ...`` shows the full traceback instead. Long steps show
progress bars with an ETA; ``st-tasb --quiet COMMAND ...`` turns them all off.

Each subcommand lives in its own driver module (``st_tasb.cli.<command>``), imported only when that
command runs, so ``--help`` stays fast.

Example:
    >>> main(["evaluate", "--run", "missing.trec", "--qrels", "missing.tsv"])
    2
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from st_tasb import __version__
from st_tasb.cli.options import Command, ConfigError, OptionParser
from st_tasb.data.progress import QUIET_VARIABLE, silence_all_bars

COMMANDS = {
    "mine": "candidate (query, positive, negative) pairs: positives from qrels, negatives from BM25 and/or a dense model",
    "score": "a teacher score table: a cross-encoder, bi-encoder or an ensemble scores the candidates (resumable)",
    "cluster": "topic clusters of the training queries (encode with a dense model, spherical k-means with faiss)",
    "train": "TAS-Balanced training: topic-aware balanced batches, dual-teacher Margin-MSE, SentenceTransformerTrainer",
    "evaluate": "dense retrieval + trec_eval metrics over a BEIR folder, or the metrics of an existing TREC run",
    "push": "upload a trained model folder to the Hugging Face Hub (or --dry-run DIR: exactly what would go up)",
    "adapt": "a better retriever for your documents: mine, score, cluster, train and evaluate in one resumable run",
    "demo": "st-tasb adapt with the demo's preset: a 3-layer model cut from all-MiniLM-L6-v2, offline on a BEIR folder",
}
"""Subcommand -> one-line summary, in pipeline order; the driver is the module ``st_tasb.cli.<name>``."""


RESUME_HINTS = {
    "score": "Finished shards are kept in the work folder: run the same command again to resume from them.",
    "adapt": "The teacher embeddings and scores written so far stay in the work folder: a rerun reuses them.",
    "demo": "The teacher embeddings and scores written so far stay in the work folder: a rerun reuses them.",
}
"""What an interrupted command kept, and how to go on (a command whose ``KeyboardInterrupt`` carries a message, as
``train``'s does with the checkpoint there is to resume from, says it itself)."""


def load_command(name: str) -> Command:
    """The :class:`~st_tasb.cli.options.Command` of subcommand ``name`` (imports its driver module).

    Raises:
        KeyError: for an unknown subcommand.
    """
    if name not in COMMANDS:
        raise KeyError(f"unknown st-tasb command {name!r}; commands: {', '.join(COMMANDS)}")
    return importlib.import_module(f"st_tasb.cli.{name}").COMMAND


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``st-tasb`` parser: the global flags and the list of commands."""
    parser = argparse.ArgumentParser(
        prog="st-tasb",
        description="TAS-Balanced dense retriever training for sentence-transformers (Hofstätter et al., SIGIR 2021). "
        "Run 'st-tasb COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"st-tasb {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of errors instead of one line")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (st-tasb's and its libraries')")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def command_parser(command: Command) -> OptionParser:
    """The parser of one command's options (``st-tasb NAME --help``)."""
    return OptionParser(command.arguments, prog=f"st-tasb {command.name}", description=command.description)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``st-tasb`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Errors caused by the input (missing or malformed files, unknown ids, invalid options, a model or
    Hub repository that cannot be reached) print ``st-tasb COMMAND: error: ...`` on stderr and return 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    position = next((i for i, token in enumerate(argv) if token in COMMANDS), len(argv))
    global_options = build_parser().parse_args(argv[: position + 1])
    show_traceback = global_options.traceback
    if global_options.quiet:  # read by st-tasb's bars, tqdm, datasets and huggingface_hub
        for variable in (QUIET_VARIABLE, "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ[variable] = "1"
        from huggingface_hub.utils import (
            disable_progress_bars,  # read their switches at import: already loaded
        )
        from transformers.utils import logging as transformers_logging

        disable_progress_bars()
        transformers_logging.disable_progress_bar()
        silence_all_bars()
    name = argv[position]
    command = load_command(name)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)  # st-tasb's INFO lines; no library's DEBUG lines, whatever level it sets itself
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    logging.getLogger("st_tasb").setLevel(logging.INFO)
    parser = command_parser(command)
    try:
        arguments = parser.parse(argv[position + 1 :])
    except ConfigError as error:
        parser.print_usage(sys.stderr)
        print(f"st-tasb {name}: error: {error}", file=sys.stderr)
        return 2
    from st_tasb.data.texts import (
        UnknownIdError,  # after parsing: --help stays free of datasets and torch
    )

    try:
        return int(command.run(arguments) or 0)
    except KeyboardInterrupt as interrupt:
        kept = str(interrupt) or RESUME_HINTS.get(name, "Nothing was written that a rerun needs.")
        print(f"st-tasb {name}: interrupted. {kept}", file=sys.stderr)
        return 130
    except (OSError, ValueError, UnknownIdError) as error:
        if show_traceback:
            raise
        print(f"st-tasb {name}: error: {error}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "command_parser", "load_command", "main"]
