"""SQL types of the engine and the rules that type expressions: one owner for both.

Values are Arrow arrays, so a SQL type is an Arrow data type. The rules follow duckdb, the reference
the engine is tested against:

- integer arithmetic keeps the wider integer type and raises on overflow;
- decimal + / -: scale max(s1, s2), precision max(p1 - s1, p2 - s2) + scale + 1; decimal *: scale
  s1 + s2, precision p1 + p2, capped at 18 when both inputs fit in 18 digits (the value must then fit
  in 18 digits, else the query fails with an overflow) and at 38 otherwise; an integer operand counts as
  decimal(digits of its type, 0);
- `/` is always floating-point division (also for integers and decimals) and x / 0 is NULL;
- a float operand makes the result float64 (float32 when every operand is float32 or an integer);
- sum of 8- to 32-bit integers is int64, of 64-bit integers and of decimal(p, s) decimal(38, s) (exact),
  of floats float64; avg is float64;
  min/max keep the type; count is int64;
- dates compare with timestamps as timestamps; date +/- interval is a timestamp.

Types travel in the plan JSON as text (`type_text` / `parse_type`).
"""

from __future__ import annotations

import decimal
import re

import pyarrow as pa


class PlanError(ValueError):
    """A query the planner cannot plan; the message is one line naming the problem."""


MAX_DECIMAL_PRECISION = 38
# Python's default decimal context rounds to 28 digits: literals and their rescaling use this one
EXACT_DECIMALS = decimal.Context(prec=2 * MAX_DECIMAL_PRECISION + 2)
INT64_DECIMAL_PRECISION = 18
# decimal precision that holds every value of an integer type
INTEGER_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}

_SIMPLE_TYPES = {
    str(t): t
    for t in (
        pa.null(), pa.bool_(), pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
        pa.float16(), pa.float32(), pa.float64(), pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), pa.date32(),
        pa.date64(), pa.month_day_nano_interval(),
    )
}  # fmt: skip
_DECIMAL = re.compile(r"decimal(32|64|128|256)\((\d+), (-?\d+)\)")
_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:, tz=(.+))?\]")
_TIME = re.compile(r"time(32|64)\[(s|ms|us|ns)\]")
_DURATION = re.compile(r"duration\[(s|ms|us|ns)\]")


def type_text(data_type: pa.DataType) -> str:
    """The text form of a type in plan JSON (Arrow's own rendering); parse_type reads it back."""
    text = str(data_type)
    parse_type(text)  # refuse to write what cannot be read back
    return text


def parse_type(text: str) -> pa.DataType:
    if text in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[text]
    if match := _DECIMAL.fullmatch(text):
        width, precision, scale = match.groups()
        return {"32": pa.decimal32, "64": pa.decimal64, "128": pa.decimal128, "256": pa.decimal256}[width](int(precision), int(scale))
    if match := _TIMESTAMP.fullmatch(text):
        return pa.timestamp(match.group(1), tz=match.group(2))
    if match := _TIME.fullmatch(text):
        return pa.time32(match.group(2)) if match.group(1) == "32" else pa.time64(match.group(2))
    if match := _DURATION.fullmatch(text):
        return pa.duration(match.group(1))
    raise PlanError(f"type {text} is not supported")


# ---------------------------------------------------------------------------------------- families


def is_integer(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t)


def is_decimal(t: pa.DataType) -> bool:
    return pa.types.is_decimal(t)


def is_numeric(t: pa.DataType) -> bool:
    return is_integer(t) or is_float(t) or is_decimal(t)


def is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def is_temporal(t: pa.DataType) -> bool:
    return pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_time(t)


def is_null(t: pa.DataType) -> bool:
    return pa.types.is_null(t)


def describe(t: pa.DataType) -> str:
    return str(t)


# ---------------------------------------------------------------------------------------- engine types


def engine_type(t: pa.DataType) -> pa.DataType | None:
    """The type a column of a file becomes inside the engine, or None when it cannot be handled.

    View types and dictionary-encoded strings become plain strings (the kernels and Arrow compute
    support those everywhere); small decimals become decimal128; everything else stays."""
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_dictionary(t):
        return engine_type(t.value_type)
    if pa.types.is_decimal(t):
        if t.precision > MAX_DECIMAL_PRECISION:
            return None
        return pa.decimal128(t.precision, t.scale)
    if pa.types.is_float16(t):
        return pa.float32()
    if (
        pa.types.is_boolean(t) or is_integer(t) or is_float(t) or pa.types.is_string(t) or pa.types.is_binary(t)
        or pa.types.is_fixed_size_binary(t) or is_temporal(t) or pa.types.is_duration(t) or is_null(t)
    ):  # fmt: skip
        return t
    return None


# ---------------------------------------------------------------------------------------- rules


def integer_as_decimal(t: pa.DataType) -> pa.DataType:
    return pa.decimal128(INTEGER_DIGITS[t.bit_width], 0)


def as_decimal(t: pa.DataType) -> pa.DataType:
    return integer_as_decimal(t) if is_integer(t) else t


