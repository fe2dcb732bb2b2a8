"""The SQL front-end: DataFusion parses, resolves and optimizes; we read its logical plan.

DataFusion (a well-kept planner, evaluated against sqlglot in docs/decisions.md) turns the query into an
optimized logical plan: names resolved, subqueries decorrelated into semi/anti/left joins, predicates
and projections pushed down, cross joins replaced by equi-joins. It runs over empty tables that only
carry the inputs' schemas: it never reads data and never executes anything. This module walks that
plan and rebuilds it as Sabot's logical plan, typing every expression by Sabot's own rules
(`plan.types`, which follow duckdb), so DataFusion's type choices never leak into results.

Everything DataFusion reports (syntax errors with line and column, unknown tables and columns) and
everything the walk does not support becomes a PlanError with one line naming the problem.
"""

from __future__ import annotations

import datetime
import decimal
import re

import datafusion
import pyarrow as pa

from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan import types as T
from sabot_agent.plan.types import PlanError

_DF_OPTIONS = {
    # 0.06 is the decimal 0.06, as in duckdb and the SQL standard, not a float
    "datafusion.sql_parser.parse_float_as_decimal": "true",
    "datafusion.execution.target_partitions": "1",
    # uncorrelated scalar subqueries become joins in the logical plan (we run them as stages)
    "datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery": "false",
    # ORDER BY without NULLS FIRST/LAST puts NULLs last in both directions, as duckdb does
    "datafusion.sql_parser.default_null_ordering": "nulls_last",
}
# DataFusion 55 binds the column of a RIGHT/FULL JOIN ... USING to the left side's key (apache/datafusion
# #22881); the walk merges the keys, and the optimizer must not reason about that column as the left key
_OUTER_USING = (re.compile(r"\b(RIGHT|FULL)\b", re.IGNORECASE), re.compile(r"\b(USING|NATURAL)\b", re.IGNORECASE))
_SET_OPERATION_ALL = re.compile(r"\b(INTERSECT|EXCEPT)\s+ALL\b", re.IGNORECASE)


def plan_sql(sql: str, tables: dict[str, pa.Schema]) -> L.Query:
    """Plan one SELECT statement over tables of the given (engine) schemas."""
    if not sql.strip():
        raise PlanError("the query is empty")
    config = datafusion.SessionConfig()
    for key, value in _DF_OPTIONS.items():
        config = config.set(key, value)
    context = datafusion.SessionContext(config)
    if all(pattern.search(sql) for pattern in _OUTER_USING):
        context.remove_optimizer_rule("eliminate_outer_join")  # it would take the merged column for the left key
    for name, schema in tables.items():
        context.register_record_batches(name, [[pa.RecordBatch.from_pylist([], schema=schema)]])
    options = datafusion.SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
    try:
        frame = context.sql_with_options(sql, options)
        plan = frame.optimized_logical_plan()
        written = frame.logical_plan()  # names as the query wrote them (the optimizer aliases rewrites)
    except Exception as exc:  # DataFusion raises plain Exception subclasses with its own text
        raise PlanError(_datafusion_message(str(exc), tables, sql)) from None
    converter = _Converter({name: {f.name: f.type for f in schema} for name, schema in tables.items()}, sql)
    root = converter.node(plan)
    return L.Query(root=root, output_names=tuple(_output_names(written, root)), ordered=_is_ordered(plan))


def _float_coerced_to_decimal(source: pa.DataType, target: pa.DataType) -> bool:
    """A cast DataFusion's type coercion puts on a float against a decimal operand: float64 to
    decimal(p >= 30, 15), float32 to decimal(p >= 14, 7) (wider when the other side needs more digits)."""
    if not (T.is_float(source) and T.is_decimal(target)):
        return False
    precision, scale = (30, 15) if pa.types.is_float64(source) else (14, 7)
    return target.scale == scale and target.precision >= precision


def _input_name(table: str, tables: dict) -> str:
    """The job input a scan reads: DataFusion keeps the name as written, and the inputs are registered in
    its default catalog and schema, so `public.t` and `datafusion.public.t` name input `t` too."""
    parts = table.split(".")
    for prefix in (["datafusion", "public"], ["public"]):
        if parts[: len(prefix)] == prefix and ".".join(parts[len(prefix):]) in tables:
            return ".".join(parts[len(prefix):])
    return table


# ---------------------------------------------------------------------------------------- errors

_LINE_COLUMN = re.compile(r"(?:at )?Line: (\d+), Column: (\d+)")


