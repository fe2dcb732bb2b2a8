#!/usr/bin/env python3
"""A real S3-compatible object store on a local address, for tests and local development.

SeaweedFS's `weed mini` (master + volume server + filer + S3 gateway + admin in one process), built
from its Go module by hack/s3/ensure-seaweedfs.sh and cached outside the repo in
${SABOT_CACHE:-~/.cache/sabot}/seaweedfs/<version>/weed. Static credentials (one identity with
Admin/Read/Write/List/Tagging), every port on the bind address only (127.0.0.1 by default; the
real-pods tier binds the pod bridge address) except the admin server's two, which stay on loopback;
telemetry off, no bucket created by a write. Stdlib only: requests are signed with
AWS Signature V4 here, so any python3 runs it (pyarrow is imported only by `filesystem()`).

Library use (the pytest fixtures in tests/conftest.py):

    weed = ensure_weed()                # raises MissingPrerequisite when Go / the module proxy is absent
    s3 = S3Server(weed)                 # host="127.0.0.1", port=0 (a free port), random keys
    s3.start()                          # ready (a test object written and deleted) in a few seconds
    s3.create_bucket("data")
    s3.endpoint, s3.access_key, s3.secret_key, s3.region, s3.env()
    fs = s3.filesystem()                # a pyarrow.fs.S3FileSystem for this server
    s3.stop()                           # SIGTERM, then SIGKILL; its temp dir removed

Command line (the make targets in hack/s3/s3.mk):

    python3 hack/s3/s3server.py ensure                  # build/cache weed, print its path
    python3 hack/s3/s3server.py up   --state-dir .s3    # detached; prints export lines
    python3 hack/s3/s3server.py down --state-dir .s3    # stop it, remove the state dir (and its data)
    python3 hack/s3/s3server.py status --state-dir .s3
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "cluster"))
# process and ensure-script helpers shared with the control-plane tier
from controlplane import (  # noqa: E402,F401
    MISSING_EXIT, MissingPrerequisite, ProcessSupervisor, child_setup, free_port, pid_alive, run_ensure_script, stop_pids,
)

ENSURE_SCRIPT = HERE / "ensure-seaweedfs.sh"
DEFAULT_REGION = "us-east-1"
DEFAULT_BUCKET = "sabot"  # the bucket `up` creates
# Every weed listener: HTTP and gRPC ports of each service (gRPC would default to HTTP + 10000).
PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc",
              "admin", "admin_grpc")
GRPC_SOCKET_SERVICES = ("master", "volume", "filer", "s3", "admin")

# weed reads master.toml / filer.toml / security.toml from -config_dir first, then from ".",
# $HOME/.seaweedfs and /etc/seaweedfs: ours are always found first, so a config on the machine
# never changes the test server.
MASTER_TOML = """\
[master.volume_growth]
# One volume per growth instead of 7: every bucket is a collection, and tests make many buckets.
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
# A fresh master may hold the first volume allocation for its volume servers to report; ours is
# in the same process.
allocation_deferral = "0s"
"""
FILER_TOML = """\
[leveldb2]
enabled = true
dir = "{dir}"
"""
SECURITY_TOML = "# no JWT, no TLS: every listener is on a local address only\n"


class S3ServerError(RuntimeError):
    """weed failed to start, or a request to it failed."""


def ensure_weed(build: bool = True, quiet: bool = False) -> Path:
    """Path of the cached `weed` binary, building it first if `build` (minutes when cold).

    Raises MissingPrerequisite naming what is missing (Go, the module proxy).
    """
    not_built = "SeaweedFS weed binary is not built yet: run hack/s3/ensure-seaweedfs.sh"
    return Path(run_ensure_script(ENSURE_SCRIPT, build, not_built, S3ServerError, quiet))


# --------------------------------------------------------------------------- helpers


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(hosts: list[str], n: int) -> list[int]:
    """n distinct ports free on every address in `hosts`, below the kernel's ephemeral range.

    weed binds its listeners one after another over ~4 s while its own components already dial
    each other; a kernel-assigned free port (ephemeral range) can meanwhile become the source port
    of one of those connections ("bind: address already in use"). Ports under the ephemeral floor
    are never handed out as source ports."""
    floor = _ephemeral_floor()
    lo, hi = (20000, floor) if floor - 20000 >= 1000 else (1024, floor)
    ports: list[int] = []
    rng = secrets.SystemRandom()
    for _ in range(2000):
        p = rng.randrange(lo, hi)
        if p not in ports and all(_port_free(h, p) for h in hosts):
            ports.append(p)
            if len(ports) == n:
                return ports
    raise S3ServerError(f"found only {len(ports)} of {n} free ports in {lo}-{hi - 1} on {', '.join(hosts)}")


def stop_process_group(pid: int) -> bool:
    """SIGTERM weed and its process group, SIGKILL after a grace period; True when it is gone."""
    stop_pids({"weed": pid}, pid)
    return not pid_alive(pid)


def _remove_grpc_sockets(ports: dict[str, int]) -> None:
    """weed registers /tmp/seaweedfs-<service>-grpc-<port>.sock (a fixed path) for in-process gRPC;
    remove ours if a killed weed left them behind."""
    for name in GRPC_SOCKET_SERVICES:
        port = ports.get(f"{name}_grpc")
        if not port:
            continue
        p = Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(p.lstat().st_mode):
                p.unlink()


# --------------------------------------------------------------------------- SigV4 requests


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def s3_request(endpoint: str, method: str, path: str, *, access_key: str, secret_key: str,
               region: str = DEFAULT_REGION, body: bytes = b"", query: dict[str, str] | None = None,
               timeout: float = 10) -> tuple[int, bytes]:
    """One AWS Signature V4 signed request to http://endpoint; returns (status, body).

    HTTP errors come back as their status; connection errors raise OSError (URLError)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    canon_path = urllib.parse.quote(path, safe="/-_.~")
    canon_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted((query or {}).items()))
    headers = {"host": endpoint, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, canon_path, canon_query,
                           "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(_sign(_sign(_sign(f"AWS4{secret_key}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"http://{endpoint}{canon_path}" + (f"?{canon_query}" if canon_query else ""),
        data=body if method in ("PUT", "POST") else None, method=method)
    for k, v in headers.items():
        if k != "host":
            req.add_header(k, v)
    req.add_header("Authorization", f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={signature}")
    # No proxy, ever: the server is on a local address.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _s3_error_code(body: bytes) -> str:
    m = re.search(rb"<Code>([^<]*)</Code>", body)
    return m.group(1).decode() if m else body[:200].decode(errors="replace")


# --------------------------------------------------------------------------- the server


class S3Server(ProcessSupervisor):
    """SeaweedFS (`weed mini`) on host:port with static credentials.

    host: the address every listener binds (and the one weed advertises internally), 127.0.0.1 by
    default; any local address works (the real-pods tier uses the pod bridge, 10.244.0.1).
    port: the S3 port, 0 for a free one. data_dir: the server's directory (config, data, logs);
    None for a temp dir removed by stop(). Keys default to random ones.
    """

    error_type = S3ServerError

    def __init__(self, bin: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 data_dir: str | os.PathLike | None = None, access_key: str | None = None,
                 secret_key: str | None = None, region: str = DEFAULT_REGION, *,
                 die_with_parent: bool = True, volume_size_limit_mb: int = 64, log=None):
        self.bin = Path(bin)
        self.host = host
        self.requested_port = int(port)
        self._own_dir = data_dir is None
        self.workdir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="sabot-s3-"))
        self.access_key = access_key or "sabot" + secrets.token_hex(6)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.region = region
        self.die_with_parent = die_with_parent
        self.volume_size_limit_mb = volume_size_limit_mb
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.ports: dict[str, int] = {}
        self._sock_dir: Path | None = None
        self._log = log or (lambda msg: print(f"[s3server] {msg}", file=sys.stderr, flush=True))
        self.timings: dict[str, float] = {}

    # -- addresses and client settings

    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        """host:port of the S3 API (plain HTTP)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def env(self) -> dict[str, str]:
        """The S3 client variables for this server (only those; merge with os.environ yourself)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem_kwargs(self, **overrides) -> dict:
        """Keyword arguments of pyarrow.fs.S3FileSystem that work with this server."""
        kw = dict(access_key=self.access_key, secret_key=self.secret_key, region=self.region,
                  endpoint_override=self.endpoint, scheme="http",
                  connect_timeout=5, request_timeout=30)
        kw.update(overrides)
        return kw

    def filesystem(self, **overrides):
        """A pyarrow.fs.S3FileSystem for this server (pyarrow imported only here)."""
        from pyarrow import fs as pafs
        return pafs.S3FileSystem(**self.filesystem_kwargs(**overrides))

    # -- S3 operations (stdlib, signed)

    def request(self, method: str, path: str, body: bytes = b"", timeout: float = 10,
                query: dict[str, str] | None = None) -> tuple[int, bytes]:
        return s3_request(self.endpoint, method, path, access_key=self.access_key,
                          secret_key=self.secret_key, region=self.region, body=body, query=query,
                          timeout=timeout)

    def _ok(self, what: str, method: str, path: str, body: bytes = b"", ok=(200, 204)) -> bytes:
        status, data = self.request(method, path, body)
        if status not in ok:
            raise S3ServerError(f"{what}: HTTP {status} {_s3_error_code(data)}")
        return data

    def create_bucket(self, name: str) -> str:
        self._ok(f"create bucket {name!r}", "PUT", f"/{name}")
        return name

    def delete_bucket(self, name: str) -> None:
        self._ok(f"delete bucket {name!r}", "DELETE", f"/{name}", ok=(200, 204, 404))

    def list_buckets(self) -> list[str]:
        data = self._ok("list buckets", "GET", "/")
        return [m.decode() for m in re.findall(rb"<Name>([^<]*)</Name>", data)]

    # -- process management (ProcessSupervisor: tail, _check_alive, _wait over self.procs)

    @property
    def procs(self) -> dict[str, subprocess.Popen]:
        return {"weed": self.proc} if self.proc is not None else {}

    def _save_state(self) -> None:
        state = {"pid": self.pid, "ports": self.ports, "host": self.host, "endpoint": self.endpoint,
                 "access_key": self.access_key, "secret_key": self.secret_key, "region": self.region,
                 "workdir": str(self.workdir), "bin": str(self.bin),
                 "sock_dir": str(self._sock_dir) if self._sock_dir else None}
        sf = self.workdir / "state.json"
        sf.write_text(json.dumps(state, indent=1))
        sf.chmod(0o600)

    def _socket_path(self, name: str) -> str:
        """A Unix socket path for weed's in-process shortcuts, in the work dir when short enough."""
        p = self.workdir / name
        if len(str(p)) > 100:  # sun_path is 108 bytes
            if self._sock_dir is None:
                self._sock_dir = Path(tempfile.mkdtemp(prefix="sabot-s3-sock-"))
            p = self._sock_dir / name
        return str(p)

    # -- lifecycle

    def start(self, timeout: float = 60) -> "S3Server":
        t0 = time.monotonic()
        try:
            self._start(timeout)
        except BaseException:
            self._log("start failed; tearing down what was started")
            self.stop(remove=self._own_dir and not os.environ.get("SABOT_KEEP_S3_DIR"))
            raise
        self.timings["start_total"] = time.monotonic() - t0
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "start_total")
        self._log(f"S3 ready in {self.timings['start_total']:.1f}s ({steps}; {self.url}, dir {self.workdir})")
        return self

    def _start(self, timeout: float) -> None:
        if not self.bin.is_file():
            raise S3ServerError(f"no weed binary at {self.bin}")
        w = self.workdir
        for d in ("logs", "conf", "data"):
            (w / d).mkdir(parents=True, exist_ok=True)
        (w / "conf" / "master.toml").write_text(MASTER_TOML)
        (w / "conf" / "filer.toml").write_text(FILER_TOML.format(dir=w / "data" / "filerldb2"))
        (w / "conf" / "security.toml").write_text(SECURITY_TOML)
        s3_config = w / "conf" / "s3.json"
        s3_config.write_text(json.dumps({"identities": [{
            "name": "sabot",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}, indent=1))
        s3_config.chmod(0o600)

        # The admin server binds loopback whatever the host: its ports must be free there too.
        ports = free_ports(sorted({self.host, "127.0.0.1"}), len(PORT_NAMES))
        if self.requested_port:
            ports = [p for p in ports if p != self.requested_port][:len(PORT_NAMES) - 1]
            ports.insert(PORT_NAMES.index("s3"), self.requested_port)
        self.ports = dict(zip(PORT_NAMES, ports))
        p = self.ports
        argv = [
            str(self.bin), f"-config_dir={w / 'conf'}", "-logtostderr=true", "-v=0",
            # `weed mini`: SeaweedFS's single-node mode (master, volume server, filer, S3, plus its admin
            # server and maintenance worker), writable ~4 s after start; `weed server -s3` holds the
            # filer's announcement ~10 s to confirm that no other filer exists.
            "mini",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-dir={w / 'data'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            "-master.telemetry=false",  # default on: would report to the internet
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=100",  # sparse files of at most volume_size_limit_mb each
            "-volume.preStopSeconds=0",  # stop at once on SIGTERM
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self._socket_path('filer.sock')}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # default 8181 / 9101: fixed ports, not needed
            f"-s3.config={s3_config}",
            f"-s3.localSocket={self._socket_path('s3.sock')}",
            "-s3.allowDeleteBucketNotEmpty=true",
            "-s3.autoCreateBucket=false",  # default true: a write to an unknown bucket would create it
            # The admin server always runs in mini mode; without a password it binds loopback only.
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}", "-admin.port.legacy=0",
            "-admin.ui=false", "-webdav=false",
        ]
        (w / "argv.json").write_text(json.dumps(argv, indent=1))
        # A minimal environment: weed reads WEED_* (any option), AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
        # (an extra identity), S3_BUCKET, S3_EXTERNAL_URL and $HOME/.seaweedfs; none of the caller's apply.
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
        env["HOME"] = str(w)
        t = time.monotonic()
        logf = open(w / "logs" / "weed.log", "ab")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         cwd=w, env=env, preexec_fn=child_setup(0, self.die_with_parent))
        finally:
            logf.close()
        self.pid = self.proc.pid
        self._save_state()

        def list_ok() -> bool:
            status, body = self.request("GET", "/", timeout=2)
            if status != 200:
                raise S3ServerError(f"ListBuckets: HTTP {status} {_s3_error_code(body)}")
            return True
        self._wait(f"the S3 API on {self.url} (signed ListBuckets)", list_ok, timeout)
        self.timings["s3_api"] = time.monotonic() - t

        # Ready means writable: the first object needs a volume grown by the master.
        t = time.monotonic()
        probe = f"sabot-ready-{secrets.token_hex(4)}"
        self._wait("bucket creation", lambda: self.request("PUT", f"/{probe}", timeout=5)[0] == 200, timeout)
        self._wait("a first object write (volume allocation)",
                   lambda: self.request("PUT", f"/{probe}/ready", b"ok", timeout=10)[0] == 200, timeout, 0.25)
        self._ok("read back the probe object", "GET", f"/{probe}/ready")
        self._ok("delete the probe object", "DELETE", f"/{probe}/ready")
        self.delete_bucket(probe)
        self.timings["first_write"] = time.monotonic() - t

    def stop(self, remove: bool | None = None) -> None:
        """Stop weed (SIGTERM, SIGKILL after 10 s). remove: delete the dir (default: if it was ours)."""
        if remove is None:
            remove = self._own_dir
        if self.pid:
            if not stop_process_group(self.pid):
                self._log(f"weed (pid {self.pid}) still alive after SIGKILL")
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=1)
        self.proc = None
        _remove_grpc_sockets(self.ports)
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def export_lines(st: dict, bucket: str | None = None) -> list[str]:
    url = f"http://{st['endpoint']}"
    lines = [
        f"export AWS_ACCESS_KEY_ID={st['access_key']}",
        f"export AWS_SECRET_ACCESS_KEY={st['secret_key']}",
        f"export AWS_DEFAULT_REGION={st['region']}",
        f"export AWS_REGION={st['region']}",
        f"export AWS_ENDPOINT_URL={url}",
        f"export AWS_ENDPOINT_URL_S3={url}",
        "export AWS_EC2_METADATA_DISABLED=true",
        f"export SABOT_S3_ENDPOINT={st['endpoint']}",
    ]
    if bucket:
        lines.append(f"export SABOT_S3_BUCKET={bucket}")
    return lines


