"""Train a TAS-Balanced dense retriever on MS MARCO passage with the paper's recipe, evaluate it, publish it.

The recipe of Hofstätter et al. (SIGIR 2021), with st-tasb's public functions at every step:

1. data: the passage collection, the training queries and the pairwise teacher's scores, either from
   the original files (``--source local``: ``collection.tsv`` and ``queries.train.tsv`` as
   ``id<TAB>text``; the T2 ensemble's ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``) or from
   the Hugging Face Hub (``--source hub``: the ``corpus``, ``queries`` and ``bert-ensemble-margin-mse``
   subsets of ``sentence-transformers/msmarco``);
2. topic clusters: the training queries (those with pairs) embedded by a baseline retriever (CLS pooling,
   queries cut at 30 tokens), spherical k-means with k = 2,000 and 10 iterations
   (:meth:`QueryClusters.fit <st_tasb.prepare.clusters.QueryClusters.fit>`), kept in ``OUTPUT/work`` and reused;
3. training (:func:`st_tasb.training.trainer.train`): a DistilBERT student with CLS pooling and dot product,
   TAS-Balanced batches (one cluster per batch, 10 margin bins), pairwise Margin-MSE on the T2 margins
   plus 0.75 x in-batch Margin-MSE against the frozen ColBERT teacher, Adam with lr 7e-6 and no weight
   decay on a cosine schedule, batch size 32 (all set in ``tasb_msmarco.yaml``);
4. evaluation with faiss and trec_eval metrics on MS MARCO DEV (MRR@10, R@1K) and TREC-DL 2019 / 2020
   (nDCG@10; binary metrics count grade >= 2), from one encoding of the collection;
5. the model card and, with ``--push-to-hub ORG/NAME``, the upload (``--dry-run DIR`` writes exactly what
   would be uploaded instead).

The run folder ``OUTPUT`` receives ``model/`` (the SentenceTransformer folder with its card: what is
uploaded), ``runs/`` (TREC run files of the evaluation), ``metrics.json`` and ``work/`` (the clusters and
the converted teacher table, reused by a later run on the same files).

Single GPU::

    python training_scripts/train_tasb_msmarco.py --config training_scripts/tasb_msmarco.yaml \\
        --data-dir /data/msmarco --output tasb-msmarco

Several GPUs (each rank trains on its share of every epoch's batches; clustering and evaluation run
on the main process)::

    accelerate launch training_scripts/train_tasb_msmarco.py --config training_scripts/tasb_msmarco.yaml ...

Every option can be given in the YAML file or as a flag (flags win); ``--help`` lists them. The original
files are read into memory (the collection takes about 3 GB); the teacher table is converted once into
a memory-mapped Arrow file under ``OUTPUT/work``. The exact (flat) evaluation index holds the 8.8M passage
embeddings: 27 GB of float32 at 768 dimensions.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from datasets import Dataset

from st_tasb.cli.options import ConfigError, OptionParser, option
from st_tasb.data.beir import BeirData, DataFormatError, Qrels, load_qrels
from st_tasb.data.runs import Run, write_trec_run
from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.publish.hub import push_to_hub
from st_tasb.retrieval.evaluation import RetrievalEvaluator
from st_tasb.retrieval.metrics import evaluate_run
from st_tasb.retrieval.search import search
from st_tasb.training.inbatch_teachers import build_inbatch_teacher
from st_tasb.training.launch import process_state
from st_tasb.training.model_card import TASBModelCard, add_evaluation
from st_tasb.training.settings import TrainingSettings
from st_tasb.training.student import make_student
from st_tasb.training.trainer import train

logger = logging.getLogger("train_tasb_msmarco")

PAIRWISE_TEACHER = (
    "T2: mean score of BERT-Base, BERT-Large and ALBERT-Large cross-encoders (Hofstätter et al., 2020), "
    "precomputed for the MS MARCO training triples"
)
_INTEGER_ID = r"^-?(0|[1-9][0-9]{0,17})$"


@dataclass(kw_only=True)
class MSMarcoArguments(TrainingSettings):
    """The options of this script: data, models, clustering, evaluation, publishing, and the training settings."""

    output: str = option(help="run folder: OUTPUT/model (the trained model), OUTPUT/runs, OUTPUT/metrics.json, OUTPUT/work")
    source: Literal["local", "hub"] = option("local", help="read the original files (local) or the Hub subsets (hub)")
    data_dir: str | None = option(None, help="folder of the original MS MARCO files; relative file options are inside it")
    hub_dataset: str = option("sentence-transformers/msmarco", help="Hub dataset with corpus, queries and teacher subsets")
    hub_scores_subset: str = option("bert-ensemble-margin-mse", help="Hub subset of the pairwise teacher's margins")
    collection: str = option("collection.tsv", help="passages, pid<TAB>text")
    train_queries: str = option("queries.train.tsv", help="training queries, qid<TAB>text")
    teacher_scores: str = option(
        "bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv",
        help="the T2 teacher's scores, pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid",
    )
    student: str = option("distilbert-base-uncased", help="the student's base model (folder or Hub id)")
    student_layers: int | None = option(None, help="keep only the first N transformer layers of the student")
    max_seq_length: int = option(200, help="passage token cap (the paper: 200)")
    query_max_length: int = option(30, help="query token cap for clustering and evaluation (the paper: 30)")
    cluster_model: str = option(
        "sebastian-hofstaetter/distilbert-dot-margin_mse-T2-msmarco",
        help="baseline retriever that embeds the training queries for clustering (CLS pooling is used)",
    )
    cluster_k: int = option(2000, help="k-means clusters of the training queries (the paper: 2,000)")
    cluster_iterations: int = option(10, help="k-means iterations (the paper: 10)")
    cluster_batch_size: int = option(256, help="batch size for embedding the training queries")
    colbert: str | None = option(
        "sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco",
        help="the in-batch ColBERT teacher (original checkpoint layout or a multi-vector model); none: pairwise only",
    )
    dev_queries: str | None = option("queries.dev.small.tsv", help="MS MARCO DEV queries (none: skip DEV)")
    dev_qrels: str | None = option("qrels.dev.small.tsv", help="MS MARCO DEV judgements, TREC format")
    dl19_queries: str | None = option("msmarco-test2019-queries.tsv", help="TREC-DL 2019 queries (none: skip)")
    dl19_qrels: str | None = option("2019qrels-pass.txt", help="TREC-DL 2019 graded judgements")
    dl20_queries: str | None = option("msmarco-test2020-queries.tsv", help="TREC-DL 2020 queries (none: skip)")
    dl20_qrels: str | None = option("2020qrels-pass.txt", help="TREC-DL 2020 graded judgements")
    eval_top_k: int = option(1000, help="passages retrieved per query (R@1K needs 1000)")
    eval_batch_size: int = option(256, help="encoding batch size of the evaluation")
    eval_index: Literal["flat", "hnsw", "ivf"] = option("flat", help="faiss index of the evaluation (flat: exact)")
    duplicates: Literal["error", "first", "mean"] = option(
        "error", help="a (query, positive, negative) pair listed twice in the teacher scores: error, or keep the first "
        "row, or one row with the mean scores"
    )
    push_to_hub: str | None = option(None, help="upload the trained model to this Hub repository (org/name)")
    dry_run: str | None = option(None, help="with --push-to-hub: write what would be uploaded into this folder instead")
    private: bool = option(False, help="create the Hub repository as private")


@dataclass(frozen=True)
class EvaluationSet:
    """Judged queries and their judgements; binary metrics count grades >= ``relevance_threshold``."""

    name: str
    queries: TextStore
    qrels: Qrels
    relevance_threshold: int


# ---------------------------------------------------------------------- data


def data_path(args: MSMarcoArguments, name: str) -> Path:
    """``name`` inside ``--data-dir`` unless it is absolute (or there is no data folder)."""
    path = Path(name)
    return path if path.is_absolute() or args.data_dir is None else Path(args.data_dir) / path


def read_tsv_texts(path: Path, name: str) -> TextStore:
    """A :class:`TextStore` from an MS MARCO ``id<TAB>text`` file (no header, no quoting).

    Integer ids (MS MARCO's) are kept as int64, like the teacher table's.

    Raises:
        FileNotFoundError: if the file does not exist.
        DataFormatError: naming ``file:line`` of a line without exactly two fields, or an empty id.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{name}: file not found: {path}")
    bad_rows: list[str] = []

    def reject(row: pa_csv.InvalidRow) -> str:
        bad_rows.append(row.text)
        return "skip"

    table = pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=["id", "text"]),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False, invalid_row_handler=reject),
        convert_options=pa_csv.ConvertOptions(column_types={"id": pa.string(), "text": pa.string()},
                                              strings_can_be_null=False),
    )
    if bad_rows:
        line = _line_number(path, bad_rows[0])
        raise DataFormatError(f"{path}:{line}: expected 'id<TAB>text', got {bad_rows[0][:80]!r} "
                              f"({len(bad_rows)} malformed line(s) in all)")
    ids = table.column("id")
    empty = pc.equal(pc.utf8_length(ids), 0)
    if pc.any(empty).as_py():
        first = pc.index(empty, True).as_py()
        raise DataFormatError(f"{path}:{first + 1}: the id is empty")
    if pc.all(pc.match_substring_regex(ids, _INTEGER_ID)).as_py():
        table = table.set_column(0, "id", pc.cast(ids, pa.int64()))
    return TextStore(Dataset(table), name=f"{name} ({path})")


