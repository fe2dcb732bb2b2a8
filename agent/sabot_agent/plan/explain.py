"""`sabot explain`: the distributed plan as text — stages, where they run, their tasks, operators
and exchanges, with the planner's row estimates."""

from __future__ import annotations

from sabot_agent.plan import physical as P
from sabot_agent.plan.expressions import render


def explain(plan: P.DistributedPlan, agents: int, slots: int) -> str:
    lines = [f"{len(plan.stages)} stages on {agents} agent{'s' if agents != 1 else ''} x {slots} slot{'s' if slots != 1 else ''}"]
    for stage in plan.stages:
        where = "agent 0" if stage.single else "every agent"
        lines.append("")
        lines.append(f"stage {stage.id} ({where}, {_tasks(plan, stage, agents)}) -> {_output(plan, stage)}   ~{_rows(stage.estimated_rows)} rows")
        lines += _tree(stage.root, "    ")
    return "\n".join(lines)


def _rows(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}K"
    return f"{value:.0f}"


def _tasks(plan: P.DistributedPlan, stage: P.Stage, agents: int) -> str:
    if P.scans(stage.root):
        return f"tasks: row groups of {P.scans(stage.root)[0].input}"
    hashed = [read for read in P.reads(stage.root) if read.kind == "hash"]
    if hashed:
        partitions = plan.stage(hashed[0].stage).output.partitions
        return f"tasks: {partitions} partitions, {-(-partitions // agents)} per agent"
    return "tasks: 1 per agent" if not stage.single else "tasks: 1"


def _output(plan: P.DistributedPlan, stage: P.Stage) -> str:
    exchange = stage.output
    if exchange is None:
        shape = "one ordered file" if plan.ordered and stage.single else ("one file" if stage.single else "a part file per agent")
        return f"result ({', '.join(plan.output_names)}) as {shape}"
    if exchange.kind == "hash":
        return f"hash exchange on ({', '.join(exchange.keys)}) into {exchange.partitions} partitions"
    return {"broadcast": "broadcast to every agent", "gather": "gather to agent 0", "forward": "forward to the same agent"}[exchange.kind]


def _tree(op: P.Op, indent: str) -> list[str]:
    lines = [indent + _describe(op)]
    for child in op.children:
        lines += _tree(child, indent + "  ")
    return lines


def _describe(op: P.Op) -> str:
    if isinstance(op, P.ScanOp):
        text = f"scan {op.input} [{', '.join(source for _, source in op.columns)}]"
        return text + (f" where {render(op.predicate)}" if op.predicate is not None else "")
    if isinstance(op, P.ValuesOp):
        return f"values ({len(op.rows)} rows)"
    if isinstance(op, P.ExchangeRead):
        return f"read {op.kind} exchange of stage {op.stage}"
    if isinstance(op, P.FilterOp):
        return f"filter {render(op.predicate)}"
    if isinstance(op, P.ProjectOp):
        computed = [f"{name} = {render(expr)}" for name, expr in op.exprs if not (hasattr(expr, "name") and expr.name == name)]
        return f"project {len(op.exprs)} columns" + (f": {'; '.join(computed)}" if computed else "")
    if isinstance(op, P.AggregateOp):
        keys = ", ".join(name for name, _ in op.keys) or "(all rows)"
        calls = ", ".join(f"{name} = {call.function}({'DISTINCT ' if call.distinct else ''}{render(call.argument) if call.argument else '*'})"
                          for name, call in op.aggregates)  # fmt: skip
        return f"aggregate {op.mode} by {keys}" + (f": {calls}" if calls else "")
    if isinstance(op, P.JoinOp):
        keys = " AND ".join(f"{a} = {b}" for a, b in zip(op.left_keys, op.right_keys)) or "no keys"
        return f"hash join {op.kind} on {keys}" + (f" and {render(op.residual)}" if op.residual is not None else "") + " (build: right)"
    if isinstance(op, P.SortOp):
        keys = ", ".join(f"{render(key.expr)} {'ASC' if key.ascending else 'DESC'}{' NULLS FIRST' if key.nulls_first else ''}" for key in op.keys)
        return f"sort by {keys}" + (f" limit {op.limit}" if op.limit is not None else "") + (f" offset {op.offset}" if op.offset else "")
    if isinstance(op, P.LimitOp):
        return f"limit {op.limit}" + (f" offset {op.offset}" if op.offset else "")
    if isinstance(op, P.UnionOp):
        return f"union all of {len(op.parts)} inputs"
    if isinstance(op, P.ReplicatedOp):
        return "replicated: every agent reads all of it, once for all its tasks"
    return type(op).__name__
