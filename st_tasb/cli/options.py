"""Command-line options: dataclasses parsed by transformers' ``HfArgumentParser``, with config files underneath.

Each command describes its options as a dataclass whose fields carry their help text in
``metadata={"help": ...}`` (or through :func:`option`). :class:`OptionParser` turns the fields into
flags (``batch_size`` answers to ``--batch-size`` and ``--batch_size``; a boolean ``x`` to ``--x``,
``--x false`` and ``--no-x``), and builds the dataclass from three layers: the field defaults, then
the keys of a YAML or JSON file given with ``--config``, then the flags on the command line. Config
keys are option names, with ``_`` or ``-``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Greeting:
    ...     name: str = option(help="who to greet")
    ...     times: int = option(1, help="how often")
    ...     loud: bool = option(False, help="shout")
    >>> OptionParser(Greeting, prog="greet").parse(["--name", "Ada", "--times", "2", "--loud"])
    Greeting(name='Ada', times=2, loud=True)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from transformers import HfArgumentParser

from st_tasb.data.text_files import DataFormatError, read_text

T = TypeVar("T")

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")

ABLATION_FLAGS = {"random-batches": "topic_aware", "uniform-pairs": "balanced"}
"""Flags that turn a TAS-Balanced component off, named after the ablation they run: ``--random-batches`` is
``--no-topic-aware``, ``--uniform-pairs`` is ``--no-balanced`` (also as config keys set to true)."""


class ConfigError(ValueError):
    """A config file or an option value is wrong; the message names the file, key or flag."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its help text, the dataclass of its options and the function that runs it.

    Attributes:
        name: the subcommand (``st-tasb NAME``).
        description: the text at the top of ``st-tasb NAME --help``.
        arguments: the options dataclass.
        run: runs the command on an instance of ``arguments``; returns the exit status (``None`` is 0).
    """

    name: str
    description: str
    arguments: type
    run: Callable[[Any], int | None]


def option(default: Any = MISSING, *, help: str, metavar: str | None = None) -> Any:
    """A dataclass field with its ``--help`` text; without ``default`` the option is required.

    Args:
        default: the default value (lists: pass a tuple, it becomes the default list).
        help: one sentence for ``--help``; ``(default: ...)`` is added unless the text states its default.
        metavar: the value's name in ``--help``.
    """
    metadata = {"help": help} if metavar is None else {"help": help, "metavar": metavar}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the command descriptions as written and shows each option's default (or that it is required)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required:
            return text + " (required)"
        if "default" in text or action.default is argparse.SUPPRESS or action.const is False:  # store_false flags
            return text
        return super()._get_help_string(action)


class OptionParser(HfArgumentParser, Generic[T]):
    """The parser of one options dataclass, with ``--config FILE`` and ``--no-FLAG`` for every boolean.

    Errors raise :class:`ConfigError` (naming the flag, or the config file and key) instead of exiting,
    so the command line reports them in its own one-line format.

    Args:
        arguments: the options dataclass.
        **kwargs: passed on to ``argparse.ArgumentParser`` (``prog``, ``description``, ...).
    """

    def __init__(self, arguments: type[T], **kwargs: Any) -> None:
        super().__init__(arguments, formatter_class=_HelpFormatter, **kwargs)
        self.arguments = arguments
        self.add_argument(
            "--config",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="YAML or JSON file whose keys are option names (e.g. batch_size: 32); flags given on the command "
            "line override it",
        )
        hints = typing.get_type_hints(arguments)
        switches = [field.name for field in _fields(arguments)
                    if hints[field.name] in (bool, bool | None) and field.default in (False, None)]
        for action in self._actions:
            if action.dest in switches:  # "--x" alone turns on an optional boolean ("the recipe's" when absent) too
                action.nargs, action.const = "?", True
        for name in switches:
            flag = name.replace("_", "-")
            self.add_argument(f"--no-{flag}", dest=name, action="store_false", help=f"turn --{flag} off")
        for flag, name in ABLATION_FLAGS.items():
            if name in hints:
                self.add_argument(f"--{flag}", dest=name, action="store_false", help=f"the ablation: --no-{name.replace('_', '-')}")

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(message)

    def parse(self, argv: Sequence[str]) -> T:
        """Build the options dataclass from its defaults, the ``--config`` file, then the flags in ``argv``.

        Raises:
            ConfigError: for an unknown flag, a bad value, a missing required option, or a config file that
                cannot be read, has an unknown key or a value of the wrong type (naming file and key).
        """
        argv = list(argv)
        config = _config_path(argv)
        tokens = config_tokens(config, self.arguments) if config else []
        if tokens:
            self._check_config_values(config, tokens)
        namespace = self.parse_args(tokens + argv)
        values = vars(namespace)
        values.pop("config", None)
        try:
            return self.arguments(**values)
        except ValueError as error:  # the dataclass's own checks
            raise ConfigError(str(error)) from None

    def _check_config_values(self, config: str, tokens: list[str]) -> None:
        """Parse the config's own flags first, so that a bad value is reported against the file."""
        try:
            self.parse_args(tokens)
        except ConfigError as error:
            if not str(error).startswith("the following arguments are required"):
                raise ConfigError(f"{config}: {error}") from None


