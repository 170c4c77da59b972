"""Issue 29's measurement: does ``st-tasb adapt`` make all-MiniLM-L6-v2 better on SciFact than it starts?

Every run is ``st-tasb adapt`` started as a subprocess on ``scifact-train`` (the demo's split: 655 judged training
claims, 154 dev claims held out by a hash of the id, 5,183 abstracts), the starting model all-MiniLM-L6-v2 trained
itself (no cut), all runs sharing one work folder (the teachers' embeddings, candidates and scores are made once).
Two settings, three arms each, seeds 0-2:

- ``judged``: the judged training claims and a title pseudo-query per abstract;
- ``corpus``: the corpus alone (``--no-judged``: pseudo-queries only; the dev claims only evaluate);
- arms: ``st-tasb-minilm`` (the st-tasb recipe, the starting model as its own teacher), ``st-tasb-ensemble`` (the
  mean of all-MiniLM-L6-v2 and all-mpnet-base-v2 teaches: ``--mpnet``, a folder from ``mpnet_teacher.py``) and
  ``mnrl`` (MultipleNegativesRankingLoss fine-tuning of the same model, same data and budget).

Steps, each resumable (a finished run is never run again):

``curve``
    Fixes the budget before any comparison: ``judged`` / ``st-tasb-minilm``, seed 0, evaluated on dev every
    ``--eval-steps`` (``RESULTS/curve.json``, ``curve.png``). The steps and learning rate chosen are then written by
    hand into ``RESULTS/budget.json`` (with the reason), which ``runs`` reads.
``runs``
    Every arm and seed, seeds outermost. Each finished run writes ``RESULTS/runs/SETTING-ARM-seedN.json`` (dev
    metrics, the command, its seconds and peak memory, the pipeline's own step times) and its top-10 dev run
    (``.trec.gz``); the starting model's dev run is written once (``RESULTS/start.trec.gz``).
``report``
    From ``RESULTS`` alone: per setting, every arm against the starting model and against MNRL: per-seed figures,
    paired t-tests over seeds and ranx's Fisher randomization over the dev claims pooled over seeds, with 95 %
    confidence intervals (``seed_comparison.py``). Writes ``RESULTS/report.json`` and plots.

    python benchmarks/mpnet_teacher.py --output models/all-mpnet-base-v2
    python benchmarks/adapt_experiment.py curve --work adapt-work --results benchmarks/results/adapt
    python benchmarks/adapt_experiment.py runs --work adapt-work --results benchmarks/results/adapt \\
        --mpnet models/all-mpnet-base-v2/all-mpnet-base-v2
    python benchmarks/adapt_experiment.py report --results benchmarks/results/adapt
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import timed
from seed_comparison import SeededRuns, plot, summarise

from st_tasb.cli.adapt_config import AdaptConfig
from st_tasb.cli.adapt_inputs import split_queries
from st_tasb.data.beir import load_beir
from st_tasb.publish.plots import plot_dev_curve

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact-train"
SETTINGS = {"judged": [], "corpus": ["--no-judged"]}
ARMS = ["st-tasb-minilm", "st-tasb-ensemble", "mnrl"]
SEEDS = [0, 1, 2]
START = "start"
"""The starting model as a variant: its one dev run stands for every seed."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("step", choices=["curve", "runs", "report"])
    parser.add_argument("--data", default=str(DATA), help="the scifact-train BEIR folder")
    parser.add_argument("--work", help="the shared work folder and the runs' outputs")
    parser.add_argument("--results", required=True, help="folder of the small results to commit")
    parser.add_argument("--mpnet", help="runs: the all-mpnet-base-v2 folder (benchmarks/mpnet_teacher.py)")
    parser.add_argument("--max-steps", type=int, default=200, help="curve: steps of the curve's run")
    parser.add_argument("--eval-steps", type=int, default=25, help="curve: evaluate on dev every N steps")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=ARMS, help="runs: the arms to run")
    args = parser.parse_args()
    results = Path(args.results)
    (results / "runs").mkdir(parents=True, exist_ok=True)
    if args.step == "report":
        report(args.data, results)
    elif args.step == "curve":
        curve(args.data, Path(args.work), results, args.max_steps, args.eval_steps)
    else:
        budget = json.loads((results / "budget.json").read_text())
        runs(args.data, Path(args.work), results, budget, args.arms, args.mpnet)


def adapt_command(data: str, work: Path, output: Path, seed: int, steps: int, learning_rate: float,
                  flags: list[str]) -> list[str]:
    """The ``st-tasb adapt`` command of one run (the starting model: all-MiniLM-L6-v2 of the wheel, the default)."""
    return [sys.executable, "-m", "st_tasb", "--quiet", "adapt", "--data", data, "--output", str(output),
            "--work-dir", str(work / "work"), "--seed", str(seed), "--max-steps", str(steps),
            "--learning-rate", f"{learning_rate:g}", "--overwrite", *flags]


def arm_flags(arm: str, mpnet: str | None) -> list[str]:
    if arm == "mnrl":
        return ["--recipe", "mnrl"]
    if arm == "st-tasb-ensemble":
        if not mpnet:
            raise SystemExit("the ensemble arm needs --mpnet (a folder from benchmarks/mpnet_teacher.py)")
        return ["--teachers", AdaptConfig().starting_model, mpnet]
    return []


