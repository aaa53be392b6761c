"""The config schema (``workflow/schemas/config.schema.yaml``) as the one source of every setting's default
and allowed values, and the two forms a stage receives its config slice in.

- ``with_defaults(section, values)``: a config slice validated against its part of the schema, with every
  default the schema declares filled in (Snakemake's ``validate`` does the same for the whole config when
  a run starts; this is the same rule for a stage run on its own).
- ``add_arguments(parser, section, keys)`` / ``args_slice(args, section, keys)``: command-line flags generated
  from the schema (``--tile-px``, choices from ``enum``, help from ``description``), and the slice they give.
- ``to_flags(values, section, keys)``: the same flags as one shell string, what a rule hands the CLI.

A flag's value is JSON when the schema allows a non-string type and the text parses as one (``2.0``,
``null``, ``true``, ``[0.5, 0.5]``), else the text itself (``native``, ``grid``, a path).
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
from functools import cache
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value the schema does not allow; the message names the key."""


@cache
def config_schema() -> dict:
    if not SCHEMA_PATH.exists():
        raise FileNotFoundError(f"genedml's config schema is missing: {SCHEMA_PATH} (genedml runs from its repository)")
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _resolve(node: dict) -> dict:
    """Follow a local ``$ref`` (``#/$defs/...``)."""
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref}")
        node = config_schema()
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def part(path: str) -> dict:
    """The schema of a config path: ``tiles``, ``data``, ``$defs/heads/dkan``."""
    if path.startswith("$defs/"):
        node = config_schema()
        for key in path.split("/"):
            node = node[key]
        return _resolve(node)
    node = config_schema()
    for key in path.split("."):
        node = _resolve(node)["properties"][key]
    return _resolve(node)


def _validator(schema: dict):
    import jsonschema
    from referencing import Registry, Resource

    root = config_schema()
    registry = Registry().with_resource("urn:genedml-config", Resource.from_contents(root))
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, node):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, node)

    cls = jsonschema.validators.extend(base, {"properties": set_defaults})
    return cls({**schema, "$defs": root.get("$defs", {})}, registry=registry)


def _meaning(schema: dict, where) -> str:
    """`` (what the setting is)`` for an error message, from the setting's schema description."""
    node = schema
    for key in where:
        props = _resolve(node).get("properties", {})
        if key not in props:
            return ""
        node = props[key]
    text = _resolve(node).get("description", "")
    return f" ({text})" if text and node is not schema else ""


def _message(exc) -> str:
    """jsonschema's message, in words where its own would print the rule (``not``: "4 should not be valid
    under {'multipleOf': 2}"); the setting's description then says what is allowed."""
    if exc.validator == "not":
        return f"{exc.instance!r} is not allowed"
    if exc.validator == "additionalProperties" and isinstance(exc.instance, dict):
        import re

        known = list(exc.schema.get("properties", {}))
        patterns = list(exc.schema.get("patternProperties", {}))
        extra = [k for k in exc.instance if k not in known and not any(re.search(p, k) for p in patterns)]
        if extra:
            import difflib

            hints = [
                f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, 1)) else repr(k)
                for k in extra
            ]
            return f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(hints)}; known: {', '.join(known)}"
    return exc.message


def with_defaults(path: str, values: dict | None, keys: tuple[str, ...] | None = None) -> dict:
    """``values`` (a config slice) checked against the schema at ``path``, with the schema's defaults filled
    in; ``keys``: keep only these keys of the slice (a stage that reads part of a section)."""
    import jsonschema

    values = copy.deepcopy(dict(values or {}))
    schema = part(path)
    if keys is not None:  # a stage reading part of a section needs only that part to be given
        schema = {**schema, "required": [k for k in schema.get("required", []) if k in keys]}
    try:
        _validator(schema).validate(values)
    except jsonschema.ValidationError as exc:
        where = ".".join([path.replace("$defs/", ""), *map(str, exc.absolute_path)])
        raise ConfigError(f"config {where}: {_message(exc)}{_meaning(schema, exc.absolute_path)}") from None
    if keys is not None:
        values = {k: values[k] for k in keys if k in values}
    return values


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _types(node: dict) -> set[str]:
    """JSON types a property allows (``oneOf`` / ``anyOf`` branches included; an ``enum`` of strings: string)."""
    node = _resolve(node)
    out: set[str] = set()
    t = node.get("type")
    if t:
        out |= {t} if isinstance(t, str) else set(t)
    if "enum" in node:
        out |= {"null" if v is None else "string" if isinstance(v, str) else "number" for v in node["enum"]}
    for branch in node.get("oneOf", []) + node.get("anyOf", []):
        out |= _types(branch)
    return out or {"string"}


