"""Inputs: what a job reads, checked before anything starts, and each agent's share of it.

`describe_input(spec)` lists a file input's files (a local path or any pyarrow.fs URI), reads every
file's schema (Parquet and IPC footers, the first block of each CSV file) and refuses, naming the file,
a file that lacks a column, has a column the others lack, or holds a column of a conflicting type; a
dangling link, a FIFO or another special file in an input directory; an unreadable file. Files whose
names start with `.` or `_` are skipped (hidden files, `_SUCCESS` markers), as pyarrow does.

Units of work: Parquet row groups, Arrow IPC record batches, whole CSV files. `agent_share(info, i,
N)` gives agent i of N a contiguous run of units holding about 1/N of the rows; a unit holding more
than its fair share is split into row ranges first (each piece reads the row group and keeps its
slice), so shares stay balanced when a file has one big row group. Units whose statistics rule out the
scan's predicate are dropped before the split (row-group pruning); every agent computes the same
shares from the same metadata.

Generated inputs give every row a value that depends only on (seed, column, row number), so agent i
of N generates rows [rows*i/N, rows*(i+1)/N), in batches, and the union is the same table whatever N is.

Inside the engine, every string type becomes `string` and small decimals decimal128
(`plan.types.engine_type`); Parquet string columns with small dictionaries are read as dictionaries
and decoded, which is several times faster than materializing each value through a view type.
"""

from __future__ import annotations

import datetime
import decimal
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sabot_agent.jobspec import GeneratedColumn, InputSpec, StorageSpec, generated_schema
from sabot_agent.plan import expressions as E
from sabot_agent.plan import types as T
from sabot_agent.plan.estimates import TableStats, type_bytes
from sabot_agent.tables import concat_tables, slice_rows
from sabot_agent.tickets import fnv1a_64

GENERATE_BATCH_ROWS = 1 << 20
# consecutive units are read together up to about this many rows: fewer, larger batches for the kernels
TASK_ROWS = 1 << 20
# a unit this much above its fair share is split into row ranges
SPLIT_FACTOR = 1.25
# Parquet string columns whose dictionary page is at most this big are read as dictionaries
SMALL_DICTIONARY_BYTES = 64 << 10
IGNORED_PREFIXES = (".", "_")
CSV_SCHEMA_BLOCK_BYTES = 1 << 20


class InputError(RuntimeError):
    """An input that cannot be read; the message names the input and the file."""


@dataclass(frozen=True)
class Unit:
    path: str
    index: int  # Parquet row group / IPC record batch; -1: the whole file
    rows: int  # rows of the whole unit
    offset: int = 0  # the piece [offset, offset + length) of a split unit
    length: int | None = None

    @property
    def piece_rows(self) -> int:
        return self.rows if self.length is None else self.length


@dataclass
class InputInfo:
    spec: InputSpec
    schema: pa.Schema  # engine types
    filesystem: pafs.FileSystem | None = None
    files: list[str] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    stats: TableStats = TableStats(0, {})
    dictionary_columns: frozenset[str] = frozenset()
    column_stats: dict[tuple[str, int], dict[str, tuple]] = field(default_factory=dict)
    csv_types: dict[str, pa.DataType] = field(default_factory=dict)
    # each Parquet file as a fragment whose footer is parsed, made on its first read: later reads of
    # its row groups do not parse the footer again (2.5 ms a read for TPC-H SF1 lineitem's 109 KB)
    opened: dict[str, ds.ParquetFileFragment] = field(default_factory=dict, repr=False, compare=False)

    @property
    def generated(self) -> bool:
        return self.spec.generated


# ---------------------------------------------------------------------------------------- discovery


# a request to object storage that hangs fails after this long; a refused connection fails at once
S3_CONNECT_TIMEOUT_SECONDS = 5
S3_REQUEST_TIMEOUT_SECONDS = 60