def curve(data: str, work: Path, results: Path, steps: int, eval_steps: int) -> None:
    """One judged st-tasb run, seed 0, evaluated on dev every ``eval_steps``: the budget is chosen from it."""
    output = work / "curve"
    record_file = results / "curve.json"
    learning_rate = AdaptConfig().training.learning_rate
    command = adapt_command(data, work, output, 0, steps, learning_rate, ["--eval-steps", str(eval_steps)])
    if not (record_file.is_file() and json.loads(record_file.read_text())["command"] == command):
        work.mkdir(parents=True, exist_ok=True)
        usage = timed(command, work / "curve.log")
        metrics = json.loads((output / "metrics.json").read_text())
        record_file.write_text(json.dumps({"command": command, "learning_rate": learning_rate, **usage,
                                           "curve": metrics["dev_curve"], "dev": metrics["dev"],
                                           "pipeline_seconds": metrics["seconds"]}, indent=2) + "\n")
    record = json.loads(record_file.read_text())
    for point in record["curve"]:
        print(f"step {point['step']:>5}: dev nDCG@10 {point['ndcg@10']:.4f}")

    plot_dev_curve(record["curve"], results / "curve.png")


def runs(data: str, work: Path, results: Path, budget: dict, arms: list[str], mpnet: str | None) -> None:
    """Every setting, arm and seed, seeds outermost; finished runs are skipped."""
    for seed in SEEDS:
        for setting, setting_flags in SETTINGS.items():
            for arm in arms:
                name = f"{setting}-{arm}"
                record_file = results / "runs" / f"{name}-seed{seed}.json"
                output = work / "runs" / name / f"seed{seed}"
                command = adapt_command(data, work, output, seed, budget["max_steps"], budget["learning_rate"],
                                        [*setting_flags, *arm_flags(arm, mpnet)])
                if record_file.is_file() and json.loads(record_file.read_text())["command"] == command:
                    continue
                output.parent.mkdir(parents=True, exist_ok=True)
                print(f"{name} seed {seed}: running", flush=True)
                log = output.parent / f"seed{seed}.log"
                usage = timed(command, log)
                metrics = json.loads((output / "metrics.json").read_text())
                for run, target in (("dev-student-after", results / "runs" / f"{name}-seed{seed}.trec.gz"),
                                    ("dev-student-before", results / "start.trec.gz")):
                    with open(output / "runs" / f"{run}.trec") as source, gzip.open(target, "wt") as top10:
                        top10.writelines(line for line in source if int(line.split()[3]) <= 10)
                record = {"setting": setting, "arm": arm, "seed": seed, "command": command, **usage,
                          "dev": metrics["dev"], "queries": metrics["queries"], "pipeline_seconds": metrics["seconds"],
                          "machine_load_at_end": os.getloadavg()[0]}
                record_file.write_text(json.dumps(record, indent=2) + "\n")
                print(f"{name} seed {seed}: dev nDCG@10 {metrics['dev']['student_after']['ndcg@10']:.4f} "
                      f"(start {metrics['dev']['student_before']['ndcg@10']:.4f}; {usage['seconds']:.0f} s)", flush=True)
                shutil.rmtree(output / "model", ignore_errors=True)  # 90 MB each; the results keep what is reported


def report(data: str, results: Path) -> None:
    """Every arm against the starting model and against MNRL, per setting, from the committed results alone."""
    records = [json.loads(path.read_text()) for path in sorted((results / "runs").glob("*.json"))]
    dev_ids = set(split_queries(sorted(load_beir(data, "train").qrels), AdaptConfig().dev_fraction)[1])
    qrels = {q: docs for q, docs in load_beir(data, "train").qrels.items() if q in dev_ids}
    sections = {}
    for setting in SETTINGS:
        finished = SeededRuns({}, {})
        for record in records:
            if record["setting"] == setting:
                finished.add(record["arm"], record["seed"], record["dev"]["student_after"],
                              results / "runs" / f"{setting}-{record['arm']}-seed{record['seed']}.trec.gz")
                finished.add(START, record["seed"], record["dev"]["student_before"], results / "start.trec.gz")
        if not finished.metrics:
            continue
        seeds = finished.complete_seeds(SEEDS)
        if len(seeds) < 2:
            print(f"{setting}: fewer than two seeds finished for every arm")
            continue
        teachers = {"st-tasb-minilm": "teacher: MiniLM", "st-tasb-ensemble": "teacher: MiniLM + mpnet"}
        fixed = {label: next(r["dev"]["teacher"] for r in records if r["setting"] == setting and r["arm"] == arm)
                 for arm, label in teachers.items() if arm in finished.metrics}
        for reference in (START, "mnrl"):
            if reference in finished.metrics:
                sections[f"{setting} against {reference}"] = summarise(
                    finished, seeds, reference, qrels, f"SciFact dev, {setting}: every arm against {reference}", fixed)
        plot(finished, seeds, results / f"{setting}.png", f"adapt all-MiniLM-L6-v2 on SciFact ({setting})")
    (results / "report.json").write_text(json.dumps(sections, indent=2) + "\n")


if __name__ == "__main__":
    main()
