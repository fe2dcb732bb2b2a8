"""`sabot-operator`: run the SabotJob operator cluster-wide or in the given namespaces."""

from __future__ import annotations

import argparse

import kopf
import prometheus_client

from . import handlers  # noqa: F401  (importing registers the kopf handlers)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sabot-operator", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--metrics-port", type=int, default=9090, help="port of the operator's Prometheus /metrics (default 9090)")
    parser.add_argument("--health-port", type=int, default=8081, help="port of the operator's liveness endpoint /healthz (default 8081)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose)
    prometheus_client.start_http_server(args.metrics_port)
    kopf.run(
        # One replica acts at a time by deployment (replicas: 1); conditional status writes keep a
        # second one from corrupting a job, so kopf's peering objects are not needed.
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
