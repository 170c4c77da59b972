"""training_scripts/train_tasb_msmarco.py end to end, offline, on miniature MS MARCO files.

The files are written in exactly the original formats (collection.tsv and queries as ``id<TAB>text``, the T2
teacher file as ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``, DEV qrels ``qid<TAB>0<TAB>pid<TAB>1``,
TREC-DL qrels ``qid Q0 pid grade`` with grades 0-3) from the real rows of msmarco-toy/triples.tsv. The student
and the clustering model are a tiny randomly initialised BERT with the real uncased vocabulary; the ColBERT
teacher is a tiny one saved in the original checkpoint layout by ``ColBERTTeacher.save_pretrained``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from st_tasb.data.beir import DataFormatError, load_qrels
from st_tasb.data.runs import read_trec_run
from st_tasb.retrieval.metrics import evaluate_run

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training_scripts" / "train_tasb_msmarco.py"
CONFIG = REPO / "training_scripts" / "tasb_msmarco.yaml"

TRAIN_QID, DEV_QID, DL19_QID, DL20_QID = 500_000, 900_000, 1_100_000, 1_200_000
EXTRA_NEGATIVES = 3  # per training query, besides its triple's own negative
UNUSED_QUERIES = 5  # in queries.train.tsv without any teacher pair (must not be clustered)


def _load_script():
    spec = importlib.util.spec_from_file_location("train_tasb_msmarco", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


script = _load_script()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def msmarco_dir(msmarco_toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The miniature MS MARCO folder (file names of the original release)."""
    rows = [line.split("\t") for line in msmarco_toy.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("msmarco")
    pos_pid = [1000 + 2 * i for i in range(len(rows))]
    neg_pid = [1001 + 2 * i for i in range(len(rows))]
    _write(folder / "collection.tsv", [f"{pid}\t{row[k]}" for i, row in enumerate(rows)
                                       for pid, k in ((pos_pid[i], 1), (neg_pid[i], 2))])
    _write(folder / "queries.train.tsv", [f"{TRAIN_QID + i}\t{row[0]}" for i, row in enumerate(rows)]
           + [f"{TRAIN_QID + len(rows) + j}\tunused training query {j}" for j in range(UNUSED_QUERIES)])
    teacher = []
    for i in range(len(rows)):
        others = rng.choice([p for p in pos_pid + neg_pid if p not in (pos_pid[i], neg_pid[i])], EXTRA_NEGATIVES,
                            replace=False)  # no pair twice: training refuses repeated pairs
        for negative in [neg_pid[i], *others]:
            teacher.append(f"{rng.normal(8, 1):.4f}\t{rng.normal(2, 2):.4f}\t{TRAIN_QID + i}\t{pos_pid[i]}\t{negative}")
    _write(folder / "bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv", teacher)

    dev = range(20)
    _write(folder / "queries.dev.small.tsv", [f"{DEV_QID + i}\t{rows[i][0]}" for i in dev])
    _write(folder / "qrels.dev.small.tsv", [f"{DEV_QID + i}\t0\t{pos_pid[i]}\t1" for i in dev])
    for year, base, judged in (("2019", DL19_QID, range(20, 35)), ("2020", DL20_QID, range(35, 50))):
        # every judged query: its positive graded 3 (or 2), its negative 1 (not relevant at threshold 2), a random 0
        qrels = []
        for i in judged:
            qrels += [f"{base + i} Q0 {pos_pid[i]} {3 if i % 2 else 2}", f"{base + i} Q0 {neg_pid[i]} 1",
                      f"{base + i} Q0 {pos_pid[(i + 7) % len(rows)]} 0"]
        _write(folder / f"{year}qrels-pass.txt", qrels)
        unjudged = [f"{base + 90 + j}\tan unjudged test query {j}" for j in range(3)]
        _write(folder / f"msmarco-test{year}-queries.tsv", [f"{base + i}\t{rows[i][0]}" for i in judged] + unjudged)
    return folder


@pytest.fixture(scope="module")
def tiny_models(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT (student and clustering model, plain transformers folder) and a tiny ColBERT checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from st_tasb.teachers import ColBERTModel, ColBERTTeacher

    folder = tmp_path_factory.mktemp("tiny-models")
    tokenizer = BertTokenizer(vocab=str(Path(minilm_path) / "vocab.txt"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(str(folder / "bert"))
    colbert = ColBERTTeacher(ColBERTModel(BertModel(config), compression_dim=16), tokenizer=tokenizer, device="cpu")
    colbert.save_pretrained(folder / "colbert")
    return {"bert": folder / "bert", "colbert": folder / "colbert"}


@pytest.fixture(scope="module")
def trained(msmarco_dir: Path, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """One run of the recipe (paper config, scaled down by flags), with a dry-run push."""
    output = tmp_path_factory.mktemp("run") / "tasb"
    dry_run = output.parent / "upload"
    args = script.parse([
        "--config", str(CONFIG), "--data-dir", str(msmarco_dir), "--output", str(output),
        "--student", str(tiny_models["bert"]), "--cluster-model", str(tiny_models["bert"]),
        "--colbert", str(tiny_models["colbert"]), "--cluster-k", "4", "--batch-size", "8", "--max-steps", "3",
        "--no-fp16", "--cpu", "--logging-steps", "1", "--eval-top-k", "50", "--eval-batch-size", "32",
        "--cluster-batch-size", "32", "--push-to-hub", "me/tasb-tiny", "--dry-run", str(dry_run),
    ])
    outcome = script.run(args)
    return output, dry_run, outcome


def test_config_holds_the_papers_recipe(tmp_path: Path) -> None:
    """Guards against the shipped config drifting from the paper's hyper-parameters (docs/method.md, sections 1-6)."""
    args = script.parse(["--config", str(CONFIG), "--output", str(tmp_path)])
    assert (args.batch_size, args.learning_rate, args.weight_decay, args.lr_scheduler) == (32, 7e-6, 0.0, "cosine")
    assert (args.alpha, args.n_bins, args.clusters_per_batch) == (0.75, 10, 1)
    assert (args.cluster_k, args.cluster_iterations, args.query_max_length, args.max_seq_length) == (2000, 10, 30, 200)
    assert args.topic_aware and args.balanced and args.fp16
    assert args.student == "distilbert-base-uncased"
    assert args.colbert == "sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco"
    assert args.eval_top_k == 1000  # R@1K


def test_end_to_end_trains_evaluates_and_publishes(trained, msmarco_dir: Path) -> None:
    """Guards against a script that stops short: trains the steps asked for with the ColBERT teacher, saves a
    loadable CLS / dot-product model, and writes runs, metrics, the card and the upload."""
    from sentence_transformers import SentenceTransformer

    output, dry_run, outcome = trained
    assert outcome["steps"] == 3
    model = SentenceTransformer(str(output / "model"), device="cpu")
    assert model[1].get_config_dict()["pooling_mode"] == "cls" and len(model) == 2  # no Normalize: dot product
    assert model.encode(["what fruit is native to australia"]).shape == (1, 32)
    card = json.loads((output / "model" / "tas_balanced.json").read_text())
    assert card["teachers"]["in-batch"].startswith("ColBERTTeacher")
    assert card["settings"]["n_bins"] == 10 and card["settings"]["k"] == 4
    assert set(card["evaluation"]) == {"msmarco-dev", "trec-dl-2019", "trec-dl-2020"}
    readme = (dry_run / "README.md").read_text()
    assert 'SentenceTransformer("me/tasb-tiny")' in readme and "trec-dl-2019" in readme
    assert not (dry_run / "work").exists() and not (dry_run / "checkpoints").exists()


def test_clusters_cover_exactly_the_queries_with_pairs(trained) -> None:
    """Guards against clustering every training query (the paper keeps only queries that have teacher pairs)."""
    from st_tasb.prepare.clusters import QueryClusters

    output, _, _ = trained
    clusters = QueryClusters.load(output / "work" / "clusters-k4")
    assert sorted(clusters.query_ids.to_pylist()) == list(range(TRAIN_QID, TRAIN_QID + 100))
    assert clusters.settings["max_seq_length"] == 30 and clusters.settings["n_iter"] == 10


def test_runs_and_metrics_agree_with_trec_rules(trained, msmarco_dir: Path) -> None:
    """Guards against wrong query sets or thresholds: each run holds exactly the judged queries, the metrics are
    those of the written run, and TREC-DL's MRR counts only grades >= 2 (checked by hand from the run)."""
    output, _, outcome = trained
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics == outcome["metrics"]
    for name, qrels_file, threshold in (("msmarco-dev", "qrels.dev.small.tsv", 1),
                                        ("trec-dl-2019", "2019qrels-pass.txt", 2),
                                        ("trec-dl-2020", "2020qrels-pass.txt", 2)):
        run = read_trec_run(output / "runs" / f"{name}.trec")
        qrels = load_qrels(msmarco_dir / qrels_file)
        assert set(run) == set(qrels)  # unjudged test queries are not retrieved for
        assert all(len(docs) == 50 for docs in run.values())
        assert evaluate_run(run, qrels, relevance_threshold=threshold) == pytest.approx(metrics[name])
    run = read_trec_run(output / "runs" / "trec-dl-2019.trec")
    qrels = load_qrels(msmarco_dir / "2019qrels-pass.txt")
    reciprocal_ranks = []
    for qid, docs in run.items():
        ranking = [doc for doc, _ in sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)][:10]
        relevant = [rank for rank, doc in enumerate(ranking, start=1) if qrels[qid].get(doc, 0) >= 2]  # trec_eval order
        reciprocal_ranks.append(1 / relevant[0] if relevant else 0.0)
    assert metrics["trec-dl-2019"]["mrr@10"] == pytest.approx(np.mean(reciprocal_ranks))


def test_malformed_collection_line_is_named(tmp_path: Path) -> None:
    """Guards against silently skipping a malformed passage line: the error names file and line."""
    path = _write(tmp_path / "collection.tsv", ["0\tfirst passage", "1\tsecond passage", "2 no tab here"])
    with pytest.raises(DataFormatError, match=r"collection\.tsv:3: expected 'id<TAB>text'"):
        script.read_tsv_texts(path, "corpus")


def test_hub_source_offline_says_how_to_train_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards against an obscure failure when the Hub is unreachable: the error names the dataset and the way out."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = script.parse(["--config", str(CONFIG), "--output", str(tmp_path), "--source", "hub"])
    with pytest.raises(ConnectionError, match=r"sentence-transformers/msmarco.*--source local --data-dir"):
        script.load_hub(args)
