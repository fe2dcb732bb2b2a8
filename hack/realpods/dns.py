#!/usr/bin/env python3
"""A minimal cluster DNS for the real-pods tier (stdlib only), in place of CoreDNS.

The agents dial each other as `<pod hostname>.<headless service>` (resolved through the pod's search
domains `<ns>.svc.<domain> svc.<domain> <domain>`). This server answers exactly the names Kubernetes'
DNS specification defines for that and nothing else (no forwarding: pods need no internet):

  <hostname>.<subdomain>.<ns>.svc.<domain>  A  the live pod of that namespace with spec.hostname and
                                                spec.subdomain (not terminating, not finished, has an IP)
  <service>.<ns>.svc.<domain>               A  ClusterIP, or for a headless service its endpoints
                                                (ready and not-ready addresses)

Any other name gets NXDOMAIN; AAAA and other types of a known name get an empty answer (NODATA), so
resolvers do not wait. Lookups go to the API server on every query (answers live 1 s in a cache).

    python3 dns.py --listen 10.244.0.1 --port 53 --server https://127.0.0.1:PORT \
        --ca ca.crt --cert admin.crt --key admin.key [--domain cluster.local]
"""
from __future__ import annotations

import argparse
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.request

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
RCODE_OK, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 1, 3, 5
TTL = 1


class Api:
    def __init__(self, server: str, ca: str, cert: str, key: str):
        self.server = server.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)
        self.cache: dict[str, tuple[float, object]] = {}
        self.lock = threading.Lock()

    def get(self, path: str):
        now = time.monotonic()
        with self.lock:
            hit = self.cache.get(path)
            if hit and now - hit[0] < 1.0:
                return hit[1]
        try:
            with urllib.request.urlopen(self.server + path, context=self.ctx, timeout=3) as r:
                value = json.loads(r.read())
        except urllib.error.HTTPError as e:
            value = None if e.code == 404 else {}
        with self.lock:
            self.cache[path] = (now, value)
        return value


def lookup(api: Api, labels: list[str], domain: list[str]) -> list[str] | None:
    """IPv4 addresses of a name (list, maybe empty = NODATA), or None for NXDOMAIN."""
    n = len(domain)
    if len(labels) < n + 3 or labels[-n:] != domain or labels[-n - 1] != "svc":
        return None
    rest = labels[: -n - 1]  # [..., name(s), ns]
    ns = rest[-1]
    if len(rest) == 2:  # <service>.<ns>
        svc = api.get(f"/api/v1/namespaces/{ns}/services/{rest[0]}")
        if not svc:
            return None
        ip = svc.get("spec", {}).get("clusterIP")
        if ip and ip != "None":
            return [ip]
        ep = api.get(f"/api/v1/namespaces/{ns}/endpoints/{rest[0]}") or {}
        return sorted({a["ip"] for s in ep.get("subsets") or [] for key in ("addresses", "notReadyAddresses")
                       for a in s.get(key) or []})
    if len(rest) == 3:  # <hostname>.<subdomain>.<ns>
        hostname, subdomain = rest[0], rest[1]
        pods = (api.get(f"/api/v1/namespaces/{ns}/pods") or {}).get("items", [])
        ips = [p["status"]["podIP"] for p in pods
               if p["spec"].get("hostname") == hostname and p["spec"].get("subdomain") == subdomain
               and not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP")
               and p["status"].get("phase") not in ("Succeeded", "Failed")]
        return ips or None
    return None


def parse_question(data: bytes) -> tuple[int, int, list[str], int, int, int]:
    ident, flags, qd = struct.unpack("!HHH", data[:6])
    if qd != 1:
        raise ValueError("one question expected")
    pos, labels = 12, []
    while True:
        length = data[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compression in a question")
        labels.append(data[pos:pos + length].decode("ascii", "replace").lower())
        pos += length
    qtype, qclass = struct.unpack("!HH", data[pos:pos + 4])
    return ident, flags, labels, qtype, qclass, pos + 4


def answer(api: Api, domain: list[str], data: bytes) -> bytes:
    try:
        ident, flags, labels, qtype, qclass, end = parse_question(data)
    except (ValueError, IndexError, struct.error):
        return struct.pack("!HHHHHH", int.from_bytes(data[:2] or b"\0\0", "big"), 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)
    question = data[12:end]
    rd = flags & 0x0100
    try:
        ips = lookup(api, labels, domain) if qclass == CLASS_IN else None
        rcode = RCODE_NXDOMAIN if ips is None else RCODE_OK
    except Exception as e:  # noqa: BLE001 - API server unreachable: SERVFAIL
        print(f"dns: lookup {'.'.join(labels)} failed: {e}", file=sys.stderr, flush=True)
        ips, rcode = None, 2
    records = b""
    count = 0
    if ips and qtype == TYPE_A:
        for ip in ips:
            records += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + socket.inet_aton(ip)
            count += 1
    header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, count, 0, 0)
    return header + question + records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--server", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--domain", default="cluster.local")
    args = ap.parse_args(argv)
    api = Api(args.server, args.ca, args.cert, args.key)
    domain = args.domain.lower().strip(".").split(".")

    class Udp(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(answer(api, domain, data), self.client_address)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                head = self.rfile.read(2)
                if len(head) < 2:
                    return
                data = self.rfile.read(struct.unpack("!H", head)[0])
                reply = answer(api, domain, data)
                self.wfile.write(struct.pack("!H", len(reply)) + reply)

    socketserver.ThreadingUDPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    udp = socketserver.ThreadingUDPServer((args.listen, args.port), Udp)
    tcp = socketserver.ThreadingTCPServer((args.listen, args.port), Tcp)
    udp.daemon_threads = tcp.daemon_threads = True
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    print(f"dns: serving *.svc.{args.domain} on {args.listen}:{args.port}", file=sys.stderr, flush=True)
    udp.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
