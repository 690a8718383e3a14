"""Build a Config: defaults < YAML files in order < dotted `key.sub=value` overrides."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from spml.config.legacy import removed_key_message, upgrade_saved_config
from spml.config.schema import DEFAULT_LOSS, Config
from spml.utils.io import write_text_atomic

MAX_VALUES = 100_000  # YAML aliases can make a small file expand to billions of values (every copy walks them)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the dotted key."""


class DuplicateKeyError(yaml.YAMLError):
    """A mapping gives one key twice; `key` is its dotted path, `lines` the 1-based lines of both.

    Args:
        key: the repeated key's dotted path.
        lines: the 1-based lines of both occurrences.
    """

    def __init__(self, key: str, lines: tuple[int, int]):
        super().__init__(
            f"key {key} appears twice (lines {lines[0]} and {lines[1]}); give each key once "
            "(plain YAML would silently keep only the second)"
        )


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader (python tags refused) that also refuses a key given twice in one mapping, at any depth,
    and reads numbers with an exponent (1e-3, 5E4, -2e+3, 1.0e3) as floats, as YAML 1.2 does; YAML 1.1 reads
    them as strings. Text that only looks similar (1e, e5, 1e3x, 1.2.3e4) stays a string."""

    def construct_document(self, node: yaml.Node) -> Any:
        """Check that no mapping repeats a key, then construct the document.

        Args:
            node: the document's root node.

        Returns:
            The constructed Python data.
        """
        self.check_unique_keys(node)
        return super().construct_document(node)

    def check_unique_keys(self, root: yaml.Node) -> None:
        """DuplicateKeyError for the first mapping that repeats a key; each node is visited once, so
        aliases (even alias bombs) cost nothing extra.

        Args:
            root: the document's root node.
        """
        pending, visited = [(root, "")], set()
        while pending:
            node, path = pending.pop()
            if id(node) in visited:
                continue
            visited.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                pending.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
            elif isinstance(node, yaml.MappingNode):
                lines: dict[Any, int] = {}
                for key_node, value_node in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` entries may be overridden
                        pending.append((value_node, path))
                        continue
                    if not isinstance(key_node, yaml.ScalarNode):
                        continue  # complex keys: construct_mapping refuses unhashable ones
                    key = self.construct_object(key_node)
                    dotted = f"{path}.{key}" if path else str(key)
                    line = key_node.start_mark.line + 1
                    if key in lines:
                        raise DuplicateKeyError(dotted, (lines[key], line))
                    lines[key] = line
                    pending.append((value_node, dotted))


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def load_yaml(text: str) -> Any:
    """YAML text -> Python data with ConfigLoader (safe, unique keys, YAML 1.2 exponent floats).

    Args:
        text: the YAML text.

    Returns:
        The loaded data.
    """
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506  (a SafeLoader subclass)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Load one YAML mapping with ConfigLoader (python tags and repeated keys are refused).

    Args:
        path: the YAML file.

    Returns:
        The mapping ({} for an empty file).

    Raises:
        ConfigError: an unreadable file, invalid YAML, a repeated key, or a top level that is no mapping.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = load_yaml(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        where = " ".join(str(err).replace('"<unicode string>"', str(path)).split())
        hint = "; YAML indents with spaces, not tabs" if "\t" in text and "found character '\\t'" in where else ""
        raise ConfigError(f"{path}: not valid (safe) YAML: {where}{hint}") from None
    check_size(data, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def read_config_file(path: str | Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One YAML config with the files of its top-level `include:` list (paths relative to it) merged first,
    recursively; its own keys win over what it includes.

    Args:
        path: the YAML config file.
        chain: the files including this one (an include cycle is a ConfigError).

    Returns:
        The merged mapping.
    """
    resolved = Path(path).resolve()
    if resolved in chain:
        raise ConfigError(f"{path}: include cycle {' -> '.join(str(p) for p in (*chain, resolved))}")
    data = read_yaml(path)
    includes = data.pop("include", [])
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(item, str) for item in includes):
        raise ConfigError(f"{path}: include: expected a list of YAML file paths, got {includes!r}")
    merged: dict[str, Any] = {}
    for item in includes:
        merged = merge(merged, read_config_file(resolved.parent / item, (*chain, resolved)))
    return merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'data.size=128' -> (['data', 'size'], 128); the value is parsed as YAML (load_yaml), so numbers, lists and
    {flow: mappings} read as in config files, unless YAML would drop or reinterpret what was typed (`yaml_would_cut`):
    then, and where it is no valid YAML, the value is the text as typed (train.out='runs/exp #2' is that folder).

    Args:
        text: the override, key.sub=value.

    Returns:
        (the key's parts, the value).
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"override {key or text!r} is not of the form key.sub=value")
    try:
        value = raw.strip() if yaml_would_cut(raw) else load_yaml(raw) if raw.strip() else ""
    except DuplicateKeyError as err:
        raise ConfigError(f"override {key}: {err}") from None
    except yaml.YAMLError:
        value = raw
    check_size(value, f"override {key}")
    return key.split("."), value


