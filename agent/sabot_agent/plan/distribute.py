"""The planner that cuts a logical plan into stages (the distributed plan of `plan.physical`).

Join inputs are first restricted to the keys a small filtered side holds (`plan.key_filters`:
aggregates of decorrelated subqueries, the filtering sides of semi joins), and inner joins reordered by estimated sizes (`plan.joins`). Each node then becomes a fragment:
its operators, how its rows are spread over the agents (any, hash-partitioned on keys, all on agent 0)
and an estimate (`plan.estimates`). An aggregation is partial before a hash exchange on its keys and
final after it (complete when its input is already partitioned so); a join shuffles both sides on
its keys unless one side is small enough to broadcast, and a small broadcast side that only reads
inputs is replicated instead; a sort or limit runs per task, then once more on agent 0 after a gather.

`plan_stages(query, ...)` is deterministic: the same query, input statistics and settings give the same
plan in every process.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan.estimates import UNKNOWN_TABLE_ROWS, Estimate, Estimator, TableStats, scan_row_bytes, schema_bytes
from sabot_agent.plan.key_filters import restrict_to_keys
from sabot_agent.plan.joins import reorder_joins
from sabot_agent.plan.physical import (AggregateOp, DistributedPlan, Exchange, ExchangeRead, FilterOp, JoinOp, LimitOp, Op, ProjectOp,
                                       ReplicatedOp, ScanOp, SortOp, Stage, UnionOp, ValuesOp, op_key, reads, scans)  # fmt: skip
from sabot_agent.plan.types import PlanError

# a join side estimated below this is broadcast when that is cheaper than shuffling both sides
BROADCAST_MAX_BYTES = 32 << 20
ALWAYS_BROADCAST_BYTES = 1 << 20
# a broadcast side that only reads inputs of at most this many bytes is read whole by every agent
# instead: no stage, no exchange, no wait (TPC-H's nation, region, supplier at scale 1)
REPLICATE_MAX_BYTES = 4 << 20


@dataclass
class _Fragment:
    op: Op
    schema: L.Schema | None  # None for partial-aggregate states (the native kernels name them)
    dist: str  # any | hash | single
    estimate: Estimate
    keys: tuple[str, ...] = ()
    partitions: int = 0


class _Planner:
    def __init__(self, stats: dict[str, TableStats], agents: int, partitions: int):
        self.stats = stats
        self.estimator = Estimator(stats)
        self.agents = agents
        self.partitions = partitions
        self.stages: list[Stage] = []
        self._stage_of: dict[str, int] = {}  # a stage's operator tree and exchange -> its id
        self._names = 0

    def fresh(self, prefix: str) -> str:
        self._names += 1
        return f"__{prefix}{self._names}"

    def cut(self, fragment: _Fragment, kind: str, keys: list[str] | None = None, partitions: int = 1) -> ExchangeRead:
        """A stage computing the fragment into an exchange; a stage computing the same rows into the
        same exchange is reused (a CTE read twice, as in TPC-H q15, is computed once)."""
        exchange = Exchange(kind, list(keys or []), partitions if kind == "hash" else (self.agents if kind == "forward" else 1))
        single = fragment.dist == "single"
        key = json.dumps([op_key(fragment.op), exchange.kind, exchange.keys, exchange.partitions, single])
        if key not in self._stage_of:
            self._stage_of[key] = len(self.stages)
            self.stages.append(Stage(len(self.stages), fragment.op, exchange, single=single, estimated_rows=fragment.estimate.rows))
        return ExchangeRead(self._stage_of[key], kind)

    def broadcast(self, fragment: _Fragment) -> Op:
        """All of a fragment's rows for every task: a small fragment that only reads inputs is computed
        by every agent itself (once, for all its tasks), anything else goes through a broadcast exchange."""
        scanned = sum(self._scan_bytes(fragment.op))
        if fragment.dist == "any" and not reads(fragment.op) and scanned <= REPLICATE_MAX_BYTES:
            return ReplicatedOp(fragment.op)
        return self.cut(fragment, "broadcast")

    def _scan_bytes(self, op: Op) -> list[float]:
        """The estimated bytes every scan of an operator tree reads (before its predicate)."""
        found = []
        for scan in scans(op, into_replicated=True):
            stats = self.stats.get(scan.input)
            rows = float(stats.rows) if stats else UNKNOWN_TABLE_ROWS
            found.append(rows * scan_row_bytes(stats, [source for _, source in scan.columns], scan.types))
        return found

    # -- dispatch

    def plan(self, node: L.Node) -> _Fragment:
        handler = getattr(self, f"_{type(node).__name__}")
        return handler(node)

    def _Scan(self, node: L.Scan) -> _Fragment:
        op = ScanOp(node.table, list(node.columns), list(node.source_types), node.predicate)
        return _Fragment(op, node.schema, "any", Estimate(self.estimator.of(node).rows, scan_row_bytes(self.stats.get(node.table), [source for _, source in node.columns], list(node.source_types))))

    def _Values(self, node: L.Values) -> _Fragment:
        return _Fragment(ValuesOp(list(node.fields), list(node.rows)), node.schema, "single", Estimate(len(node.rows), schema_bytes(node.schema)))

    def _Filter(self, node: L.Filter) -> _Fragment:
        child = self.plan(node.input)
        if isinstance(child.op, ScanOp) and child.op.predicate is None:
            # the scan prunes row groups with the predicate and applies it exactly
            child.op.predicate = node.predicate
            op = child.op
        else:
            op = FilterOp(child.op, node.predicate)
        return _Fragment(op, child.schema, child.dist, Estimate(self.estimator.of(node).rows, child.estimate.row_bytes), child.keys,
                         child.partitions)  # fmt: skip

    def _Project(self, node: L.Project) -> _Fragment:
        child = self.plan(node.input)
        keys = child.keys
        if child.dist == "hash":
            # partitioning survives under the names a key column is projected to
            renamed = {expr.name: name for name, expr in node.exprs if isinstance(expr, E.Column)}
            keys = tuple(renamed[key] for key in child.keys) if all(key in renamed for key in child.keys) else ()
        dist = child.dist if child.dist != "hash" or keys else "any"
        return _Fragment(ProjectOp(child.op, list(node.exprs)), node.schema, dist, Estimate(child.estimate.rows, schema_bytes(node.schema)),
                         keys, child.partitions if keys else 0)  # fmt: skip

    def _Aggregate(self, node: L.Aggregate) -> _Fragment:
        child = self.plan(node.input)
        key_names = [name for name, _ in node.keys]
        estimate = Estimate(self.estimator.of(node).rows, schema_bytes(node.schema))
        distinct = any(call.distinct for _, call in node.aggregates)
        plain_keys = {expr.name for _, expr in node.keys if isinstance(expr, E.Column)}
        if child.dist == "single" or (child.dist == "hash" and child.keys and set(child.keys) <= plain_keys):
            mode = "distinct" if distinct else "complete"
            op = AggregateOp(child.op, mode, list(node.keys), list(node.aggregates))
            keys = tuple(name for name, expr in node.keys if isinstance(expr, E.Column) and expr.name in child.keys)
            if child.dist == "hash":
                keys = tuple(next(name for name, expr in node.keys if isinstance(expr, E.Column) and expr.name == key) for key in child.keys)
            return _Fragment(op, node.schema, child.dist, estimate, keys if child.dist == "hash" else (), child.partitions)
        if distinct:
            # DISTINCT calls have no partial state: ship the rows (keys and arguments) to their group's partition
            columns = [(name, expr) for name, expr in node.keys]
            arguments: list[tuple[str, L.AggregateCall]] = []
            for name, call in node.aggregates:
                if call.argument is None:
                    arguments.append((name, call))
                    continue
                column_name = self.fresh("arg")
                columns.append((column_name, call.argument))
                arguments.append((name, L.AggregateCall(call.function, E.column(column_name, call.argument.type), call.type, call.distinct)))
            projected = ProjectOp(child.op, columns)
            source = _Fragment(projected, None, child.dist, child.estimate)
            read = self.cut(source, "hash", key_names, self.partitions) if node.keys else self.cut(source, "gather")
            keys = [(name, E.column(name, expr.type)) for name, expr in node.keys]
            op = AggregateOp(read, "distinct", keys, arguments)
        else:
            partial = AggregateOp(child.op, "partial", list(node.keys), list(node.aggregates))
            source = _Fragment(partial, None, child.dist, estimate)
            read = self.cut(source, "hash", key_names, self.partitions) if node.keys else self.cut(source, "gather")
            keys = [(name, E.column(name, expr.type)) for name, expr in node.keys]
            op = AggregateOp(read, "final", keys, list(node.aggregates))
        if node.keys:
            return _Fragment(op, node.schema, "hash", estimate, tuple(key_names), self.partitions)
        return _Fragment(op, node.schema, "single", estimate)

    def _Sort(self, node: L.Sort) -> _Fragment:
        child = self.plan(node.input)
        if child.dist == "single":
            return _Fragment(SortOp(child.op, list(node.keys), node.limit, node.offset), child.schema, "single", child.estimate)
        local_limit = None if node.limit is None else node.limit + node.offset
        # each task sorts (and keeps its top rows when there is a limit); agent 0 merges
        local = SortOp(child.op, list(node.keys), local_limit, 0) if local_limit is not None else child.op
        read = self.cut(_Fragment(local, child.schema, child.dist, child.estimate), "gather")
        estimate = Estimate(min(child.estimate.rows, local_limit or math.inf), child.estimate.row_bytes)
        return _Fragment(SortOp(read, list(node.keys), node.limit, node.offset), child.schema, "single", estimate)

    def _Limit(self, node: L.Limit) -> _Fragment:
        child = self.plan(node.input)
        if child.dist == "single":
            return _Fragment(LimitOp(child.op, node.limit, node.offset), child.schema, "single", child.estimate)
        local_limit = None if node.limit is None else node.limit + node.offset
        local = LimitOp(child.op, local_limit, 0) if local_limit is not None else child.op
        read = self.cut(_Fragment(local, child.schema, child.dist, child.estimate), "gather")
        estimate = Estimate(min(child.estimate.rows, local_limit or math.inf), child.estimate.row_bytes)
        return _Fragment(LimitOp(read, node.limit, node.offset), child.schema, "single", estimate)

    def _Union(self, node: L.Union) -> _Fragment:
        parts = [self.plan(part) for part in node.parts]
        reads_ = [self.cut(part, "forward") for part in parts]
        rows = sum(part.estimate.rows for part in parts)
        return _Fragment(UnionOp(list(reads_)), node.schema, "any", Estimate(rows, schema_bytes(node.schema)))

    def _Join(self, node: L.Join) -> _Fragment:
        if node.kind == "right":
            # a right join is the left join of the swapped sides; the columns are put back in order
            swapped = L.Join(node.right, node.left, "left", node.right_keys, node.left_keys, node.residual)
            fragment = self._Join(swapped)
            exprs = [(f.name, E.column(f.name, f.type)) for f in node.schema]
            return _Fragment(ProjectOp(fragment.op, exprs), node.schema, fragment.dist, fragment.estimate, fragment.keys, fragment.partitions)
        left, right = self.plan(node.left), self.plan(node.right)
        left, left_keys = self._materialize_keys(left, node.left_keys)
        right, right_keys = self._materialize_keys(right, node.right_keys)
        estimate = Estimate(self.estimator.of(node).rows, schema_bytes(node.schema))
        kind = node.kind

        def finish(op: Op, dist: str, keys=(), partitions=0) -> _Fragment:
            if any(name.startswith("__key") for name in left_keys + right_keys):
                op = ProjectOp(op, [(f.name, E.column(f.name, f.type)) for f in node.schema])
            return _Fragment(op, node.schema, dist, estimate, keys, partitions)

        if kind in ("single", "cross"):
            # one side is a scalar subquery or small: every agent gets all of it
            if kind == "cross" and right.estimate.bytes > left.estimate.bytes and left.dist != "single":
                build = self.broadcast(left)
                op = JoinOp(right.op, build, "cross", [], [], node.residual)
                exprs = [(f.name, E.column(f.name, f.type)) for f in node.schema]
                return _Fragment(ProjectOp(op, exprs), node.schema, right.dist, estimate, right.keys, right.partitions)
            build = self.cut(right, "gather") if left.dist == "single" else self.broadcast(right)
            return finish(JoinOp(left.op, build, kind, [], [], node.residual), left.dist, left.keys, left.partitions)
        if left.dist == "single" and kind != "full":
            build = self.cut(right, "gather")
            return finish(JoinOp(left.op, build, kind, left_keys, right_keys, node.residual), "single")
        if kind == "anti_null_aware" or (kind != "full" and self._broadcast(left, right)):
            build = self.broadcast(right)
            return finish(JoinOp(left.op, build, kind, left_keys, right_keys, node.residual), left.dist, left.keys, left.partitions)
        if kind == "inner" and right.dist != "single" and self._broadcast(right, left):
            # the left side is the small one: build on it, keep the columns in the join's order
            build = self.broadcast(left)
            op = JoinOp(right.op, build, "inner", right_keys, left_keys, node.residual)
            exprs = [(f.name, E.column(f.name, f.type)) for f in node.schema]
            return _Fragment(ProjectOp(op, exprs), node.schema, right.dist, estimate, right.keys, right.partitions)
        left_read = self._partitioned(left, left_keys)
        right_read = self._partitioned(right, right_keys)
        op = JoinOp(left_read, right_read, kind, left_keys, right_keys, node.residual)
        keys = tuple(left_keys) if not any(k.startswith("__key") for k in left_keys) else ()
        return finish(op, "hash" if keys else "any", keys, self.partitions if keys else 0)

    def _broadcast(self, probe: _Fragment, build: _Fragment) -> bool:
        size = build.estimate.bytes
        if build.dist == "single":
            return True
        return size <= ALWAYS_BROADCAST_BYTES or (size <= BROADCAST_MAX_BYTES and size * self.agents <= probe.estimate.bytes)

    def _partitioned(self, fragment: _Fragment, keys: list[str]) -> Op:
        """The side's rows hash-partitioned on keys: as they are when already so, else through an exchange."""
        if fragment.dist == "hash" and list(fragment.keys) == keys and fragment.partitions == self.partitions:
            return fragment.op
        return self.cut(fragment, "hash", keys, self.partitions)

    def _materialize_keys(self, fragment: _Fragment, keys: tuple[E.Expr, ...]) -> tuple[_Fragment, list[str]]:
        """Join and exchange keys are columns: computed keys get a column of their own first."""
        names, extra = [], []
        for key in keys:
            if isinstance(key, E.Column):
                names.append(key.name)
            else:
                name = self.fresh("key")
                names.append(name)
                extra.append((name, key))
        if not extra:
            return fragment, names
        exprs = [(f.name, E.column(f.name, f.type)) for f in fragment.schema] + extra
        schema = fragment.schema + tuple(L.Field(name, expr.type) for name, expr in extra)
        return _Fragment(ProjectOp(fragment.op, exprs), schema, fragment.dist, fragment.estimate, fragment.keys, fragment.partitions), names


def default_partitions(agents: int, slots: int) -> int:
    """Hash partitions of an exchange: two tasks per task slot of the job, a multiple of the agent
    count so every agent owns the same number."""
    return max(1, 2 * agents * slots)


def plan_stages(query: L.Query, stats: dict[str, TableStats], agents: int, partitions: int) -> DistributedPlan:
    if agents < 1 or partitions < 1:
        raise PlanError("a plan needs at least one agent and one partition")
    planner = _Planner(stats, agents, partitions)
    fragment = planner.plan(reorder_joins(restrict_to_keys(query.root, planner.estimator), planner.estimator))
    root = ProjectOp(fragment.op, [(name, E.column(f.name, f.type)) for name, f in zip(query.output_names, fragment.schema)])
    planner.stages.append(Stage(len(planner.stages), root, None, single=fragment.dist == "single", estimated_rows=fragment.estimate.rows))
    return DistributedPlan(planner.stages, list(query.output_names), query.ordered)
