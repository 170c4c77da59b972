"""What every run of ``st-tasb adapt`` on one data folder shares (:func:`prepare_inputs`): the judged and
pseudo-queries, the dev split, the teachers' embeddings, the scored candidates and the topic clusters, each kept in
the work folder (:func:`check_work_dir` ties a work folder to one data set) and reused by later runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from st_tasb.cli.adapt_config import AdaptConfig
from st_tasb.data.beir import BeirData, Qrels, load_beir, load_corpus, load_qrels
from st_tasb.data.compat import Normalize
from st_tasb.data.files import write_json
from st_tasb.data.models import default_device, load_sentence_transformer
from st_tasb.data.texts import TextStore
from st_tasb.prepare.clusters import QueryClusters
from st_tasb.prepare.mining import mine_candidates
from st_tasb.prepare.pseudo_queries import make_pseudo_queries
from st_tasb.prepare.scoring import score_candidates
from st_tasb.prepare.table import TeacherScoreTable
from st_tasb.teachers import BiEncoderTeacher, EmbeddingCache, EnsembleTeacher, InBatchTeacher
from st_tasb.training.inbatch_teachers import cached_embeddings

logger = logging.getLogger(__name__)

WORK_RECORD = "st_tasb_work.json"
"""Written first into a work folder: the data set whose prepared steps it holds (another data set is refused)."""


@dataclass
class AdaptInputs:
    """What a run trains and evaluates on, the same for every run of one data folder and config.

    Attributes:
        data: the corpus, the queries and the judged qrels of the training split (a bare corpus: none).
        train_qrels: the judged queries' qrels that training uses (none when ``judged=False``).
        dev_data: the corpus, the queries and the dev qrels (held out; none for a bare corpus).
        training_data: the training queries (judged and pseudo-queries) with their qrels and passages.
        teacher: the teacher (pairwise and in-batch): the one bi-encoder, or the mean of several.
        members: the bi-encoder teachers, each with its cached embeddings.
        cache: the teachers' embeddings of the training queries and passages, side by side (their inner products
            sum the members' scores: the ensemble's ranking, and its geometry for the clusters).
        table: the teacher-scored BM25 candidates of the training queries.
        clusters: the topic clusters of the table's queries.
        texts_tag: a hash of the settings that determine the texts (names the shared work folders).
    """

    data: BeirData
    train_qrels: Qrels
    dev_data: BeirData
    training_data: BeirData
    teacher: InBatchTeacher
    members: list[BiEncoderTeacher]
    cache: EmbeddingCache
    table: TeacherScoreTable
    clusters: QueryClusters
    texts_tag: str


def prepare_inputs(
    data_dir: str | Path,
    config: AdaptConfig,
    *,
    seed: int,
    work_dir: str | Path,
    split: str = "train",
    show_progress_bar: bool = True,
    clock: StepClock | None = None,
) -> AdaptInputs:
    """Load, split, add pseudo-queries, embed with the teachers, mine and score candidates, and cluster.

    The steps of :func:`~st_tasb.cli.adapt_pipeline.run_adapt` before training, for runs that train differently on the same inputs
    (the benchmarks' comparisons). The teachers' embeddings and scores are kept in ``work_dir`` and reused.
    The clusters depend on ``seed`` (k-means initialisation); everything else does not.
    """
    data_dir, work_dir = Path(data_dir), Path(work_dir)
    clock = clock or StepClock()
    data, train_qrels, dev_qrels = _load(data_dir, split, config)
    training_data, exclude = _training_data(data_dir, data, train_qrels, config)
    clock.lap("load")

    texts_tag = settings_tag(data_dir.resolve(), split, config.dev_split, config.dev_fraction, config.judged,
                     config.max_train_queries, config.max_dev_queries, config.max_corpus, config.max_seq_length,
                     config.pseudo_queries, config.max_pseudo_queries)
    members = [_teacher(model, config) for model in config.teacher_models]
    caches = [
        cached_embeddings(member, training_data.queries, training_data.corpus,
                          work_dir / f"teacher-embeddings-{settings_tag(config.model_tag(model))}",
                          show_progress_bar=show_progress_bar)
        for member, model in zip(members, config.teacher_models)
    ]
    cache = caches[0] if len(caches) == 1 else EmbeddingCache(
        np.hstack([np.asarray(c.queries) for c in caches]), np.hstack([np.asarray(c.corpus) for c in caches]))
    teacher = members[0] if len(members) == 1 else EnsembleTeacher(members)
    clock.lap("teacher embeddings")

    table = _scored_candidates(teacher, training_data, exclude, config, work_dir, texts_tag, show_progress_bar)
    clock.lap("mining and scoring")

    train_ids = table.query_ids
    clusters = QueryClusters.fit_embeddings(
        np.asarray(cache.queries)[training_data.queries.positions(train_ids)], train_ids,
        k=max(1, len(train_ids) // config.queries_per_cluster), seed=seed,
        settings={"model": " + ".join(config.teacher_name(model) for model in config.teacher_models),
                  "max_seq_length": min(config.teacher_query_length, *(m.encoder.max_seq_length for m in members))},
    )
    clock.lap("clustering")
    return AdaptInputs(
        data=data, train_qrels=train_qrels, dev_data=BeirData(data.corpus, data.queries, dev_qrels),
        training_data=training_data, teacher=teacher, members=members, cache=cache, table=table, clusters=clusters,
        texts_tag=texts_tag,
    )


def check_work_dir(work_dir: Path, data_dir: Path) -> None:
    """Refuse a work folder that holds the prepared steps of another data set; record the data set in a new one.

    The data set is told by its folder's resolved path and its ``corpus.jsonl`` (size and the first MiB's hash), so
    a moved folder of the same data is another data set only when the corpus differs.

    Raises:
        ValueError: naming the work folder, the data set it holds and the one given.
    """
    corpus = data_dir / "corpus.jsonl"
    if not corpus.is_file():
        return  # load names the missing corpus
    with corpus.open("rb") as handle:
        fingerprint = {"corpus_bytes": corpus.stat().st_size,
                       "corpus_head_sha256": hashlib.sha256(handle.read(2**20)).hexdigest()}
    record_file = work_dir / WORK_RECORD
    if record_file.is_file():
        recorded = json.loads(record_file.read_text(encoding="utf-8"))
        if {key: recorded.get(key) for key in fingerprint} != fingerprint:
            raise ValueError(f"the work folder {work_dir} holds the prepared steps of another data set "
                             f"({recorded.get('data')}), not of {data_dir}: choose another work folder")
        return
    write_json(record_file, {"data": str(data_dir.resolve()), **fingerprint})


def split_queries(query_ids: list[str], dev_fraction: float) -> tuple[list[str], list[str]]:
    """Split query ids into (train, dev) by a hash of each id: the same ids always land on the same side.

    Args:
        query_ids: the ids to split.
        dev_fraction: expected share of dev queries, between 0 and 1.

    Returns:
        ``(train_ids, dev_ids)``, each sorted.

    Raises:
        ValueError: if ``dev_fraction`` is not strictly between 0 and 1, or either side ends up empty.

    Example:
        >>> train_ids, dev_ids = split_queries([str(i) for i in range(1000)], 0.2)
        >>> len(train_ids) + len(dev_ids), 150 < len(dev_ids) < 250
        (1000, True)
        >>> split_queries(["7", "3"] + [str(i) for i in range(10, 1000)], 0.2)[1][:3] == dev_ids[:3]
        True
    """
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be between 0 and 1, not {dev_fraction}")
    hashed = [int.from_bytes(hashlib.sha256(str(q).encode()).digest()[:8], "big") / 2**64 for q in query_ids]
    dev = sorted(q for q, h in zip(query_ids, hashed) if h < dev_fraction)
    train_ids = sorted(q for q, h in zip(query_ids, hashed) if h >= dev_fraction)
    if not dev or not train_ids:
        raise ValueError(f"splitting {len(query_ids)} queries with dev_fraction={dev_fraction} leaves a side empty")
    return train_ids, dev


def _teacher(model: str, config: AdaptConfig) -> BiEncoderTeacher:
    """One teacher, pairwise and in-batch: a bi-encoder's scores by its own similarity, times ``teacher_scale``.

    A cosine model without a ``Normalize`` module gets one (in memory), so that its cached embeddings' inner products
    are its cosine scores: in the table, the batch, the dev retrieval and an ensemble's side-by-side embeddings.
    """
    name = config.teacher_name(model)
    encoder = load_sentence_transformer(model, device=default_device())
    if encoder.similarity_fn_name == "cosine" and not any(isinstance(module, Normalize) for module in encoder):
        encoder.append(Normalize())
    return BiEncoderTeacher(
        encoder, query_max_length=config.teacher_query_length, passage_max_length=config.max_seq_length,
        similarity_fn_name="dot", scale=config.teacher_scale, name=f"bi-encoder:{name}:dot x {config.teacher_scale:g}",
    )


def _scored_candidates(
    teacher: InBatchTeacher, training_data: BeirData, exclude: dict[str, list[str]], config: AdaptConfig,
    work_dir: Path, texts_tag: str, show_progress_bar: bool,
) -> TeacherScoreTable:
    """BM25 candidates of the training queries, scored by the teacher; both kept in ``work_dir`` for other runs."""
    teachers = [] if config.teachers == () else [config.model_tag(model) for model in config.teacher_models]
    candidates_file = work_dir / f"candidates-{settings_tag(texts_tag, config.top_k, config.max_negatives)}.parquet"
    if candidates_file.is_file():  # BM25 mining depends on the texts and depths only: runs sharing work_dir reuse it
        pairs = Dataset.from_parquet(str(candidates_file), cache_dir=str(work_dir / "datasets-cache"))
    else:
        pairs = mine_candidates(
            training_data, top_k=config.top_k, max_negatives=config.max_negatives, exclude=exclude,
            show_progress_bar=show_progress_bar,
        ).pairs
        work_dir.mkdir(parents=True, exist_ok=True)
        pairs.to_parquet(str(candidates_file))
    return score_candidates(
        teacher, pairs, training_data.queries, training_data.corpus,
        work_dir / ("teacher-scores-" + settings_tag(texts_tag, config.top_k, config.max_negatives, config.teacher_scale,
                                                     config.teacher_query_length, *teachers)),
        show_progress_bar=show_progress_bar,
    )


def _training_data(data_dir: Path, data: BeirData, train_qrels: Qrels, config: AdaptConfig) -> tuple[BeirData, dict[str, list[str]]]:
    """The training queries (judged, plus pseudo-queries) with their texts, and the documents never negative."""
    judged = BeirData(data.corpus, data.queries, train_qrels)
    if config.pseudo_queries is None:
        return judged, {}
    documents = set(data.corpus.ids.to_pylist())
    sample = None
    if config.max_pseudo_queries is not None and config.max_pseudo_queries < len(documents):
        ordered = data.corpus.ids.to_pylist()
        sample = {ordered[i] for i in np.random.default_rng(0).choice(len(ordered), config.max_pseudo_queries, replace=False)}
    pseudo = make_pseudo_queries(
        data_dir / "corpus.jsonl", source=config.pseudo_queries, skip_unusable=True, documents=documents,
        query_documents=sample,
    )
    return pseudo.with_judged(judged)


def _load(data_dir: Path, split: str, config: AdaptConfig) -> tuple[BeirData, Qrels, Qrels]:
    """The data (cut down as the config says), the judged training queries' qrels and the dev qrels.

    A folder without ``qrels/`` is a bare corpus: no judged query, no dev query.
    """
    if not (data_dir / "qrels").is_dir():
        corpus = load_corpus(data_dir)  # names the folder or its missing corpus.jsonl
        if config.pseudo_queries is None:
            raise ValueError(f"{data_dir} holds a corpus alone (no qrels/): training needs pseudo-queries, made from "
                             "its titles or first sentences")
        return BeirData(corpus, TextStore.from_records([], name="queries"), {}), {}, {}
    data = load_beir(data_dir, split)
    dev_qrels_all = load_qrels(_qrels_file(data_dir, config.dev_split)) if config.dev_split is not None else None
    known = set(data.queries.ids.to_pylist())
    query_ids = sorted(q for q in data.qrels if q in known)
    if not query_ids:
        raise ValueError(f"none of the queries of {data_dir}/qrels/{split}.tsv is in {data_dir}/queries.jsonl")
    if len(query_ids) < len(data.qrels):
        missing = sorted(set(data.qrels) - known)
        logger.warning("%d judged queries are not in queries.jsonl and are left out, e.g. %s", len(missing), missing[:5])
    if dev_qrels_all is None:
        train_ids, dev_ids = split_queries(query_ids, config.dev_fraction)
    else:
        dev_ids = sorted(q for q in dev_qrels_all if q in known)
        shared = sorted(set(dev_ids) & set(query_ids))
        if shared:
            raise ValueError(f"{len(shared)} queries of qrels split {config.dev_split!r} are also judged in {split!r} "
                             f"(e.g. {shared[:3]}): dev queries must be held out from training")
        train_ids = query_ids
    train_ids, dev_ids = train_ids[: config.max_train_queries], dev_ids[: config.max_dev_queries]
    if config.judged and len(train_ids) < config.training.batch_size:
        raise ValueError(
            f"{data_dir}: {len(train_ids)} training queries, fewer than one batch of {config.training.batch_size}; "
            "use a larger dataset"
        )
    judged = data.qrels if dev_qrels_all is None else {**data.qrels, **dev_qrels_all}
    train_qrels = {q: data.qrels[q] for q in train_ids} if config.judged else {}
    dev_qrels = {q: judged[q] for q in dev_ids}
    used = np.sort(data.queries.positions(sorted(train_qrels) + dev_ids))
    queries = TextStore(data.queries.dataset.select(used), name=data.queries.name)  # the teachers embed only these
    corpus = data.corpus
    if config.max_corpus is not None and config.max_corpus < len(corpus):
        corpus = _corpus_subset(corpus, (train_qrels, dev_qrels), config.max_corpus)
    return BeirData(corpus, queries, {**train_qrels, **dev_qrels}), train_qrels, dev_qrels


def _qrels_file(data_dir: Path, split: str) -> Path:
    """``qrels/SPLIT.tsv`` of the folder.

    Raises:
        FileNotFoundError: naming the file and the splits there are.
    """
    path = data_dir / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in (data_dir / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"no qrels for the dev split {split!r}: {path} (available splits: {available})")
    return path


def _corpus_subset(corpus: TextStore, qrels: tuple[Qrels, ...], size: int) -> TextStore:
    """All judged passages of ``qrels`` plus a fixed random sample of the others, ``size`` in all, in corpus order."""
    judged_ids = sorted({doc for part in qrels for docs in part.values() for doc in docs})
    judged = corpus.positions(judged_ids)
    others = np.setdiff1d(np.arange(len(corpus)), judged)
    sample = np.random.default_rng(0).choice(others, size=max(0, min(size - len(judged), len(others))), replace=False)
    keep = np.sort(np.concatenate([judged, sample]))
    return TextStore(corpus.dataset.select(keep), name=corpus.name)


def settings_tag(*values: Any) -> str:
    """A short name for a combination of settings (work folders are named after what determines them)."""
    return hashlib.sha256(repr(values).encode()).hexdigest()[:10]


class StepClock:
    """Wall-clock seconds of each step of a run (``laps``: step name -> seconds)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 1)
        self.last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)
