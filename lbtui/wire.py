"""JSON form of the model's values (snapshots, events, commands, results) for the control socket.

Encoding turns a dataclass tree into plain JSON values; decoding rebuilds it generically from the
dataclass fields and their type hints, so a new model field needs no change here. Decoding checks
every value against its type (a bool is not an int) and says where it went wrong. Non-finite floats
(a histogram's last bound is +Inf) travel as the strings "inf", "-inf" and "nan", so every message
is strict JSON that any language can read.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from lbtui import model

PROTOCOL_VERSION = 1

T = TypeVar("T")

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class WireError(ValueError):
    """A JSON value that does not decode to the expected model value; the message says where and why."""


# ---- encoding ----------------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """Any model value as plain JSON values (dataclasses -> objects, enums -> strings, tuples -> lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (tuple, list)):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    return value


def encode_snapshot(snapshot: model.Snapshot) -> dict[str, Any]:
    return typing.cast(dict[str, Any], encode_value(snapshot))


def encode_event(event: model.Event) -> dict[str, Any]:
    return typing.cast(dict[str, Any], encode_value(event))


def encode_result(result: model.CommandResult) -> dict[str, Any]:
    return typing.cast(dict[str, Any], encode_value(result))


def encode_command(command: model.Command) -> dict[str, Any]:
    """{"type": "Drain", "proxy": ..., "backend": ..., "timeout_s": ...}"""
    name = type(command).__name__
    if model.COMMAND_TYPES.get(name) is not type(command):
        raise WireError(f"not a command: {command!r}")
    return {"type": name, **typing.cast(dict[str, Any], encode_value(command))}


# ---- decoding ----------------------------------------------------------------------------------


def decode_snapshot(data: Any) -> model.Snapshot:
    # fields a newer server added are ignored, so an older console still reads its snapshots
    return decode_dataclass(model.Snapshot, data, "snapshot", strict=False)


def decode_event(data: Any) -> model.Event:
    return decode_dataclass(model.Event, data, "event", strict=False)


def decode_result(data: Any) -> model.CommandResult:
    return decode_dataclass(model.CommandResult, data, "result", strict=False)


def decode_flow_query(data: Any) -> model.FlowQuery:
    """A snapshot request's flow query; WireError on wrong fields or a query the engine refuses."""
    query = decode_dataclass(model.FlowQuery, data, "flows", strict=True)
    problem = query.problem()
    if problem:
        raise WireError(f"flows: {problem}")
    return query


def decode_command(data: Any) -> model.Command:
    """A command from its JSON object; WireError on an unknown type, missing/extra fields, wrong types."""
    if not isinstance(data, Mapping):
        raise WireError(f"command: expected an object, got {_describe(data)}")
    name = data.get("type")
    if not isinstance(name, str):
        raise WireError('command.type: expected a string such as "Drain"')
    cls = model.COMMAND_TYPES.get(name)
    if cls is None:
        raise WireError(f"command.type: unknown command {name!r} (known: {', '.join(model.COMMAND_TYPES)})")
    fields = {k: v for k, v in data.items() if k != "type"}
    command: Any = decode_dataclass(cls, fields, "command", strict=True)
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        if isinstance(value, float) and not math.isfinite(value):  # no command means "forever"
            raise WireError(f"command.{f.name}: expected a finite number, got {value}")
    return typing.cast(model.Command, command)


def decode_dataclass(cls: type[T], data: Any, where: str, strict: bool = True) -> T:
    """Rebuild dataclass `cls` from a JSON object. strict: unknown keys are an error (else ignored)."""
    if not isinstance(data, Mapping):
        raise WireError(f"{where}: expected an object, got {_describe(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if strict and unknown:
        raise WireError(f"{where}: unknown field(s) {', '.join(map(repr, sorted(map(str, unknown))))}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _decode(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise WireError(f"{where}: missing field {name!r}")
    return cls(**values)


_hint_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _hint_cache.get(cls)
    if hints is None:
        hints = _hint_cache[cls] = typing.get_type_hints(cls)
    return hints


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, value, where)
            except WireError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_name(o) for o in options)
        raise WireError(f"{where}: expected {names}, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, list):
            raise WireError(f"{where}: expected a list, got {_describe(value)}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise WireError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise WireError(f"{where}: expected an object, got {_describe(value)}")
        key_type, value_type = typing.get_args(hint)
        return {
            _decode(key_type, k, f"{where} key"): _decode(value_type, v, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if hint is Any:
        return value
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return decode_dataclass(hint, value, where, strict=False)
        if issubclass(hint, enum.Enum):
            try:
                return hint(value)
            except ValueError:
                allowed = ", ".join(repr(m.value) for m in hint)
                raise WireError(f"{where}: expected one of {allowed}, got {_describe(value)}") from None
        if hint is bool:
            if isinstance(value, bool):
                return value
        elif hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str) and value in _NON_FINITE:
                return _NON_FINITE[value]
        elif hint is str:
            if isinstance(value, str):
                return value
        else:
            raise WireError(f"{where}: cannot decode type {hint!r}")
        raise WireError(f"{where}: expected {_name(hint)}, got {_describe(value)}")
    raise WireError(f"{where}: cannot decode type {hint!r}")


def _name(hint: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    return f"{kind.get(type(value), type(value).__name__)} {text}" if value is not None else "null"