# --------------------------------------------------------------------------- CLI


def _read_state(state_dir: Path) -> dict | None:
    sf = state_dir / "state.json"
    return json.loads(sf.read_text()) if sf.exists() else None


def _cmd_ensure(args) -> int:
    try:
        print(ensure_weed(build=True))
    except MissingPrerequisite as e:
        print(f"s3server: {e}", file=sys.stderr)
        return MISSING_EXIT
    return 0


def _cmd_up(args) -> int:
    state_dir = Path(args.state_dir).resolve()
    st = _read_state(state_dir)
    if st:
        if st.get("pid") and pid_alive(st["pid"]):
            print(f"s3server: already running (state in {state_dir}); `make s3-down` first", file=sys.stderr)
            print("\n".join(export_lines(st, st.get("bucket"))))
            return 1
        shutil.rmtree(state_dir, ignore_errors=True)
    try:
        weed = Path(args.bin) if args.bin else ensure_weed(build=True)
    except MissingPrerequisite as e:
        print(f"s3server: {e}", file=sys.stderr)
        return MISSING_EXIT
    # Detach from the caller's session so weed outlives this command; `down` stops it by pid.
    with contextlib.suppress(OSError):
        os.setsid()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / ".gitignore").write_text("*\n")  # nothing in it can be committed by accident
    s3 = S3Server(weed, host=args.host, port=args.port, data_dir=state_dir, access_key=args.access_key,
                  secret_key=args.secret_key, region=args.region, die_with_parent=False)
    try:
        s3.start(timeout=args.timeout)
        if args.bucket:
            s3.create_bucket(args.bucket)
    except S3ServerError as e:
        s3.stop(remove=True)
        print(f"s3server: {e}", file=sys.stderr)
        return 1
    except BaseException:
        s3.stop(remove=True)
        raise
    st = json.loads((state_dir / "state.json").read_text())
    st["bucket"] = args.bucket or None
    (state_dir / "state.json").write_text(json.dumps(st, indent=1))
    print(f"# S3 (SeaweedFS) up on {s3.url}; stop it with: make s3-down", file=sys.stderr)
    print("\n".join(export_lines(st, args.bucket)))
    return 0


