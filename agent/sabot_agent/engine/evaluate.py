"""Evaluation of plan expressions over whole Arrow tables with Arrow C++ compute kernels.

One call per expression node per table (never per row in Python). SQL semantics where Arrow's
differ, as in duckdb:
- AND/OR/NOT use three-valued logic; a filter keeps rows whose predicate is TRUE;
- floats: NaN equals NaN and is greater than every other value; -0.0 equals 0.0 (IEEE already);
- `/` divides as floating point (x / 0 is +-inf, 0 / 0 NaN); x % 0 raises; integer and decimal
  arithmetic raise on overflow;
- x IN (list) is NULL when x is NULL, or when no item matches and the list holds a NULL;
- casts to integers round: decimals half away from zero, floats half to even.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sabot_native

from sabot_agent.plan import types as T
from sabot_agent.plan.expressions import Call, Column, Expr, Literal

Value = pa.Array | pa.ChunkedArray | pa.Scalar


class EvaluationError(RuntimeError):
    """An expression that failed on the data (overflow, a cast that does not fit, ...)."""


def evaluate(expr: Expr, table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """The expression's value for every row of the table, as an array of expr.type."""
    value = _eval(expr, table)
    if isinstance(value, pa.Scalar):
        return pa.repeat(value, table.num_rows)
    return value


def evaluate_predicate(expr: Expr, table: pa.Table, keep: list[str] | None = None) -> pa.Table:
    """The rows of the table for which the predicate is TRUE; of the columns `keep` names (all when
    None): a column only the predicate reads is not copied."""
    if isinstance(expr, Literal):
        mask = pa.scalar(expr.value, pa.bool_())
    else:
        mask = _eval(expr, table)
    kept = table if keep is None else table.select(keep)
    if isinstance(mask, pa.Scalar):
        return kept if mask.as_py() is True else kept.slice(0, 0)
    return kept.filter(mask, null_selection_behavior="drop")


def _eval(expr: Expr, table: pa.Table) -> Value:
    if isinstance(expr, Column):
        column = table.column(expr.name)
        return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
    if isinstance(expr, Literal):
        return _scalar(expr.value, expr.type)
    assert isinstance(expr, Call)
    encoded = _encoded_column(expr, table)
    if encoded is not None:
        try:
            return _eval_over_dictionaries(expr, encoded, table.column(encoded))
        except EvaluationError:
            pass  # perhaps for a dictionary value no row has: evaluated over the rows themselves below
    handler = _CALLS.get(expr.fn)
    if handler is None:
        raise EvaluationError(f"function {expr.fn} cannot be evaluated")
    try:
        return handler(expr, [_eval(arg, table) for arg in expr.args])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise EvaluationError(f"{expr.fn}: {_first_line(exc)}") from None


def _encoded_column(expr: Call, table: pa.Table) -> str | None:
    """The one column the expression reads, when it is dictionary-encoded in the table."""
    names = expr.columns()
    if len(names) != 1:
        return None
    (name,) = names
    return name if pa.types.is_dictionary(table.schema.field(name).type) else None


