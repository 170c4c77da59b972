"""`st-tasb demo --quick` on the real scifact-train folder: the whole pipeline, its outputs and its figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from st_tasb.cli import main
from st_tasb.cli.adapt_config import AdaptConfig
from st_tasb.cli.adapt_inputs import split_queries
from st_tasb.data.runs import read_trec_run

METRIC_KEYS = ["ndcg@10", "mrr@10", "recall@100", "recall@1000", "map"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_output(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("demo") / "out"
    arguments = ["demo", "--data", str(scifact_dir), "--output", str(output), "--quick", "--seed", "3", "--eval-steps", "6"]
    assert main(arguments) == 0
    return output


def test_demo_writes_metrics_before_and_after(demo_output: Path) -> None:
    """Guards metrics.json: dev metrics of the student before and after training and of the teacher, gains that are
    exactly after - before, the settings of the quick mode, and the number of steps trained."""
    metrics = json.loads((demo_output / "metrics.json").read_text())
    dev = metrics["dev"]
    assert set(dev) == {"student_before", "student_after", "teacher"}
    assert all(list(values) == METRIC_KEYS for values in dev.values())
    assert all(0 <= v <= 1 for values in dev.values() for v in values.values())
    assert metrics["gain"] == pytest.approx({k: dev["student_after"][k] - dev["student_before"][k] for k in METRIC_KEYS})
    quick = AdaptConfig.quick()
    assert metrics["steps"] == quick.training.max_steps and metrics["config"]["training"]["max_steps"] == quick.training.max_steps
    assert metrics["queries"]["dev"] == quick.max_dev_queries and metrics["passages"] == quick.max_corpus
    assert metrics["seed"] == 3 and metrics["seconds"]["total"] > 0
    assert metrics["queries"]["pseudo"] == quick.max_pseudo_queries  # title pseudo-queries join the judged ones
    assert quick.max_pseudo_queries < metrics["queries"]["trained_on"] <= quick.max_train_queries + quick.max_pseudo_queries
    assert metrics["training_passages"] == quick.max_corpus + quick.max_pseudo_queries
    composition = metrics["batch_composition"]
    assert 0 < composition["single_cluster_share"] <= 1 and composition["mean_top_cluster_share"] >= 0.5
    assert metrics["encoding_passages_per_second"]["student"] > metrics["encoding_passages_per_second"]["teacher"] > 0


def test_demo_student_beats_itself_before_training(demo_output: Path) -> None:
    """Guards the point of the demo: even the quick run's student retrieves better on dev after training than before,
    and the teacher it learns from is stronger than the untrained student."""
    dev = json.loads((demo_output / "metrics.json").read_text())["dev"]
    assert dev["student_after"]["ndcg@10"] > dev["student_before"]["ndcg@10"]
    assert dev["teacher"]["ndcg@10"] > dev["student_before"]["ndcg@10"]


def test_demo_model_loads_and_its_card_has_the_evaluation(demo_output: Path) -> None:
    """Guards the model folder: SentenceTransformer(path) loads it, it has 2 layers (smaller than its teacher), and its
    card holds the TAS-Balanced section with the dev results that metrics.json reports."""
    model = SentenceTransformer(str(demo_output / "model"), device="cpu")
    assert model[0].auto_model.config.num_hidden_layers == len(AdaptConfig.quick().student_layers)
    assert model.encode(["a scientific claim"]).shape == (1, 384)
    readme = (demo_output / "model" / "README.md").read_text()
    after = json.loads((demo_output / "metrics.json").read_text())["dev"]["student_after"]
    assert "## TAS-Balanced training" in readme
    assert "| dev, student after | " + " | ".join(f"{after[k]:.4f}" for k in METRIC_KEYS) + " |" in readme


def test_demo_writes_runs_and_plots(demo_output: Path) -> None:
    """Guards the other outputs: TREC runs of the dev queries and the six PNG figures."""
    runs = {name: read_trec_run(demo_output / "runs" / f"dev-{name}.trec") for name in ("student-before", "student-after", "teacher")}
    assert len({frozenset(run) for run in runs.values()}) == 1  # the same dev queries
    assert len(next(iter(runs.values()))) == AdaptConfig.quick().max_dev_queries
    for name in ("cluster_sizes", "batch_composition", "margins", "loss", "dev_metrics", "encoding_speed"):
        data = (demo_output / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_split_is_deterministic_and_disjoint() -> None:
    """Guards the train/dev split: disjoint, complete, and independent of the order of the ids."""
    ids = [f"q{i}" for i in range(500)]
    train_ids, dev_ids = split_queries(ids, 0.2)
    assert not set(train_ids) & set(dev_ids) and set(train_ids) | set(dev_ids) == set(ids)
    shuffled = list(np.random.default_rng(1).permutation(ids))
    assert split_queries(shuffled, 0.2) == (train_ids, dev_ids)
    with pytest.raises(ValueError, match="dev_fraction"):
        split_queries(ids, 1.0)


def test_demo_dev_curve_comes_from_the_trainer_evaluator(demo_output: Path) -> None:
    """Guards --eval-steps: the Trainer's RetrievalEvaluator scores dev at steps 6 and 12 of the quick run; the curve
    starts from the untrained student, and its last point is the final student that metrics.json reports (the demo
    keeps the last model, not the best)."""
    metrics = json.loads((demo_output / "metrics.json").read_text())
    curve = metrics["dev_curve"]
    assert [point["step"] for point in curve] == [0, 6, 12]
    assert curve[0]["ndcg@10"] == metrics["dev"]["student_before"]["ndcg@10"]
    assert curve[-1]["ndcg@10"] == pytest.approx(metrics["dev"]["student_after"]["ndcg@10"], abs=1e-6)
    assert (demo_output / "plots" / "dev_curve.png").read_bytes().startswith(PNG_MAGIC)


def test_demo_default_recipe_is_recorded_with_its_similarity(demo_output: Path) -> None:
    """Guards the recorded recipe: the default demo trains the st-tasb recipe, logs its two loss terms, and saves a
    model that scores by cosine, so that `st-tasb evaluate` ranks with the score it was trained with."""
    metrics = json.loads((demo_output / "metrics.json").read_text())
    assert metrics["recipe"] == "st-tasb" and metrics["config"]["training"]["inbatch_loss"] == "kl"
    log = json.loads((demo_output / "training_log.json").read_text())
    terms = [entry for entry in log if "loss" in entry]  # pairwise weight 0: the term is neither computed nor logged
    assert terms and all({"in_batch", "contrastive"} <= set(entry) and "pairwise" not in entry for entry in terms)
    assert SentenceTransformer(str(demo_output / "model"), device="cpu").similarity_fn_name == "cosine"
    card = json.loads((demo_output / "model" / "tas_balanced.json").read_text())
    assert card["data"]["recipe"].startswith("st-tasb:") and card["settings"]["similarity"] == "cosine"


def test_demo_runs_the_mnrl_baseline(scifact_dir: Path, demo_output: Path, tmp_path: Path) -> None:
    """Guards `st-tasb demo --recipe mnrl-topic`: the baseline trains through the same pipeline on (query, positive)
    rows with topic-aware batches (their composition is reported), no teacher term is logged, and the card says so."""
    output = tmp_path / "mnrl"
    assert main(["demo", "--data", str(scifact_dir), "--output", str(output), "--quick", "--recipe", "mnrl-topic",
                 "--max-steps", "3", "--work-dir", str(demo_output / "work")]) == 0  # the teacher's work is reused
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["recipe"] == "mnrl-topic" and metrics["steps"] == 3
    assert metrics["batch_composition"]["mean_top_cluster_share"] > 0.9
    log = json.loads((output / "training_log.json").read_text())
    assert all("pairwise" not in entry for entry in log) and any("loss" in entry for entry in log)
    card = json.loads((output / "model" / "tas_balanced.json").read_text())
    assert list(card["teachers"]) == ["none"] and card["settings"]["loss"] == "mnrl"


def test_recipes_set_every_recipe_field() -> None:
    """Guards switching recipes: each recipe sets all of RECIPE_FIELDS (nothing of the previous recipe stays), the
    paper's recipe is the paper's loss on a dot-product student, and an unknown name is refused with the choices."""
    from st_tasb.training.recipes import RECIPE_FIELDS, RECIPES

    for name, recipe in RECIPES.items():
        assert set(recipe.settings()) == set(RECIPE_FIELDS), name
    paper = AdaptConfig.demo().with_recipe("st-tasb").with_recipe("paper")
    assert paper.recipe == "paper" and paper.teacher_scale == 10.0
    assert (paper.training.student_similarity(), paper.training.inbatch_loss, paper.training.contrastive_weight) == (
        ("dot", 1.0), "margin-mse", 0.0)
    assert AdaptConfig.demo().with_recipe("mnrl").training.topic_aware is False
    with pytest.raises(ValueError, match="unknown recipe 'best'; choose one of st-tasb, paper"):
        AdaptConfig.demo().with_recipe("best")


def test_demo_reports_the_pairs_and_batches_the_student_trained_on(scifact_dir: Path, demo_output: Path,
                                                                   tmp_path: Path) -> None:
    """Guards the report of a hard-margin run: the pair count, the queries trained on and the batch composition in
    metrics.json describe the filtered pairs the student trained on (the card's counts), not the unfiltered table the
    demo used to rebuild them from."""
    unfiltered = json.loads((demo_output / "metrics.json").read_text())  # the same quick data, no hard margin
    output = tmp_path / "hard-margin"
    assert main(["demo", "--data", str(scifact_dir), "--output", str(output), "--quick", "--recipe", "paper",
                 "--min-margin", "2", "--max-steps", "3", "--work-dir", str(demo_output / "work")]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    card = json.loads((output / "model" / "tas_balanced.json").read_text())
    assert metrics["training_pairs"] == card["data"]["training pairs"] < unfiltered["training_pairs"]
    assert metrics["queries"]["trained_on"] == card["data"]["training queries"] < unfiltered["queries"]["trained_on"]
    batch_size = AdaptConfig.quick().training.batch_size
    assert metrics["batch_composition"]["n_batches"] == -(-metrics["queries"]["trained_on"] // batch_size)
