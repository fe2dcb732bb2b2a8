"""A producer agent process for exchange tests and benchmarks: the Agent class the pods run (serving
only), whose stage 0 output is a generated table hash-partitioned on its "key" column and sealed.
`from exchange_support import ...` (tests/ is on sys.path)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa

from helpers import child_env, stop_process

JOB = "exchange-test"
KEY = "key"

# The data, defined once for the producer process and for the modules that check what they receive.
SAMPLE_TABLE = """
def sample_table(rows, seed=0, batch_rows=None):
    generator = np.random.default_rng(seed)
    keys = generator.integers(0, 1000, rows)
    table = pa.table({"key": pa.array(keys, mask=keys % 17 == 0), "name": pa.array([f"name-{k}" for k in keys]),
                      "value": generator.random(rows)})
    return table if batch_rows is None else pa.Table.from_batches(table.combine_chunks().to_batches(max_chunksize=batch_rows))
"""
exec(SAMPLE_TABLE)

PRODUCER = """
import json, sys, threading, time
import numpy as np, pyarrow as pa
from sabot_agent.runner import Agent, AgentConfig
from sabot_agent.engine.exchange import StageOutput, stage_shuffle_id
from sabot_agent.security import AgentTLS
""" + SAMPLE_TABLE + """
rows, batch_rows, partitions, delay, budget, spill = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                                                      int(sys.argv[5]), sys.argv[6])
tls = AgentTLS.load(*sys.argv[7:10]) if len(sys.argv) > 7 else None  # agent 0's certificate, key and CA
# agent 0 of 2: its consumer is agent 1
config = AgentConfig(agent_index=0, agent_count=2, memory_budget_bytes=budget or None, spill_dir=spill, tls=tls)
agent = Agent(config, None)
agent.start()
output = StageOutput(agent.store, stage_shuffle_id(%r, 0, 0), 0, 0, partitions, "hash", [%r],
                     lambda batch, keys, n: agent.native.partition_batch(batch, keys, n), 0)
print(json.dumps({"flight": agent.flight_port, "http": agent.http.port}), flush=True)
def produce():
    time.sleep(delay)
    table = sample_table(rows, batch_rows=batch_rows)
    for batch in table.to_batches():
        output.write(pa.Table.from_batches([batch]))
    output.seal(table.schema)
    print("sealed", flush=True)
threading.Thread(target=produce, daemon=True).start()
threading.Event().wait()
""" % (JOB, KEY)


class Producer:
    """`with Producer(...) as producer:` a running producer process; `.peer` is its Flight address.
    `tls`: the paths of agent 0's certificate, key and CA, for mutual TLS with its consumer."""

    def __init__(self, spill_dir, rows=20_000, batch_rows=3000, partitions=4, delay=0.0, memory_budget=0, wait_sealed=False, tls=()):
        self.process = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(rows), str(batch_rows), str(partitions), str(delay), str(memory_budget), str(spill_dir),
             *map(str, tls)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), start_new_session=True,
        )  # fmt: skip
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"producer did not start: {self.process.stderr.read()[-2000:]}")
        ports = json.loads(line)
        self.peer, self.http_port = f"127.0.0.1:{ports['flight']}", ports["http"]
        if wait_sealed and self.process.stdout.readline().strip() != "sealed":
            raise RuntimeError(f"producer did not seal: {self.process.stderr.read()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.process, grace=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
