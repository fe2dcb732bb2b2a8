"""Arrow table operations the engine shares; they keep the row count of a table without columns.

`SELECT count(*) FROM t` reads no column of t: its scan yields tables of N rows and zero columns.
pyarrow's `concat_tables`, `Table.take` and `Table.cast` return 0 rows for such tables and
`Table.slice` does not clamp to them (the count lives in the columns), so the input readers and the
engine concatenate, take, slice and cast through these.
"""

from __future__ import annotations

import pyarrow as pa


def rows_only(count: int) -> pa.Table:
    """A table of `count` rows and no columns."""
    return pa.table({"__row": pa.nulls(count)}).drop_columns(["__row"]) if count else pa.table({})


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    if tables and tables[0].num_columns == 0:
        return rows_only(sum(table.num_rows for table in tables))
    return pa.concat_tables(tables)


def take(table: pa.Table, indices) -> pa.Table:
    return rows_only(len(indices)) if table.num_columns == 0 else table.take(indices)


def slice_rows(table: pa.Table, offset: int, length: int | None = None) -> pa.Table:
    """Rows [offset, offset + length) — clamped to the table, as Table.slice does only for tables with columns."""
    if table.num_columns:
        return table.slice(offset, length)
    start = min(offset, table.num_rows)
    end = table.num_rows if length is None else min(table.num_rows, start + length)
    return rows_only(end - start)


def cast_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table if table.num_columns == 0 and len(schema) == 0 else table.cast(schema)


def decode_dictionaries(table: pa.Table) -> pa.Table:
    """The table with its dictionary-encoded columns decoded to their value type."""
    if not any(pa.types.is_dictionary(t) for t in table.schema.types):
        return table
    columns = [column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column for column in table.columns]
    return pa.Table.from_arrays(columns, names=table.column_names)
