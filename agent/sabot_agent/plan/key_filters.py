"""Join inputs restricted to the keys a small filtered side holds, before they are aggregated or shuffled.

- Aggregates (TPC-H q2, q17, q20). A decorrelated subquery (`l_quantity < (SELECT 0.2 * avg(l_quantity)
  FROM lineitem WHERE l_partkey = p_partkey)`) becomes a join of the outer rows with an aggregate over
  *all* groups of its table, although the join keeps only the groups whose key some outer row has.
  The aggregate's input is first semi-joined with the keys of the outer side's filtered leaf, so only
  those groups are computed (q17: the lineitems of ~2 K parts instead of all 6 M rows). All rows of a
  group share its key, so a group that remains is computed from all of its rows, as before.
- The filtering side of a semi or anti join (EXISTS, IN, NOT EXISTS; q4, q22). Only its rows whose key
  some left row has can decide anything, so it is semi-joined with the keys of the left side's
  filtered leaf before both sides are shuffled (q4: 2 % of lineitem's 3.8 M late lines instead of all).
  Not for NOT IN (anti_null_aware): a NULL key on the right side decides every row there.

The filtered leaf is the top of a chain of projections, filters and semi/anti joins over one scan that
produces the key column; it is evaluated once more for its keys, which its size bounds (estimated at
most RESTRICT_MAX_FRACTION of what it restricts). A leaf without any filter holds every key of its
table and restricts nothing.
"""

from __future__ import annotations

from dataclasses import replace

from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan.estimates import Estimator

# a leaf restricts when its estimated rows are at most this fraction of the groups or rows it restricts
RESTRICT_MAX_FRACTION = 0.25
# the column of restricting keys, renamed so it cannot meet a column of the aggregate's input
KEYS_PREFIX = "__group_keys."
_FILTERING_KINDS = ("semi", "anti", "anti_null_aware")


def restrict_to_keys(node: L.Node, estimator: Estimator) -> L.Node:
    """The plan with join inputs restricted to the keys of the other side's small filtered leaf, where it pays."""
    return _Restrictor(estimator).visit(node)


class _Restrictor:
    def __init__(self, estimator: Estimator):
        self.estimator = estimator

    def visit(self, node: L.Node) -> L.Node:
        node = L.with_inputs(node, [self.visit(child) for child in node.inputs])
        if not (isinstance(node, L.Join) and node.kind in ("inner", "semi", "anti") and node.left_keys):
            return node
        right = self._restricted(node.right, node.right_keys, node.left, node.left_keys, whole=node.kind != "inner")
        left = self._restricted(node.left, node.left_keys, node.right, node.right_keys, whole=False) if node.kind == "inner" else None
        if right is not None:
            node = replace(node, right=right)
        if left is not None:
            node = replace(node, left=left)
        return node

    def _restricted(self, side: L.Node, side_keys, other: L.Node, other_keys, whole: bool) -> L.Node | None:
        """`side` with its aggregate restricted to the keys of a small leaf of `other` — or, `whole`,
        `side` itself restricted to them — or None."""
        best = None
        for side_key, other_key in zip(side_keys, other_keys):
            if not (isinstance(side_key, E.Column) and isinstance(other_key, E.Column)):
                continue
            leaf = _leaf_of(other, other_key.name)
            if leaf is not None:
                rows = self.estimator.of(leaf[0]).rows
                if best is None or rows < best[0]:
                    best = (rows, side_key, leaf)
        if best is None:
            return None
        rows, side_key, (leaf, column) = best
        keys = L.Project(leaf, ((KEYS_PREFIX + column, E.column(column, L.field_of(leaf.schema, column).type)),))
        restricted = self._restrict(side, side_key.name, keys, rows)
        if restricted is None and whole and rows <= RESTRICT_MAX_FRACTION * self.estimator.of(side).rows:
            restricted = _semi(side, side_key, keys)
        return restricted

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
            return replace(node, input=_semi(node.input, key, keys))
        else:
            return None
        return replace(node, input=inner) if inner is not None else None


def _semi(node: L.Node, key: E.Expr, keys: L.Project) -> L.Join:
    """The rows of `node` whose `key` is one of `keys`."""
    ((name, column),) = keys.exprs
    return L.Join(node, keys, "semi", (key,), (E.column(name, column.type),))


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

