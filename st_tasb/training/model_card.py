"""The TAS-Balanced section of a trained model's card, on top of the card sentence-transformers writes.

sentence-transformers writes ``README.md`` when a model is saved (architecture, usage, training
hyper-parameters, losses). :func:`write_model_card` adds a section rendered from the template
``st_tasb/training/templates/model_card.md``: the TAS-Balanced settings (clusters, clusters per batch, margin
bins, alpha, batch size, ...), the teachers, the training data, an evaluation table and the citation.
The values are also stored as ``tas_balanced.json`` next to the model, so the section can be
re-rendered later, e.g. to add evaluation results (:func:`add_evaluation`). Writing again replaces the
earlier section (it sits between ``st-tasb:begin`` / ``st-tasb:end`` markers).

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> card = TASBModelCard(settings={"batch_size": 32, "n_bins": 10}, teachers={"pairwise": "a cross-encoder"})
    >>> _ = write_model_card(folder, card)
    >>> _ = add_evaluation(folder, "dev", {"ndcg@10": 0.5, "mrr@10": 0.25, "recall@100": 1.0, "recall@1000": 1.0, "map": 0.5})
    >>> text = (folder / "README.md").read_text()
    >>> "| batch size (b) | 32 |" in text, "| dev | 0.5000 | 0.2500 | 1.0000 | 1.0000 | 0.5000 |" in text
    (True, True)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from st_tasb.retrieval.metrics import METRICS
from st_tasb.training.losses import TASB_CITATION

CARD_DATA_FILE = "tas_balanced.json"
"""The file next to the model that stores the values of the TAS-Balanced section."""

_BEGIN = "<!-- st-tasb:begin"
_END = "<!-- st-tasb:end -->"
_INSERT_BEFORE = ("## Training Details", "## Citation")  # headings of sentence-transformers' card

SETTING_LABELS = {
    "k": "query clusters (k)",
    "n_clusters": "non-empty query clusters",
    "clusters_per_batch": "clusters per batch (n)",
    "n_bins": "margin bins per query (h)",
    "alpha": "in-batch loss weight (alpha)",
    "batch_size": "batch size (b)",
    "topic_aware": "topic-aware batches",
    "balanced": "balanced margin sampling",
    "learning_rate": "learning rate",
    "lr_scheduler": "learning-rate schedule",
    "warmup": "warmup (steps, or fraction of training)",
    "epochs": "epochs",
    "max_steps": "maximum steps",
    "steps": "training steps",
    "weight_decay": "weight decay",
    "seed": "seed",
    "gradcache_mini_batch_size": "GradCache mini-batch size",
    "fp16": "fp16",
    "bf16": "bf16",
}
"""Readable names of the settings the card knows; other keys are shown as they are."""


@dataclass
class TASBModelCard:
    """The values of the TAS-Balanced card section.

    Attributes:
        settings: training settings, key -> value (keys of :data:`SETTING_LABELS` get readable names).
        teachers: role (``"pairwise"``, ``"in-batch"``) -> description of the teacher.
        data: what the model was trained on, label -> description or count.
        evaluation: evaluation name (dataset, split, model state) -> metric -> value.
    """

    settings: dict[str, Any] = field(default_factory=dict)
    teachers: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)

    def save(self, model_dir: str | Path) -> Path:
        """Write the values as ``tas_balanced.json`` into ``model_dir``; returns the file."""
        path = Path(model_dir) / CARD_DATA_FILE
        path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> TASBModelCard:
        """Read ``tas_balanced.json`` from ``model_dir``.

        Raises:
            FileNotFoundError: if the model folder has no such file (it was not trained with st-tasb).
            ValueError: if the file is not valid JSON of the expected shape (naming it).
        """
        path = Path(model_dir) / CARD_DATA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the model folder was not written by st-tasb train")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{path}: not a TAS-Balanced card file ({error})") from None


def render_section(card: TASBModelCard) -> str:
    """The card section for ``card``, from the template ``st_tasb/training/templates/model_card.md``.

    Example:
        >>> section = render_section(TASBModelCard(settings={"alpha": 0.75}))
        >>> "| in-batch loss weight (alpha) | 0.75 |" in section, "hofstaetter2021tasb" in section
        (True, True)
    """
    template = Template(resources.files("st_tasb.training").joinpath("templates/model_card.md").read_text(encoding="utf-8"))
    return template.substitute(
        settings_table=_table(("setting", "value"), [(SETTING_LABELS.get(k, k), _format(v)) for k, v in card.settings.items()]),
        teachers=_bullets(card.teachers) or "Not recorded.",
        data=_bullets(card.data) or "Not recorded.",
        evaluation=_evaluation_table(card.evaluation),
        citation=TASB_CITATION.strip(),
    )


def write_model_card(model_dir: str | Path, card: TASBModelCard) -> Path:
    """Add (or replace) the TAS-Balanced section in ``model_dir/README.md`` and store ``tas_balanced.json``.

    The section goes before sentence-transformers' "Training Details" section (or its "Citation"
    section, or at the end); a README that does not exist yet is created.

    Args:
        model_dir: a saved model folder.
        card: the values of the section.

    Returns:
        The path of ``README.md``.

    Raises:
        FileNotFoundError: if ``model_dir`` is not a folder.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    readme = model_dir / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    readme.write_text(_with_section(text, render_section(card)), encoding="utf-8")
    card.save(model_dir)
    return readme


def add_evaluation(model_dir: str | Path, name: str, metrics: dict[str, float]) -> TASBModelCard:
    """Record evaluation results under ``name`` in the card of a model trained with st-tasb.

    Raises:
        FileNotFoundError: if the folder has no ``tas_balanced.json``.
    """
    card = TASBModelCard.load(model_dir)
    card.evaluation[name] = {metric: float(value) for metric, value in metrics.items()}
    write_model_card(model_dir, card)
    return card


def _with_section(text: str, section: str) -> str:
    """``text`` with its st-tasb section replaced by ``section``, or ``section`` inserted."""
    start = text.find(_BEGIN)
    if start >= 0:
        end = text.find(_END, start)
        if end >= 0:
            return text[:start] + section.rstrip("\n") + text[end + len(_END) :]
    for heading in _INSERT_BEFORE:
        position = text.find("\n" + heading + "\n")
        if position >= 0:
            return text[: position + 1] + section.rstrip("\n") + "\n\n" + text[position + 1 :]
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + section


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return "Not recorded."
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _bullets(values: dict[str, Any]) -> str:
    return "\n".join(f"- **{key}:** {_format(value)}" for key, value in values.items())


def _evaluation_table(evaluation: dict[str, dict[str, float]]) -> str:
    if not evaluation:
        return "No evaluation recorded (add one with `st-tasb evaluate --model DIR ... --update-card`)."
    rows = [(name, *(f"{metrics[m]:.4f}" if m in metrics else "-" for m in METRICS)) for name, metrics in evaluation.items()]
    return _table(("evaluation", *METRICS), rows)
