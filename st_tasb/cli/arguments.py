"""Command-line options declared once, as dataclasses, and read from config files and flags.

Each subcommand describes its options as a dataclass whose fields carry their help text
(:func:`option`). :func:`add_arguments` turns the fields into ``argparse`` options (``batch_size``
becomes ``--batch-size``; booleans get ``--flag`` / ``--no-flag``; ``--help`` shows every default), and
:func:`parse_arguments` builds the dataclass from three layers: the field defaults, then the keys of a
YAML or JSON file given with ``--config``, then the flags given on the command line. Config keys are
the option names, with ``_`` or ``-``.

Example:
    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Greeting:
    ...     name: str = option(help="who to greet")
    ...     times: int = option(1, help="how often")
    >>> parser = argparse.ArgumentParser(prog="greet")
    >>> add_arguments(parser, Greeting)
    >>> parse_arguments(Greeting, parser.parse_args(["--name", "Ada", "--times", "2"]))
    Greeting(name='Ada', times=2)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class ConfigError(ValueError):
    """A config file or an option value is wrong; the message names the file, key or option."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its help text, the dataclass of its options and the function that runs it.

    Attributes:
        name: the subcommand (``st-tasb NAME``).
        description: the text at the top of ``st-tasb NAME --help``.
        arguments: the options dataclass (fields made with :func:`option`).
        run: runs the command on an instance of ``arguments``; returns the exit status (``None`` is 0).
    """

    name: str
    description: str
    arguments: type
    run: Callable[[Any], int | None]


def option(default: Any = MISSING, *, help: str, metavar: str | None = None) -> Any:
    """A dataclass field that is also a command-line option; without ``default`` it is required.

    Args:
        default: the default value (lists: pass a tuple, it becomes the default list).
        help: one sentence for ``--help``: what the option means and, where useful, which values it takes;
            ``(default: ...)`` is appended unless the text mentions its default itself.
        metavar: the value's name in ``--help`` (default: the option's name in capitals).
    """
    metadata = {"help": help, "metavar": metavar}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class _Kind:
    """How one field is read: its base type, whether it may be ``None``, and its allowed values."""

    base: type
    optional: bool = False
    is_list: bool = False
    choices: tuple[Any, ...] | None = None


def _kind_of(annotation: Any) -> _Kind:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported option type {annotation}")
        return dataclasses.replace(_kind_of(inner[0]), optional=True)
    if origin is list:
        return dataclasses.replace(_kind_of(args[0]), is_list=True)
    if origin is Literal:
        return _Kind(type(args[0]), choices=tuple(args))
    if annotation in (str, int, float, bool):
        return _Kind(annotation)
    raise TypeError(f"unsupported option type {annotation}")


def _fields(arguments: type) -> list[tuple[dataclasses.Field, _Kind]]:
    hints = typing.get_type_hints(arguments)
    return [(field, _kind_of(hints[field.name])) for field in dataclasses.fields(arguments) if field.init]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return MISSING


def _describe_default(value: Any, kind: _Kind) -> str:
    if value is MISSING:
        return "required"
    if value is None:
        return "default: none"
    if kind.base is bool:
        return f"default: {'on' if value else 'off'}"
    if kind.is_list:
        return f"default: {' '.join(str(v) for v in value)}"
    return f"default: {value}"


def add_arguments(parser: argparse.ArgumentParser, arguments: type) -> None:
    """Add ``--config`` and one option per field of the dataclass ``arguments`` to ``parser``.

    Options default to "not given" (``argparse.SUPPRESS``), so :func:`parse_arguments` can tell
    explicit flags from defaults; ``--help`` shows each field's real default.
    """
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="YAML or JSON file whose keys are option names (e.g. batch_size: 32); flags given on the command "
        "line override it",
    )
    for field, kind in _fields(arguments):
        help_text = field.metadata["help"]
        if "default" not in help_text:  # a help text may explain its default itself
            help_text += f" ({_describe_default(_default_of(field), kind)})"
        common: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind.base is bool and not kind.is_list:
            parser.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, **common)
            continue
        common["metavar"] = field.metadata.get("metavar") or field.name.upper()
        if kind.choices:
            common["choices"] = kind.choices
            common["metavar"] = "{" + ",".join(str(c) for c in kind.choices) + "}"
        if kind.is_list:
            common["nargs"] = "+"
        parser.add_argument(_flag(field.name), type=_converter(kind), **common)


def _converter(kind: _Kind) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return _convert_text(text, kind)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _convert_text(text: str, kind: _Kind) -> Any:
    if kind.optional and text.lower() in ("none", "null"):
        return None
    if kind.base is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"{text!r} is not a boolean (use true or false)")
    if kind.base is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if kind.base is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    return text


def _convert_config_value(value: Any, kind: _Kind, where: str) -> Any:
    """A config-file value as the field's type; strings are parsed like command-line text."""
    if value is None:
        if kind.optional:
            return None
        raise ConfigError(f"{where}: may not be null")
    if kind.is_list:
        values = value if isinstance(value, list) else [value]
        item_kind = dataclasses.replace(kind, is_list=False, optional=False)
        return [_convert_config_value(v, item_kind, where) for v in values]
    if isinstance(value, str) and kind.base is not str:
        try:
            value = _convert_text(value, kind)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
    elif kind.base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif kind.base is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, kind.base) or (kind.base is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.base.__name__}, got {type(value).__name__} {value!r}")
    if kind.choices and value not in kind.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {list(kind.choices)}")
    return value