def _line_number(path: Path, text: str) -> int:
    """The first line of ``path`` whose content is ``text`` (only used to report a malformed line)."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.rstrip("\r\n") == text.rstrip("\r\n"):
                return number
    return 0


def load_local(args: MSMarcoArguments, work: Path) -> tuple[TextStore, TextStore, TeacherScoreTable]:
    """Passages, training queries and the teacher table from the original files."""
    corpus = read_tsv_texts(data_path(args, args.collection), "corpus")
    queries = read_tsv_texts(data_path(args, args.train_queries), "training queries")
    table = TeacherScoreTable.from_tsv(data_path(args, args.teacher_scores), cache_dir=work / "teacher-scores")
    return corpus, queries, table


def load_hub(args: MSMarcoArguments) -> tuple[TextStore, TextStore, TeacherScoreTable]:
    """Passages, training queries and the teacher table from the Hub subsets.

    Raises:
        ConnectionError: when the Hub cannot be reached (e.g. ``HF_HUB_OFFLINE=1``) or the dataset is not
            there, naming the dataset and how to train from local files instead.
    """
    from datasets import load_dataset

    subsets = {"corpus": ("passage_id", "passage"), "queries": ("query_id", "query"), args.hub_scores_subset: None}
    loaded = {}
    for subset in subsets:
        try:
            loaded[subset] = load_dataset(args.hub_dataset, subset, split="train")
        except Exception as error:  # offline, not found, no permission: all end the run the same way
            raise ConnectionError(
                f"cannot load subset {subset!r} of {args.hub_dataset!r} from the Hugging Face Hub "
                f"({type(error).__name__}: {error}); without network access, train from the original files: "
                "--source local --data-dir FOLDER"
            ) from error
    stores = []
    for subset in ("corpus", "queries"):
        id_column, text_column = subsets[subset]
        dataset = loaded[subset].select_columns([id_column, text_column]).rename_columns({id_column: "id", text_column: "text"})
        stores.append(TextStore(dataset, name=f"{args.hub_dataset} {subset}"))
    return stores[0], stores[1], TeacherScoreTable.from_dataset(loaded[args.hub_scores_subset])


def evaluation_sets(args: MSMarcoArguments) -> list[EvaluationSet]:
    """The configured DEV and TREC-DL sets (a set whose queries option is none is skipped).

    Raises:
        FileNotFoundError, DataFormatError: for a configured file that is missing or malformed.
    """
    configured = [
        ("msmarco-dev", args.dev_queries, args.dev_qrels, 1),
        ("trec-dl-2019", args.dl19_queries, args.dl19_qrels, 2),
        ("trec-dl-2020", args.dl20_queries, args.dl20_qrels, 2),
    ]
    sets = []
    for name, queries_file, qrels_file, threshold in configured:
        if queries_file is None:
            logger.info("no queries for %s: not evaluated", name)
            continue
        if qrels_file is None:
            raise ValueError(f"{name}: queries are given but no judgements (set its qrels option)")
        queries = read_tsv_texts(data_path(args, queries_file), f"{name} queries")
        qrels = load_qrels(data_path(args, qrels_file))
        judged = BeirData(corpus=queries, queries=queries, qrels=qrels).judged_queries()
        sets.append(EvaluationSet(name, judged, qrels, threshold))
    return sets


# ---------------------------------------------------------------------- steps


def query_clusters(args: MSMarcoArguments, queries: TextStore, table: TeacherScoreTable, folder: Path) -> QueryClusters:
    """The clusters saved in ``folder``, or (main process) fitted with the baseline model and saved there."""
    if (folder / "settings.json").is_file():
        logger.info("reusing the query clusters in %s (delete the folder to recompute them)", folder)
        return QueryClusters.load(folder)
    baseline = make_student(args.cluster_model, pooling="cls", max_seq_length=args.query_max_length,
                            device="cpu" if args.cpu else None)
    clusters = QueryClusters.fit(
        baseline, queries, k=args.cluster_k, n_iter=args.cluster_iterations, seed=args.seed,
        batch_size=args.cluster_batch_size, max_seq_length=args.query_max_length,
        only_ids=table.query_ids,
    )
    clusters.save(folder)
    logger.info("clustered %d training queries into %d clusters: %s", len(clusters), clusters.n_clusters, clusters.stats())
    return clusters


def evaluate(model, corpus: TextStore, sets: Sequence[EvaluationSet], args: MSMarcoArguments, run_dir: Path) -> dict:
    """Metrics of every set from one encoding of the corpus; the runs are written to ``run_dir/NAME.trec``."""
    combined = TextStore.from_records(
        [(f"{s.name}/{qid}", text) for s in sets
         for qid, text in zip(pc.cast(s.queries.ids, pa.string()).to_pylist(), s.queries.texts(range(len(s.queries))))],
        name="evaluation queries",
    )
    hits = search(model, corpus, combined, top_k=args.eval_top_k, index=args.eval_index, similarity="dot",
                  batch_size=args.eval_batch_size, query_max_length=args.query_max_length)
    run = hits.to_run(combined, corpus)
    results = {}
    for s in sets:
        prefix = f"{s.name}/"
        own: Run = {qid[len(prefix):]: docs for qid, docs in run.items() if qid.startswith(prefix)}
        write_trec_run(own, run_dir / f"{s.name}.trec", tag="st-tasb")
        results[s.name] = evaluate_run(own, s.qrels, relevance_threshold=s.relevance_threshold)
        logger.info("%s: %s", s.name, {k: round(v, 4) for k, v in results[s.name].items()})
    return results


def dev_evaluator(args: MSMarcoArguments, corpus: TextStore, sets: Sequence[EvaluationSet]) -> RetrievalEvaluator | None:
    """With ``eval_steps``: the evaluator of the first evaluation set (MS MARCO DEV), whose nDCG@10 selects the
    checkpoint and stops training early, as in the paper."""
    if not args.eval_steps:
        return None
    if not sets:
        raise ValueError("eval_steps needs an evaluation set to evaluate on (dev_queries and dev_qrels)")
    first = sets[0]
    return RetrievalEvaluator(
        first.queries, corpus, first.qrels, first.name, similarity="dot", relevance_threshold=first.relevance_threshold,
        top_k=args.eval_top_k, index=args.eval_index, batch_size=args.eval_batch_size,
        query_max_length=args.query_max_length,
    )


def run(args: MSMarcoArguments) -> dict:
    """The whole recipe; returns ``{"model_dir", "steps", "metrics", "pushed"}`` (on the main process)."""
    state = process_state(args.cpu)
    output = Path(args.output)
    work, model_dir = output / "work", output / "model"
    sets = evaluation_sets(args)  # read first: a bad evaluation file fails the run before training
    with state.main_process_first():  # the main process converts and clusters; the others reuse its files
        corpus, queries, table = load_hub(args) if args.source == "hub" else load_local(args, work)
        if args.duplicates != "error":
            table = table.deduplicate(args.duplicates)
        logger.info("teacher table: %s", table.stats())
        clusters = query_clusters(args, queries, table, work / f"clusters-k{args.cluster_k}")

    device = "cpu" if args.cpu else None
    student = make_student(args.student, num_layers=args.student_layers, pooling="cls",
                           max_seq_length=args.max_seq_length, device=device)
    teacher = build_inbatch_teacher("colbert" if args.colbert else "none", args.colbert, device=device)
    card = TASBModelCard(
        teachers={"pairwise": PAIRWISE_TEACHER},
        data={"source": args.hub_dataset if args.source == "hub" else f"original files ({args.data_dir})",
              "student base": args.student, "clustering model": args.cluster_model},
    )
    result = train(student, table, queries, corpus, model_dir, clusters=clusters, inbatch_teacher=teacher,
                   settings=TrainingSettings.of(args), card=card, evaluator=dev_evaluator(args, corpus, sets))
    if not state.is_main_process:
        return {}

    metrics = evaluate(result.model, corpus, sets, args, output / "runs") if sets else {}
    for name, values in metrics.items():
        add_evaluation(model_dir, name, values)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    pushed = None
    if args.push_to_hub:
        pushed = push_to_hub(model_dir, args.push_to_hub, private=args.private, dry_run_dir=args.dry_run)
        logger.info("%s %s: %s", "dry run for" if args.dry_run else "pushed to", args.push_to_hub, pushed.files)
    return {"model_dir": str(model_dir), "steps": result.global_step, "metrics": metrics, "pushed": pushed}


def parse(argv: Sequence[str] | None = None) -> MSMarcoArguments:
    """The options from ``--config`` and the command line (``argv``, default ``sys.argv[1:]``).

    Raises:
        st_tasb.cli.options.ConfigError: for an unknown flag, a bad value, a bad config file, a missing required
            option, and ``--dry-run`` without ``--push-to-hub``.
    """
    parser = OptionParser(MSMarcoArguments, description=__doc__)
    args = parser.parse(sys.argv[1:] if argv is None else argv)
    if args.dry_run and not args.push_to_hub:
        raise ConfigError("--dry-run needs --push-to-hub ORG/NAME (the repository the card is written for)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(argv)
    except ConfigError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    outcome = run(args)
    if outcome:
        print(json.dumps({k: v for k, v in outcome.items() if k != "pushed"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
