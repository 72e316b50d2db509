# SPDX-License-Identifier: Apache-2.0
"""The TOML writer of a Config, derived from the declarations: every value explicit, so that
parse_config reads the text back to an equal Config. TOML itself is written by tomli-w."""

from __future__ import annotations

from typing import Any

import tomli_w

from lbtui.config.keys import Table, Tables, declared_keys
from lbtui.config.schema import Config


def config_to_toml(config: Config) -> str:
    """Write a Config as TOML that parse_config reads back to an equal Config."""
    return tomli_w.dumps(to_document(config))


def to_document(value: Any) -> dict[str, Any]:
    """A declared table value as the TOML document it came from: TOML names, no None values, and
    no key its table refuses in this case (a tcp check's http-only keys, a static backend's port)."""
    document: dict[str, Any] = {}
    table_class: type = type(value)
    for d in declared_keys(table_class):
        field_value = getattr(value, d.field)
        if field_value is None or (d.key.not_with is not None and d.key.not_with.leaves_out(value)):
            continue
        if isinstance(d.key, Table):
            document[d.name] = to_document(field_value)
        elif isinstance(d.key, Tables):
            document[d.name] = [to_document(item) for item in field_value]
        else:
            document[d.name] = d.key.to_toml(field_value)
    return document