def _eval_over_dictionaries(expr: Call, name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """An expression of one dictionary-encoded column: evaluated once per distinct value of each
    chunk's dictionary and once for NULL (`x IS NULL`, COALESCE), then looked up by the chunk's indices."""
    chunks = []
    for chunk in column.chunks:
        dictionary = chunk.dictionary
        values = evaluate(expr, pa.table({name: pa.concat_arrays([dictionary, pa.nulls(1, dictionary.type)])}))
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        indices = pc.fill_null(chunk.indices, len(dictionary)) if chunk.null_count else chunk.indices
        chunks.append(values.take(indices))
    return pa.chunked_array(chunks, type=chunks[0].type) if chunks else evaluate(expr, pa.table({name: pa.array([], column.type.value_type)}))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _scalar(value, data_type: pa.DataType) -> pa.Scalar:
    if T.is_null(data_type):
        return pa.scalar(None)
    if pa.types.is_interval(data_type):
        return pa.scalar(value, type=pa.month_day_nano_interval())
    return pa.scalar(value, type=data_type)


def _null(data_type: pa.DataType) -> pa.Scalar:
    return pa.scalar(None, type=data_type)


# ---------------------------------------------------------------------------------------- arithmetic


def _decimal_natural_precision(fn: str, a: pa.DataType, b: pa.DataType) -> int:
    if fn == "multiply":
        return a.precision + b.precision + 1
    scale = max(a.scale, b.scale)
    return max(a.precision - a.scale, b.precision - b.scale) + scale + 1


def _arithmetic(expr: Call, args: list[Value]) -> Value:
    a, b = args
    fn, result = expr.fn, expr.type
    if fn == "divide":
        return pc.divide(a, b)  # floating-point operands: x / 0 is +-inf, 0 / 0 NaN (IEEE, as duckdb)
    if fn == "modulo":
        _check_no_zero(b, "%")
        if T.is_decimal(result):
            return _decimal_remainder(a, b, result)
        return pc.cast(pc.remainder(a, b), result)
    kernel = {"add": "add_checked", "subtract": "subtract_checked", "multiply": "multiply_checked"}[fn]
    exact = _native_decimal(fn, a, b, result)
    if exact is not None:
        return exact
    if T.is_decimal(result):
        left, right = _type_of(a), _type_of(b)
        if _decimal_natural_precision(fn, left, right) > T.MAX_DECIMAL_PRECISION:
            # Arrow types the exact product/sum above 38 digits; compute in 256 bits, then narrow
            a = pc.cast(a, pa.decimal256(left.precision, left.scale))
            b = pc.cast(b, pa.decimal256(right.precision, right.scale))
        value = pc.call_function(kernel, [a, b])
        return _narrow_decimal(value, result)
    return pc.call_function(kernel, [a, b])


def _native_decimal(fn: str, a: Value, b: Value, result: pa.DataType) -> Value | None:
    """a fn b of decimal128 values by the native kernel (128-bit integers), when the result has the
    exact scale; None when it does not apply. Arrow's kernels are as fast below 38 natural digits but
    go through decimal256 above them (q1's chained products), ~15 times slower."""
    left, right = _type_of(a), _type_of(b)
    if not (pa.types.is_decimal128(result) and pa.types.is_decimal128(left) and pa.types.is_decimal128(right)):
        return None
    exact_scale = left.scale + right.scale if fn == "multiply" else max(left.scale, right.scale)
    if result.scale != exact_scale or (isinstance(a, pa.Scalar) and isinstance(b, pa.Scalar)):
        return None
    pieces = _aligned_chunks(a, b)
    try:
        chunks = [sabot_native.decimal_arithmetic(fn, x, y, result.precision, result.scale) for x, y in pieces]
    except OverflowError:
        raise EvaluationError(f"overflow: a result does not fit in {result}") from None
    if isinstance(a, pa.ChunkedArray) or isinstance(b, pa.ChunkedArray):
        return pa.chunked_array(chunks, type=result)
    return chunks[0]


def _aligned_chunks(a: Value, b: Value) -> list[tuple]:
    """Pairs of same-length Arrays (or a Scalar) covering both operands' rows."""
    if isinstance(a, pa.Scalar) or isinstance(b, pa.Scalar):
        array, scalar_first = (b, True) if isinstance(a, pa.Scalar) else (a, False)
        parts = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
        return [(a, part) if scalar_first else (part, b) for part in parts]
    a_parts = a.chunks if isinstance(a, pa.ChunkedArray) else [a]
    b_parts = b.chunks if isinstance(b, pa.ChunkedArray) else [b]
    if [len(part) for part in a_parts] != [len(part) for part in b_parts]:
        a_parts = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a]
        b_parts = [b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b]
    return list(zip(a_parts, b_parts))


def _narrow_decimal(value: Value, result: pa.DataType) -> Value:
    """The value as the SQL result type; a value that does not fit raises (duckdb's overflow check)."""
    if _type_of(value).equals(result):
        return value
    try:
        return pc.cast(value, result)
    except pa.ArrowInvalid:
        raise EvaluationError(f"overflow: a result does not fit in {result}") from None


