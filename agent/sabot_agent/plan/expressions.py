"""Typed scalar expressions of the plan: columns, literals and calls of a fixed set of functions.

Front-ends build expressions only through the constructors here (`call`, `cast`, `column`,
`literal`), which type them by the rules of `plan.types` and insert the casts an operation needs
(comparison operands of different types, CASE branches, ...). The evaluator
(`engine.evaluate`) can then run every call on operands of the types it expects.

JSON form: {"col": name, "type": t}, {"lit": value, "type": t} (decimals as strings, dates and
timestamps as ISO text, binary as hex) and {"fn": name, "args": [...], "type": t, "opt": {...}}.
"""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pyarrow as pa

from sabot_agent.plan import types as T
from sabot_agent.plan.types import PlanError


@dataclass(frozen=True)
class Expr:
    type: pa.DataType

    def columns(self) -> set[str]:
        """Names of the input columns this expression reads."""
        found: set[str] = set()
        _collect_columns(self, found)
        return found


@dataclass(frozen=True)
class Column(Expr):
    name: str = ""


@dataclass(frozen=True)
class Literal(Expr):
    value: Any = None


@dataclass(frozen=True)
class Call(Expr):
    fn: str = ""
    args: tuple[Expr, ...] = ()
    options: tuple[tuple[str, Any], ...] = field(default=())

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


def _collect_columns(expr: Expr, found: set[str]) -> None:
    if isinstance(expr, Column):
        found.add(expr.name)
    elif isinstance(expr, Call):
        for arg in expr.args:
            _collect_columns(arg, found)


# ---------------------------------------------------------------------------------------- leaves


def column(name: str, data_type: pa.DataType) -> Column:
    return Column(data_type, name)


def literal(value: Any, data_type: pa.DataType | None = None) -> Literal:
    """A literal; without a type, Python values get the type duckdb gives such a literal."""
    if data_type is None:
        data_type = _literal_type(value)
    return Literal(data_type, _normalize_literal(value, data_type))


def _literal_type(value: Any) -> pa.DataType:
    if value is None:
        return pa.null()
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int32() if -(2**31) <= value < 2**31 else pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, decimal.Decimal):
        return decimal_literal_type(value)
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, bytes):
        return pa.binary()
    if isinstance(value, datetime.datetime):
        return pa.timestamp("us")
    if isinstance(value, datetime.date):
        return pa.date32()
    raise PlanError(f"literal {value!r} of type {type(value).__name__} is not supported")


def decimal_literal_type(value: decimal.Decimal) -> pa.DataType:
    """The smallest decimal type holding a literal, as duckdb types `0.06` (decimal(2, 2)... )."""
    sign, digits, exponent = value.as_tuple()
    scale = max(0, -exponent)
    precision = max(len(digits), scale, 1)
    if exponent > 0:
        precision += exponent
    if precision > T.MAX_DECIMAL_PRECISION:
        raise PlanError(f"decimal literal {value} has more than {T.MAX_DECIMAL_PRECISION} digits")
    return pa.decimal128(precision, scale)


def _normalize_literal(value: Any, data_type: pa.DataType) -> Any:
    if value is None:
        return None
    if T.is_decimal(data_type):
        return decimal.Decimal(value).quantize(decimal.Decimal(1).scaleb(-data_type.scale), context=T.EXACT_DECIMALS)
    return value


# ---------------------------------------------------------------------------------------- calls

COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
ARITHMETIC = ("add", "subtract", "multiply", "divide", "modulo")
EXTRACT_FIELDS = ("year", "quarter", "month", "week", "day", "dayofweek", "dayofyear", "hour", "minute", "second", "millisecond",
                  "microsecond", "epoch")  # fmt: skip
STRING_FUNCTIONS = ("upper", "lower", "trim", "ltrim", "rtrim", "length", "reverse")
MATH_FUNCTIONS = ("abs", "sqrt", "ceil", "floor", "exp", "ln", "log10", "round")


def cast(expr: Expr, target: pa.DataType) -> Expr:
    if expr.type.equals(target):
        return expr
    if isinstance(expr, Literal):
        return _cast_literal(expr, target)
    _check_castable(expr.type, target)
    return Call(target, "cast", (expr,))


