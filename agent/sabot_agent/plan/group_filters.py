"""Aggregates restricted to the groups a join keeps (TPC-H q2, q17, q20).

A decorrelated subquery (`l_quantity < (SELECT 0.2 * avg(l_quantity) FROM lineitem WHERE l_partkey =
p_partkey)`) becomes a join of the outer rows with an aggregate over *all* groups of its table,
although the join then keeps only the groups whose key some outer row has. When the outer side's key
column comes from a small filtered leaf (a scan with its filters, projections and semi joins), the
aggregate's input is first semi-joined with that leaf's keys, so only those groups are computed
(q17: the lineitems of ~2 K parts instead of all 6 M rows). All rows of a group share its key, so a
group that remains is computed from all of its rows, as before; the leaf is evaluated twice, which
its size bounds.
"""

from __future__ import annotations

from dataclasses import replace

from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan.estimates import Estimator

# a leaf restricts an aggregate when its estimated rows are at most this fraction of the aggregate's groups
RESTRICT_MAX_FRACTION = 0.25
# the column of restricting keys, renamed so it cannot meet a column of the aggregate's input
KEYS_PREFIX = "__group_keys."
_FILTERING_KINDS = ("semi", "anti", "anti_null_aware")


def restrict_aggregates(node: L.Node, estimator: Estimator) -> L.Node:
    """The plan with every aggregate that a join reads by its group key restricted, where it pays."""
    return _Restrictor(estimator).visit(node)


class _Restrictor:
    def __init__(self, estimator: Estimator):
        self.estimator = estimator

    def visit(self, node: L.Node) -> L.Node:
        node = _with_inputs(node, [self.visit(child) for child in node.inputs])
        if not (isinstance(node, L.Join) and node.kind in ("inner", "semi") and node.left_keys):
            return node
        right = self._restricted(node.right, node.right_keys, node.left, node.left_keys)
        left = self._restricted(node.left, node.left_keys, node.right, node.right_keys) if node.kind == "inner" else None
        if right is not None:
            node = replace(node, right=right)
        if left is not None:
            node = replace(node, left=left)
        return node

    def _restricted(self, side: L.Node, side_keys, other: L.Node, other_keys) -> L.Node | None:
        """`side` with its aggregate restricted to the keys of a small leaf of `other`, or None."""
        best = None
        for side_key, other_key in zip(side_keys, other_keys):
            if not (isinstance(side_key, E.Column) and isinstance(other_key, E.Column)):
                continue
            leaf = _leaf_of(other, other_key.name)
            if leaf is not None:
                rows = self.estimator.of(leaf[0]).rows
                if best is None or rows < best[0]:
                    best = (rows, side_key.name, leaf)
        if best is None:
            return None
        rows, name, (leaf, column) = best
        keys = L.Project(leaf, ((KEYS_PREFIX + column, E.column(column, L.field_of(leaf.schema, column).type)),))
        return self._restrict(side, name, keys, rows)

    def _restrict(self, node: L.Node, name: str, keys: L.Project, key_rows: float) -> L.Node | None:
        if isinstance(node, L.Project):
            expr = dict(node.exprs).get(name)
            if not isinstance(expr, E.Column):
                return None
            inner = self._restrict(node.input, expr.name, keys, key_rows)
        elif isinstance(node, L.Filter):
            inner = self._restrict(node.input, name, keys, key_rows)
        elif isinstance(node, L.Aggregate):
            key = dict(node.keys).get(name)
            if key is None or key_rows > RESTRICT_MAX_FRACTION * self.estimator.of(node).rows:
                return None
            (key_name, key_column), = keys.exprs
            return replace(node, input=L.Join(node.input, keys, "semi", (key,), (E.column(key_name, key_column.type),)))
        else:
            return None
        return replace(node, input=inner) if inner is not None else None


def _leaf_of(node: L.Node, name: str) -> tuple[L.Node, str] | None:
    """The filtered leaf that produces column `name` of `node` — the top of the chain of projections,
    filters and semi/anti joins over one scan — and the column's name there. A chain without a filter
    holds every key of its table and restricts nothing: None."""
    top, filtered = None, False
    while True:
        if top is None:
            top, filtered = (node, name), False
        if isinstance(node, L.Scan):
            return top if filtered or node.predicate is not None else None
        filtered = filtered or isinstance(node, L.Filter) or (isinstance(node, L.Join) and node.kind in _FILTERING_KINDS)
        if isinstance(node, L.Project):
            expr = dict(node.exprs).get(name)
            if not isinstance(expr, E.Column):
                return None
            node, name = node.input, expr.name
        elif isinstance(node, L.Filter):
            node = node.input
        elif isinstance(node, L.Join) and node.kind in _FILTERING_KINDS:
            node = node.left
        elif isinstance(node, L.Join) and node.kind in ("inner", "cross"):
            node = node.left if name in L.schema_names(node.left.schema) else node.right
            top = None
        else:
            return None


def _with_inputs(node: L.Node, inputs: list[L.Node]) -> L.Node:
    if all(new is old for new, old in zip(inputs, node.inputs)):
        return node
    if isinstance(node, L.Join):
        return replace(node, left=inputs[0], right=inputs[1])
    if isinstance(node, L.Union):
        return replace(node, parts=tuple(inputs))
    return replace(node, input=inputs[0])