def _datafusion_message(text: str, tables: dict[str, pa.Schema], sql: str) -> str:
    text = " ".join(text.split())
    if "ParserError" in text or "SQL error" in text or "sql parser error" in text:
        detail = re.sub(r'^.*ParserError\("(.*)"\).*$', r"\1", text)
        detail = re.sub(r"^SQL error: ", "", detail)
        position = _LINE_COLUMN.search(detail)
        detail = _LINE_COLUMN.sub("", detail).strip().rstrip(".")
        if position:
            return f"syntax error at line {position.group(1)}, column {position.group(2)}: {detail}"
        if detail.endswith("found: EOF"):  # the parser gives no position for the end of the text
            line, column = _end_position(sql)
            return f"syntax error at line {line}, column {column}: {detail}"
        return f"syntax error: {detail}"
    if match := re.search(r"table '(?:datafusion\.)?(?:public\.)?([^']+)' not found", text):
        return f"unknown table {match.group(1)!r} (tables: {', '.join(sorted(tables)) or 'none'})"
    if match := re.search(r"No field named (.+?)\.(?: Did you mean '([^']*)'\?)?(?: Valid fields are (.*?)\.?)?\s*$", text):
        suggestion = f", did you mean {match.group(2)}?" if match.group(2) else ""
        return f"unknown column {match.group(1).strip(chr(34))}{suggestion} (columns: {match.group(3) or ''})"
    text = re.sub(r"^(Error during planning|Schema error|This feature is not implemented|Optimizer rule '[^']*' failed): ", "", text)
    if "not implemented" in text.lower() or "Unsupported" in text:
        return f"not supported: {text}"
    return text


def _end_position(sql: str) -> tuple[int, int]:
    """Line and column (1-based) just after the last character of the query that is not white space."""
    lines = sql.rstrip().splitlines() or [""]
    return len(lines), len(lines[-1]) + 1


# ---------------------------------------------------------------------------------------- names