def _check_castable(source: pa.DataType, target: pa.DataType) -> None:
    if T.is_null(source):
        return
    ok = (
        (T.is_numeric(source) and (T.is_numeric(target) or T.is_string(target) or pa.types.is_boolean(target)))
        or (T.is_string(source) and T.engine_type(target) is not None)
        or (pa.types.is_boolean(source) and (T.is_numeric(target) or T.is_string(target)))
        or (T.is_temporal(source) and (T.is_temporal(target) or T.is_string(target)))
        or (T.is_binary(source) and (T.is_binary(target) or T.is_string(target)))
    )
    if not ok:
        raise PlanError(f"cannot cast {source} to {target}")


def _cast_literal(expr: Literal, target: pa.DataType) -> Literal:
    if expr.value is None:
        return Literal(target, None)
    if T.is_decimal(expr.type) and T.is_float(target):
        # correctly rounded (Arrow's cast multiplies by an inexact 10^-scale: 1.500000000000000 -> 1.5000000000000002)
        return Literal(target, _normalize_literal(float(expr.value), target))
    try:
        value = pa.scalar(expr.value, type=expr.type if not T.is_null(expr.type) else None).cast(target).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise PlanError(f"cannot cast literal {expr.value!r} to {target}: {_first_line(exc)}") from None
    return Literal(target, _normalize_literal(value, target))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def call(fn: str, *args: Expr, **options: Any) -> Expr:
    """A typed call; raises PlanError for operand types the function does not take."""
    builder = _BUILDERS.get(fn)
    if builder is None:
        raise PlanError(f"function {fn} is not supported yet")
    return builder(fn, list(args), options)


def _make(fn: str, args: Iterable[Expr], result: pa.DataType, **options: Any) -> Call:
    return Call(result, fn, tuple(args), tuple(sorted(options.items())))


def _arithmetic(fn: str, args: list[Expr], options: dict) -> Expr:
    left, right = args
    for operand in (left, right):
        if not (T.is_numeric(operand.type) or T.is_null(operand.type) or (fn in ("add", "subtract") and T.is_temporal(operand.type))):
            raise PlanError(f"{fn} needs numeric operands, got {left.type} and {right.type}")
    if T.is_temporal(left.type) or T.is_temporal(right.type):
        return _temporal_arithmetic(fn, left, right)
    if T.is_null(left.type) or T.is_null(right.type):
        other = right.type if T.is_null(left.type) else left.type
        return Literal(other if not T.is_null(other) else pa.int32(), None)
    if fn in ("add", "subtract"):
        result = T.add_type(left.type, right.type, fn)
    elif fn == "multiply":
        result = T.multiply_type(left.type, right.type)
    elif fn == "divide":
        result = T.divide_type(left.type, right.type)
        left, right = cast(left, result), cast(right, result)
    else:
        result = T.modulo_type(left.type, right.type)
    if T.is_float(result) and fn != "divide":
        left, right = cast(left, result), cast(right, result)
    elif T.is_decimal(result):
        left, right = cast(left, T.as_decimal(left.type)), cast(right, T.as_decimal(right.type))
    elif T.is_integer(result):
        left, right = cast(left, result), cast(right, result)
    return _make(fn, (left, right), result)


def _temporal_arithmetic(fn: str, left: Expr, right: Expr) -> Expr:
    if T.is_temporal(left.type) and T.is_temporal(right.type) and fn == "subtract":
        if pa.types.is_date(left.type) and pa.types.is_date(right.type):
            # duckdb: date - date is the number of days between them
            return _make("date_diff_days", (cast(left, pa.date32()), cast(right, pa.date32())), pa.int64())
    if pa.types.is_date(left.type) and T.is_integer(right.type):
        return _make("date_add_days", (cast(left, pa.date32()), cast(right, pa.int64())), pa.date32(), sign=1 if fn == "add" else -1)
    if fn == "add" and T.is_integer(left.type) and pa.types.is_date(right.type):
        return _make("date_add_days", (cast(right, pa.date32()), cast(left, pa.int64())), pa.date32(), sign=1)
    raise PlanError(f"{fn} of {left.type} and {right.type} is not supported")


def add_interval(expr: Expr, months: int, days: int, nanoseconds: int) -> Expr:
    """date/timestamp + a constant interval; a timestamp as in duckdb."""
    if not T.is_temporal(expr.type) or pa.types.is_time(expr.type):
        raise PlanError(f"cannot add an interval to {expr.type}")
    result = expr.type if pa.types.is_timestamp(expr.type) else pa.timestamp("us")
    return _make("add_interval", (cast(expr, result),), result, months=months, days=days, nanoseconds=nanoseconds)


