"""The agent's HTTP port (never the Flight port): GET /metrics, /healthz, /readyz, /status, read-only.

Plain HTTP: the kubelet's probes and Prometheus read it, and it holds no secret (counters, phase and
progress). Any other path is 404, any other method 405; the server names no software version.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

SHUTDOWN_POLL_SECONDS = 0.05


class AgentHttpServer:
    def __init__(self, host: str, port: int, registry, status: Callable[[], dict], ready: Callable[[], bool]):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def version_string(self) -> str:  # the Server header: no Python version
                return "sabot-agent"

            def __getattr__(self, name: str):
                # http.server looks up do_<METHOD>: every method but GET is refused
                if name.startswith("do_"):
                    return self._method_not_allowed
                raise AttributeError(name)

            def _method_not_allowed(self) -> None:
                self.send_response(405)
                self.send_header("Allow", "GET")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer._registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    is_ready = outer._ready()
                    self._send(200 if is_ready else 503, b"ready\n" if is_ready else b"not ready\n", "text/plain")
                elif path == "/status":
                    self._send(200, json.dumps(outer._status()).encode(), "application/json")
                else:
                    self._send(404, f"no such endpoint {path}; try /metrics /healthz /readyz /status\n".encode(), "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # scrapes every few seconds would drown the agent's log
                pass

        self._registry = registry
        self._status = status
        self._ready = ready
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # stop() waits for serve_forever to notice (every poll interval; the default 0.5 s): the agent
        # shuts this server down first when its job ends, and agent 0 waits for its peers to be gone
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                                        name="sabot-http", daemon=True)  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