def _decimal_remainder(a: Value, b: Value, result: pa.DataType) -> Value:
    """a % b of decimals: exact on the unscaled integers when they fit in 64 bits (Arrow has no
    decimal remainder), else through float64."""
    scale = result.scale
    if result.precision <= T.INT64_DECIMAL_PRECISION:
        as_integers = [pc.cast(pc.cast(value, pa.decimal128(T.INT64_DECIMAL_PRECISION, scale)), pa.decimal64(T.INT64_DECIMAL_PRECISION, scale))
                       for value in (a, b)]  # fmt: skip
        unscaled = [_view(value, pa.int64()) for value in as_integers]
        remainder = pc.remainder(*unscaled)
        return pc.cast(_view(remainder, pa.decimal64(T.INT64_DECIMAL_PRECISION, scale)), result)
    return pc.cast(pc.remainder(pc.cast(a, pa.float64()), pc.cast(b, pa.float64())), result)


def _view(value: Value, data_type: pa.DataType) -> Value:
    if isinstance(value, pa.ChunkedArray):
        return pa.chunked_array([chunk.view(data_type) for chunk in value.chunks], type=data_type)
    if isinstance(value, pa.Scalar):
        return pa.array([value.as_py()], type=value.type).view(data_type)[0]
    return value.view(data_type)


def _check_no_zero(divisor: Value, operator: str) -> None:
    zero = pc.equal(divisor, pa.scalar(0, type=_type_of(divisor)))
    if (zero.as_py() if isinstance(zero, pa.Scalar) else pc.any(zero).as_py()):
        raise EvaluationError(f"division by zero in {operator}")


def _negate(expr: Call, args: list[Value]) -> Value:
    return pc.negate_checked(args[0])


def _type_of(value: Value) -> pa.DataType:
    return value.type


# ---------------------------------------------------------------------------------------- comparisons

_ARROW_COMPARISONS = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal"}


def _comparison(expr: Call, args: list[Value]) -> Value:
    a, b = args
    if not T.is_float(expr.args[0].type):
        return pc.call_function(_ARROW_COMPARISONS[expr.fn], [a, b])
    return _float_comparison(expr.fn, a, b)


def _float_comparison(fn: str, a: Value, b: Value) -> Value:
    """duckdb's float order: NaN = NaN, and NaN is greater than every number."""
    if fn in ("gt", "ge"):
        return _float_comparison("lt" if fn == "gt" else "le", b, a)
    nan_a, nan_b = pc.is_nan(a), pc.is_nan(b)
    if fn in ("eq", "ne"):
        equal = pc.or_kleene(pc.equal(a, b), pc.and_kleene(nan_a, nan_b))
        return equal if fn == "eq" else pc.invert(equal)
    if fn == "lt":
        return pc.or_kleene(pc.less(a, b), pc.and_kleene(pc.invert(nan_a), nan_b))
    return pc.or_kleene(pc.less_equal(a, b), pc.and_kleene(nan_b, pc.is_valid(a)))


# ---------------------------------------------------------------------------------------- logic


def _and(expr: Call, args: list[Value]) -> Value:
    result = args[0]
    for arg in args[1:]:
        result = pc.and_kleene(result, arg)
    return result


def _or(expr: Call, args: list[Value]) -> Value:
    result = args[0]
    for arg in args[1:]:
        result = pc.or_kleene(result, arg)
    return result


def _not(expr: Call, args: list[Value]) -> Value:
    return pc.invert(args[0])


def _is_null(expr: Call, args: list[Value]) -> Value:
    return pc.is_null(args[0], nan_is_null=False)


def _is_not_null(expr: Call, args: list[Value]) -> Value:
    return pc.is_valid(args[0])