def _negate(fn: str, args: list[Expr], options: dict) -> Expr:
    (arg,) = args
    if not T.is_numeric(arg.type):
        raise PlanError(f"cannot negate {arg.type}")
    if isinstance(arg, Literal) and arg.value is not None:
        return Literal(arg.type, -arg.value)
    return _make("negate", (arg,), arg.type)


def _comparison(fn: str, args: list[Expr], options: dict) -> Expr:
    left, right = args
    target = T.comparable(left.type, right.type, f"comparison {fn}")
    return _make(fn, (cast(left, target), cast(right, target)), pa.bool_())


def _boolean(fn: str, args: list[Expr], options: dict) -> Expr:
    for arg in args:
        if not (pa.types.is_boolean(arg.type) or T.is_null(arg.type)):
            raise PlanError(f"{fn.upper()} needs boolean operands, got {arg.type}")
    args = [cast(arg, pa.bool_()) for arg in args]
    if fn == "not":
        return _make("not", args, pa.bool_())
    # flatten nested AND/OR so the evaluator folds them in one pass
    flat: list[Expr] = []
    for arg in args:
        if isinstance(arg, Call) and arg.fn == fn:
            flat.extend(arg.args)
        else:
            flat.append(arg)
    return flat[0] if len(flat) == 1 else _make(fn, flat, pa.bool_())


def _null_test(fn: str, args: list[Expr], options: dict) -> Expr:
    return _make(fn, args, pa.bool_())


def _like(fn: str, args: list[Expr], options: dict) -> Expr:
    value, pattern = args
    if not (T.is_string(value.type) or T.is_null(value.type)):
        raise PlanError(f"LIKE needs a string, got {value.type}")
    if not isinstance(pattern, Literal) or not (T.is_string(pattern.type) or T.is_null(pattern.type)):
        raise PlanError("LIKE with a pattern that is not a string literal is not supported yet")
    if pattern.value is None:
        return Literal(pa.bool_(), None)
    return _make("like", (cast(value, pa.string()),), pa.bool_(), pattern=pattern.value,
                 negated=bool(options.get("negated")), case_insensitive=bool(options.get("case_insensitive")))  # fmt: skip


def _in_list(fn: str, args: list[Expr], options: dict) -> Expr:
    value, *values = args
    negated = bool(options.get("negated"))
    if not values:
        return literal(negated)
    if not all(isinstance(item, Literal) for item in values):
        # x IN (a, b) with non-constant items is a disjunction of equalities
        terms = [call("eq", value, item) for item in values]
        result = call("or", *terms) if len(terms) > 1 else terms[0]
        return call("not", result) if negated else result
    target = T.common_type([value.type] + [item.type for item in values], "IN list")
    items = tuple(cast(item, target).value for item in values)
    return _make("in_list", (cast(value, target),), pa.bool_(), values=items, negated=negated)


def _case(fn: str, args: list[Expr], options: dict) -> Expr:
    """case(cond1, value1, cond2, value2, ..., else_value)"""
    *pairs, otherwise = args
    conditions, values = pairs[0::2], pairs[1::2]
    result = T.common_type([value.type for value in values] + [otherwise.type], "CASE branches")
    if T.is_null(result):
        return Literal(pa.null(), None)
    ordered: list[Expr] = []
    for condition, value in zip(conditions, values):
        if not (pa.types.is_boolean(condition.type) or T.is_null(condition.type)):
            raise PlanError(f"CASE WHEN needs a boolean condition, got {condition.type}")
        ordered += [cast(condition, pa.bool_()), cast(value, result)]
    ordered.append(cast(otherwise, result))
    return _make("case", ordered, result)


def _coalesce(fn: str, args: list[Expr], options: dict) -> Expr:
    result = T.common_type([arg.type for arg in args], "COALESCE")
    return _make("coalesce", [cast(arg, result) for arg in args], result)


def _substring(fn: str, args: list[Expr], options: dict) -> Expr:
    value, start, *length = args
    if not T.is_string(value.type):
        raise PlanError(f"SUBSTRING needs a string, got {value.type}")
    for number in [start, *length]:
        if not isinstance(number, Literal) or not T.is_integer(number.type):
            raise PlanError("SUBSTRING with a start or length that is not an integer constant is not supported yet")
    return _make("substring", (cast(value, pa.string()),), pa.string(), start=start.value, length=length[0].value if length else None)


