"""The order of inner joins, chosen by estimated sizes.

The SQL front-end joins tables in the order the query names them. A tree of inner (and cross) joins,
with the filters and column-pruning projections between them, is one *region*: its leaves (scans and
anything that is not an inner join) can be joined in any order, each condition applied as soon as
the tables it reads are joined. The planner rebuilds every region greedily (Fegaras' greedy operator
ordering): of all pairs of subtrees connected by an equality, join the pair whose estimated result is
smallest, until one tree remains; unconnected subtrees are crossed last, smallest first. The larger
side of each join is its left (probe) side. Selective dimension joins thus run before the joins that
carry many rows (TPC-H q7 joins lineitem with the two nations' suppliers before orders).

A region's result keeps the columns and order of the original, and each join keeps only the columns
something above it reads.

Semi and anti joins above a region (IN / EXISTS / NOT IN subqueries without a correlated condition)
only keep or drop rows by the values of their left keys; when one leaf holds all those keys, the
join moves down onto that leaf, before the inner joins (TPC-H q18 keeps the few orders of its IN
subquery before joining them with lineitem, instead of joining all 6 M lineitem rows first).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan.estimates import Cardinality, Estimator, join_cardinality

REGION_JOIN_KINDS = ("inner", "cross")
# joins that keep or drop left rows by their keys alone: movable below the inner joins of a region
FILTERING_JOIN_KINDS = ("semi", "anti", "anti_null_aware")


def reorder_joins(node: L.Node, estimator: Estimator) -> L.Node:
    """The plan with every inner-join region rebuilt in its estimated best order."""
    return _Reorderer(estimator).visit(node)


@dataclass
class _Region:
    leaves: list[L.Node] = field(default_factory=list)
    conditions: list[E.Expr] = field(default_factory=list)  # join keys as equalities, filters, residuals
    filtering: list[L.Join] = field(default_factory=list)  # semi/anti joins above the region, right sides visited


@dataclass
class _Tree:
    node: L.Node
    cardinality: Cardinality
    leaves: frozenset[int]


@dataclass(frozen=True)
class _Condition:
    expr: E.Expr
    leaves: frozenset[int]
    # for an equality of one leaf's expression with another's: (leaf, expr), (leaf, expr)
    sides: tuple[tuple[int, E.Expr], tuple[int, E.Expr]] | None


def _is_pruning(node: L.Node) -> bool:
    return isinstance(node, L.Project) and all(isinstance(expr, E.Column) and expr.name == name for name, expr in node.exprs)


def _is_filtering(node: L.Node) -> bool:
    return isinstance(node, L.Join) and node.kind in FILTERING_JOIN_KINDS and node.residual is None and bool(node.left_keys)


def _is_region(node: L.Node) -> bool:
    while isinstance(node, L.Filter) or _is_pruning(node) or _is_filtering(node):
        node = node.inputs[0]
    return isinstance(node, L.Join) and node.kind in REGION_JOIN_KINDS


class _Reorderer:
    def __init__(self, estimator: Estimator):
        self.estimator = estimator

    def visit(self, node: L.Node) -> L.Node:
        if (isinstance(node, L.Join) and node.kind in REGION_JOIN_KINDS) or (_is_filtering(node) and _is_region(node)):
            region = _Region()
            self._collect(node, region)
            if len(region.leaves) > 2 or region.filtering:
                return self._build(region, node.schema)
        return self._rebuild(node)

    def _rebuild(self, node: L.Node) -> L.Node:
        """The node with its inputs visited."""
        return L.with_inputs(node, [self.visit(child) for child in node.inputs])

    def _collect(self, node: L.Node, region: _Region) -> None:
        if isinstance(node, L.Join) and node.kind in REGION_JOIN_KINDS:
            self._collect(node.left, region)
            self._collect(node.right, region)
            region.conditions += [E.call("eq", left, right) for left, right in zip(node.left_keys, node.right_keys)]
            region.conditions += E.conjuncts(node.residual)
        elif _is_filtering(node) and _is_region(node.left):
            region.filtering.append(replace(node, right=self.visit(node.right)))
            self._collect(node.left, region)
        elif isinstance(node, L.Filter) and _is_region(node.input):
            region.conditions += E.conjuncts(node.predicate)
            self._collect(node.input, region)
        elif _is_pruning(node) and _is_region(node.inputs[0]):
            self._collect(node.inputs[0], region)
        else:
            region.leaves.append(self.visit(node))

    # -- building

    def _build(self, region: _Region, schema: L.Schema) -> L.Node:
        owner = {f.name: index for index, leaf in enumerate(region.leaves) for f in leaf.schema}
        conditions = [_condition(expr, owner) for expr in region.conditions]
        output = [f.name for f in schema]
        nodes, above = [], []
        for index, leaf in enumerate(region.leaves):
            local = [c.expr for c in conditions if c.leaves == {index}]
            conditions = [c for c in conditions if c.leaves != {index}]
            nodes.append(L.Filter(leaf, E.conjunction(local)) if local else leaf)
        for join in reversed(region.filtering):  # innermost first, as written
            leaves = {owner[name] for key in join.left_keys for name in key.columns()}
            if len(leaves) == 1:
                (index,) = leaves
                nodes[index] = replace(join, left=nodes[index])
            else:
                above.append(join)
        trees = [_Tree(node, self.estimator.of(node), frozenset({index})) for index, node in enumerate(nodes)]
        while len(trees) > 1:
            first, second = self._best_pair(trees, conditions)
            trees, conditions = self._join(trees, first, second, conditions, output)
        root = trees[0].node
        for join in above:
            root = replace(join, left=root)
        remaining = E.conjunction([c.expr for c in conditions])
        if remaining is not None:
            root = L.Filter(root, remaining)
        return L.Project(root, tuple((f.name, E.column(f.name, f.type)) for f in schema))

    def _best_pair(self, trees: list[_Tree], conditions: list[_Condition]) -> tuple[int, int]:
        best, best_rows = None, None
        for i in range(len(trees)):
            for j in range(i + 1, len(trees)):
                pairs = _key_pairs(trees[i], trees[j], conditions)
                if not pairs:
                    continue
                rows = join_cardinality(trees[i].cardinality, trees[j].cardinality, "inner", pairs).rows
                if best_rows is None or rows < best_rows:
                    best, best_rows = (i, j), rows
        if best is not None:
            return best
        # nothing connects the trees: cross the two smallest
        smallest = sorted(range(len(trees)), key=lambda index: trees[index].cardinality.rows)
        return smallest[0], smallest[1]

    def _join(self, trees: list[_Tree], first: int, second: int, conditions: list[_Condition],
              output: list[str]) -> tuple[list[_Tree], list[_Condition]]:  # fmt: skip
        a, b = trees[first], trees[second]
        probe, build = (a, b) if a.cardinality.rows >= b.cardinality.rows else (b, a)
        pairs = _key_pairs(probe, build, conditions)
        leaves = probe.leaves | build.leaves
        used = [c for c in conditions if c.leaves <= leaves]
        keyed = {id(c) for c in used if c.sides is not None and _spans(c, probe, build)}
        residual = E.conjunction([c.expr for c in used if id(c) not in keyed])
        remaining = [c for c in conditions if not c.leaves <= leaves]
        node: L.Node = L.Join(probe.node, build.node, "inner" if pairs else "cross", tuple(p for p, _ in pairs), tuple(b for _, b in pairs),
                              residual)  # fmt: skip
        needed = set(output) | {name for c in remaining for name in c.expr.columns()}
        if any(f.name not in needed for f in node.schema):
            node = L.Project(node, tuple((f.name, E.column(f.name, f.type)) for f in node.schema if f.name in needed))
        joined = _Tree(node, self.estimator.of(node), leaves)
        rest = [tree for index, tree in enumerate(trees) if index not in (first, second)]
        return rest + [joined], remaining


def _condition(expr: E.Expr, owner: dict[str, int]) -> _Condition:
    leaves = frozenset(owner[name] for name in expr.columns())
    sides = None
    if isinstance(expr, E.Call) and expr.fn == "eq" and len(leaves) == 2:
        left, right = expr.args
        left_leaves = {owner[name] for name in left.columns()}
        right_leaves = {owner[name] for name in right.columns()}
        if len(left_leaves) == 1 and len(right_leaves) == 1 and left_leaves != right_leaves:
            sides = ((left_leaves.pop(), left), (right_leaves.pop(), right))
    return _Condition(expr, leaves, sides)


def _spans(condition: _Condition, probe: _Tree, build: _Tree) -> bool:
    (first, _), (second, _) = condition.sides
    return (first in probe.leaves and second in build.leaves) or (first in build.leaves and second in probe.leaves)


def _key_pairs(probe: _Tree, build: _Tree, conditions: list[_Condition]) -> list[tuple[E.Expr, E.Expr]]:
    """The equalities between the two trees as (probe key, build key)."""
    pairs = []
    for condition in conditions:
        if condition.sides is None or not _spans(condition, probe, build):
            continue
        (first, first_expr), (_, second_expr) = condition.sides
        pairs.append((first_expr, second_expr) if first in probe.leaves else (second_expr, first_expr))
    return pairs