def _in_list(expr: Call, args: list[Value]) -> Value:
    (value,) = args
    items = expr.option("values")
    item_type = expr.args[0].type
    present = [item for item in items if item is not None]
    found = pc.is_in(value, value_set=pa.array(present, type=item_type), skip_nulls=True)
    if len(present) != len(items):
        found = pc.if_else(found, pa.scalar(True), _null(pa.bool_()))
    found = pc.if_else(pc.is_null(value, nan_is_null=False), _null(pa.bool_()), found)
    return pc.invert(found) if expr.option("negated") else found


def _like(expr: Call, args: list[Value]) -> Value:
    matched = pc.match_like(args[0], expr.option("pattern"), ignore_case=bool(expr.option("case_insensitive")))
    return pc.invert(matched) if expr.option("negated") else matched


def _case(expr: Call, args: list[Value]) -> Value:
    *pairs, otherwise = args
    conditions, values = pairs[0::2], pairs[1::2]
    length = _length(args)
    if length is None:  # every operand is a constant
        for condition, value in zip(conditions, values):
            if condition.as_py() is True:
                return value
        return otherwise
    conditions = [_as_array(condition, length) for condition in conditions]
    struct = pc.make_struct(*conditions, field_names=[f"c{i}" for i in range(len(conditions))])
    return pc.case_when(struct, *[_as_array(value, length) for value in values], _as_array(otherwise, length))


def _length(values: list[Value]) -> int | None:
    for value in values:
        if not isinstance(value, pa.Scalar):
            return len(value)
    return None


def _as_array(value: Value, length: int) -> pa.Array | pa.ChunkedArray:
    return pa.repeat(value, length) if isinstance(value, pa.Scalar) else value


def _coalesce(expr: Call, args: list[Value]) -> Value:
    return pc.coalesce(*args)


# ---------------------------------------------------------------------------------------- casts


def _cast(expr: Call, args: list[Value]) -> Value:
    (value,) = args
    source, target = expr.args[0].type, expr.type
    if T.is_integer(target) and T.is_decimal(source):
        value = pc.round(value, 0, round_mode="half_towards_infinity")
    elif T.is_integer(target) and T.is_float(source):
        value = pc.round(value, 0, round_mode="half_to_even")
    if T.is_decimal(target) and T.is_float(source):
        value = pc.round(value, target.scale, round_mode="half_towards_infinity")
        try:
            return pc.cast(value, target, safe=False) if _fits(value, target) else pc.cast(value, target)
        except pa.ArrowInvalid as exc:
            raise EvaluationError(f"cast to {target}: {_first_line(exc)}") from None
    # a number becomes the nearest float (precision may be lost, as in SQL), never an error
    lossy = T.is_float(target) and (T.is_integer(source) or T.is_decimal(source))
    try:
        if T.is_decimal(target) and T.is_integer(source) and target.precision < T.MAX_DECIMAL_PRECISION:
            # Arrow refuses int64 -> decimal(10, 2) by the types alone; by way of the widest decimal
            # of the target's scale, each value is checked instead (as in duckdb)
            value = pc.cast(value, pa.decimal128(T.MAX_DECIMAL_PRECISION, target.scale))
        return pc.cast(value, target, safe=not lossy)
    except pa.ArrowInvalid as exc:
        raise EvaluationError(f"cannot cast {source} to {target}: {_first_line(exc)}") from None


def _fits(value: Value, target: pa.DataType) -> bool:
    limit = 10.0 ** (target.precision - target.scale)
    extremes = pc.min_max(pc.abs(value))
    largest = extremes["max"].as_py()
    return largest is None or largest < limit


# ---------------------------------------------------------------------------------------- strings


def _substring(expr: Call, args: list[Value]) -> Value:
    start, length = expr.option("start"), expr.option("length")
    begin = start - 1
    if length is None:
        return pc.utf8_slice_codeunits(args[0], max(begin, 0))
    end = begin + length
    if end <= 0:
        return pc.if_else(pc.is_null(args[0]), _null(pa.string()), pa.scalar(""))
    return pc.utf8_slice_codeunits(args[0], max(begin, 0), end)


_STRING_KERNELS = {"upper": "utf8_upper", "lower": "utf8_lower", "trim": "utf8_trim_whitespace", "ltrim": "utf8_ltrim_whitespace",
                   "rtrim": "utf8_rtrim_whitespace", "reverse": "utf8_reverse"}  # fmt: skip