def json_type(value) -> str:
    """The JSON type name of a Python value (``integer``, ``number``, ``array``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def parse_value(text: str, node: dict):
    """A flag's text as the value the schema expects (see the module doc)."""
    allowed = _types(node)
    if allowed != {"string"}:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        else:
            kind = json_type(value)
            if kind in allowed or (kind == "integer" and "number" in allowed):
                return value
            value = text
        return value
    return text


def format_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def keys_of(path: str, keys: tuple[str, ...] | None = None) -> list[str]:
    props = part(path).get("properties", {})
    return [k for k in props if keys is None or k in keys]


def choices(path: str) -> list:
    """Allowed values of a setting (``targets.recipe``), as the schema lists them (its ``enum``)."""
    section, _, key = path.rpartition(".")
    parent = part(section) if section else config_schema()
    return list(_resolve(parent["properties"][key])["enum"])


def runtime_split(path: str) -> tuple[list[str], list[str]]:
    """(settings that shape the results, run-time knobs) of a section: knobs are marked ``x-runtime: true``."""
    props = part(path).get("properties", {})
    knobs = [k for k, node in props.items() if _resolve(node).get("x-runtime")]
    return [k for k in props if k not in knobs], knobs


def add_arguments(
    parser: argparse.ArgumentParser, path: str, keys: tuple[str, ...] | None = None, title: str | None = None
) -> None:
    """One flag per setting of the schema at ``path`` (``keys``: only these)."""
    group = parser.add_argument_group(title or f"config `{path}` (defaults from the config schema)")
    props = part(path).get("properties", {})
    for key in keys_of(path, keys):
        node = _resolve(props[key])
        help_text = node.get("description", "")
        if "enum" in node:
            help_text += (" " if help_text else "") + "{" + ", ".join(map(format_value, node["enum"])) + "}"
        if "default" in node:
            help_text += f" (default: {format_value(node['default'])})"
        group.add_argument(
            _flag(key),
            dest=key,
            metavar="VALUE",
            default=argparse.SUPPRESS,
            type=lambda text, n=node: parse_value(text, n),
            help=help_text.replace("%", "%%"),
        )


def args_slice(args: argparse.Namespace, path: str, keys: tuple[str, ...] | None = None) -> dict:
    """The config slice the flags of ``add_arguments`` gave (flags not given are left to the defaults)."""
    given = vars(args)
    return {k: given[k] for k in keys_of(path, keys) if k in given}


def to_flags(values: dict, path: str, keys: tuple[str, ...] | None = None) -> str:
    """``values`` (a slice, defaults filled) as the flags of ``add_arguments``, quoted for a shell."""
    filled = with_defaults(path, values, keys)
    return " ".join(f"{_flag(k)} {shlex.quote(format_value(filled[k]))}" for k in keys_of(path, keys) if k in filled)


def merge(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into ``base`` key by key, recursively, as Snakemake merges ``--configfile`` files."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def validate_config(config: dict) -> dict:
    """The whole config checked against the schema, its defaults filled in place (what a run starts with;
    Snakemake's own ``validate`` does the same, with jsonschema's wording of the rule broken)."""
    import jsonschema

    try:
        _validator(config_schema()).validate(config)
    except jsonschema.ValidationError as exc:
        where = ".".join(map(str, exc.absolute_path)) or "(top level)"
        raise ConfigError(f"config {where}: {_message(exc)}{_meaning(config_schema(), exc.absolute_path)}") from None
    return config


def resolved_config(configfiles: list[str]) -> str:
    """The config files merged in order, checked, with every default of the schema filled in (YAML)."""
    config: dict = {}
    for path in configfiles:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    validate_config(config)
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
