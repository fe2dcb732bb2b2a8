"""sabot_native.decimal_arithmetic: exact decimal128 +, -, * against Python's decimal module on the
same values (random ones near the precision limits, NULLs, constants, sliced arrays), and the overflow
and argument errors."""

from __future__ import annotations

import decimal
import random

import pyarrow as pa
import pytest
import sabot_native

EXACT = decimal.Context(prec=80)  # exact for every product of two 38-digit values


def _values(rng: random.Random, count: int, precision: int, scale: int) -> pa.Array:
    digits = [rng.choice([1, precision // 2, precision]) for _ in range(count)]
    values = [None if rng.random() < 0.1 else decimal.Decimal(rng.randrange(-(10**d) + 1, 10**d)).scaleb(-scale, EXACT) for d in digits]
    return pa.array(values, pa.decimal128(precision, scale))


def _expected(op: str, x, y, precision: int, scale: int):
    if x is None or y is None:
        return None
    value = {"add": EXACT.add, "subtract": EXACT.subtract, "multiply": EXACT.multiply}[op](x, y)
    return value.quantize(decimal.Decimal(1).scaleb(-scale), context=EXACT)


@pytest.mark.parametrize("op", ["add", "subtract", "multiply"])
@pytest.mark.parametrize("left, right", [((15, 2), (15, 2)), ((12, 4), (7, 1)), ((38, 10), (20, 0)), ((3, 3), (18, 0))])
def test_results_equal_pythons_decimal(op, left, right):
    rng = random.Random(hash((op, left, right)) & 0xFFFF)
    a, b = _values(rng, 2000, *left), _values(rng, 2000, *right)
    scale = left[1] + right[1] if op == "multiply" else max(left[1], right[1])
    precision = 38
    expected = [_expected(op, x, y, precision, scale) for x, y in zip(a.to_pylist(), b.to_pylist())]
    fits = [value is None or abs(value) < EXACT.power(10, precision - scale) for value in expected]
    keep = pa.array(fits)
    a, b = a.filter(keep), b.filter(keep)
    expected = [value for value, fit in zip(expected, fits) if fit]
    result = sabot_native.decimal_arithmetic(op, a, b, precision, scale)
    assert result.type == pa.decimal128(precision, scale)
    assert result.to_pylist() == expected
    assert result.null_count == sum(value is None for value in expected)


def test_constants_nulls_and_slices():
    a = pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-3.50"), decimal.Decimal("0.01")], pa.decimal128(15, 2)).slice(1)
    one = pa.scalar(decimal.Decimal("1"), pa.decimal128(1, 0))
    assert sabot_native.decimal_arithmetic("subtract", one, a, 16, 2).to_pylist() == [None, decimal.Decimal("4.50"), decimal.Decimal("0.99")]
    assert sabot_native.decimal_arithmetic("multiply", a, pa.scalar(decimal.Decimal("-2.5"), pa.decimal128(2, 1)), 18, 3).to_pylist() == [
        None, decimal.Decimal("8.750"), decimal.Decimal("-0.025")]  # fmt: skip
    assert sabot_native.decimal_arithmetic("add", a, pa.scalar(None, pa.decimal128(1, 0)), 16, 2).to_pylist() == [None, None, None]
    big = pa.scalar(decimal.Decimal(10**37 + 3), pa.decimal128(38, 0))  # a 38-digit constant, not rounded to 28
    assert sabot_native.decimal_arithmetic("add", pa.array([decimal.Decimal(1)], pa.decimal128(1, 0)), big, 38, 0).to_pylist() == [
        decimal.Decimal(10**37 + 4)]  # fmt: skip


def test_a_result_beyond_the_precision_raises():
    a = pa.array([decimal.Decimal("99.99"), decimal.Decimal("1.00")], pa.decimal128(4, 2))
    with pytest.raises(OverflowError, match=r"decimal128\(4, 2\)"):
        sabot_native.decimal_arithmetic("add", a, a, 4, 2)
    big = pa.array([decimal.Decimal(10**37)], pa.decimal128(38, 0))
    with pytest.raises(OverflowError):
        sabot_native.decimal_arithmetic("multiply", big, big, 38, 0)  # beyond 128 bits on the way
    assert sabot_native.decimal_arithmetic("add", a, a, 5, 2).to_pylist() == [decimal.Decimal("199.98"), decimal.Decimal("2.00")]


def test_arguments_it_refuses():
    a = pa.array([decimal.Decimal("1.5")], pa.decimal128(5, 1))
    with pytest.raises(ValueError, match="scale"):
        sabot_native.decimal_arithmetic("multiply", a, a, 10, 1)
    with pytest.raises(ValueError, match="operands of different lengths"):
        sabot_native.decimal_arithmetic("add", a, pa.array([decimal.Decimal("1.5")] * 2, pa.decimal128(5, 1)), 10, 1)
    with pytest.raises(TypeError, match="decimal128"):
        sabot_native.decimal_arithmetic("add", a, pa.array([1.5]), 10, 1)
    with pytest.raises(TypeError, match="at least one"):
        sabot_native.decimal_arithmetic("add", a[0], a[0], 10, 1)
    with pytest.raises(ValueError, match="unknown op"):
        sabot_native.decimal_arithmetic("divide", a, a, 10, 2)