def filesystem_and_path(path: str, storage: StorageSpec = StorageSpec()) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a local path or a URI, and the path within it. s3:// honours the job's
    spec.storage.s3 (endpoint, region); credentials come from the environment or AWS config files."""
    if path.startswith("s3://"):
        options: dict = {"connect_timeout": S3_CONNECT_TIMEOUT_SECONDS, "request_timeout": S3_REQUEST_TIMEOUT_SECONDS}
        if storage.s3_endpoint:
            scheme, _, address = storage.s3_endpoint.rstrip("/").partition("://")
            options.update(endpoint_override=address, scheme=scheme)
        if storage.s3_region:
            options["region"] = storage.s3_region
        try:
            return pafs.S3FileSystem(**options), path[len("s3://") :].rstrip("/")
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"cannot reach object storage for {path!r}: {_first_line(exc)}") from None
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(use_mmap=True), os.path.abspath(path)


def _list_files(spec: InputSpec, filesystem: pafs.FileSystem, base: str) -> list[str]:
    where = f"input {spec.name!r}"
    try:
        info = filesystem.get_file_info(base)
    except OSError as exc:
        raise InputError(f"{where}: cannot open {spec.path!r}: {_first_line(exc)}") from None
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{where}: {spec.path!r} does not exist")
    local = isinstance(filesystem, pafs.LocalFileSystem)
    if info.type == pafs.FileType.File:
        if local:
            _check_local_file(where, base)
        return [base]
    if info.type != pafs.FileType.Directory:
        raise InputError(f"{where}: {spec.path!r} is not a file or directory")
    files = _list_local(where, base) if local else _list_remote(where, spec, filesystem, base)
    if not files:
        raise InputError(f"{where}: no {spec.format} files under {spec.path!r}")
    return sorted(files)


def _list_remote(where: str, spec: InputSpec, filesystem: pafs.FileSystem, base: str) -> list[str]:
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    except OSError as exc:
        raise InputError(f"{where}: cannot list {spec.path!r}: {_first_line(exc)}") from None
    files = []
    for entry in entries:
        relative = entry.path[len(base) :].lstrip("/")
        if any(part.startswith(IGNORED_PREFIXES) for part in relative.split("/")):
            continue
        if entry.type == pafs.FileType.File:
            files.append(entry.path)
        elif entry.type != pafs.FileType.Directory:
            raise InputError(f"{where}: {entry.path} is not a regular file")
    return files


def _list_local(where: str, directory: str, ancestors: frozenset[tuple[int, int]] = frozenset()) -> list[str]:
    """The files below a local directory, links followed. Listed with os.scandir rather than pyarrow's
    FileSelector, which leaves dangling links out: here a dangling link, a FIFO, a socket or an
    unreadable file or directory is refused, naming it."""
    try:
        status = os.stat(directory)
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        raise InputError(f"{where}: cannot list {directory}: {exc.strerror}") from None
    ancestors = ancestors | {(status.st_dev, status.st_ino)}
    files = []
    for entry in entries:
        if entry.name.startswith(IGNORED_PREFIXES):
            continue
        status = _local_status(where, entry.path)
        if stat.S_ISDIR(status.st_mode):
            if (status.st_dev, status.st_ino) in ancestors:
                raise InputError(f"{where}: {entry.path} is a link to a directory that contains it")
            files.extend(_list_local(where, entry.path, ancestors))
        else:
            _check_local_file(where, entry.path, status)
            files.append(entry.path)
    return files


def _local_status(where: str, path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"{where}: {path} is a link to nothing") from None
        raise InputError(f"{where}: {path} vanished while it was listed") from None
    except OSError as exc:
        raise InputError(f"{where}: {path}: {exc.strerror}") from None


def _check_local_file(where: str, path: str, status: os.stat_result | None = None) -> None:
    """pyarrow reports FIFOs and sockets as files; reading one would block or fail."""
    if not stat.S_ISREG((status or _local_status(where, path)).st_mode):
        raise InputError(f"{where}: {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{where}: {path} is not readable")


def describe_input(spec: InputSpec) -> InputInfo:
    """Everything about an input the planner and the agents need, read from metadata only."""
    if spec.generated:
        schema = generated_schema(spec)
        distinct = {column.name: float(column.distinct) for column in spec.columns}
        return InputInfo(spec, schema, stats=TableStats(spec.rows, {f.name: type_bytes(f.type) for f in schema}, column_distinct=distinct))
    filesystem, base = filesystem_and_path(spec.path, spec.storage)
    files = _list_files(spec, filesystem, base)
    reader = {"parquet": _describe_parquet, "ipc": _describe_ipc, "csv": _describe_csv}[spec.format]
    return reader(spec, filesystem, files)


def _unify(spec: InputSpec, schemas: list[tuple[str, pa.Schema]]) -> pa.Schema:
    """The engine schema of all files; refuses files whose column sets or types disagree."""
    first_path, first = schemas[0]
    columns = {f.name: f for f in first}
    if len(columns) != len(first):
        raise InputError(f"input {spec.name!r}: {first_path} has two columns of the same name")
    engine: dict[str, pa.Field] = {}
    for name, f in columns.items():
        # a column of a type the engine cannot handle keeps it: a query that reads it is refused when planned
        engine[name] = pa.field(name, T.engine_type(f.type) or f.type, f.nullable)
    for path, schema in schemas[1:]:
        names = set(schema.names)
        missing = [name for name in columns if name not in names]
        extra = [name for name in schema.names if name not in columns]
        if missing:
            raise InputError(f"input {spec.name!r}: {path} lacks column {missing[0]!r} that {first_path} has")
        if extra:
            raise InputError(f"input {spec.name!r}: {path} has column {extra[0]!r} that {first_path} lacks")
        for f in schema:
            data_type = T.engine_type(f.type) or f.type
            current = engine[f.name].type
            if not _compatible(current, data_type):
                raise InputError(
                    f"input {spec.name!r}: column {f.name!r} is {f.type} in {path} but {columns[f.name].type} in {first_path}"
                )
            engine[f.name] = pa.field(f.name, _wider(current, data_type), engine[f.name].nullable or f.nullable)
    return pa.schema([engine[name] for name in columns])


def _compatible(a: pa.DataType, b: pa.DataType) -> bool:
    if a.equals(b):
        return True
    if T.is_integer(a) and T.is_integer(b):
        return pa.types.is_signed_integer(a) == pa.types.is_signed_integer(b)
    if T.is_decimal(a) and T.is_decimal(b):
        return a.scale == b.scale
    if T.is_float(a) and T.is_float(b):
        return True
    return pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and a.tz == b.tz


def _wider(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a.equals(b):
        return a
    if T.is_decimal(a):
        return pa.decimal128(max(a.precision, b.precision), a.scale)
    if T.is_integer(a) or T.is_float(a):
        return a if a.bit_width >= b.bit_width else b
    return pa.timestamp(max(a.unit, b.unit, key=("s", "ms", "us", "ns").index), tz=a.tz)


def _describe_parquet(spec: InputSpec, filesystem: pafs.FileSystem, files: list[str]) -> InputInfo:
    schemas, units, column_stats = [], [], {}
    column_bytes: dict[str, float] = {}
    dictionary_candidates: dict[str, bool] = {}
    total_rows = 0
    for path in files:
        try:
            with filesystem.open_input_file(path) as handle:
                metadata = pq.ParquetFile(handle).metadata
                schema = metadata.schema.to_arrow_schema()
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"input {spec.name!r}: {path} is not a readable Parquet file: {_first_line(exc)}") from None
        schemas.append((path, schema))
        names = schema.names
        for index in range(metadata.num_row_groups):
            group = metadata.row_group(index)
            units.append(Unit(path, index, group.num_rows))
            total_rows += group.num_rows
            stats_of_group = {}
            for column_index in range(group.num_columns):
                chunk = group.column(column_index)
                name = chunk.path_in_schema
                if name not in names:
                    continue  # a nested leaf
                column_bytes[name] = column_bytes.get(name, 0.0) + chunk.total_uncompressed_size
                if chunk.is_stats_set and chunk.statistics is not None and chunk.statistics.has_min_max:
                    statistics = chunk.statistics
                    stats_of_group[name] = (statistics.min, statistics.max, statistics.null_count)
                if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
                    small = chunk.data_page_offset - chunk.dictionary_page_offset <= SMALL_DICTIONARY_BYTES
                    dictionary_candidates[name] = dictionary_candidates.get(name, True) and small
                else:
                    dictionary_candidates[name] = False
            column_stats[(path, index)] = stats_of_group
    unified = _unify(spec, schemas)
    dictionary = frozenset(name for name, small in dictionary_candidates.items() if small and T.is_string(unified.field(name).type))
    rows = max(total_rows, 1)
    stats = TableStats(total_rows, {name: total / rows for name, total in column_bytes.items()}, _value_ranges(column_stats))
    return InputInfo(spec, unified, filesystem, files, units, stats, dictionary, column_stats)


def _value_ranges(column_stats: dict[tuple[str, int], dict[str, tuple]]) -> dict[str, tuple]:
    """Each column's (min, max) over all row groups, for columns every row group has statistics of."""
    ranges: dict[str, tuple] = {}
    missing: set[str] = set()
    for index, group in enumerate(column_stats.values()):
        if index and set(ranges) - set(group):
            missing |= set(ranges) - set(group)
        for name, (low, high, _) in group.items():
            if index and name not in ranges:
                missing.add(name)
            if name in missing:
                continue
            try:
                ranges[name] = (low, high) if name not in ranges else (min(ranges[name][0], low), max(ranges[name][1], high))
            except TypeError:  # values of files whose types differ
                missing.add(name)
    return {name: value for name, value in ranges.items() if name not in missing}