def _fields(arguments: type) -> list[dataclasses.Field]:
    return [field for field in dataclasses.fields(arguments) if field.init]


def _config_path(argv: Sequence[str]) -> str | None:
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--config")
    return finder.parse_known_args(argv)[0].config


def load_config(path: str | Path, arguments: type) -> dict[str, Any]:
    """The options set in a YAML or JSON config file, their keys checked against the fields of ``arguments``.

    Args:
        path: a ``.yaml``, ``.yml`` or ``.json`` file holding one mapping of option names to values.
        arguments: the dataclass of the command's options.

    Returns:
        Field name -> value as the file holds it.

    Raises:
        ConfigError: for a missing file, another suffix, a file that does not parse or is not a mapping, a key set
            twice (the parsers would keep the last value silently), or an unknown key (naming it and listing the valid
            keys).

    Example:
        >>> import tempfile
        >>> @dataclass
        ... class Settings:
        ...     rate: float = option(0.1, help="learning rate")
        >>> path = Path(tempfile.mkdtemp()) / "settings.yaml"
        >>> _ = path.write_text("rate: 0.5\\n")
        >>> load_config(path, Settings)
        {'rate': 0.5}
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ConfigError(f"{path}: a config file must end in {', '.join(CONFIG_SUFFIXES)}")
    try:
        text = read_text(path, "config file")
    except DataFormatError as error:
        raise ConfigError(str(error)) from None
    try:
        if path.suffix.lower() == ".json":
            content = json.loads(text, object_pairs_hook=_unique_json_keys)
        else:
            content = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _RepeatedKey as error:
        raise ConfigError(f"{path}: {error}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot be parsed: {error}") from None
    if content is None:
        return {}
    if not isinstance(content, Mapping):
        raise ConfigError(f"{path}: must hold a mapping of option names to values, not a {type(content).__name__}")
    names = {field.name for field in _fields(arguments)}
    values = {}
    for key, value in content.items():
        name = str(key).replace("-", "_")
        ablated = ABLATION_FLAGS.get(name.replace("_", "-"))
        if ablated in names and isinstance(value, bool):  # random_batches: true is topic_aware: false
            name, value = ablated, not value
        if name not in names:
            raise ConfigError(f"{path}: unknown key {key!r}; valid keys are: {', '.join(sorted(names))}")
        if name in values:
            raise ConfigError(f"{path}: key {key!r} sets the option {name!r}, which another key of the file already sets")
        values[name] = value
    return values


class _RepeatedKey(ValueError):
    """A config file sets a key twice (the parsers would silently keep the last value)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (naming it and both lines)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _RepeatedKey(f"key {key!r} is set twice (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise _RepeatedKey(f"key {repeated[0]!r} is set twice")
    return dict(pairs)


def config_tokens(path: str | Path, arguments: type) -> list[str]:
    """The command-line tokens that set the options of a config file (flags typed later override them).

    Raises:
        ConfigError: as :func:`load_config`, and for ``null`` on an option whose default is not none.
    """
    defaults = {field.name: field.default for field in _fields(arguments)}
    tokens: list[str] = []
    for name, value in load_config(path, arguments).items():
        if value is None:
            if defaults[name] is not None:
                raise ConfigError(f"{path}: key {name!r} may not be null")
            continue
        values = value if isinstance(value, list) else [value]
        tokens += [f"--{name}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return tokens