def _cmd_down(args) -> int:
    state_dir = Path(args.state_dir).resolve()
    st = _read_state(state_dir)
    if not st:
        print(f"s3server: nothing running (no {state_dir / 'state.json'})", file=sys.stderr)
        shutil.rmtree(state_dir, ignore_errors=True)
        return 0
    gone = stop_process_group(st["pid"]) if st.get("pid") else True
    _remove_grpc_sockets(st.get("ports", {}))
    if st.get("sock_dir"):
        shutil.rmtree(st["sock_dir"], ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    if not gone:
        print(f"s3server: weed (pid {st['pid']}) still alive after SIGKILL", file=sys.stderr)
        return 1
    print(f"s3server: stopped weed (pid {st['pid']}); removed {state_dir}", file=sys.stderr)
    return 0


def _cmd_status(args) -> int:
    st = _read_state(Path(args.state_dir).resolve())
    if not st:
        print("not running")
        return 1
    alive = bool(st.get("pid")) and pid_alive(st["pid"])
    print(f"weed pid {st.get('pid')} {'running' if alive else 'DEAD'} on http://{st['endpoint']}")
    if alive:
        try:
            status, body = s3_request(st["endpoint"], "GET", "/", access_key=st["access_key"],
                                      secret_key=st["secret_key"], region=st["region"], timeout=3)
            print(f"ListBuckets: HTTP {status}"
                  + (f" ({', '.join(m.decode() for m in re.findall(rb'<Name>([^<]*)</Name>', body))})"
                     if status == 200 else f" {_s3_error_code(body)}"))
            alive = status == 200
        except OSError as e:
            print(f"ListBuckets failed: {e}")
            alive = False
    print("\n".join(export_lines(st, st.get("bucket"))))
    return 0 if alive else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ensure", help="build/cache weed (minutes cold, instant warm)")
    default_state = os.environ.get("SABOT_S3_DIR", ".s3")
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--state-dir", default=default_state)
        if name == "up":
            p.add_argument("--host", default=os.environ.get("SABOT_S3_HOST", "127.0.0.1"),
                           help="address to bind every listener to (default 127.0.0.1)")
            p.add_argument("--port", type=int, default=int(os.environ.get("SABOT_S3_PORT", "0")),
                           help="S3 port (default: a free one)")
            p.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket to create ('' for none)")
            p.add_argument("--access-key", default=None, help="default: random")
            p.add_argument("--secret-key", default=None, help="default: random")
            p.add_argument("--region", default=DEFAULT_REGION)
            p.add_argument("--bin", default=None, help="weed binary (default: hack/s3/ensure-seaweedfs.sh)")
            p.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args(argv)
    return {"ensure": _cmd_ensure, "up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
