"""Hub upload: the dry run writes exactly the upload, and a failed upload leaves the model folder untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from st_tasb.publish.hub import (
    MODEL_ID_PLACEHOLDER,
    HubUploadError,
    push_to_hub,
    upload_plan,
)


def digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def model_dir(small_student: SentenceTransformer, tmp_path: Path) -> Path:
    """A saved model folder with a generated card, plus files that must never be uploaded."""
    small_student.model_card_data.local_files_only = True
    folder = tmp_path / "model"
    small_student.save(str(folder))
    (folder / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-5" / "optimizer.pt").write_bytes(b"state")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return folder


def test_dry_run_writes_exactly_the_planned_upload(model_dir: Path, tmp_path: Path) -> None:
    """Guards --dry-run: every model file except checkpoints and git files is written, byte-identical, except the
    card, whose usage snippet names the target repository; the model folder itself is unchanged."""
    before = digest(model_dir)
    result = push_to_hub(model_dir, "me/tasb-minilm", dry_run_dir=tmp_path / "upload")
    written = digest(tmp_path / "upload")
    expected = {name for name in before if not name.startswith(("checkpoints/", ".git/"))}
    assert set(written) == expected == set(result.files)
    assert all(written[name] == before[name] for name in expected if name != "README.md")
    card = (tmp_path / "upload" / "README.md").read_text()
    original = (model_dir / "README.md").read_text()
    assert f'SentenceTransformer("{MODEL_ID_PLACEHOLDER}")' in original
    assert card == original.replace(f'("{MODEL_ID_PLACEHOLDER}"', '("me/tasb-minilm"') != original
    assert digest(model_dir) == before
    assert set(upload_plan(model_dir, "me/tasb-minilm")) == expected


def test_dry_run_refuses_unsafe_targets(model_dir: Path, tmp_path: Path) -> None:
    """Guards the dry-run target: it may not be inside the model folder (it would upload itself) or hold files."""
    with pytest.raises(ValueError, match="inside the model folder"):
        push_to_hub(model_dir, "me/x", dry_run_dir=model_dir / "preview")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        push_to_hub(model_dir, "me/x", dry_run_dir=occupied)


def test_bad_model_folders_and_repo_ids_are_named(tmp_path: Path, model_dir: Path) -> None:
    """Guards input checks: a missing folder, a folder that is not a SentenceTransformer, a malformed repo id."""
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        upload_plan(tmp_path / "absent", "me/x")
    with pytest.raises(FileNotFoundError, match="modules.json"):
        upload_plan(tmp_path, "me/x")
    with pytest.raises(ValueError, match="'no-slash'"):
        upload_plan(model_dir, "no-slash")


def test_failed_upload_is_reported_and_keeps_the_folder(model_dir: Path) -> None:
    """Guards an upload without network (in process): a HubUploadError naming the repository, folder unchanged."""
    before = digest(model_dir)
    with pytest.raises(HubUploadError, match="me/tasb-minilm") as failure:
        push_to_hub(model_dir, "me/tasb-minilm", token="hf_invalid_token_for_tests")
    assert "local model folder is unchanged" in str(failure.value)
    assert digest(model_dir) == before


def test_push_command_offline_fails_cleanly(model_dir: Path) -> None:
    """Guards `st-tasb push` with HF_HUB_OFFLINE=1: exit status 2, one line naming the repository, no traceback,
    and the model folder byte-identical."""
    before = digest(model_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        ["st-tasb", "push", "--model", str(model_dir), "--repo-id", "me/tasb-minilm"],
        capture_output=True, text=True, check=False, env=env, timeout=120,
    )
    assert result.returncode == 2
    assert "me/tasb-minilm" in result.stderr and "Traceback" not in result.stderr
    assert digest(model_dir) == before
