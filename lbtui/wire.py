# SPDX-License-Identifier: Apache-2.0
"""JSON form of the model's values (snapshots, events, commands, results) for the control socket.

Both directions are derived by cattrs from the model's dataclasses and their type hints, so a new
model field needs no change here; the hooks below only say how the JSON types map to Python ones.
Decoding checks every value against its type (a bool is not an int, an int is accepted as a
float) and says where it went wrong. Non-finite floats (a histogram's last bound is +Inf) travel
as the strings "inf", "-inf" and "nan", so every message is strict JSON that any language can read.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import cattrs
from cattrs.cols import homogenous_tuple_structure_factory
from cattrs.errors import AttributeValidationNote, ForbiddenExtraKeysError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, mapping_structure_factory

from lbtui import model

PROTOCOL_VERSION = 1

T = TypeVar("T")

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class WireError(ValueError):
    """A JSON value that does not decode to the expected model value; the message says where and why."""


class _Refused(ValueError):
    """A JSON value of the wrong type; the message says what was expected (WireError adds where)."""


# ---- the converters ------------------------------------------------------------------------------


def _exactly(kind: type, name: str) -> Callable[[Any, type], Any]:
    def structure(value: Any, hint: type) -> Any:
        if hint is not kind and _is_enum(hint):  # cattrs hands a StrEnum to the str hook
            return _enum(hint)(value, hint)
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        raise _Refused(f"expected {name}, got {_describe(value)}")

    return structure


def _number(value: Any, _: type) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    raise _Refused(f"expected a number, got {_describe(value)}")


def _encode_number(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _only(kind: type, name: str, structure: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """`structure` for JSON values of `kind` (cattrs would take any iterable or mapping)."""

    def checked(value: Any, hint: Any) -> Any:
        if not isinstance(value, kind):
            raise _Refused(f"expected {name}, got {_describe(value)}")
        return structure(value, hint)

    return checked


def _enum(hint: type[enum.Enum]) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(repr(member.value) for member in hint)
            raise _Refused(f"expected one of {allowed}, got {_describe(value)}") from None

    return structure


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _is_dict(hint: Any) -> bool:
    return typing.get_origin(hint) is dict


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def _converter(forbid_extra_keys: bool) -> cattrs.Converter:
    """Model values from JSON and back; forbid_extra_keys: unknown fields are errors (else ignored)."""
    conv = cattrs.Converter(
        detailed_validation=True,
        forbid_extra_keys=forbid_extra_keys,
        unstruct_collection_overrides={tuple: list},
    )
    conv.register_structure_hook(bool, _exactly(bool, "a boolean"))
    conv.register_structure_hook(int, _exactly(int, "an integer"))
    conv.register_structure_hook(str, _exactly(str, "a string"))
    conv.register_structure_hook(float, _number)
    conv.register_unstructure_hook(float, _encode_number)
    conv.register_structure_hook_factory(_is_enum, _enum)
    conv.register_structure_hook_factory(
        _is_tuple, lambda hint: _only(list, "a list", homogenous_tuple_structure_factory(hint, conv))
    )
    conv.register_structure_hook_factory(
        _is_dict, lambda hint: _only(dict, "an object", mapping_structure_factory(hint, conv))
    )
    conv.register_structure_hook_factory(
        dataclasses.is_dataclass, lambda hint: _only(Mapping, "an object", make_dict_structure_fn(hint, conv))
    )
    return conv


_LENIENT = _converter(forbid_extra_keys=False)  # what the server sends: a newer one may add fields
_STRICT = _converter(forbid_extra_keys=True)  # what changes the load balancer: commands, queries


# ---- encoding ----------------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """Any model value as plain JSON values (dataclasses -> objects, enums -> strings, tuples -> lists)."""
    return _LENIENT.unstructure(value)


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


def decode_history_query(data: Any) -> model.HistoryQuery:
    """A history request's query; WireError on wrong fields or a query the engine refuses."""
    query = decode_dataclass(model.HistoryQuery, data, "query", strict=True)
    problem = query.problem()
    if problem:
        raise WireError(f"query: {problem}")
    return query


def decode_history(data: Any) -> model.HistoryAnswer:
    return decode_dataclass(model.HistoryAnswer, data, "history", strict=False)


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
    """Rebuild dataclass `cls` from a JSON object. strict: unknown keys are an error (else ignored);
    a missing field without a default is always one."""
    try:
        return (_STRICT if strict else _LENIENT).structure(data, cls)
    except Exception as exc:  # cattrs' exception groups, or one of our _Refused
        raise WireError(_first_problem(exc, where)) from None


def _first_problem(exc: BaseException, where: str) -> str:
    """`where: what` for the first problem cattrs found (unknown fields before anything else)."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"{where}: unknown field(s) {', '.join(repr(k) for k in sorted(map(str, exc.extra_fields)))}"
    if isinstance(exc, BaseExceptionGroup):
        first = min(exc.exceptions, key=lambda sub: not isinstance(sub, ForbiddenExtraKeysError))
        for note in getattr(first, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                if isinstance(first, KeyError):
                    return f"{where}: missing field {note.name!r}"
                return _first_problem(first, f"{where}.{note.name}")
            if isinstance(note, IterableValidationNote):
                return _first_problem(first, f"{where}[{note.index!r}]")
        return _first_problem(first, where)
    return f"{where}: {exc}"


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    return f"{kind.get(type(value), type(value).__name__)} {text}" if value is not None else "null"
