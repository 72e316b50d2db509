# SPDX-License-Identifier: Apache-2.0
"""A DataTable refreshed by row key, so a refresh touches only what changed and the cursor stays put."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable

Cells = Sequence[Any]  # one row, in column order


def same_cell(old: Any, new: Any) -> bool:
    # Text.__eq__ ignores the base style, so a cell that only changed colour would be missed.
    if isinstance(old, Text) and isinstance(new, Text):
        return old.plain == new.plain and old.style == new.style and old.spans == new.spans
    return bool(old == new)


def _plain(cell: Any) -> Any:
    # DataTable reads a str cell as markup: "[fd00::1]:80" would show as ":80". Strings are shown
    # as they are (addresses, names), so they go in as Text.
    return Text(cell, no_wrap=True, end="") if isinstance(cell, str) else cell


class KeyedTable(DataTable[Any]):
    """DataTable whose rows are replaced by `sync(rows)`.

    A row's key is made of its identity cells (`key_columns`, e.g. proxy, group and address), so
    the key can always be recomputed from what is displayed. Rows that went away are removed,
    changed cells are updated one by one, new rows are added with their key, and rows are put in
    the given order. The cursor follows its row (by key), not its index.
    """

    def __init__(self, columns: Sequence[tuple[str, str]], key_columns: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", True)
        super().__init__(**kwargs)
        self._column_spec = tuple(columns)
        self._column_keys = [key for _, key in columns]
        self._key_columns = tuple(key_columns)
        self._key_indexes = [self._column_keys.index(c) for c in key_columns]

    def on_mount(self) -> None:
        for label, key in self._column_spec:
            self.add_column(label, key=key)

    def relabel(self, column: str, label: str) -> None:
        """Change a column's header (e.g. the latency window it shows)."""
        for key, spec in self.columns.items():
            if key.value == column and spec.label.plain != label:
                spec.label = Text(label)
                # DataTable has no public way to relabel: its render caches hold the old header
                self._clear_caches()
                self._require_update_dimensions = True
                self.refresh()

    def key_of(self, cells: Cells) -> str:
        return "|".join(str(cells[i]) for i in self._key_indexes)

    @property
    def row_keys(self) -> list[str]:
        """Keys of the rows in display order."""
        return [str(row.key.value) for row in self.ordered_rows]

    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value

    def select_key(self, key: str) -> None:
        if key in self.rows:
            self.move_cursor(row=self.get_row_index(key), animate=False)

    def sync(self, rows: Sequence[Cells]) -> None:
        """Make the table show exactly `rows`, in this order (call inside `app.batch_update()`)."""
        selected = self.selected_key()
        wanted = {self.key_of(cells): [_plain(cell) for cell in cells] for cells in rows}
        order = list(wanted)

        for row_key in [k for k in self.rows if k.value not in wanted]:
            self.remove_row(row_key)
        for key, cells in wanted.items():
            if key in self.rows:
                current = self.get_row(key)
                for column, old, new in zip(self._column_keys, current, cells, strict=True):
                    if not same_cell(old, new):
                        self.update_cell(key, column, new, update_width=True)
            else:
                self.add_row(*cells, key=key)

        if self.row_keys != order:
            rank = {key: index for index, key in enumerate(order)}
            self.sort(*self._key_columns, key=lambda values: rank[self._join(values)])
        if selected is not None and selected in wanted:
            self.select_key(selected)

    def _join(self, values: Any) -> str:
        # DataTable.sort hands over a bare value when sorting by one column, a tuple for several.
        if len(self._key_columns) == 1:
            return str(values)
        return "|".join(str(v) for v in values)
