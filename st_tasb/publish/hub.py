"""Publishing a trained model folder on the Hugging Face Hub, with a dry run that shows exactly what goes up.

:func:`upload_plan` decides the upload: every file of the model folder except version-control and
cache files and training checkpoints (:data:`IGNORE_PATTERNS`), with the model card's usage snippet
pointed at the target repository. :func:`push_to_hub` either writes that plan into a folder
(``dry_run_dir``: the files exactly as they would be uploaded) or uploads it in one commit. The model
folder is only ever read: a failed upload leaves it byte for byte as it was.

Example:
    >>> import tempfile
    >>> model_dir = Path(tempfile.mkdtemp())
    >>> _ = (model_dir / "modules.json").write_text("[]")
    >>> _ = (model_dir / "README.md").write_text('model = SentenceTransformer("sentence_transformers_model_id")')
    >>> (model_dir / "checkpoints").mkdir()
    >>> _ = (model_dir / "checkpoints" / "state.pt").write_text("x")
    >>> result = push_to_hub(model_dir, "me/tasb-model", dry_run_dir=Path(tempfile.mkdtemp()) / "upload")
    >>> result.files
    ['README.md', 'modules.json']
    >>> (result.dry_run_dir / "README.md").read_text()
    'model = SentenceTransformer("me/tasb-model")'
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

IGNORE_PATTERNS = [*DEFAULT_IGNORE_PATTERNS, "checkpoints", "checkpoints/*", "**/__pycache__/**", "*.pyc"]
"""Files of a model folder that are never uploaded (git and Hub cache files, training checkpoints)."""

MODEL_ID_PLACEHOLDER = "sentence_transformers_model_id"
"""The repository id sentence-transformers writes into a card's usage snippet before the model has one."""


class HubUploadError(OSError):
    """The upload to the Hub failed (offline, no token, no permission, ...); the local folder is untouched."""


@dataclass(frozen=True)
class PushResult:
    """What :func:`push_to_hub` did.

    Attributes:
        repo_id: the target repository.
        files: the uploaded (or, in a dry run, the would-be uploaded) paths, relative to the folder.
        dry_run_dir: the folder holding the files as they would be uploaded, for a dry run; else ``None``.
        commit_url: the URL of the commit on the Hub, after a real upload; else ``None``.
    """

    repo_id: str
    files: list[str]
    dry_run_dir: Path | None = None
    commit_url: str | None = None


def upload_plan(model_dir: str | Path, repo_id: str) -> dict[str, Path | bytes]:
    """The files to upload: path in the repository -> local file, or content (the edited model card).

    Args:
        model_dir: a saved SentenceTransformer folder (with ``modules.json``).
        repo_id: the target repository, ``"user/name"``; it replaces the placeholder id in ``README.md``.

    Returns:
        A mapping in sorted path order.

    Raises:
        FileNotFoundError: if the folder does not exist or has no ``modules.json`` (not a
            SentenceTransformer folder).
        ValueError: if ``repo_id`` is not of the form ``"user/name"``.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a SentenceTransformer folder: {model_dir / 'modules.json'} not found")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"repo_id must be 'user/name' or 'organisation/name', not {repo_id!r}")
    files = {path.relative_to(model_dir).as_posix(): path for path in sorted(model_dir.rglob("*")) if path.is_file()}
    plan: dict[str, Path | bytes] = {name: files[name] for name in filter_repo_objects(list(files), ignore_patterns=IGNORE_PATTERNS)}
    if "README.md" in plan:
        card = files["README.md"].read_text(encoding="utf-8")
        plan["README.md"] = card.replace(f'("{MODEL_ID_PLACEHOLDER}"', f'("{repo_id}"').encode("utf-8")
    return plan


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload TAS-Balanced model trained with st-tasb",
    dry_run_dir: str | Path | None = None,
) -> PushResult:
    """Upload a trained model folder to the Hub in one commit, or write what would be uploaded.

    Args:
        model_dir: a saved SentenceTransformer folder.
        repo_id: the target repository, ``"user/name"`` (created if needed).
        private: create the repository as private.
        token: a Hub token (default: the saved login or ``HF_TOKEN``).
        revision: the branch to commit to (default: the main branch).
        commit_message: the commit message.
        dry_run_dir: instead of uploading, write the files exactly as they would be uploaded into this
            folder (it must not exist yet, or be empty); nothing is sent.

    Returns:
        A :class:`PushResult`.

    Raises:
        FileNotFoundError, ValueError: as :func:`upload_plan`; ``ValueError`` also when ``dry_run_dir``
            is not empty or lies inside ``model_dir``.
        HubUploadError: when the Hub cannot be reached or refuses the upload, naming the repository and
            the cause; the model folder is unchanged.
    """
    plan = upload_plan(model_dir, repo_id)
    if dry_run_dir is not None:
        return _write_plan(plan, Path(model_dir), Path(dry_run_dir), repo_id)
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=source) for name, source in plan.items()]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations=operations, commit_message=commit_message, revision=revision)
    except Exception as error:  # any failure of the Hub client: report it, the local folder is intact
        raise HubUploadError(
            f"upload of {model_dir} to {repo_id!r} failed: {type(error).__name__}: {error}. The local model "
            "folder is unchanged; check the network, HF_HUB_OFFLINE and your token (huggingface-cli login), "
            "or use --dry-run to see what would be uploaded"
        ) from error
    return PushResult(repo_id=repo_id, files=list(plan), commit_url=str(commit.commit_url))


def _write_plan(plan: dict[str, Path | bytes], model_dir: Path, target: Path, repo_id: str) -> PushResult:
    if target.resolve().is_relative_to(model_dir.resolve()):
        raise ValueError(f"the dry-run folder {target} lies inside the model folder {model_dir}; choose another")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"the dry-run folder {target} already exists and is not empty; choose a new one")
    for name, source in plan.items():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            destination.write_bytes(source)
        else:
            shutil.copyfile(source, destination)
    return PushResult(repo_id=repo_id, files=list(plan), dry_run_dir=target)
