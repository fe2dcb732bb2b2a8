"""duckdb as the independent reference for the native group-by: the same query in SQL, and a comparison of
results that treats NaN, -0.0, decimals and temporal types the way SQL does."""
import math

import duckdb
import pyarrow as pa

from engine_support import same_value

SQL = {"count": "count({})", "count_all": "count(*)", "sum": "sum({})", "mean": "avg({})", "min": "min({})",
       "max": "max({})"}
TEMPORAL_STORAGE = [(pa.types.is_date32, pa.int32()), (pa.types.is_time32, pa.int32()),
                    (pa.types.is_date64, pa.int64()), (pa.types.is_time64, pa.int64()),
                    (pa.types.is_timestamp, pa.int64()), (pa.types.is_duration, pa.int64())]


def plain_column(column):
    """Dictionaries decoded; temporal values as their integer storage (the order min/max use)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    for is_type, storage in TEMPORAL_STORAGE:
        if is_type(column.type):
            return pa.chunked_array([chunk.view(storage) for chunk in column.chunks], storage)
    return column


def plain_table(table):
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return pa.table({name: plain_column(table.column(name)) for name in table.schema.names})


def quoted(name):
    return '"' + name.replace('"', '""') + '"'


def duckdb_group_by(table, keys, aggregations):
    """SELECT keys, aggregations FROM table GROUP BY keys, as a pyarrow Table (columns named as ours)."""
    connection = duckdb.connect()
    try:
        connection.execute("SET threads TO 1")
        connection.register("t", plain_table(table))
        expressions = [f"{SQL[function].format(quoted(column))} AS {quoted(name)}" for column, function, name in aggregations]
        group = ", ".join(quoted(k) for k in keys)
        return connection.sql(f"SELECT {group}, {', '.join(expressions)} FROM t GROUP BY {group}").to_arrow_table()
    finally:
        connection.close()


def canonical_key(value):
    """Group keys as SQL compares them: -0.0 is 0.0, every NaN is one value."""
    if isinstance(value, float):
        return ("nan",) if math.isnan(value) else value + 0.0
    return value


def rows_by_key(table, keys):
    rows = {}
    for row in plain_table(table).to_pylist():
        key = tuple(canonical_key(row[k]) for k in keys)
        assert key not in rows, f"group {key} appears twice"
        rows[key] = row
    return rows


def assert_same_groups(ours, theirs, keys, names, rel=1e-9):
    """Same groups, and for each group the same value of every column in `names`."""
    ours_rows, their_rows = rows_by_key(ours, keys), rows_by_key(theirs, keys)
    assert set(ours_rows) == set(their_rows), (set(ours_rows) ^ set(their_rows))
    for key, theirs_row in their_rows.items():
        ours_row = ours_rows[key]
        for name in names:
            assert same_value(ours_row[name], theirs_row[name], rel, abs_tol=1e-12), (key, name, ours_row[name], theirs_row[name])


def assert_matches_duckdb(result, table, keys, aggregations, rel=1e-9):
    assert result.schema.names == list(keys) + [name for _, _, name in aggregations]
    assert_same_groups(result, duckdb_group_by(table, keys, aggregations), keys,
                       [name for _, _, name in aggregations], rel)