def wider_integer(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    signed = pa.types.is_signed_integer(a) or pa.types.is_signed_integer(b)
    width = max(a.bit_width, b.bit_width)
    if signed and not (pa.types.is_signed_integer(a) and pa.types.is_signed_integer(b)):
        # an unsigned operand of the same width does not fit a signed type: go one wider
        unsigned_width = a.bit_width if pa.types.is_unsigned_integer(a) else b.bit_width
        if unsigned_width >= width:
            width = min(64, unsigned_width * 2)
    names = {8: "int8", 16: "int16", 32: "int32", 64: "int64"}
    if signed:
        return getattr(pa, names[width])()
    return getattr(pa, "u" + names[width])()


def float_result(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if (pa.types.is_float32(a) or not is_float(a)) and (pa.types.is_float32(b) or not is_float(b)) and not (is_decimal(a) or is_decimal(b)):
        return pa.float32()
    return pa.float64()


def _decimal_cap(precision: int) -> int:
    return min(precision, MAX_DECIMAL_PRECISION)


def add_type(a: pa.DataType, b: pa.DataType, op: str) -> pa.DataType:
    if is_float(a) or is_float(b):
        return float_result(a, b)
    if is_integer(a) and is_integer(b):
        return wider_integer(a, b)
    a, b = as_decimal(a), as_decimal(b)
    scale = max(a.scale, b.scale)
    precision = max(a.precision - a.scale, b.precision - b.scale) + scale + 1
    if precision > MAX_DECIMAL_PRECISION:
        precision = MAX_DECIMAL_PRECISION
    return pa.decimal128(precision, scale)


def multiply_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if is_float(a) or is_float(b):
        return float_result(a, b)
    if is_integer(a) and is_integer(b):
        return wider_integer(a, b)
    a, b = as_decimal(a), as_decimal(b)
    scale = a.scale + b.scale
    if scale > MAX_DECIMAL_PRECISION:
        raise PlanError(f"multiplying {a} by {b} needs a scale of {scale}, above {MAX_DECIMAL_PRECISION}")
    precision = a.precision + b.precision
    if precision > INT64_DECIMAL_PRECISION and a.precision <= INT64_DECIMAL_PRECISION and b.precision <= INT64_DECIMAL_PRECISION:
        precision = INT64_DECIMAL_PRECISION
    return pa.decimal128(max(_decimal_cap(precision), scale, 1), scale)


def divide_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    return float_result(a, b) if (is_float(a) or is_float(b)) else pa.float64()


def modulo_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if is_integer(a) and is_integer(b):
        return wider_integer(a, b)
    if is_float(a) or is_float(b):
        return float_result(a, b)
    a, b = as_decimal(a), as_decimal(b)
    scale = max(a.scale, b.scale)
    return pa.decimal128(_decimal_cap(max(a.precision - a.scale, b.precision - b.scale) + scale), scale)


def common_type(types: list[pa.DataType], what: str) -> pa.DataType:
    """The type values of several types are brought to (CASE branches, COALESCE, IN lists, UNION
    columns, comparison operands)."""
    known = [t for t in types if not is_null(t)]
    if not known:
        return pa.null()
    result = known[0]
    for t in known[1:]:
        result = _common_pair(result, t, what)
    return result


def _common_pair(a: pa.DataType, b: pa.DataType, what: str) -> pa.DataType:
    if a.equals(b):
        return a
    if is_numeric(a) and is_numeric(b):
        if is_float(a) or is_float(b):
            return pa.float64() if (pa.types.is_float64(a) or pa.types.is_float64(b) or is_decimal(a) or is_decimal(b)) else float_result(a, b)
        if is_integer(a) and is_integer(b):
            return wider_integer(a, b)
        a, b = as_decimal(a), as_decimal(b)
        scale = max(a.scale, b.scale)
        digits = max(a.precision - a.scale, b.precision - b.scale)
        return pa.decimal128(_decimal_cap(digits + scale), scale)
    if is_string(a) and is_string(b):
        return pa.string()
    if is_binary(a) and is_binary(b):
        return pa.binary()
    if is_temporal(a) and is_temporal(b):
        if pa.types.is_date(a) and pa.types.is_date(b):
            return pa.date32()
        if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
            return pa.timestamp(_finer_unit(a.unit, b.unit), tz=a.tz if a.tz == b.tz else (a.tz or b.tz))
        if pa.types.is_date(a) and pa.types.is_timestamp(b):
            return b
        if pa.types.is_timestamp(a) and pa.types.is_date(b):
            return a
    raise PlanError(f"{what}: {a} and {b} have no common type")


_UNITS = ("s", "ms", "us", "ns")


def _finer_unit(a: str, b: str) -> str:
    return _UNITS[max(_UNITS.index(a), _UNITS.index(b))]


def comparable(a: pa.DataType, b: pa.DataType, what: str) -> pa.DataType:
    """The type both operands of a comparison are brought to."""
    if pa.types.is_boolean(a) and pa.types.is_boolean(b):
        return a
    return common_type([a, b], what)


def sum_argument_type(t: pa.DataType) -> pa.DataType:
    """What sum() adds up: 64-bit integers as decimal(38, 0), so their sum is exact (duckdb's HUGEINT,
    Postgres' numeric); smaller integers as int64 (an overflow raises)."""
    if is_integer(t) and t.bit_width == 64:
        return integer_as_decimal(t) if pa.types.is_signed_integer(t) else pa.decimal128(20, 0)
    return t


def sum_type(t: pa.DataType) -> pa.DataType:
    t = sum_argument_type(t)
    if is_integer(t) or pa.types.is_boolean(t):
        return pa.int64()
    if is_decimal(t):
        return pa.decimal128(MAX_DECIMAL_PRECISION, t.scale)
    if is_float(t):
        return pa.float64()
    raise PlanError(f"sum needs a numeric argument, got {t}")


def aggregate_type(function: str, argument: pa.DataType | None) -> pa.DataType:
    if function in ("count", "count_all"):
        return pa.int64()
    if function == "sum":
        return sum_type(argument)
    if function == "mean":
        if not (is_numeric(argument) or pa.types.is_boolean(argument)):
            raise PlanError(f"avg needs a numeric argument, got {argument}")
        return pa.float64()
    if function in ("min", "max"):
        if engine_type(argument) is None or is_null(argument):
            raise PlanError(f"{function} of {argument} is not supported")
        return argument
    raise PlanError(f"aggregate function {function} is not supported yet")