def _output_names(plan, root: L.Node) -> list[str]:
    """Column names as a SQL user expects: bare column names, aliases, or the expression's text with
    table qualifiers removed; duplicates get a numeric suffix."""
    names = []
    qualifiers = _qualifiers(plan)
    projection = _top_projection(plan)
    if projection is not None:
        for expr in projection.to_variant().projections():
            names.append(_expression_name(expr, qualifiers))
    else:
        names = [_strip_qualifiers(name, qualifiers) for name in L.schema_names(root.schema)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def _top_projection(plan):
    while True:
        variant = type(plan.to_variant()).__name__
        if variant == "Projection":
            return plan
        if variant not in ("Sort", "Limit"):
            return None
        plan = plan.inputs()[0]


def _expression_name(expr, qualifiers: set[str]) -> str:
    variant = expr.variant_name()
    if variant == "Alias":
        return expr.to_variant().alias()
    if variant == "Column":
        column = expr.to_variant()
        # a column of a table is named as it is; one without a relation is an expression's output (an aggregate's)
        return column.name() if column.relation() is not None else _strip_qualifiers(column.name(), qualifiers)
    return _strip_qualifiers(expr.schema_name(), qualifiers)


# DataFusion writes a literal in an expression's name with its type: Int64(1), Utf8("x"), Boolean(true),
# Decimal128(Some(5),3,2); a SQL user wrote 1, 'x', true, 0.05
_TYPED_LITERAL = re.compile(r'\b(?:U?Int(?:8|16|32|64)|Float(?:16|32|64)|Boolean)\(([^()]*)\)|\bUtf8(?:View)?\("((?:[^"\\]|\\.)*)"\)'
                            r"|\bDecimal128\(Some\((-?\d+)\),\d+,(\d+)\)|\bDecimal128\((-?[\d.]+),\d+,-?\d+\)")


def _literal_text(match: re.Match) -> str:
    if match.group(5) is not None:
        return match.group(5)
    if match.group(3) is not None:
        digits, scale = match.group(3), int(match.group(4))
        sign, digits = ("-", digits[1:]) if digits.startswith("-") else ("", digits)
        digits = digits.rjust(scale + 1, "0")
        return sign + (f"{digits[:-scale]}.{digits[-scale:]}" if scale else digits)
    if match.group(2) is not None:
        return "'" + match.group(2).replace("'", "''") + "'"
    return match.group(1)


def _strip_qualifiers(name: str, qualifiers: set[str]) -> str:
    """An expression's name as its SQL text reads: without table qualifiers, literals as written."""
    for qualifier in sorted(qualifiers, key=len, reverse=True):
        name = re.sub(rf"(?<![\w.]){re.escape(qualifier)}\.", "", name)
    return _TYPED_LITERAL.sub(_literal_text, name)


def _qualifiers(plan) -> set[str]:
    found = set()
    variant = plan.to_variant()
    name = type(variant).__name__
    if name == "TableScan":
        found.add(variant.table_name())
    elif name == "SubqueryAlias":
        found.add(variant.alias())
    for child in plan.inputs():
        found |= _qualifiers(child)
    return found


def _is_ordered(plan) -> bool:
    while True:
        variant = type(plan.to_variant()).__name__
        if variant == "Sort":
            return True
        if variant not in ("Projection", "Limit"):
            return False
        plan = plan.inputs()[0]


# ---------------------------------------------------------------------------------------- types

_DF_SIMPLE_TYPES = {
    "Boolean": pa.bool_(), "Int8": pa.int8(), "Int16": pa.int16(), "Int32": pa.int32(), "Int64": pa.int64(), "UInt8": pa.uint8(),
    "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(), "Float16": pa.float32(), "Float32": pa.float32(),
    "Float64": pa.float64(), "Utf8": pa.string(), "Utf8View": pa.string(), "LargeUtf8": pa.string(), "Binary": pa.binary(),
    "BinaryView": pa.binary(), "LargeBinary": pa.binary(), "Date32": pa.date32(), "Date64": pa.date64(), "Null": pa.null(),
}  # fmt: skip
_DF_UNITS = {"s": "s", "ms": "ms", "µs": "us", "us": "us", "ns": "ns", "Second": "s", "Millisecond": "ms", "Microsecond": "us",
             "Nanosecond": "ns"}  # fmt: skip


def _datafusion_type(text: str) -> pa.DataType:
    text = text.strip()
    if text in _DF_SIMPLE_TYPES:
        return _DF_SIMPLE_TYPES[text]
    if match := re.fullmatch(r"Decimal(?:128|256|32|64)\((\d+), (-?\d+)\)", text):
        precision, scale = int(match.group(1)), int(match.group(2))
        if precision > T.MAX_DECIMAL_PRECISION:
            raise PlanError(f"decimal precision {precision} is above {T.MAX_DECIMAL_PRECISION}")
        return pa.decimal128(precision, max(scale, 0))
    if match := re.fullmatch(r'Timestamp\((\w+|µs)(?:, (?:Some\()?"?([^")]*)"?\)?)?\)', text):
        tz = match.group(2)
        return pa.timestamp(_DF_UNITS[match.group(1)], tz=None if tz in (None, "None", "") else tz)
    if match := re.fullmatch(r"Time(32|64)\((\w+|µs)\)", text):
        unit = _DF_UNITS[match.group(2)]
        return pa.time32(unit) if match.group(1) == "32" else pa.time64(unit)
    if match := re.fullmatch(r"Duration\((\w+|µs)\)", text):
        return pa.duration(_DF_UNITS[match.group(1)])
    raise PlanError(f"type {text} is not supported yet")


def _cast_target(expr) -> pa.DataType:
    """The target type of a CAST/TRY_CAST, read from its canonical text `CAST(<expr> AS <type>)`."""
    text = expr.canonical_name()
    inner = text[text.index("(") + 1 : -1]
    return _datafusion_type(inner.rsplit(" AS ", 1)[1])


# ---------------------------------------------------------------------------------------- plan walk


class _Converter:
    def __init__(self, tables: dict[str, dict[str, pa.DataType]], sql: str):
        self.tables = tables
        self.sql = sql

    def node(self, plan) -> L.Node:
        variant = plan.to_variant()
        kind = type(variant).__name__
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise PlanError(_unsupported_plan(kind))
        node = handler(plan, variant)
        return node

    def _children(self, plan) -> list[L.Node]:
        return [self.node(child) for child in plan.inputs()]

    # -- leaves

    def _TableScan(self, plan, scan) -> L.Node:
        names = scan.schema().field_names()
        table = _input_name(scan.table_name(), self.tables)
        columns = tuple((name, source) for name, (_, source) in zip(names, scan.projection()))
        types = tuple(self.tables[table][source] for _, source in columns)
        for (_, source), data_type in zip(columns, types):
            if T.engine_type(data_type) is None:
                raise PlanError(f"column {source!r} of {table!r} has type {data_type}, which is not supported yet")
        node: L.Node = L.Scan(table=table, columns=columns, source_types=types)
        filters = [self.expr(f, node.schema) for f in scan.filters()]
        if filters:
            node = L.Filter(node, E.conjunction(filters))
        return node

    def _EmptyRelation(self, plan, empty) -> L.Node:
        return L.Values(fields=(), rows=((),) if empty.produce_one_row() else ())

    def _Values(self, plan, values) -> L.Node:
        names = values.schema().field_names()
        rows = [[self.expr(cell, ()) for cell in row] for row in values.values()]
        if not rows:
            raise PlanError("VALUES without rows")
        column_types = [T.common_type([row[i].type for row in rows], f"VALUES column {i + 1}") for i in range(len(names))]
        for row in rows:
            if not all(isinstance(cell, E.Literal) for cell in row):
                raise PlanError("VALUES with non-constant expressions is not supported yet")
        fields = tuple(L.Field(name, data_type) for name, data_type in zip(names, column_types))
        typed_rows = tuple(tuple(E.cast(cell, data_type).value for cell, data_type in zip(row, column_types)) for row in rows)
        return L.Values(fields=fields, rows=typed_rows)

    # -- unary

    def _Projection(self, plan, projection) -> L.Node:
        (child,) = self._children(plan)
        names = projection.schema().field_names()
        exprs = tuple((name, self.expr(expr, child.schema)) for name, expr in zip(names, projection.projections()))
        return L.Project(child, exprs)

    def _Filter(self, plan, filter_) -> L.Node:
        (child,) = self._children(plan)
        return L.Filter(child, E.cast(self.expr(filter_.predicate(), child.schema), pa.bool_()))

    def _SubqueryAlias(self, plan, alias) -> L.Node:
        (child,) = self._children(plan)
        names = alias.schema().field_names()
        return L.Project(child, tuple((name, E.column(f.name, f.type)) for name, f in zip(names, child.schema)))

    def _Aggregate(self, plan, aggregate) -> L.Node:
        (child,) = self._children(plan)
        names = aggregate.schema().field_names()
        groups = aggregate.group_by_exprs()
        if any(group.variant_name() == "GroupingSet" for group in groups):
            raise PlanError("GROUPING SETS, ROLLUP and CUBE are not supported yet")
        keys = tuple((name, self.expr(group, child.schema)) for name, group in zip(names, groups))
        calls = tuple((name, self._aggregate_call(expr, child.schema)) for name, expr in zip(names[len(groups) :], aggregate.aggregate_exprs()))
        return L.Aggregate(child, keys, calls)

    def _aggregate_call(self, expr, schema: L.Schema) -> L.AggregateCall:
        if expr.variant_name() == "Alias":
            expr = expr.to_variant().expr()
        if expr.variant_name() != "AggregateFunction":
            raise PlanError(f"aggregate expression {expr.schema_name()} is not supported yet")
        call = expr.to_variant()
        text = expr.canonical_name()
        if " FILTER (WHERE " in text or " ORDER BY [" in text:
            raise PlanError(f"aggregate {text}: FILTER and ORDER BY inside aggregates are not supported yet")
        name = call.aggregate_type().lower()
        args = list(call.args())
        function = {"sum": "sum", "min": "min", "max": "max", "avg": "mean", "mean": "mean", "count": "count"}.get(name)
        if function is None:
            raise PlanError(f"aggregate function {name} is not supported yet")
        distinct = bool(call.is_distinct())
        if function == "count" and (not args or (args[0].variant_name() == "Literal" and not distinct)):
            return L.AggregateCall("count_all", None, pa.int64())
        if len(args) != 1:
            raise PlanError(f"aggregate {name} with {len(args)} arguments is not supported")
        argument = self.expr(args[0], schema)
        if T.is_null(argument.type):
            argument = E.cast(argument, pa.int32())
        if function == "sum":
            argument = E.cast(argument, T.sum_argument_type(argument.type))
        return L.AggregateCall(function, argument, T.aggregate_type(function, argument.type), distinct)

    def _Sort(self, plan, sort) -> L.Node:
        (child,) = self._children(plan)
        keys = tuple(L.SortKey(self.expr(key.expr(), child.schema), bool(key.ascending()), bool(key.nulls_first())) for key in sort.sort_exprs())
        fetch = sort.get_fetch_val()
        return L.Sort(child, keys, limit=None if fetch is None else int(fetch))

    def _Limit(self, plan, limit) -> L.Node:
        (child,) = self._children(plan)
        return L.Limit(child, _limit_value(limit.fetch()), _limit_value(limit.skip()) or 0)

    def _Distinct(self, plan, distinct) -> L.Node:
        (child,) = self._children(plan)
        return L.Aggregate(child, tuple((f.name, E.column(f.name, f.type)) for f in child.schema), ())

    # -- n-ary

    def _Union(self, plan, union) -> L.Node:
        parts = self._children(plan)
        names = union.schema().field_names()
        width = len(names)
        if any(len(part.schema) != width for part in parts):
            raise PlanError("UNION inputs have different numbers of columns")
        column_types = [T.common_type([part.schema[i].type for part in parts], f"UNION column {names[i]}") for i in range(width)]
        aligned = []
        for part in parts:
            exprs = tuple(
                (name, E.cast(E.column(f.name, f.type), data_type)) for name, f, data_type in zip(names, part.schema, column_types)
            )
            aligned.append(L.Project(part, exprs))
        return L.Union(tuple(aligned))

    def _Join(self, plan, join) -> L.Node:
        left, right = self._children(plan)
        kind = str(join.join_type()).split(".")[-1]
        null_equal = bool(join.null_equals_null())
        if null_equal and kind in ("LeftSemi", "LeftAnti", "RightSemi", "RightAnti") and _SET_OPERATION_ALL.search(self.sql):
            raise PlanError("INTERSECT ALL and EXCEPT ALL are not supported yet (INTERSECT and EXCEPT are)")
        on = list(join.on())
        pairs = [(self.expr(a, left.schema), self.expr(b, right.schema)) for a, b in on]
        residual = join.filter()
        null_aware = "null_aware" in plan.display()
        merged = self._using_columns(join, kind, on) if kind in ("Right", "Full") else {}
        if kind in ("RightSemi", "RightAnti"):
            left, right = right, left
            pairs = [(b, a) for a, b in pairs]
            kind = "LeftSemi" if kind == "RightSemi" else "LeftAnti"
        mapping = {"Inner": "inner", "Left": "left", "Right": "right", "Full": "full", "LeftSemi": "semi", "LeftAnti": "anti"}
        if kind not in mapping:
            raise PlanError(f"{kind} joins are not supported yet (an EXISTS or IN subquery inside OR, for example)")
        ours = mapping[kind]
        if ours == "anti" and null_aware:
            ours = "anti_null_aware"
        left_keys, right_keys, typed = [], [], []
        for a, b in pairs:
            target = T.comparable(a.type, b.type, "join keys")
            a, b = E.cast(a, target), E.cast(b, target)
            typed.append((a, b))
            if null_equal:
                # IS NOT DISTINCT FROM (INTERSECT, EXCEPT): NULL keys never match, so match on
                # "is NULL" and the value with NULL replaced, which are never NULL
                left_keys.append(E.call("is_null", a))
                right_keys.append(E.call("is_null", b))
                a, b = E.call("coalesce", a, _filler(target)), E.call("coalesce", b, _filler(target))
            left_keys.append(a)
            right_keys.append(b)
        both = left.schema + right.schema
        residual_expr = self.expr(residual, both) if residual is not None else None
        if not left_keys:
            if ours == "inner":
                ours = "cross"
            elif ours == "left" and residual_expr is None and _is_scalar_subquery(plan.inputs()[1]):
                ours = "single"  # an uncorrelated scalar subquery: at most one row, NULL when empty
            else:
                raise PlanError(f"{kind} joins without an equality condition are not supported yet")
        node = L.Join(left, right, ours, tuple(left_keys), tuple(right_keys), residual_expr)
        if not merged:
            return node
        # the USING column is COALESCE(left key, right key); DataFusion refers to it by the left key's name
        replaced = {name: E.call("coalesce", *typed[index]) for index, name in merged.items()}
        return L.Project(node, tuple((f.name, replaced.get(f.name) or E.column(f.name, f.type)) for f in node.schema))

    def _using_columns(self, join, kind: str, on) -> dict[int, str]:
        """The key pairs that are USING columns of a RIGHT/FULL join, by index, with the name of the
        left key's column in the join's output. Unqualified references must see the merged value; a
        qualified reference to the left key is refused, as DataFusion's plan does not tell it apart."""
        if str(join.join_constraint()).split(".")[-1] != "Using":
            return {}
        names = {}
        for index, (a, _) in enumerate(on):
            while a.variant_name() == "Cast":
                a = a.to_variant().expr()
            if a.variant_name() != "Column":
                continue
            column = a.to_variant()
            relation, name = column.relation(), column.name()
            if relation and re.search(rf'(?<![\w."])"?{re.escape(relation)}"?\s*\.\s*"?{re.escape(name)}"?(?![\w"])', self.sql, re.IGNORECASE):
                raise PlanError(f"{relation}.{name} in a query with {kind.upper()} JOIN ... USING ({name}) is not supported yet "
                                f"(write the USING column unqualified, or join with ON)")  # fmt: skip
            names[index] = f"{relation}.{name}" if relation else name
        return names

    def _Window(self, plan, window) -> L.Node:
        raise PlanError("window functions are not supported yet")

    _WindowExpr = _Window

    # -- expressions

    def expr(self, expr, schema: L.Schema) -> E.Expr:
        return _Expressions(schema).expr(expr)


_FILLERS = ((T.is_integer, 0), (T.is_float, 0.0), (T.is_decimal, decimal.Decimal(0)), (T.is_string, ""), (pa.types.is_binary, b""),
            (pa.types.is_boolean, False), (pa.types.is_date, datetime.date(1970, 1, 1)),
            (pa.types.is_timestamp, datetime.datetime(1970, 1, 1)))  # fmt: skip


def _filler(data_type: pa.DataType) -> E.Expr:
    """Any non-NULL value of a type (what a NULL key is replaced by in an IS NOT DISTINCT FROM join)."""
    for test, value in _FILLERS:
        if test(data_type):
            return E.literal(value, data_type)
    raise PlanError(f"IS NOT DISTINCT FROM (INTERSECT, EXCEPT) on {data_type} is not supported yet")


def _is_scalar_subquery(plan) -> bool:
    variant = plan.to_variant()
    return type(variant).__name__ == "SubqueryAlias" and variant.alias().startswith("__scalar_sq_")


def _unsupported_plan(kind: str) -> str:
    words = {"Window": "window functions", "Unnest": "UNNEST", "RecursiveQuery": "recursive queries", "Extension": "this construct",
             "Repartition": "repartition hints", "Explain": "EXPLAIN", "Analyze": "EXPLAIN ANALYZE", "CopyTo": "COPY",
             "DmlStatement": "INSERT/UPDATE/DELETE", "Statement": "statements other than SELECT"}  # fmt: skip
    return f"{words.get(kind, kind)} {'are' if words.get(kind, kind).endswith('s') else 'is'} not supported yet"


def _limit_value(expr) -> int | None:
    if expr is None:
        return None
    value = expr.python_value()
    value = value.as_py() if hasattr(value, "as_py") else value
    return None if value is None else int(value)


class _Expressions:
    """Converts DataFusion expressions over the columns of `schema` into Sabot expressions."""

    def __init__(self, schema: L.Schema):
        self._types = {f.name: f.type for f in schema}

    def expr(self, expr) -> E.Expr:
        variant = expr.variant_name()
        handler = getattr(self, f"_{variant}", None)
        if handler is None:
            raise PlanError(f"expression {expr.schema_name()} ({variant}) is not supported yet")
        return handler(expr)

    def _Alias(self, expr) -> E.Expr:
        return self.expr(expr.to_variant().expr())

    def _Column(self, expr) -> E.Expr:
        column = expr.to_variant()
        relation = column.relation()
        name = f"{relation}.{column.name()}" if relation else column.name()
        if name not in self._types:
            # DataFusion refers to some computed columns by their unqualified display name
            if column.name() in self._types:
                name = column.name()
            else:
                raise PlanError(f"internal planning error: column {name} is not produced by the input ({', '.join(self._types)})")
        return E.column(name, self._types[name])

    def _Literal(self, expr) -> E.Expr:
        return _literal(expr)

    def _Cast(self, expr) -> E.Expr:
        inner = self.expr(expr.to_variant().expr())
        target = _cast_target(expr)
        if isinstance(inner, E.Literal) and T.is_decimal(target) and (T.is_integer(inner.type) or T.is_decimal(inner.type)):
            # a cast DataFusion put on a numeric constant to match the other operand's type: keep the
            # constant's own (smallest) type, so the result is typed by Sabot's rules
            return inner
        if isinstance(inner, E.Literal) and inner.value is not None and T.is_decimal(target) and T.is_float(inner.type):
            return E.literal(decimal.Decimal(repr(inner.value)))
        if _float_coerced_to_decimal(inner.type, target):
            # DataFusion's coercion of a float against a decimal (a literal such as 1.5): it would fail on
            # inf, NaN and values beyond 10^15 and round float32s; in duckdb the float wins, as in Sabot's rules
            return inner
        return E.cast(inner, target)

    def _TryCast(self, expr) -> E.Expr:
        inner = self.expr(expr.to_variant().expr())
        target = _cast_target(expr)
        if inner.type.equals(target):
            return inner
        return E.Call(target, "try_cast", (inner,))

    def _Not(self, expr) -> E.Expr:
        return E.call("not", self.expr(expr.to_variant().expr()))

    def _Negative(self, expr) -> E.Expr:
        return E.call("negate", self.expr(expr.to_variant().expr()))

    def _IsNull(self, expr) -> E.Expr:
        return E.call("is_null", self.expr(expr.to_variant().expr()))

    def _IsNotNull(self, expr) -> E.Expr:
        return E.call("is_not_null", self.expr(expr.to_variant().expr()))

    def _truth_test(self, expr, value: bool, negated: bool) -> E.Expr:
        inner = E.cast(self.expr(expr.to_variant().expr()), pa.bool_())
        test = E.call("coalesce", inner if value else E.call("not", inner), E.literal(False))
        return E.call("not", test) if negated else test

    def _IsTrue(self, expr):
        return self._truth_test(expr, True, False)

    def _IsFalse(self, expr):
        return self._truth_test(expr, False, False)

    def _IsNotTrue(self, expr):
        return self._truth_test(expr, True, True)

    def _IsNotFalse(self, expr):
        return self._truth_test(expr, False, True)

    def _IsUnknown(self, expr):
        return E.call("is_null", E.cast(self.expr(expr.to_variant().expr()), pa.bool_()))

    def _IsNotUnknown(self, expr):
        return E.call("is_not_null", E.cast(self.expr(expr.to_variant().expr()), pa.bool_()))

    def _Between(self, expr) -> E.Expr:
        between = expr.to_variant()
        value, low, high = self.expr(between.expr()), self.expr(between.low()), self.expr(between.high())
        if between.negated():
            return E.call("or", E.call("lt", value, low), E.call("gt", value, high))
        return E.call("and", E.call("ge", value, low), E.call("le", value, high))

    def _InList(self, expr) -> E.Expr:
        in_list = expr.to_variant()
        return E.call("in_list", self.expr(in_list.expr()), *[self.expr(item) for item in in_list.list()], negated=bool(in_list.negated()))

    def _Like(self, expr) -> E.Expr:
        like = expr.to_variant()
        escape = like.escape_char()
        if escape not in (None, "\\"):
            raise PlanError(f"LIKE ... ESCAPE {escape!r} is not supported yet (the escape character is \\)")
        operand = like.expr()
        text = expr.canonical_name()
        case_insensitive = text.startswith(operand.canonical_name() + " ILIKE") or text.startswith(operand.canonical_name() + " NOT ILIKE")
        return E.call("like", self.expr(operand), self.expr(like.pattern()), negated=bool(like.negated()), case_insensitive=case_insensitive)

    def _SimilarTo(self, expr) -> E.Expr:
        raise PlanError("SIMILAR TO and regular expressions are not supported yet")

    def _Case(self, expr) -> E.Expr:
        case = expr.to_variant()
        base = case.expr()
        base_expr = self.expr(base) if base is not None else None
        args: list[E.Expr] = []
        for when, then in case.when_then_expr():
            condition = self.expr(when)
            if base_expr is not None:
                condition = E.call("eq", base_expr, condition)
            args += [condition, self.expr(then)]
        otherwise = case.else_expr()
        args.append(self.expr(otherwise) if otherwise is not None else E.literal(None))
        return E.call("case", *args)

    def _BinaryExpr(self, expr) -> E.Expr:
        binary = expr.to_variant()
        op = binary.op()
        left, right = self.expr(binary.left()), self.expr(binary.right())
        interval = _interval_of(right)
        if interval is not None and op in ("+", "-"):
            sign = 1 if op == "+" else -1
            return _add_interval(left, *(sign * part for part in interval))
        if _interval_of(left) is not None and op == "+":
            return _add_interval(right, *_interval_of(left))
        functions = {"=": "eq", "!=": "ne", "<>": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "AND": "and", "OR": "or",
                     "+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "modulo", "||": "concat"}  # fmt: skip
        if op in ("IS DISTINCT FROM", "IS NOT DISTINCT FROM"):
            distinct = E.call(
                "or",
                E.call("and", E.call("ne", left, right), E.call("is_not_null", left), E.call("is_not_null", right)),
                E.call("ne", E.call("is_null", left), E.call("is_null", right)),
            )
            both_null_safe = E.call("coalesce", distinct, E.literal(False))
            return both_null_safe if op == "IS DISTINCT FROM" else E.call("not", both_null_safe)
        if op not in functions:
            raise PlanError(f"operator {op} is not supported yet")
        return E.call(functions[op], left, right)

    def _ScalarFunction(self, expr) -> E.Expr:
        name = expr.rex_call_operator().lower()
        operands = list(expr.rex_call_operands())
        if name in ("date_trunc", "datetrunc"):
            unit = operands[0].python_value().as_py().lower()
            return E.call("date_trunc", self.expr(operands[1]), unit=unit)
        if name in ("date_part", "datepart", "extract"):
            part = operands[0].python_value().as_py().lower()
            part = {"dow": "dayofweek", "doy": "dayofyear", "days": "day", "years": "year", "months": "month"}.get(part, part)
            return E.call("extract", self.expr(operands[1]), field=part)
        args = [self.expr(operand) for operand in operands]
        simple = {"substr": "substring", "substring": "substring", "upper": "upper", "lower": "lower", "btrim": "trim", "trim": "trim",
                  "ltrim": "ltrim", "rtrim": "rtrim", "character_length": "length", "char_length": "length", "length": "length",
                  "coalesce": "coalesce", "abs": "abs", "round": "round", "ceil": "ceil", "floor": "floor",
                  "sqrt": "sqrt", "exp": "exp", "ln": "ln", "log10": "log10", "starts_with": "starts_with", "ends_with": "ends_with",
                  "reverse": "reverse", "contains": "contains", "replace": "replace", "greatest": "greatest", "least": "least"}  # fmt: skip
        if name == "concat":
            return E.call("concat", *args, skip_nulls=True)
        if name in simple:
            return E.call(simple[name], *args)
        if name == "nullif":
            return E.call("case", E.call("eq", args[0], args[1]), E.literal(None, args[0].type), args[0])
        raise PlanError(f"function {name} is not supported yet")

    def _ScalarSubquery(self, expr) -> E.Expr:
        raise PlanError("a scalar subquery in this position is not supported yet")

    def _Exists(self, expr) -> E.Expr:
        raise PlanError("an EXISTS subquery in this position is not supported yet")

    def _InSubquery(self, expr) -> E.Expr:
        raise PlanError("an IN subquery in this position is not supported yet")

    def _Placeholder(self, expr) -> E.Expr:
        raise PlanError("query parameters ($1, ?) are not supported")


def _literal(expr) -> E.Expr:
    scalar = expr.python_value()
    data_type = scalar.type if hasattr(scalar, "type") else None
    value = scalar.as_py() if hasattr(scalar, "as_py") else scalar
    if data_type is not None and pa.types.is_interval(data_type):
        return E.Literal(pa.month_day_nano_interval(), value)
    if value is None:
        return E.literal(None)
    if isinstance(value, decimal.Decimal):
        if value == value.to_integral_value() and value.as_tuple().exponent > 0:
            value = value.quantize(decimal.Decimal(1), context=T.EXACT_DECIMALS)
        return E.literal(value)
    if data_type is not None and pa.types.is_timestamp(data_type):
        return E.literal(value, pa.timestamp(data_type.unit if data_type.unit in ("s", "ms", "us") else "us", tz=data_type.tz))
    if data_type is not None and pa.types.is_date(data_type):
        return E.literal(value, pa.date32())
    if data_type is not None and pa.types.is_floating(data_type):
        return E.literal(float(value))
    if isinstance(value, datetime.timedelta):
        raise PlanError("duration literals are not supported yet")
    return E.literal(value)


def _interval_of(expr: E.Expr) -> tuple[int, int, int] | None:
    if isinstance(expr, E.Literal) and pa.types.is_interval(expr.type) and expr.value is not None:
        value = expr.value
        return (value.months, value.days, value.nanoseconds)
    return None


_NANOS_PER_DAY = 86_400 * 10**9


def _add_interval(value: E.Expr, months: int, days: int, nanoseconds: int) -> E.Expr:
    """date/timestamp +/- a constant interval. A date stays a date when the interval has no time part
    (DataFusion writes `date - 3` as `date - interval '3 days'`)."""
    if nanoseconds % _NANOS_PER_DAY == 0:
        days, nanoseconds = days + nanoseconds // _NANOS_PER_DAY, 0
    if isinstance(value, E.Literal) and value.value is not None and pa.types.is_date(value.type) and nanoseconds == 0:
        return E.literal(_shift_date(value.value, months, days), pa.date32())
    if pa.types.is_date(value.type) and nanoseconds == 0:
        return E.Call(pa.date32(), "add_interval", (E.cast(value, pa.date32()),), (("days", days), ("months", months), ("nanoseconds", 0)))
    return E.add_interval(value, months, days, nanoseconds)


def _shift_date(value: datetime.date, months: int, days: int) -> datetime.date:
    """Calendar arithmetic of a date and an interval (month end clamped, as in SQL engines)."""
    if months:
        month_index = value.year * 12 + value.month - 1 + months
        year, month = divmod(month_index, 12)
        month += 1
        next_month = datetime.date(year + (month == 12), month % 12 + 1, 1)
        last_day = (next_month - datetime.timedelta(days=1)).day
        value = value.replace(year=year, month=month, day=min(value.day, last_day))
    return value + datetime.timedelta(days=days)