def yaml_would_cut(raw: str) -> bool:
    """Whether YAML reads a command-line value otherwise than typed: a `#` comment drops the rest (`runs/exp #2`),
    `key: value` outside braces becomes a mapping, a leading `&anchor` / `*alias` is no text. Raises
    yaml.YAMLError where the value is no valid YAML.

    Args:
        raw: the value as typed.

    Returns:
        True where YAML would read it otherwise than typed.
    """
    tokens = [token for token in yaml.scan(raw) if not isinstance(token, (yaml.StreamStartToken, yaml.StreamEndToken))]
    if not tokens:
        return bool(raw.strip())  # nothing but a comment
    return tokens[-1].end_mark.index < len(raw.rstrip()) or isinstance(
        tokens[0], (yaml.BlockMappingStartToken, yaml.AnchorToken, yaml.AliasToken)
    )


def check_size(data: Any, where: str, limit: int = MAX_VALUES) -> None:
    """Refuse YAML data that holds more than `limit` values once its aliases are expanded (alias bombs);
    stops counting at the limit, so the check itself stays cheap.

    Args:
        data: the loaded YAML data.
        where: what the error names (a file or an override).
        limit: the most values allowed.
    """
    pending, count = [data], 0
    while pending:
        item = pending.pop()
        count += 1
        if count > limit:
            raise ConfigError(
                f"{where}: more than {limit:,} values once YAML aliases are expanded; "
                "a config needs far fewer (an alias bomb?)"
            )
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; mappings merge, anything else replaces.

    Args:
        base: the mapping merged into (not changed).
        update: the mapping whose values win.

    Returns:
        The merged mapping.
    """
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert one leaf value against its type hint; raise ConfigError naming `key`."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(hint, value, key + ".")
    if hint is Any:
        return value
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value is None and "" in choices:
            return ""
        for choice in choices:  # by type too: YAML's `no` (False) is not the choice "no", 1 is not True
            if type(value) is type(choice) and value == choice:
                return choice
        raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not match {hint}")
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, str):
            value = [value] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {hint}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    for key in unknown:
        message = removed_key_message(prefix + key)
        if message:
            raise ConfigError(message)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; valid keys here: {sorted(names)}")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def load_config(
    files: Iterable[str | Path] = (), overrides: Iterable[str] = (), run_dir: str | Path | None = None, **top: Any
) -> Config:
    """Defaults < a run folder's saved config (`run_dir`) < each YAML file (after its `include:` files) in order
    < `top` keywords (e.g. mode=) < dotted overrides.

    A run folder's config.yaml written by an earlier spml is upgraded to today's keys (config.legacy); in files
    and overrides such keys are an error naming their replacement. An empty loss.name becomes the mode's default
    loss (schema.DEFAULT_LOSS), so the resolved config names its loss.

    Args:
        files: YAML config files, applied in order.
        overrides: dotted key=value overrides.
        run_dir: a run folder whose config.yaml is the base, or None.
        **top: top-level keys (e.g. mode=); None values are left out.

    Returns:
        The resolved Config.
    """
    merged: dict[str, Any] = {}
    if run_dir is not None:
        saved = Path(run_dir) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
        merged = upgrade_saved_config(read_yaml(saved))
    for path in files:
        merged = merge(merged, read_config_file(path))
    merged = merge(merged, {k: v for k, v in top.items() if v is not None})
    for text in overrides:
        keys, value = parse_override(text)
        nested: dict[str, Any] = {keys[-1]: value}
        for key in reversed(keys[:-1]):
            nested = {key: nested}
        merged = merge(merged, nested)
    config = _build(Config, merged)
    if not config.loss.name:
        config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, name=DEFAULT_LOSS[config.mode]))
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON dumps.

    Args:
        config: a config dataclass.

    Returns:
        The nested dict.
    """

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (the run folder's record; never mutated afterwards), atomically.

    Args:
        config: the resolved config.
        path: the YAML file written.
    """
    write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))
