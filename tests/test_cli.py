"""The st-tasb command line: every subcommand on a small real subset of scifact-train, the evaluate JSON
contract through the installed entry point, config files, and clear one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import pytrec_eval

from st_tasb.cli import COMMANDS, load_command, main
from st_tasb.cli.options import ConfigError, OptionParser, load_config
from st_tasb.data.beir import load_beir, load_qrels
from st_tasb.data.runs import read_trec_run

METRIC_KEYS = ["ndcg@10", "mrr@10", "recall@100", "recall@1000", "map"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def st_tasb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``st-tasb`` console script."""
    return subprocess.run(["st-tasb", *args], capture_output=True, text=True, check=False, env=env or ENV, timeout=300)


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def trained_model(table_dir: Path, clusters_dir: Path, tiny_beir: Path, small_student_path: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("train") / "model"
    arguments = [
        "train", "--table", str(table_dir), "--clusters", str(clusters_dir), "--data", str(tiny_beir),
        "--student", small_student_path, "--max-seq-length", "32", "--inbatch-teacher", "bi-encoder",
        "--inbatch-teacher-model", small_student_path, "--batch-size", "8", "--clusters-per-batch", "2",
        "--max-steps", "3", "--learning-rate", "1e-4", "--logging-steps", "1", "--n-bins", "4", "--cpu",
        "--output", str(output),
    ]  # fmt: skip
    assert main(arguments) == 0
    return output


# --------------------------------------------------------------------------- help and parsing


def test_every_command_documents_every_option_in_help(capsys: pytest.CaptureFixture) -> None:
    """Guards --help: the real entry point lists every command and `st-tasb evaluate --help` works, and each
    command's help names every option of its dataclass with its default or "required" (an undocumented or
    unreachable option would fail)."""
    result = st_tasb("--help")
    assert result.returncode == 0 and all(f"    {name} " in result.stdout for name in COMMANDS)
    assert "--relevance-threshold" in st_tasb("evaluate", "--help").stdout
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_status:
            main([name, "--help"])
        assert exit_status.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert "--config FILE" in help_text
        for field in dataclasses.fields(load_command(name).arguments):
            flag = "--" + field.name.replace("_", "-")
            assert flag in help_text, (name, flag)
        documented = help_text.count("default") + help_text.count("(required)")
        assert documented >= len(dataclasses.fields(load_command(name).arguments)), name


def test_python_m_st_tasb_runs_the_cli() -> None:
    """Guards `python -m st_tasb`: it must reach the same command line (and exit status) as `st-tasb`."""
    result = subprocess.run([sys.executable, "-m", "st_tasb", "--version"], capture_output=True, text=True, check=False, env=ENV)
    assert result.returncode == 0 and result.stdout.startswith("st-tasb ")


def test_config_file_values_are_used_and_flags_override_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards the config layering: YAML and JSON keys (with - or _) set options, and an explicit flag wins."""
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d2 1 2.0 t\nq1 Q0 d1 2 1.0 t\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1\t0\td1\t2\nq1\t0\td2\t1\n")
    yaml_config = tmp_path / "evaluate.yaml"
    yaml_config.write_text(f"run: {run}\nqrels: {qrels}\nrelevance-threshold: 2\njson: true\n")
    assert main(["evaluate", "--config", str(yaml_config)]) == 0
    from_file = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_file["mrr@10"] == 0.5  # only d1 (grade 2) is relevant: rank 2
    assert main(["evaluate", "--config", str(yaml_config), "--relevance-threshold", "1"]) == 0
    overridden = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert overridden["mrr@10"] == 1.0  # d2 (grade 1) counts now: rank 1
    json_config = tmp_path / "evaluate.json"
    json_config.write_text(json.dumps({"run": str(run), "qrels": str(qrels), "relevance_threshold": "2", "json": True}))
    assert main(["evaluate", "--config", str(json_config)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == from_file


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    """Guards config validation: an unknown key, a key set twice (YAML and JSON would keep the last value), two
    spellings of one option, a missing file or a value of the wrong type is an error naming file and key, not a
    silently ignored setting."""
    train_arguments = load_command("train").arguments
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("batch_sise: 32\n")
    with pytest.raises(ConfigError, match=r"unknown\.yaml: unknown key 'batch_sise'"):
        load_config(unknown, train_arguments)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"batch_size": "many"}))
    with pytest.raises(ConfigError, match=r"wrong\.json: argument --batch_size/--batch-size: invalid int value: 'many'"):
        OptionParser(train_arguments).parse(["--config", str(wrong), "--table", "t", "--data", "d"])
    twice = tmp_path / "twice.yaml"
    twice.write_text("batch_size: 8\nlearning_rate: 1e-4\nbatch_size: 16\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: key 'batch_size' is set twice \(lines 1 and 3\)"):
        load_config(twice, train_arguments)
    twice_json = tmp_path / "twice.json"
    twice_json.write_text('{"alpha": 0.5, "alpha": 1.0}')
    with pytest.raises(ConfigError, match=r"twice\.json: key 'alpha' is set twice"):
        load_config(twice_json, train_arguments)
    spelled_twice = tmp_path / "spelled.yaml"
    spelled_twice.write_text("batch_size: 8\nbatch-size: 16\n")
    with pytest.raises(ConfigError, match=r"spelled\.yaml: key 'batch-size' sets the option 'batch_size', which another"):
        load_config(spelled_twice, train_arguments)
    with pytest.raises(ConfigError, match=r"--config .*missing\.yaml: no such file"):
        OptionParser(train_arguments).parse(["--config", str(tmp_path / "missing.yaml")])
    nulled = tmp_path / "nulled.yaml"
    nulled.write_text("batch_size: null\n")
    with pytest.raises(ConfigError, match=r"nulled\.yaml: key 'batch_size' may not be null"):
        OptionParser(train_arguments).parse(["--config", str(nulled)])
    ok = tmp_path / "ok.yaml"
    ok.write_text("learning_rate: 7e-6\nrandom-batches: true\nmax_steps: null\n")
    assert load_config(ok, train_arguments) == {"learning_rate": "7e-6", "topic_aware": False, "max_steps": None}
    required = ["--table", "t", "--data", "d", "--output", "o", "--student", "s"]
    parsed = OptionParser(train_arguments).parse(["--config", str(ok), *required])
    assert (parsed.learning_rate, parsed.topic_aware, parsed.max_steps) == (7e-6, False, None)
    assert OptionParser(train_arguments).parse(["--config", str(ok), *required, "--topic-aware"]).topic_aware is True
    assert OptionParser(train_arguments).parse([*required, "--random-batches"]).topic_aware is False
    assert OptionParser(train_arguments).parse([*required, "--no-balanced"]).balanced is False
    assert OptionParser(train_arguments).parse([*required, "--uniform-pairs"]).balanced is False
    assert OptionParser(train_arguments).parse([*required, "--separate-positives"]).separate_positives is True
    assert OptionParser(train_arguments).parse(required).min_margin is None
    assert OptionParser(train_arguments).parse([*required, "--min-margin", "-0.5"]).min_margin == -0.5
    recipe = OptionParser(train_arguments).parse([*required, "--loss", "mnrl", "--similarity", "cosine", "--similarity-scale",
                                                  "20", "--inbatch-loss", "kl", "--contrastive-weight", "1", "--pairwise-weight", "0.5"])
    assert (recipe.loss, recipe.similarity, recipe.similarity_scale, recipe.inbatch_loss, recipe.contrastive_weight,
            recipe.pairwise_weight) == ("mnrl", "cosine", 20.0, "kl", 1.0, 0.5)
    with pytest.raises(ConfigError, match="loss must be one of tas-b, mnrl, not 'infonce'"):
        OptionParser(train_arguments).parse([*required, "--loss", "infonce"])
    demo = OptionParser(load_command("demo").arguments).parse(
        ["--data", "d", "--output", "o", "--recipe", "paper", "--min-margin", "0", "--pairwise-weight", "0.5"])
    assert (demo.recipe, demo.min_margin, demo.pairwise_weight, demo.topic_aware) == ("paper", 0.0, 0.5, None)


def test_boolean_and_list_options_parse() -> None:
    """Guards option types: --flag / --flag false / --no-flag booleans and multi-value list options reach the
    dataclass, and config values sit under the flags."""
    mine = OptionParser(load_command("mine").arguments)
    parsed = mine.parse(["--data", "d", "--output", "o", "--sources", "bm25", "dense", "--model", "m"])
    assert parsed.sources == ["bm25", "dense"]
    evaluate = OptionParser(load_command("evaluate").arguments)
    run = ["--run", "r.trec", "--qrels", "q.tsv"]
    assert evaluate.parse([*run, "--no-missing-as-zero"]).missing_as_zero is False
    assert evaluate.parse([*run, "--json"]).json is True
    assert evaluate.parse([*run, "--json", "--no-json"]).json is False
    assert evaluate.parse([*run, "--json", "false"]).json is False


# --------------------------------------------------------------------------- evaluate


def hand_checked_run(folder: Path) -> tuple[Path, Path]:
    """Three queries whose metrics are worked out by hand in test_evaluate_run_json_contract."""
    qrels = folder / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq1\td3\t0\nq2\td4\t2\nq3\tr\t1\n")
    lines = ["q1 Q0 d3 1 0.9 t", "q1 Q0 d1 2 0.8 t", "q1 Q0 d5 3 0.7 t", "q1 Q0 d2 4 0.6 t",
             "q2 Q0 d6 1 0.5 t", "q2 Q0 d7 2 0.4 t"]
    lines += [f"q3 Q0 n{i} {i + 1} {1.0 - i / 100} t" for i in range(10)] + ["q3 Q0 r 11 0.5 t"]
    run = folder / "run.trec"
    run.write_text("\n".join(lines) + "\n")
    return run, qrels


def test_evaluate_run_json_contract(tmp_path: Path) -> None:
    """Guards the evaluate contract and the metric definitions: the installed `st-tasb evaluate --run --qrels --json`
    prints one JSON object with exactly the five keys on the last stdout line, with values worked out by hand:
    q1 ranks d3 (0), d1 (2), d5 (unjudged), d2 (1): nDCG@10 = (2/log2 3 + 1/log2 5) / (2 + 1/log2 3) with graded
    gains, RR 1/2, AP (1/2 + 2/4) / 2; q2 retrieves nothing relevant; q3's only relevant passage is at rank 11, so
    MRR@10 is 0 (the cut) while AP is 1/11."""
    run, qrels = hand_checked_run(tmp_path)
    result = st_tasb("evaluate", "--run", str(run), "--qrels", str(qrels), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(metrics) == METRIC_KEYS
    ndcg_q1 = (2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3))
    expected = {"ndcg@10": ndcg_q1 / 3, "mrr@10": 0.5 / 3, "recall@100": 2 / 3, "recall@1000": 2 / 3,
                "map": (0.5 + 1 / 11) / 3}
    assert metrics == pytest.approx(expected, abs=1e-6)


def test_evaluate_model_matches_pytrec_eval_on_its_run(tiny_beir: Path, small_student_path: str, tmp_path: Path) -> None:
    """Guards model evaluation end to end through the real entry point: the printed JSON equals pytrec_eval
    computed directly on the written TREC run (trec_eval -c: unretrieved judged queries count as zero), with
    threshold 2 for the binary measures."""
    run_path = tmp_path / "dev.trec"
    result = st_tasb("evaluate", "--model", small_student_path, "--data", str(tiny_beir), "--split", "dev", "--json",
                     "--run-output", str(run_path), "--top-k", "100", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(metrics) == METRIC_KEYS
    run = read_trec_run(run_path)
    qrels = load_qrels(tiny_beir / "qrels" / "dev.tsv")
    assert set(run) == set(qrels) and all(len(docs) == 100 for docs in run.values())
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map"})
    reference = evaluator.evaluate(run)
    assert metrics["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in reference.values()]), abs=1e-9)
    assert metrics["map"] == pytest.approx(np.mean([v["map"] for v in reference.values()]), abs=1e-9)
    assert metrics["recall@100"] == pytest.approx(np.mean([v["recall_100"] for v in reference.values()]), abs=1e-9)
    assert 0 < metrics["ndcg@10"] < 1


# --------------------------------------------------------------------------- mine, score, cluster, train, push


def test_mine_pairs_judged_positives_with_unjudged_negatives(candidates: Path, tiny_beir: Path) -> None:
    """Guards `st-tasb mine`: positives come from the train qrels, no negative is judged relevant, every train
    query has pairs and at most --max-negatives negatives."""
    pairs = pq.read_table(candidates / "pairs.parquet").to_pylist()
    qrels = load_qrels(tiny_beir / "qrels" / "train.tsv")
    assert pairs and {p["query_id"] for p in pairs} <= set(qrels)
    assert all(qrels[p["query_id"]].get(p["positive_id"], 0) >= 1 for p in pairs)
    assert all(qrels[p["query_id"]].get(p["negative_id"], 0) < 1 for p in pairs)
    for qid in {p["query_id"] for p in pairs}:
        assert len({p["negative_id"] for p in pairs if p["query_id"] == qid}) <= 5
    summary = json.loads((candidates / "mining.json").read_text())
    assert summary["pairs"] == len(pairs) and summary["settings"]["top_k"] == 12


def test_mine_with_a_dense_model_too(tiny_beir: Path, small_student_path: str, candidates: Path, tmp_path: Path) -> None:
    """Guards --sources bm25 dense: the dense model's negatives are merged in, so there are more distinct negatives
    than with BM25 alone, and none is judged relevant."""
    output = tmp_path / "both"
    arguments = ["mine", "--data", str(tiny_beir), "--output", str(output), "--top-k", "12", "--max-negatives", "8",
                 "--sources", "bm25", "dense", "--model", small_student_path, "--device", "cpu"]
    assert main(arguments) == 0
    pairs = pq.read_table(output / "pairs.parquet").to_pylist()
    qrels = load_qrels(tiny_beir / "qrels" / "train.tsv")
    assert all(qrels[p["query_id"]].get(p["negative_id"], 0) < 1 for p in pairs)
    bm25_only = pq.read_table(candidates / "pairs.parquet").to_pylist()
    assert len({(p["query_id"], p["negative_id"]) for p in pairs}) > len({(p["query_id"], p["negative_id"]) for p in bm25_only})


def test_summaries_are_printed_once_and_explained(tiny_beir: Path, table_dir: Path, small_student_path: str,
                                                 tmp_path: Path) -> None:
    """Guards what a user reads: `st-tasb mine` prints its summary once (stdout, not again as a log line) and no
    library DEBUG line; `st-tasb cluster` explains its figures in words instead of bare keys."""
    mined = st_tasb("mine", "--data", str(tiny_beir), "--output", str(tmp_path / "mined"), "--top-k", "12",
                    "--max-negatives", "5")
    assert mined.returncode == 0, mined.stderr[-2000:]
    assert (mined.stdout + mined.stderr).count("pairs for 40 queries") == 1 and "DEBUG" not in mined.stderr
    clustered = st_tasb("--quiet", "cluster", "--model", small_student_path, "--data", str(tiny_beir), "--table",
                        str(table_dir), "--k", "4", "--output", str(tmp_path / "clusters"), "--device", "cpu",
                        "--train-batch-size", "8")
    assert clustered.returncode == 0, clustered.stderr[-2000:]
    summary = clustered.stdout.strip().splitlines()[-1]
    assert summary.startswith("40 queries in 4 clusters") and "smaller than a training batch of 8" in summary
    assert "share_in_small_clusters" not in clustered.stdout + clustered.stderr
    assert "%|" not in clustered.stderr  # --quiet: no progress bar


def test_score_refuses_a_model_of_the_wrong_kind(candidates: Path, tiny_beir: Path, minilm_path: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """Guards "no silent fallback": a SentenceTransformer folder given without the bi-encoder: prefix would be read as
    a CrossEncoder with a random classifier; instead the command stops and names the prefix to use (and the same for
    a cross-encoder given as a bi-encoder, and for a plain transformer with no classification head)."""
    from sentence_transformers.cross_encoder import CrossEncoder

    common = ["score", "--candidates", str(candidates), "--data", str(tiny_beir), "--output", str(tmp_path / "t")]
    message = error_of([*common, "--teachers", minilm_path], capsys)
    assert "a SentenceTransformer (bi-encoder) folder, not a cross-encoder" in message
    assert f"--teachers bi-encoder:{minilm_path}" in message
    cross_encoder_path = tmp_path / "cross-encoder"
    CrossEncoder(minilm_path, num_labels=1, device="cpu").save(str(cross_encoder_path))
    message = error_of([*common, "--teachers", f"bi-encoder:{cross_encoder_path}"], capsys)
    assert f"--teachers cross-encoder:{cross_encoder_path}" in message
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text('{"architectures": ["BertModel"]}')
    assert "without a classification head, not a cross-encoder" in error_of([*common, "--teachers", str(plain)], capsys)
    assert not (tmp_path / "t").exists()


def test_score_with_a_cross_encoder(candidates: Path, tiny_beir: Path, minilm_path: str, tmp_path: Path) -> None:
    """Guards cross-encoder teachers: the table holds the raw logits of CrossEncoder.predict for each pair (checked
    against a direct call), so margins are unbounded logit differences."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from st_tasb.prepare.table import TeacherScoreTable

    cross_encoder_path = tmp_path / "cross-encoder"
    CrossEncoder(minilm_path, num_labels=1, device="cpu").save(str(cross_encoder_path))
    output = tmp_path / "table"
    arguments = ["score", "--candidates", str(candidates), "--data", str(tiny_beir), "--output", str(output),
                 "--teachers", f"cross-encoder:{cross_encoder_path}", "--max-length", "48", "--device", "cpu"]
    assert main(arguments) == 0
    row = TeacherScoreTable.load(output).dataset[0]
    data = load_beir(tiny_beir, "train")
    reference = CrossEncoder(str(cross_encoder_path), device="cpu", max_length=48)
    expected = reference.predict(
        [(data.queries[row["query_id"]], data.corpus[row["positive_id"]]),
         (data.queries[row["query_id"]], data.corpus[row["negative_id"]])],
        activation_fn=torch.nn.Identity(),
    )
    assert [row["pos_score"], row["neg_score"]] == pytest.approx(expected.tolist(), abs=1e-4)


def test_score_writes_a_table_and_resumes_from_finished_shards(
    candidates: Path, table_dir: Path, tiny_beir: Path, small_student_path: str, tmp_path: Path
) -> None:
    """Guards `st-tasb score`: the table has one row per candidate with margin = pos - neg, and a rerun after an
    interruption recomputes only the missing shard (finished shards are not touched) and gives the same table."""
    from st_tasb.prepare.table import TeacherScoreTable

    table = TeacherScoreTable.load(table_dir)
    assert len(table) == pq.read_metadata(candidates / "pairs.parquet").num_rows
    rows = table.dataset.to_pandas()
    assert np.allclose(rows["margin"], rows["pos_score"] - rows["neg_score"], atol=1e-5)
    shards = sorted(Path(f"{table_dir}.shards").glob("shard-*.parquet"))
    assert len(shards) >= 2
    before = {s.name: s.stat().st_mtime_ns for s in shards}
    shards[-1].unlink()  # an interrupted run: the last shard was never written
    output = tmp_path / "table-again"
    arguments = ["score", "--candidates", str(candidates), "--data", str(tiny_beir), "--output", str(output),
                 "--work-dir", f"{table_dir}.shards", "--teachers", f"bi-encoder:{small_student_path}",
                 "--shard-size", "100", "--batch-size", "16"]
    assert main(arguments) == 0
    after = {s.name: s.stat().st_mtime_ns for s in sorted(Path(f"{table_dir}.shards").glob("shard-*.parquet"))}
    assert set(after) == set(before)
    assert all(after[name] == before[name] for name in before if name != shards[-1].name)
    again = TeacherScoreTable.load(output).dataset.to_pandas()
    assert np.allclose(again["margin"], rows["margin"], atol=1e-5)
    # --scale: the same shards, every score and margin times the scale, recorded in the table
    scaled = tmp_path / "table-scaled"
    assert main([*arguments[:6], str(scaled), *arguments[7:], "--scale", "10"]) == 0
    scaled_table = TeacherScoreTable.load(scaled)
    assert np.allclose(scaled_table.dataset.to_pandas()["margin"], 10 * rows["margin"], atol=1e-4)
    assert scaled_table.teacher == {"name": f"bi-encoder:{small_student_path}:dot", "scale": 10.0}


def test_score_ensemble_is_the_mean_of_its_teachers(candidates: Path, tiny_beir: Path, small_student_path: str,
                                                    minilm_path: str, tmp_path: Path) -> None:
    """Guards ensembles: two teachers' scores are averaged (the paper's T2 is a mean of three cross-encoders)."""
    from st_tasb.prepare.table import TeacherScoreTable

    outputs = {}
    for name, teachers in (("a", [small_student_path]), ("b", [minilm_path]), ("ab", [small_student_path, minilm_path])):
        outputs[name] = tmp_path / name
        arguments = ["score", "--candidates", str(candidates), "--data", str(tiny_beir), "--output", str(outputs[name]),
                     "--teacher-type", "bi-encoder", "--teachers", *teachers, "--batch-size", "32", "--max-length", "32"]
        assert main(arguments) == 0
    scores = {name: TeacherScoreTable.load(path).dataset.to_pandas()["pos_score"].to_numpy() for name, path in outputs.items()}
    assert np.allclose(scores["ab"], (scores["a"] + scores["b"]) / 2, atol=1e-4)


def test_cluster_covers_exactly_the_table_queries(clusters_dir: Path, table_dir: Path) -> None:
    """Guards `st-tasb cluster --table`: every query with pairs gets a cluster and no other query is clustered."""
    from st_tasb.prepare.clusters import QueryClusters
    from st_tasb.prepare.table import TeacherScoreTable

    clusters = QueryClusters.load(clusters_dir)
    table_queries = set(TeacherScoreTable.load(table_dir).dataset.unique("query_id"))
    assert set(clusters.query_ids.to_pylist()) == table_queries
    assert 1 <= clusters.n_clusters <= 4 and clusters.settings["k"] == 4


def test_train_writes_a_loadable_model_with_its_card(trained_model: Path) -> None:
    """Guards `st-tasb train`: the output is a normal SentenceTransformer folder, and its card records the
    TAS-Balanced settings given on the command line."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(trained_model), device="cpu")
    assert model.encode(["a query"]).shape == (1, 384)
    card = json.loads((trained_model / "tas_balanced.json").read_text())
    assert card["settings"]["batch_size"] == 8 and card["settings"]["clusters_per_batch"] == 2
    assert card["settings"]["n_bins"] == 4 and card["settings"]["steps"] == 3
    assert "BiEncoderTeacher" in card["teachers"]["in-batch"] or "bi-encoder" in card["teachers"]["in-batch"]
    readme = (trained_model / "README.md").read_text()
    assert "## TAS-Balanced training" in readme and "| margin bins per query (h) | 4 |" in readme
    # one card: sentence-transformers' own, with the section before its training details and the citation once
    assert readme.index("## TAS-Balanced training") < readme.index("## Training Details")
    assert readme.count("@inproceedings{hofstaetter2021tasb") == 1


def test_train_evaluates_keeps_the_best_model_and_stops_early(
    table_dir: Path, clusters_dir: Path, tiny_beir: Path, small_student_path: str, tmp_path: Path
) -> None:
    """Guards --eval-data / --eval-steps / --early-stopping-patience: the Trainer evaluates with the retrieval
    evaluator every 2 steps and selects on its nDCG@10; with a learning rate too small to change the ranking, the
    metric never improves, so patience 1 stops training after the second evaluation (step 4 of 10); the final
    metrics are in the card."""
    output = tmp_path / "model"
    arguments = [
        "train", "--table", str(table_dir), "--clusters", str(clusters_dir), "--data", str(tiny_beir),
        "--student", small_student_path, "--max-seq-length", "32", "--batch-size", "8", "--max-steps", "10",
        "--learning-rate", "1e-12", "--n-bins", "4", "--cpu", "--eval-data", str(tiny_beir), "--eval-split", "dev",
        "--eval-steps", "2", "--early-stopping-patience", "1", "--output", str(output),
    ]  # fmt: skip
    assert main(arguments) == 0
    card = json.loads((output / "tas_balanced.json").read_text())
    assert card["settings"]["steps"] == 4
    assert set(card["evaluation"]["dev"]) >= {"ndcg@10", "mrr@10"}
    last = max((output / "checkpoints").glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_dev_ndcg@10" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4]
    assert state["best_metric"] == evaluations[0]["eval_dev_ndcg@10"] and state["best_model_checkpoint"].endswith("-2")
    assert card["evaluation"]["dev"]["ndcg@10"] == pytest.approx(state["best_metric"], abs=1e-6)
    written = json.loads((output / "training_log.json").read_text())  # the dev curve, beside the model
    assert [entry["eval_dev_ndcg@10"] for entry in written if "eval_dev_ndcg@10" in entry] == [
        entry["eval_dev_ndcg@10"] for entry in evaluations]


@pytest.mark.slow
def test_train_under_torchrun_with_two_processes(table_dir: Path, clusters_dir: Path, tiny_beir: Path,
                                                 small_student_path: str, tmp_path: Path, torchrun) -> None:
    """Guards multi-process training (`torchrun -m st_tasb train`, gloo on CPU, as `accelerate launch` runs it): both
    ranks train with in-batch negatives gathered from both, one writes the shared teacher cache and the model, the
    launch line and the card say how many passages each query saw, and the result loads."""
    from sentence_transformers import SentenceTransformer

    result = torchrun(
        "-m", "st_tasb", "train", "--table", str(table_dir), "--clusters", str(clusters_dir), "--data", str(tiny_beir),
        "--student", small_student_path, "--max-seq-length", "32", "--inbatch-teacher", "bi-encoder",
        "--inbatch-teacher-model", small_student_path, "--inbatch-cache", str(tmp_path / "cache"), "--batch-size", "4",
        "--max-steps", "2", "--cpu", "--gather-across-devices", "--output", str(tmp_path / "model"),
        env={**ENV, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.stdout.count("trained 2 steps") == 1  # the main process reports
    assert result.stderr.count("training on 2 process(es) (backend gloo") == 1  # once, from the main process
    assert "in-batch negatives gathered from every process" in result.stderr
    card = json.loads((tmp_path / "model" / "tas_balanced.json").read_text())
    assert (card["settings"]["world_size"], card["settings"]["global_batch_size"]) == (2, 8)
    assert card["settings"]["gather_across_devices"] is True
    assert card["settings"]["in_batch_passages_per_query"] == 16  # positives and negatives of the global batch
    assert "in-batch negatives gathered across processes" in (tmp_path / "model" / "README.md").read_text()
    assert card["settings"]["epochs_trained"] == 0.4  # 2 steps of 8 of the 40 training queries
    (corpus_file,) = (tmp_path / "cache").glob("corpus-*.npy")  # one file, written by one process
    assert np.load(corpus_file).shape[0] == 300
    assert SentenceTransformer(str(tmp_path / "model"), device="cpu").encode(["x"]).shape == (1, 384)


def test_evaluate_update_card_adds_the_results(trained_model: Path, tiny_beir: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards --update-card: the printed metrics land in the model card's evaluation table."""
    arguments = ["evaluate", "--model", str(trained_model), "--data", str(tiny_beir), "--split", "dev", "--json",
                 "--update-card", "--device", "cpu"]
    assert main(arguments) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = f"| {tiny_beir.name} (dev) | " + " | ".join(f"{metrics[k]:.4f}" for k in METRIC_KEYS) + " |"
    assert row in (trained_model / "README.md").read_text()


def test_push_dry_run_lists_the_model_files(trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards `st-tasb push --dry-run`: the weights, config and card of a trained model are written out and listed."""
    target = tmp_path / "upload"
    assert main(["push", "--model", str(trained_model), "--repo-id", "me/tasb", "--dry-run", str(target)]) == 0
    written = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert {"README.md", "modules.json", "config_sentence_transformers.json", "tas_balanced.json"} <= written
    assert any(name.endswith(".safetensors") for name in written)
    listing = capsys.readouterr().out
    assert all(f"  {name}\n" in listing for name in written)


# --------------------------------------------------------------------------- bad input


def error_of(arguments: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run in-process; assert exit status 2 and a one-line error; return the message."""
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"st-tasb {arguments[0]}: error: ")
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_missing_files_and_folders_are_named(tmp_path: Path, tiny_beir: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards missing-input errors: each names the missing file or folder."""
    assert str(tmp_path / "none.trec") in error_of(["evaluate", "--run", str(tmp_path / "none.trec"), "--qrels", "x"], capsys)
    assert str(tmp_path / "nowhere") in error_of(
        ["mine", "--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")], capsys
    )
    no_corpus = tmp_path / "no-corpus"
    (no_corpus / "qrels").mkdir(parents=True)
    (no_corpus / "qrels" / "train.tsv").write_text("q\td\t1\n")
    assert str(no_corpus / "corpus.jsonl") in error_of(["mine", "--data", str(no_corpus), "--output", str(tmp_path / "o")], capsys)
    assert "'test'" in error_of(["evaluate", "--model", "x", "--data", str(tiny_beir), "--split", "test"], capsys)
    assert str(tmp_path / "no-candidates") in error_of(
        ["score", "--candidates", str(tmp_path / "no-candidates"), "--data", str(tiny_beir), "--teachers", "m",
         "--output", str(tmp_path / "t")], capsys
    )


def test_train_errors_name_the_flags(table_dir: Path, clusters_dir: Path, tiny_beir: Path, small_student_path: str,
                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards errors in the user's own terms: a missing --clusters suggests --random-batches, an out-of-range
    --student-layers names that flag (not make_student's num_layers), and --eval-steps without --eval-data says so."""
    common = ["train", "--table", str(table_dir), "--data", str(tiny_beir), "--student", small_student_path,
              "--output", str(tmp_path / "m"), "--cpu"]
    message = error_of(common, capsys)
    assert "--clusters" in message and "--random-batches" in message and "random_batches" not in message
    message = error_of([*common, "--clusters", str(clusters_dir), "--student-layers", "10"], capsys)
    assert message.startswith("st-tasb train: error: --student-layers must be a number from 1 to 2") and "num_layers" not in message
    message = error_of([*common, "--clusters", str(clusters_dir), "--student-layers", "0;1"], capsys)
    assert message == "st-tasb train: error: --student-layers takes a number of layers or a comma list of layer indices (0,2,5), not '0;1'"
    assert "need --eval-data" in error_of([*common, "--clusters", str(clusters_dir), "--eval-steps", "2"], capsys)


def test_wrong_layouts_and_empty_splits_name_the_file_and_line(tmp_path: Path, tiny_beir: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """Guards malformed input: a bad run line, a qrels file without judgements and a bad config are reported
    with their file (and line), never as a library traceback."""
    run = tmp_path / "bad.trec"
    run.write_text("q1 Q0 d1 1 0.5 t\nq1 d2 2 0.4\n")
    assert f"{run}:2" in error_of(["evaluate", "--run", str(run), "--qrels", str(tiny_beir / "qrels" / "dev.tsv")], capsys)
    empty = tmp_path / "empty.tsv"
    empty.write_text("query-id\tcorpus-id\tscore\n")
    good_run = tmp_path / "good.trec"
    good_run.write_text("q1 Q0 d1 1 0.5 t\n")
    message = error_of(["evaluate", "--run", str(good_run), "--qrels", str(empty)], capsys)
    assert str(empty) in message and "no judgements" in message
    assert "--data" in error_of(["mine", "--output", str(tmp_path / "o")], capsys)  # a required option


def test_unknown_ids_are_named(tmp_path: Path, tiny_beir: Path, small_student_path: str, capsys: pytest.CaptureFixture) -> None:
    """Guards unknown ids: candidates naming a passage absent from the corpus fail with that id."""
    import pyarrow as pa

    folder = tmp_path / "candidates"
    folder.mkdir()
    query = load_qrels(tiny_beir / "qrels" / "train.tsv")
    qid = next(iter(query))
    pq.write_table(pa.table({"query_id": [qid], "positive_id": [next(iter(query[qid]))], "negative_id": ["no-such-passage"]}),
                   folder / "pairs.parquet")
    message = error_of(["score", "--candidates", str(folder), "--data", str(tiny_beir), "--output", str(tmp_path / "t"),
                        "--teachers", f"bi-encoder:{small_student_path}"], capsys)
    assert "no-such-passage" in message


def test_models_that_cannot_be_found_are_named(tiny_beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards model errors: a missing folder is named, and so is a Hub id that cannot be reached offline (through
    the entry point with HF_HUB_OFFLINE=1: one line on stderr, exit status 2, no traceback)."""
    missing = tmp_path / "no" / "model"
    assert str(missing) in error_of(["evaluate", "--model", str(missing), "--data", str(tiny_beir), "--split", "dev"], capsys)
    result = st_tasb("evaluate", "--model", "no-such-org/no-such-model", "--data", str(tiny_beir), "--split", "dev")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("st-tasb evaluate: error: ")
    assert "'no-such-org/no-such-model'" in result.stderr and "HF_HUB_OFFLINE" in result.stderr