def _string_function(expr: Call, args: list[Value]) -> Value:
    if expr.fn == "length":
        return pc.cast(pc.utf8_length(args[0]), pa.int64())
    return pc.call_function(_STRING_KERNELS[expr.fn], args)


def _concat(expr: Call, args: list[Value]) -> Value:
    """`a || b` is NULL when either is; concat(a, b) skips NULLs."""
    handling = "replace" if expr.option("skip_nulls") else "emit_null"
    return pc.binary_join_element_wise(*args, pa.scalar(""), null_handling=handling, null_replacement="")


def _string_predicate(expr: Call, args: list[Value]) -> Value:
    kernel = {"starts_with": pc.starts_with, "ends_with": pc.ends_with, "contains": pc.match_substring}[expr.fn]
    return kernel(args[0], expr.option("pattern"))


def _replace(expr: Call, args: list[Value]) -> Value:
    return pc.replace_substring(args[0], expr.option("pattern"), expr.option("replacement"))


def _extreme(expr: Call, args: list[Value]) -> Value:
    if T.is_float(expr.type):  # NaN is above every number (Arrow's element-wise max would skip it)
        nan = pc.or_kleene(*[pc.is_nan(arg) for arg in args]) if len(args) > 1 else pc.is_nan(args[0])
        if expr.fn == "greatest":
            return pc.if_else(pc.fill_null(nan, False), pa.scalar(float("nan")), pc.max_element_wise(*args, skip_nulls=True))
        numbers = [pc.if_else(pc.is_nan(arg), pa.scalar(None, pa.float64()), arg) for arg in args]
        least = pc.min_element_wise(*numbers, skip_nulls=True)
        return pc.if_else(pc.and_kleene(pc.is_null(least), pc.fill_null(nan, False)), pa.scalar(float("nan")), least)
    kernel = pc.max_element_wise if expr.fn == "greatest" else pc.min_element_wise
    return kernel(*args, skip_nulls=True)


# ---------------------------------------------------------------------------------------- dates


def _extract(expr: Call, args: list[Value]) -> Value:
    (value,) = args
    part = expr.option("field")
    if part == "epoch":
        seconds = pc.cast(value, pa.timestamp("us")) if pa.types.is_date(expr.args[0].type) else value
        return pc.divide(pc.cast(pc.cast(seconds, pa.timestamp("us")), pa.int64()), pa.scalar(1e6))
    if part == "dayofweek":
        result = pc.day_of_week(value, count_from_zero=True, week_start=7)  # Sunday = 0, as in duckdb
    elif part == "week":
        result = pc.iso_week(value)
    else:
        kernel = {"year": pc.year, "quarter": pc.quarter, "month": pc.month, "day": pc.day, "dayofyear": pc.day_of_year,
                  "hour": pc.hour, "minute": pc.minute, "second": pc.second, "millisecond": pc.millisecond,
                  "microsecond": pc.microsecond}[part]  # fmt: skip
        result = kernel(value)
    return pc.cast(result, pa.int64())


def _add_interval(expr: Call, args: list[Value]) -> Value:
    """date/timestamp + (months, days, nanoseconds): months by calendar, clamped to the month's end."""
    (value,) = args
    months, days, nanoseconds = expr.option("months"), expr.option("days"), expr.option("nanoseconds")
    data_type = expr.args[0].type
    if isinstance(value, pa.ChunkedArray):
        chunks = [_shift(chunk, data_type, months, days, nanoseconds) for chunk in value.chunks]
        return pa.chunked_array(chunks, type=expr.type)
    if isinstance(value, pa.Scalar):
        return _shift(pa.array([value.as_py()], type=data_type), data_type, months, days, nanoseconds)[0]
    return _shift(value, data_type, months, days, nanoseconds)