def _extract(fn: str, args: list[Expr], options: dict) -> Expr:
    (value,) = args
    part = options["field"]
    if part not in EXTRACT_FIELDS:
        raise PlanError(f"EXTRACT({part.upper()} ...) is not supported")
    if not T.is_temporal(value.type):
        raise PlanError(f"EXTRACT needs a date or timestamp, got {value.type}")
    return _make("extract", (value,), pa.float64() if part == "epoch" else pa.int64(), field=part)


DATE_TRUNC_UNITS = ("year", "quarter", "month", "week", "day", "hour", "minute", "second", "millisecond", "microsecond")


def _date_trunc(fn: str, args: list[Expr], options: dict) -> Expr:
    """date_trunc(unit, value): a timestamp (of a date too, as in duckdb), floored in UTC."""
    (value,) = args
    unit = options["unit"]
    if unit not in DATE_TRUNC_UNITS:
        raise PlanError(f"date_trunc({unit!r}, ...) is not supported ({', '.join(DATE_TRUNC_UNITS)})")
    if not T.is_temporal(value.type) or pa.types.is_time(value.type):
        raise PlanError(f"date_trunc needs a date or timestamp, got {value.type}")
    result = value.type if pa.types.is_timestamp(value.type) else pa.timestamp("us")
    return _make("date_trunc", (value,), result, unit=unit)


def _string_function(fn: str, args: list[Expr], options: dict) -> Expr:
    (value,) = args
    if not T.is_string(value.type):
        raise PlanError(f"{fn} needs a string, got {value.type}")
    return _make(fn, (cast(value, pa.string()),), pa.int64() if fn == "length" else pa.string())


def _concat(fn: str, args: list[Expr], options: dict) -> Expr:
    return _make("concat", [cast(arg, pa.string()) for arg in args], pa.string(), skip_nulls=bool(options.get("skip_nulls")))


def _string_predicate(fn: str, args: list[Expr], options: dict) -> Expr:
    value, other = args
    if not isinstance(other, Literal) or not T.is_string(other.type):
        raise PlanError(f"{fn} with a non-constant argument is not supported yet")
    return _make(fn, (cast(value, pa.string()),), pa.bool_(), pattern=other.value)


def _replace(fn: str, args: list[Expr], options: dict) -> Expr:
    value, old, new = args
    if not all(isinstance(arg, Literal) and T.is_string(arg.type) for arg in (old, new)):
        raise PlanError("REPLACE with a non-constant search or replacement is not supported yet")
    if not T.is_string(value.type):
        raise PlanError(f"REPLACE needs a string, got {value.type}")
    if old.value == "":  # nothing to replace (and Arrow's replace_substring never returns for an empty pattern)
        return cast(value, pa.string())
    return _make("replace", (cast(value, pa.string()),), pa.string(), pattern=old.value, replacement=new.value)


def _extreme(fn: str, args: list[Expr], options: dict) -> Expr:
    """GREATEST / LEAST: of the non-NULL arguments (NULL when all are), in their common type."""
    result = T.common_type([arg.type for arg in args], fn.upper())
    return _make(fn, [cast(arg, result) for arg in args], result)


def _math(fn: str, args: list[Expr], options: dict) -> Expr:
    value, *rest = args
    if not T.is_numeric(value.type):
        raise PlanError(f"{fn} needs a number, got {value.type}")
    if fn == "abs":
        return _make(fn, (value,), value.type)
    if fn == "round":
        digits = rest[0].value if rest else 0
        if rest and not (isinstance(rest[0], Literal) and T.is_integer(rest[0].type)):
            raise PlanError("ROUND with non-constant digits is not supported yet")
        if T.is_decimal(value.type):
            return _make(fn, (value,), pa.decimal128(value.type.precision, max(0, min(value.type.scale, digits))), digits=digits)
        return _make(fn, (cast(value, pa.float64()) if not T.is_integer(value.type) else value,),
                     value.type if T.is_integer(value.type) else pa.float64(), digits=digits)  # fmt: skip
    if fn in ("ceil", "floor") and T.is_decimal(value.type):
        return _make(fn, (value,), pa.decimal128(value.type.precision, 0))
    return _make(fn, (cast(value, pa.float64()),), pa.float64())