def _describe_ipc(spec: InputSpec, filesystem: pafs.FileSystem, files: list[str]) -> InputInfo:
    schemas, units = [], []
    total_rows = 0
    for path in files:
        try:
            with filesystem.open_input_file(path) as handle:
                reader = pa.ipc.open_file(handle)
                schemas.append((path, reader.schema))
                for index in range(reader.num_record_batches):
                    rows = reader.get_batch(index).num_rows
                    units.append(Unit(path, index, rows))
                    total_rows += rows
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"input {spec.name!r}: {path} is not a readable Arrow IPC file: {_first_line(exc)}") from None
    unified = _unify(spec, schemas)
    stats = TableStats(total_rows, {f.name: type_bytes(f.type) for f in unified})
    return InputInfo(spec, unified, filesystem, files, units, stats)


def _describe_csv(spec: InputSpec, filesystem: pafs.FileSystem, files: list[str]) -> InputInfo:
    schemas, units = [], []
    total_bytes = 0
    for path in files:
        try:
            with filesystem.open_input_stream(path) as handle:
                reader = pa_csv.open_csv(handle, read_options=pa_csv.ReadOptions(block_size=CSV_SCHEMA_BLOCK_BYTES))
                schemas.append((path, reader.schema))
            size = filesystem.get_file_info(path).size or 0
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"input {spec.name!r}: {path} is not a readable CSV file: {_first_line(exc)}") from None
        total_bytes += size
        units.append(Unit(path, -1, max(size, 1)))
    try:
        file_schema = pa.unify_schemas([schema for _, schema in schemas], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"input {spec.name!r}: the CSV files' columns disagree: {_first_line(exc)}") from None
    _unify(spec, [(path, pa.schema([file_schema.field(name) for name in schema.names])) for path, schema in schemas])
    unified = _unify(spec, [(files[0], file_schema)])
    rows_estimate = max(1, total_bytes // 64)
    stats = TableStats(rows_estimate, {f.name: type_bytes(f.type) for f in unified})
    return InputInfo(spec, unified, filesystem, files, units, stats, csv_types={f.name: f.type for f in file_schema})


def resolve_schema(spec: InputSpec) -> pa.Schema:
    """The engine schema of an input (file inputs are opened and checked, generated ones described)."""
    return describe_input(spec).schema


class DescribedInputs:
    """A job's inputs, each described once by this process: validating the job file lists and reads
    the files' metadata, and planning the job uses that same description (listing and reading every
    footer again cost an agent 25 ms of its job time on TPC-H). A process plans a job once, so its
    plan and fingerprint are made of the listing it validated; agents still list on their own."""

    def __init__(self) -> None:
        self._infos: dict[InputSpec, InputInfo] = {}

    def describe(self, spec: InputSpec) -> InputInfo:
        if spec not in self._infos:
            self._infos[spec] = describe_input(spec)
        return self._infos[spec]

    def schema(self, spec: InputSpec) -> pa.Schema:
        return self.describe(spec).schema


# ---------------------------------------------------------------------------------------- pruning


def _python_value(value):
    if isinstance(value, (datetime.datetime, datetime.date, decimal.Decimal, int, bool)):
        return value
    return None


def _statistics_rule_out(predicate: E.Expr, stats: dict[str, tuple], columns: dict[str, str]) -> bool:
    """True when the row group's min/max/null counts prove no row satisfies the predicate."""
    for part in E.conjuncts(predicate):
        if _conjunct_ruled_out(part, stats, columns):
            return True
    return False


def _column_of(expr: E.Expr, columns: dict[str, str]) -> str | None:
    """The input column a (possibly widened) column reference reads, for types whose order
    statistics preserve: integers, decimals, dates, timestamps, booleans."""
    while isinstance(expr, E.Call) and expr.fn == "cast" and T.is_numeric(expr.type) == T.is_numeric(expr.args[0].type):
        expr = expr.args[0]
    if not isinstance(expr, E.Column) or expr.name not in columns:
        return None
    data_type = expr.type
    if T.is_integer(data_type) or T.is_decimal(data_type) or pa.types.is_date(data_type) or pa.types.is_timestamp(data_type):
        return columns[expr.name]
    return None


def _conjunct_ruled_out(part: E.Expr, stats: dict[str, tuple], columns: dict[str, str]) -> bool:
    if not isinstance(part, E.Call):
        return False
    if part.fn == "or":
        return all(_conjunct_ruled_out(arg, stats, columns) for arg in part.args)
    if part.fn == "and":
        return any(_conjunct_ruled_out(arg, stats, columns) for arg in part.args)
    if part.fn in ("eq", "lt", "le", "gt", "ge"):
        left, right = part.args
        fn = part.fn
        if isinstance(left, E.Literal) and not isinstance(right, E.Literal):
            left, right = right, left
            fn = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq"}[fn]
        source = _column_of(left, columns)
        if source is None or not isinstance(right, E.Literal) or source not in stats:
            return False
        value = _python_value(right.value)
        low, high, _ = stats[source]
        if value is None or low is None or high is None:
            return False
        try:
            if isinstance(low, datetime.datetime) != isinstance(value, datetime.datetime):
                return False
            return {"eq": value < low or value > high, "lt": low >= value, "le": low > value, "gt": high <= value, "ge": high < value}[fn]
        except TypeError:
            return False
    if part.fn == "in_list":
        source = _column_of(part.args[0], columns)
        if source is None or source not in stats or part.option("negated"):
            return False
        low, high, _ = stats[source]
        values = [_python_value(item) for item in part.option("values")]
        try:
            return all(value is not None and (value < low or value > high) for value in values)
        except TypeError:
            return False
    return False


def pruned_units(info: InputInfo, predicate: E.Expr | None, columns: dict[str, str]) -> list[Unit]:
    """The units whose statistics do not rule the predicate out (columns: output name -> input column)."""
    if predicate is None or not info.column_stats:
        return list(info.units)
    return [unit for unit in info.units if not _statistics_rule_out(predicate, info.column_stats.get((unit.path, unit.index), {}), columns)]


# ---------------------------------------------------------------------------------------- shares


def agent_share(units: list[Unit], agent_index: int, agent_count: int) -> list[Unit]:
    """Agent i's contiguous run of units holding about 1/N of the rows (big units split first)."""
    if not 0 <= agent_index < agent_count:
        raise ValueError(f"agent index {agent_index} is outside [0, {agent_count})")
    total = sum(unit.piece_rows for unit in units)
    if total == 0:
        return [unit for position, unit in enumerate(units) if position % agent_count == agent_index]
    fair = total / agent_count
    pieces: list[Unit] = []
    for unit in units:
        if unit.index >= 0 and unit.piece_rows > fair * SPLIT_FACTOR and agent_count > 1:
            count = min(agent_count, -(-unit.piece_rows // int(fair)))
            step = -(-unit.piece_rows // count)
            for offset in range(0, unit.piece_rows, step):
                pieces.append(Unit(unit.path, unit.index, unit.rows, unit.offset + offset, min(step, unit.piece_rows - offset)))
        else:
            pieces.append(unit)
    share, start = [], 0
    low, high = total * agent_index / agent_count, total * (agent_index + 1) / agent_count
    for piece in pieces:
        middle = start + piece.piece_rows / 2
        if low <= middle < high:
            share.append(piece)
        start += piece.piece_rows
    return share


def group_units(units: list[Unit], target_rows: int = TASK_ROWS) -> list[list[Unit]]:
    """Consecutive units batched into tasks of about target_rows rows."""
    tasks: list[list[Unit]] = []
    current: list[Unit] = []
    rows = 0
    for unit in units:
        if current and rows + unit.piece_rows > target_rows:
            tasks.append(current)
            current, rows = [], 0
        current.append(unit)
        rows += unit.piece_rows
    if current:
        tasks.append(current)
    return tasks


# ---------------------------------------------------------------------------------------- reading


def read_units(info: InputInfo, units: list[Unit], source_columns: list[str], encoded: bool = False) -> pa.Table:
    """The given columns of some units of a file input, in engine types; with `encoded`, string
    columns of small Parquet dictionaries stay dictionary-encoded (the scan decodes what it keeps)."""
    schema = pa.schema([info.schema.field(name) for name in source_columns])
    tables = [_read_run(info, run, source_columns) for run in _runs(info, units)]
    if not tables:
        return schema.empty_table()
    return concat_tables([_to_engine(table, schema, encoded) for table in tables])


def _runs(info: InputInfo, units: list[Unit]) -> list[list[Unit]]:
    """Consecutive whole Parquet row groups of one file are read in one call (cheaper than one each)."""
    runs: list[list[Unit]] = []
    for unit in units:
        if runs and info.spec.format == "parquet" and unit.length is None and runs[-1][-1].length is None and runs[-1][-1].path == unit.path:
            runs[-1].append(unit)
        else:
            runs.append([unit])
    return runs


def _read_run(info: InputInfo, run: list[Unit], columns: list[str]) -> pa.Table:
    if info.spec.format != "parquet":
        return _read_unit(info, run[0], columns)
    unit = run[0]
    dictionary = [name for name in columns if name in info.dictionary_columns]
    read_schema = pa.schema([
        pa.field(name, pa.dictionary(pa.int32(), pa.string()) if name in dictionary else info.schema.field(name).type)
        for name in columns
    ])  # fmt: skip
    try:
        fragment = _opened(info, unit.path).subset(row_group_ids=[piece.index for piece in run])
        table = fragment.to_table(schema=read_schema, columns=columns, use_threads=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"input {info.spec.name!r}: reading {unit.path} failed: {_first_line(exc)}") from None
    if unit.length is not None:
        table = slice_rows(table, unit.offset, unit.length)
    return table


def _opened(info: InputInfo, path: str) -> ds.ParquetFileFragment:
    """The whole file as a fragment with its footer parsed (tasks racing on a first read each parse it: harmless)."""
    fragment = info.opened.get(path)
    if fragment is None:
        # the input's small-dictionary columns are read as dictionaries whichever of them a read asks for
        options = ds.ParquetReadOptions(dictionary_columns=sorted(info.dictionary_columns))
        # pre-buffering coalesces a row group's column chunks into few requests: right for object
        # storage; from a local file it cost 3-6 % more (TPC-H SF1 lineitem, orders, partsupp)
        local = isinstance(info.filesystem, pafs.LocalFileSystem)
        scan_options = ds.ParquetFragmentScanOptions(pre_buffer=not local)
        fragment = ds.ParquetFileFormat(read_options=options, default_fragment_scan_options=scan_options).make_fragment(path, info.filesystem)
        fragment.ensure_complete_metadata()
        info.opened[path] = fragment
    return fragment


def _read_unit(info: InputInfo, unit: Unit, columns: list[str]) -> pa.Table:
    """One IPC record batch or CSV file."""
    spec = info.spec
    try:
        if spec.format == "ipc":
            with info.filesystem.open_input_file(unit.path) as handle:
                batch = pa.ipc.open_file(handle).get_batch(unit.index)
            table = pa.Table.from_batches([batch]).select(columns)
        else:
            convert = pa_csv.ConvertOptions(column_types=info.csv_types, include_columns=columns)
            with info.filesystem.open_input_stream(unit.path) as handle:
                table = pa_csv.read_csv(handle, convert_options=convert)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"input {spec.name!r}: reading {unit.path} failed: {_first_line(exc)}") from None
    if unit.length is not None:
        table = slice_rows(table, unit.offset, unit.length)
    return table


def _to_engine(table: pa.Table, schema: pa.Schema, encoded: bool) -> pa.Table:
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns = []
    for f in schema:
        column = table.column(f.name)
        keep = column.type.equals(f.type) or (encoded and pa.types.is_dictionary(column.type) and column.type.value_type.equals(f.type))
        columns.append(column if keep else pc.cast(column, f.type))
    return pa.Table.from_arrays(columns, names=schema.names)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ---------------------------------------------------------------------------------------- generated


class RowRanges(Sequence):
    """Rows [first, last) as batches [start, stop) of `step` rows (the last one shorter), each computed
    when it is asked for: 10^12 rows are ~950 K batches, too many to list (138 MiB)."""

    def __init__(self, first: int, last: int, step: int = GENERATE_BATCH_ROWS):
        self._starts = range(first, last, step)
        self._last = last

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index: int) -> tuple[int, int]:
        start = self._starts[index]  # an IndexError past the end ends iteration
        return start, min(self._last, start + self._starts.step)


def generated_ranges(spec: InputSpec, agent_index: int, agent_count: int) -> RowRanges:
    """Agent i's rows of a generated input, as batches [start, stop)."""
    if not 0 <= agent_index < agent_count:
        raise ValueError(f"agent index {agent_index} is outside [0, {agent_count})")
    return RowRanges(spec.rows * agent_index // agent_count, spec.rows * (agent_index + 1) // agent_count)


def read_share(spec: InputSpec, agent_index: int, agent_count: int) -> Iterator[pa.RecordBatch]:
    """This agent's share of a generated input, batch by batch (never the whole share at once)."""
    for start, stop in generated_ranges(spec, agent_index, agent_count):
        yield generate_rows(spec, start, stop)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: a well-mixed 64-bit value per input, wrapping uint64 arithmetic."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _column_salt(seed: int, column: str, purpose: str) -> np.uint64:
    return np.uint64((fnv1a_64(f"{seed}/{column}/{purpose}") + (1 << 64)) % (1 << 64))


def generate_column(column: GeneratedColumn, seed: int, start: int, stop: int) -> pa.Array:
    """Rows [start, stop) of one generated column: value k in [0, distinct) per row, nulls by fraction."""
    rows = np.arange(start, stop, dtype=np.uint64)
    keys = _splitmix64(rows ^ _column_salt(seed, column.name, "value")) % np.uint64(column.distinct)
    mask = None
    if column.null_fraction > 0:
        uniform = (_splitmix64(rows ^ _column_salt(seed, column.name, "null")) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        mask = uniform < column.null_fraction
    if column.type == "int64":
        return pa.array(keys.astype(np.int64), type=pa.int64(), mask=mask)
    if column.type == "float64":
        # quarters are exact in binary floating point, so sums do not depend on the order of addition
        return pa.array(keys.astype(np.float64) * 0.25, type=pa.float64(), mask=mask)
    numbers = pc.cast(pa.array(keys.astype(np.int64), mask=mask), pa.string())
    return pc.binary_join_element_wise(f"{column.name}-", numbers, "")


def generate_rows(spec: InputSpec, start: int, stop: int) -> pa.RecordBatch:
    columns = [generate_column(column, spec.seed, start, stop) for column in spec.columns]
    return pa.RecordBatch.from_arrays(columns, schema=generated_schema(spec))


def generate_table(spec: InputSpec) -> pa.Table:
    """The whole generated input in one process (tests compare the distributed result against it)."""
    return pa.Table.from_batches(list(read_share(spec, 0, 1)), schema=generated_schema(spec))
