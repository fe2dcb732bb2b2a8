#!/usr/bin/env python3
"""The API server for pods of the real-pods tier ("T2"): a TCP relay (stdlib only, TLS passes through).

The T1 control plane's kube-apiserver listens on 127.0.0.1 only (it binds a single address, and T1 has
no bridge). Pods on the bridge reach it through this relay, which node.py starts on two addresses:

  10.244.0.1:<apiserver port>  the apiserver's advertised address on the pod bridge: the `kubernetes`
                               Service's Endpoints (kube-apiserver --advertise-address, lease reconciler)
  10.0.0.1:443                 the `kubernetes` Service's ClusterIP and port, i.e. the
                               KUBERNETES_SERVICE_HOST/PORT the kubelet puts into every pod, so
                               in-cluster config works unchanged; this is what kube-proxy does for that
                               one Service (there is no kube-proxy here; 10.0.0.1/32 is an address of the
                               bridge, and pods get a route for exactly that /32 via the bridge gateway)

Both forward to the apiserver on loopback; the serving certificate names 10.0.0.1 and 10.244.0.1, so
clients verify it as usual. No other Service ClusterIP is reachable from pods.

    python3 apiproxy.py --listen 10.0.0.1:443 --listen 10.244.0.1:6443 --to 127.0.0.1:6443
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


async def handle(client_r, client_w, host: str, port: int) -> None:
    try:
        up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, asyncio.TimeoutError):
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
    for w in (client_w, up_w):
        with contextlib.suppress(Exception):
            w.close()


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main_async(listen: list[str], to: str) -> None:
    host, port = hostport(to)
    servers = []
    for address in listen:
        lhost, lport = hostport(address)
        servers.append(await asyncio.start_server(lambda r, w: handle(r, w, host, port), lhost, lport))
    print(f"apiproxy: {', '.join(listen)} -> {to}", file=sys.stderr, flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", action="append", required=True, help="address:port (repeatable)")
    ap.add_argument("--to", required=True, help="the apiserver's address:port")
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args.listen, args.to))
    return 0


if __name__ == "__main__":
    sys.exit(main())