_BUILDERS: dict[str, Callable[[str, list[Expr], dict], Expr]] = {
    **{name: _arithmetic for name in ARITHMETIC},
    "negate": _negate,
    **{name: _comparison for name in COMPARISONS},
    "and": _boolean,
    "or": _boolean,
    "not": _boolean,
    "is_null": _null_test,
    "is_not_null": _null_test,
    "like": _like,
    "in_list": _in_list,
    "case": _case,
    "coalesce": _coalesce,
    "substring": _substring,
    "extract": _extract,
    "date_trunc": _date_trunc,
    **{name: _string_function for name in STRING_FUNCTIONS},
    "concat": _concat,
    "starts_with": _string_predicate,
    "ends_with": _string_predicate,
    "contains": _string_predicate,
    **{name: _math for name in MATH_FUNCTIONS},
    "replace": _replace,
    "greatest": _extreme,
    "least": _extreme,
}


# ---------------------------------------------------------------------------------------- rewriting


def substitute(expr: Expr, replacement: Callable[[Column], Expr]) -> Expr:
    """The expression with every column replaced by replacement(column)."""
    if isinstance(expr, Column):
        return replacement(expr)
    if isinstance(expr, Call):
        return Call(expr.type, expr.fn, tuple(substitute(arg, replacement) for arg in expr.args), expr.options)
    return expr


def rename(expr: Expr, names: dict[str, str]) -> Expr:
    return substitute(expr, lambda c: Column(c.type, names.get(c.name, c.name)))


def conjuncts(expr: Expr | None) -> list[Expr]:
    if expr is None:
        return []
    if isinstance(expr, Call) and expr.fn == "and":
        return [part for arg in expr.args for part in conjuncts(arg)]
    return [expr]


def conjunction(parts: list[Expr]) -> Expr | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else call("and", *parts)


# ---------------------------------------------------------------------------------------- JSON


def to_json(expr: Expr) -> dict:
    if isinstance(expr, Column):
        return {"col": expr.name, "type": T.type_text(expr.type)}
    if isinstance(expr, Literal):
        return {"lit": _literal_json(expr.value, expr.type), "type": T.type_text(expr.type)}
    node: dict[str, Any] = {"fn": expr.fn, "args": [to_json(arg) for arg in expr.args], "type": T.type_text(expr.type)}
    if expr.options:
        node["opt"] = {name: _option_json(value) for name, value in expr.options}
    return node


def from_json(node: dict) -> Expr:
    data_type = T.parse_type(node["type"])
    if "col" in node:
        return Column(data_type, node["col"])
    if "lit" in node:
        return Literal(data_type, _literal_from_json(node["lit"], data_type))
    options = tuple(sorted((name, _option_from_json(name, value, node)) for name, value in node.get("opt", {}).items()))
    return Call(data_type, node["fn"], tuple(from_json(arg) for arg in node["args"]), options)


def _literal_json(value: Any, data_type: pa.DataType) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    raise PlanError(f"literal {value!r} cannot be written to a plan")


def _literal_from_json(value: Any, data_type: pa.DataType) -> Any:
    if value is None:
        return None
    if T.is_decimal(data_type):
        return decimal.Decimal(value)
    if T.is_float(data_type):
        return float(value)
    if pa.types.is_date(data_type):
        return datetime.date.fromisoformat(value)
    if pa.types.is_timestamp(data_type):
        return datetime.datetime.fromisoformat(value)
    if T.is_binary(data_type):
        return bytes.fromhex(value)
    if pa.types.is_duration(data_type):
        return datetime.timedelta(seconds=value)
    return value


def _option_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_literal_json(item, None) for item in value]
    return value


def _option_from_json(name: str, value: Any, node: dict) -> Any:
    if name == "values":
        item_type = T.parse_type(node["args"][0]["type"])
        return tuple(_literal_from_json(item, item_type) for item in value)
    return value


def render(expr: Expr) -> str:
    """A short SQL-like rendering for `sabot explain`."""
    if isinstance(expr, Column):
        return expr.name
    if isinstance(expr, Literal):
        return "NULL" if expr.value is None else (f"'{expr.value}'" if isinstance(expr.value, str) else str(expr.value))
    symbols = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/", "modulo": "%", "eq": "=", "ne": "<>", "lt": "<",
               "le": "<=", "gt": ">", "ge": ">="}  # fmt: skip
    args = [render(arg) for arg in expr.args]
    if expr.fn in symbols:
        return f"({args[0]} {symbols[expr.fn]} {args[1]})"
    if expr.fn in ("and", "or"):
        return "(" + f" {expr.fn.upper()} ".join(args) + ")"
    if expr.fn == "cast":
        return f"CAST({args[0]} AS {expr.type})"
    options = "".join(f", {name}={value!r}" for name, value in expr.options)
    return f"{expr.fn}({', '.join(args)}{options})"