def _shift(array: pa.Array, data_type: pa.DataType, months: int, days: int, nanoseconds: int) -> pa.Array:
    is_date = pa.types.is_date(data_type)
    unit = "D" if is_date else data_type.unit
    valid = array.is_valid()
    values = array.fill_null(0).to_numpy(zero_copy_only=False).astype(f"datetime64[{unit}]")
    if months:
        month_start = values.astype("datetime64[M]")
        day_offset = values.astype("datetime64[D]") - month_start.astype("datetime64[D]")
        time_of_day = values - values.astype("datetime64[D]").astype(values.dtype)
        target = month_start + np.timedelta64(months, "M")
        month_length = (target + np.timedelta64(1, "M")).astype("datetime64[D]") - target.astype("datetime64[D]")
        day_offset = np.minimum(day_offset, month_length - np.timedelta64(1, "D"))
        values = (target.astype("datetime64[D]") + day_offset).astype(values.dtype) + time_of_day
    if days:
        values = values + np.timedelta64(days, "D").astype(f"timedelta64[{unit}]")
    if nanoseconds:
        values = values + np.timedelta64(nanoseconds, "ns").astype(f"timedelta64[{unit}]")
    result = pa.array(values, type=data_type if not is_date else pa.date32())
    return pc.if_else(valid, result, pa.scalar(None, type=result.type))


def _date_trunc(expr: Call, args: list[Value]) -> Value:
    (value,) = args
    if pa.types.is_date(expr.args[0].type):
        value = pc.cast(value, pa.timestamp("us"))
    zone = expr.type.tz
    if zone is not None:  # floored in UTC, not in the values' own zone (duckdb's session time zone here)
        value = pc.cast(value, pa.timestamp(expr.type.unit))
    floored = pc.floor_temporal(value, unit=expr.option("unit"), week_starts_monday=True)
    return pc.cast(floored, expr.type) if zone is not None else floored


def _date_add_days(expr: Call, args: list[Value]) -> Value:
    date, days = args
    sign = expr.option("sign")
    shifted = pc.add_checked(pc.cast(date, pa.int32()), pc.cast(pc.multiply(days, pa.scalar(sign, pa.int64())), pa.int32()))
    return pc.cast(shifted, pa.date32())


def _date_diff_days(expr: Call, args: list[Value]) -> Value:
    a, b = args
    return pc.cast(pc.subtract(pc.cast(a, pa.int32()), pc.cast(b, pa.int32())), pa.int64())


# ---------------------------------------------------------------------------------------- math


def _math(expr: Call, args: list[Value]) -> Value:
    (value, *_) = args
    fn = expr.fn
    if fn == "abs":
        return pc.abs_checked(value)
    if fn == "round":
        rounded = pc.round(value, expr.option("digits"), round_mode="half_towards_infinity")
        return pc.cast(rounded, expr.type)
    if fn in ("ceil", "floor"):
        return pc.cast(pc.call_function(fn, [value]), expr.type)
    kernel = {"sqrt": "sqrt", "exp": "exp", "ln": "ln", "log10": "log10"}[fn]
    return pc.call_function(kernel, [value])


_CALLS = {
    **{name: _arithmetic for name in ("add", "subtract", "multiply", "divide", "modulo")},
    "negate": _negate,
    **{name: _comparison for name in _ARROW_COMPARISONS},
    "and": _and,
    "or": _or,
    "not": _not,
    "is_null": _is_null,
    "is_not_null": _is_not_null,
    "in_list": _in_list,
    "like": _like,
    "case": _case,
    "coalesce": _coalesce,
    "cast": _cast,
    "substring": _substring,
    **{name: _string_function for name in ("upper", "lower", "trim", "ltrim", "rtrim", "reverse", "length")},
    "concat": _concat,
    **{name: _string_predicate for name in ("starts_with", "ends_with", "contains")},
    "extract": _extract,
    "date_trunc": _date_trunc,
    "add_interval": _add_interval,
    "date_add_days": _date_add_days,
    "date_diff_days": _date_diff_days,
    **{name: _math for name in ("abs", "round", "ceil", "floor", "sqrt", "exp", "ln", "log10")},
    "replace": _replace,
    "greatest": _extreme,
    "least": _extreme,
}