def load_config(path: str | Path, arguments: type) -> dict[str, Any]:
    """The options set in a YAML or JSON config file, checked against the fields of ``arguments``.

    Args:
        path: a ``.yaml``, ``.yml`` or ``.json`` file holding one mapping of option names to values.
        arguments: the dataclass of the command's options.

    Returns:
        Field name -> value, converted to the fields' types.

    Raises:
        FileNotFoundError: if the file does not exist.
        ConfigError: for another suffix, a file that does not parse or is not a mapping, an unknown key
            (naming it and listing the valid keys) or a value of the wrong type (naming the key).

    Example:
        >>> import tempfile
        >>> @dataclass
        ... class Settings:
        ...     rate: float = option(0.1, help="learning rate")
        >>> path = Path(tempfile.mkdtemp()) / "settings.yaml"
        >>> _ = path.write_text("rate: 7e-6\\n")
        >>> load_config(path, Settings)
        {'rate': 7e-06}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ConfigError(f"{path}: a config file must end in {', '.join(CONFIG_SUFFIXES)}")
    text = path.read_text(encoding="utf-8")
    try:
        content = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot be parsed: {error}") from None
    if content is None:
        return {}
    if not isinstance(content, Mapping):
        raise ConfigError(f"{path}: must hold a mapping of option names to values, not a {type(content).__name__}")
    kinds = {field.name: kind for field, kind in _fields(arguments)}
    values = {}
    for key, value in content.items():
        name = str(key).replace("-", "_")
        if name not in kinds:
            valid = ", ".join(sorted(kinds))
            raise ConfigError(f"{path}: unknown key {key!r}; valid keys are: {valid}")
        values[name] = _convert_config_value(value, kinds[name], f"{path}: key {key!r}")
    return values


def parse_arguments(arguments: type[T], namespace: argparse.Namespace) -> T:
    """Build the dataclass ``arguments`` from its defaults, the ``--config`` file, then explicit flags.

    Args:
        arguments: the dataclass of the command's options.
        namespace: parsed by a parser set up with :func:`add_arguments`.

    Returns:
        An instance of ``arguments``.

    Raises:
        ConfigError: for a required option given neither as a flag nor in the config file, and as
            :func:`load_config`; ``ValueError`` from the dataclass's own checks passes through.
    """
    given = vars(namespace)
    values = load_config(given["config"], arguments) if "config" in given else {}
    names = [field.name for field, _ in _fields(arguments)]
    values.update({name: given[name] for name in names if name in given})
    missing = [name for name in names if name not in values and _default_of(_field(arguments, name)) is MISSING]
    if missing:
        flags = ", ".join(_flag(name) for name in missing)
        raise ConfigError(f"missing required option(s) {flags} (give them as flags or as keys of the --config file)")
    return arguments(**values)


def _field(arguments: type, name: str) -> dataclasses.Field:
    return next(field for field in dataclasses.fields(arguments) if field.name == name)


def to_config(instance: Any) -> dict[str, Any]:
    """A dataclass of options as a plain mapping, ready to be written as a config file.

    Example:
        >>> @dataclass
        ... class Settings:
        ...     rate: float = option(0.1, help="learning rate")
        >>> to_config(Settings(rate=0.5))
        {'rate': 0.5}
    """
    return {field.name: getattr(instance, field.name) for field, _ in _fields(type(instance))}
