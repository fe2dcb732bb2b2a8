#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, for tests (the "T1" tier).

etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok (which
plays the kubelet for one fake Node), all bound to 127.0.0.1 on free ports,
with certificates made by the openssl CLI. Stdlib only.

Binaries come from hack/cluster/ensure-binaries.sh (built once from the Go
modules, cached outside the repo in ${SABOT_CACHE:-~/.cache/sabot}).

Library use (the pytest fixtures in tests/conftest.py):

    bins = ensure_binaries()            # raises MissingPrerequisite when Go/proxy/etcd absent
    cp = ControlPlane(bins)
    cp.start()                          # ready in a few seconds; tears down on failure
    cp.kubectl("get", "nodes")
    cp.stop()                           # kills every process it started, removes its dir

Command line (the make targets in hack/cluster/cluster.mk):

    python hack/cluster/controlplane.py ensure            # build/cache binaries, print bin dir
    python hack/cluster/controlplane.py up   --state-dir .cluster   # detached; prints export KUBECONFIG=...
    python hack/cluster/controlplane.py down --state-dir .cluster
    python hack/cluster/controlplane.py status --state-dir .cluster
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENSURE_SCRIPT = HERE / "ensure-binaries.sh"
MISSING_EXIT = 3  # the ensure-*.sh scripts' exit code for "a prerequisite is missing"

FAKE_NODE = "kwok-node-0"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_FIRST_IP = "10.0.0.1"
ADMIN_TOKEN_USER = "admin"


class MissingPrerequisite(RuntimeError):
    """Go toolchain, module proxy, etcd or openssl is not available here."""


class ControlPlaneError(RuntimeError):
    """The control plane did not come up (logs are quoted in the message)."""


def read_versions() -> dict[str, str]:
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("SABOT_CACHE") or Path.home() / ".cache" / "sabot")


# --------------------------------------------------------------------------- binaries


@dataclass
class Binaries:
    bin_dir: Path
    kube_version: str

    @property
    def etcd(self) -> Path:
        return self.bin_dir / "etcd"

    @property
    def kube(self) -> Path:
        return self.bin_dir / "kube"

    @property
    def kwok(self) -> Path:
        return self.bin_dir / "kwok"

    @property
    def kube_minor(self) -> int:
        return int(self.kube_version.lstrip("v").split(".")[1])

    def kubectl(self) -> str:
        """kubectl on PATH when its minor version equals the server's, else the built one."""
        path_kubectl = shutil.which("kubectl")
        if path_kubectl:
            try:
                out = subprocess.run(
                    [path_kubectl, "version", "--client", "-o", "json"],
                    capture_output=True, text=True, timeout=30,
                )
                minor = json.loads(out.stdout)["clientVersion"]["minor"].rstrip("+")
                if int(minor) == self.kube_minor:
                    return path_kubectl
            except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
                pass
        return str(self.bin_dir / "kubectl")


def run_ensure_script(script: Path, build: bool, not_built: str, failure: type[Exception], quiet: bool = False) -> str:
    """Run an ensure-*.sh script (with --check when not `build`), streaming its progress to stderr
    (unless quiet), and return the last line of its stdout (the path it prints).

    Exit 3 or a "missing: ..." line raises MissingPrerequisite naming what is missing; a --check that
    finds nothing built raises MissingPrerequisite(not_built); any other failure raises `failure`."""
    args = ["bash", str(script)] + ([] if build else ["--check"])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        err_lines.append(line.rstrip("\n"))
        if not quiet:
            sys.stderr.write(line)
            sys.stderr.flush()
    stdout = proc.stdout.read()
    rc = proc.wait()
    if rc != 0:
        if not build:
            raise MissingPrerequisite(not_built)
        msg = next((l for l in reversed(err_lines) if "missing:" in l), err_lines[-1] if err_lines else "")
        if rc == MISSING_EXIT or "missing:" in msg:
            raise MissingPrerequisite(msg.split("ERROR:", 1)[-1].strip())
        raise failure(f"{script.name} failed (exit {rc}): {msg}")
    return stdout.strip().splitlines()[-1]


def ensure_binaries(build: bool = True, quiet: bool = False) -> Binaries:
    """Return the cached binaries, building them first if `build` (minutes when cold).

    Raises MissingPrerequisite naming what is missing (Go, the module proxy, etcd).
    """
    versions = read_versions()
    if not shutil.which("openssl"):
        raise MissingPrerequisite("missing: openssl CLI (apt-get install openssl)")
    not_built = f"Kubernetes {versions['KUBE_VERSION']} binaries are not built yet: run hack/cluster/ensure-binaries.sh"
    bin_dir = Path(run_ensure_script(ENSURE_SCRIPT, build, not_built, ControlPlaneError, quiet))
    return Binaries(bin_dir=bin_dir, kube_version=versions["KUBE_VERSION"])


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ControlPlaneError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")


def child_setup(pgid: int, die_with_parent: bool):
    """Runs in the child before exec: join/lead our process group; optionally die with the parent.

    pgid 0 makes the child lead a new group. die_with_parent sets PR_SET_PDEATHSIG so a
    control plane started by pytest cannot outlive a crashed or SIGKILLed pytest.
    """
    def setup() -> None:
        os.setpgid(0, pgid)  # pgid 0: become leader of a new group
        if die_with_parent:
            with contextlib.suppress(Exception):
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    return setup


def make_pki(d: Path, extra_sans: list[str] | tuple[str, ...] = ()) -> None:
    """CA, apiserver serving cert, admin client cert, service-account key pair.

    extra_sans: more subjectAltName entries of the serving cert ("IP:10.244.0.1"), for a control plane
    that is also reached at an address other than loopback (the real-pods tier's pod bridge)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt",
          "-days", "3650", "-subj", "/CN=sabot-test-ca"], cwd=d)
    (d / "serving.ext").write_text(textwrap.dedent(f"""\
        basicConstraints=CA:FALSE
        keyUsage=critical,digitalSignature,keyEncipherment
        extendedKeyUsage=serverAuth
        subjectAltName=IP:127.0.0.1,IP:{SERVICE_FIRST_IP},{"".join(f"{san}," for san in extra_sans)}DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
        """))
    (d / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    for name, subj, ext in (
        ("apiserver", "/CN=kube-apiserver", "serving.ext"),
        ("admin", "/O=system:masters/CN=admin", "client.ext"),
    ):
        _run(["openssl", "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
              "-subj", subj], cwd=d)
        _run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
              "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", f"{name}.crt"], cwd=d)
    _run(["openssl", "genrsa", "-out", "sa.key", "2048"], cwd=d)
    _run(["openssl", "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], cwd=d)


def write_kubeconfig(path: Path, server: str, ca: Path, *, token: str | None = None,
                     cert: Path | None = None, key: Path | None = None, user: str = "user") -> None:
    if token:
        cred = f"    token: {token}\n"
    else:
        cred = f"    client-certificate: {cert}\n    client-key: {key}\n"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: sabot-test\n  cluster:\n    server: {server}\n"
        f"    certificate-authority: {ca}\n"
        f"users:\n- name: {user}\n  user:\n{cred}"
        f"contexts:\n- name: sabot-test\n  context:\n    cluster: sabot-test\n    user: {user}\n"
        "current-context: sabot-test\n"
    )
    path.chmod(0o600)


FAKE_NODE_YAML = f"""\
apiVersion: v1
kind: Node
metadata:
  name: {FAKE_NODE}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: {FAKE_NODE}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
status:
  allocatable: {{cpu: "32", memory: 256Gi, pods: "110"}}
  capacity: {{cpu: "32", memory: 256Gi, pods: "110"}}
  nodeInfo: {{architecture: amd64, operatingSystem: linux, kubeletVersion: fake}}
"""


# --------------------------------------------------------------------------- control plane


class ProcessSupervisor:
    """Named child processes (`self.procs`) that log to `<workdir>/logs/<name>.log`; a wait fails at
    once, with the log's last lines, when one of them dies."""

    error_type: type[Exception] = RuntimeError
    procs: dict[str, subprocess.Popen]
    workdir: Path

    def tail(self, name: str, n: int = 25) -> str:
        p = self.workdir / "logs" / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else "(no log)"

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise self.error_type(f"{name} exited with {proc.returncode}; last log lines:\n{self.tail(name)}")

    def _wait(self, what: str, fn, timeout: float, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                r = fn()
                if r:
                    return r
            except Exception as e:  # noqa: BLE001 - polled probe
                last_err = e
            time.sleep(interval)
        raise self.error_type(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_err})")


class ControlPlane(ProcessSupervisor):
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1."""

    error_type = ControlPlaneError

    def __init__(self, binaries: Binaries, workdir: Path | None = None, *,
                 die_with_parent: bool = True, log=None, extra_apiserver_args: list[str] | None = None,
                 extra_sans: list[str] | None = None):
        self.bins = binaries
        # Extra subjectAltNames of the apiserver's serving cert (see make_pki).
        self.extra_sans = list(extra_sans or [])
        # Extra kube-apiserver flags (the real-pods tier, hack/realpods/node.py, adds kubelet client
        # flags); "{pki}" in a flag stands for this control plane's certificate directory.
        self.extra_apiserver_args = list(extra_apiserver_args or [])
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sabot-cp-"))
        self.die_with_parent = die_with_parent
        self.procs: dict[str, subprocess.Popen] = {}
        self.pids: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self.kubeconfig = self.workdir / "kubeconfig"
        self.admin_token = os.urandom(16).hex()
        self._kubectl = binaries.kubectl()
        self._log = log or (lambda msg: print(f"[controlplane] {msg}", file=sys.stderr, flush=True))
        self.timings: dict[str, float] = {}

    # -- process management

    def _spawn(self, name: str, argv: list[str]) -> None:
        logf = open(self.workdir / "logs" / f"{name}.log", "ab")
        # One process group for everything, led by the first process started (etcd).
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=self.workdir,
            preexec_fn=child_setup(self.ports.get("pgid", 0), self.die_with_parent),
        )
        logf.close()
        if "pgid" not in self.ports:
            self.ports["pgid"] = proc.pid
        self.procs[name] = proc
        self.pids[name] = proc.pid
        self._save_state()

    def _save_state(self) -> None:
        state = {"pids": self.pids, "ports": self.ports, "kubeconfig": str(self.kubeconfig),
                 "workdir": str(self.workdir), "kube_version": self.bins.kube_version}
        (self.workdir / "state.json").write_text(json.dumps(state, indent=1))

    # -- probes

    def _https_ok(self, port: int, path: str, *, auth: bool) -> bool:
        if auth:
            ctx = ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))
        else:  # controller-manager / scheduler serve a self-signed cert on /healthz
            ctx = ssl._create_unverified_context()  # noqa: S323 - loopback health probe only
        req = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
        if auth:
            req.add_header("Authorization", f"Bearer {self.admin_token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _etcd_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['etcd']}/health", timeout=2) as r:
                return b'"health":"true"' in r.read().replace(b" ", b"")
        except (urllib.error.URLError, OSError):
            return False

    # -- lifecycle

    def start(self, timeout: float = 90) -> "ControlPlane":
        t0 = time.monotonic()
        try:
            self._start(timeout)
        except BaseException:
            self._log("start failed; tearing down what was started")
            self.stop(remove=self._own_workdir and not os.environ.get("SABOT_KEEP_CLUSTER_DIR"))
            raise
        self.timings["start_total"] = time.monotonic() - t0
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "start_total")
        self._log(f"control plane ready in {self.timings['start_total']:.1f}s ({steps}; "
                  f"apiserver https://127.0.0.1:{self.ports['apiserver']}, dir {self.workdir})")
        return self

    def _start(self, timeout: float) -> None:
        w = self.workdir
        (w / "logs").mkdir(parents=True, exist_ok=True)
        pki = w / "pki"
        t = time.monotonic()
        make_pki(pki, self.extra_sans)
        self.timings["pki"] = time.monotonic() - t
        for name in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok"):
            self.ports[name] = free_port()
        server = f"https://127.0.0.1:{self.ports['apiserver']}"

        tokens = {
            "admin": (self.admin_token, ADMIN_TOKEN_USER, "system:masters"),
            "controller-manager": (os.urandom(16).hex(), "system:kube-controller-manager", ""),
            "scheduler": (os.urandom(16).hex(), "system:kube-scheduler", ""),
            "kwok": (os.urandom(16).hex(), "kwok-controller", "system:masters"),
        }
        (pki / "tokens.csv").write_text("".join(
            f'{tok},{user},{user},"{groups}"\n' if groups else f"{tok},{user},{user}\n"
            for tok, user, groups in tokens.values()
        ))
        # The admin kubeconfig uses a client certificate (O=system:masters); components use tokens.
        write_kubeconfig(self.kubeconfig, server, pki / "ca.crt",
                         cert=pki / "admin.crt", key=pki / "admin.key", user="admin")
        for comp, (tok, user, _) in tokens.items():
            write_kubeconfig(w / f"{comp}.kubeconfig", server, pki / "ca.crt", token=tok, user=user)

        # etcd: data in /dev/shm when available (tmpfs: no fsync cost).
        shm = Path("/dev/shm")
        etcd_data = Path(tempfile.mkdtemp(prefix="sabot-etcd-", dir=shm if shm.is_dir() else w))
        (w / "etcd-data-dir").write_text(str(etcd_data))
        ec, ep = self.ports["etcd"], self.ports["etcd_peer"]
        t = time.monotonic()
        self._spawn("etcd", [
            str(self.bins.etcd), "--name=default", f"--data-dir={etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{ec}", f"--advertise-client-urls=http://127.0.0.1:{ec}",
            f"--listen-peer-urls=http://127.0.0.1:{ep}", f"--initial-advertise-peer-urls=http://127.0.0.1:{ep}",
            f"--initial-cluster=default=http://127.0.0.1:{ep}", "--initial-cluster-state=new",
        ])
        self._wait("etcd /health", self._etcd_ok, timeout)
        self.timings["etcd"] = time.monotonic() - t

        t = time.monotonic()
        self._spawn("kube-apiserver", [
            str(self.bins.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ec}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={w / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Front-proxy (aggregation) headers: only a cert with CN=front-proxy-client from our CA.
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            # The 'kubernetes' Service's Endpoints may not point at loopback; T1 has no pods
            # that need in-cluster API access, so don't reconcile them (T2 will advertise a real IP).
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
            *(a.replace("{pki}", str(pki)) for a in self.extra_apiserver_args),
        ])
        self._wait("kube-apiserver /readyz",
                   lambda: self._https_ok(self.ports["apiserver"], "/readyz", auth=True), timeout)
        self.timings["apiserver"] = time.monotonic() - t

        t = time.monotonic()
        kcm_kc = w / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            str(self.bins.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kcm_kc}",
            f"--authentication-kubeconfig={kcm_kc}", f"--authorization-kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['controller_manager']}",
            f"--cert-dir={w / 'kcm-certs'}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            "--concurrent-gc-syncs=5",
            "--profiling=false",
            "--v=1",
        ])
        sched_kc = w / "scheduler.kubeconfig"
        self._spawn("kube-scheduler", [
            str(self.bins.bin_dir / "kube-scheduler"),
            f"--kubeconfig={sched_kc}",
            f"--authentication-kubeconfig={sched_kc}", f"--authorization-kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['scheduler']}",
            f"--cert-dir={w / 'scheduler-certs'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ])
        self._spawn("kwok", [
            str(self.bins.kwok),
            f"--kubeconfig={w / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--manage-nodes-with-label-selector=",
            "--node-ip=127.0.0.1",
            "--node-name=kwok-controller-0",
            f"--node-port={self.ports['kwok']}",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
            "--node-lease-duration-seconds=40",
        ])
        self.kubectl("apply", "-f", "-", input=FAKE_NODE_YAML)
        self._wait("kube-controller-manager /healthz",
                   lambda: self._https_ok(self.ports["controller_manager"], "/healthz", auth=False), timeout)
        self._wait("kube-scheduler /healthz",
                   lambda: self._https_ok(self.ports["scheduler"], "/healthz", auth=False), timeout)
        self._wait("default ServiceAccount in namespace default (serviceaccount controller)",
                   lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default",
                                        check=False).returncode == 0, timeout, interval=0.2)
        self._wait(f"fake node {FAKE_NODE} Ready (kwok)", self._node_ready, timeout, interval=0.2)
        self.timings["components"] = time.monotonic() - t

    def _node_ready(self) -> bool:
        out = self.kubectl("get", "node", FAKE_NODE, "-o",
                           "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
        return out.returncode == 0 and out.stdout.strip() == "True"

    def stop(self, remove: bool = True) -> None:
        stop_pids(self.pids, self.ports.get("pgid"))
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        self.procs.clear()
        etcd_ptr = self.workdir / "etcd-data-dir"
        if etcd_ptr.exists():
            shutil.rmtree(etcd_ptr.read_text().strip(), ignore_errors=True)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- client helpers

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return run_kubectl(self._kubectl, self.kubeconfig, *args, input=input, check=check,
                           timeout=timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(remove=self._own_workdir)


def wait_for(fn, timeout: float = 60, interval: float = 0.25, what: str = "condition"):
    """Poll fn() until it returns a truthy value and return that; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def run_kubectl(kubectl: str, kubeconfig: Path, *args: str, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [kubectl, f"--kubeconfig={kubeconfig}", *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists": reap it if we can.
    with contextlib.suppress(ChildProcessError, OSError):
        wpid, _ = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def stop_pids(pids: dict[str, int], pgid: int | None, grace: float = 10) -> None:
    """SIGTERM each process we started (and our process group), then SIGKILL leftovers."""
    targets = [p for p in pids.values() if p]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline and any(pid_alive(p) for p in targets):
            time.sleep(0.05)
        if not any(pid_alive(p) for p in targets):
            return


# --------------------------------------------------------------------------- CLI


def _cmd_ensure(args) -> int:
    try:
        bins = ensure_binaries(build=True)
    except MissingPrerequisite as e:
        print(f"controlplane: {e}", file=sys.stderr)
        return MISSING_EXIT
    print(bins.bin_dir)
    return 0


def _cmd_up(args) -> int:
    state_dir = Path(args.state_dir).resolve()
    if (state_dir / "state.json").exists():
        st = json.loads((state_dir / "state.json").read_text())
        if any(pid_alive(p) for p in st["pids"].values()):
            print(f"controlplane: already running (state in {state_dir}); `make cluster-down` first",
                  file=sys.stderr)
            print(f"export KUBECONFIG={st['kubeconfig']}")
            return 1
        shutil.rmtree(state_dir, ignore_errors=True)
    try:
        bins = ensure_binaries(build=True)
    except MissingPrerequisite as e:
        print(f"controlplane: {e}", file=sys.stderr)
        return MISSING_EXIT
    # Detach from the caller's session (terminal hangups, make's process group) so the
    # processes outlive this command; `down` stops them by pid / process group.
    with contextlib.suppress(OSError):
        os.setsid()
    state_dir.mkdir(parents=True, exist_ok=True)
    # Self-ignoring state dir: nothing in it can ever be committed by accident.
    (state_dir / ".gitignore").write_text("*\n")
    cp = ControlPlane(bins, workdir=state_dir, die_with_parent=False)
    try:
        cp.start(timeout=args.timeout)
    except BaseException:
        shutil.rmtree(state_dir, ignore_errors=True)
        raise
    print(f"# control plane up ({bins.kube_version}); stop it with: make cluster-down", file=sys.stderr)
    print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0


def _cmd_down(args) -> int:
    state_dir = Path(args.state_dir).resolve()
    sf = state_dir / "state.json"
    if not sf.exists():
        print(f"controlplane: nothing running (no {sf})", file=sys.stderr)
        shutil.rmtree(state_dir, ignore_errors=True)
        return 0
    st = json.loads(sf.read_text())
    stop_pids(st["pids"], st["ports"].get("pgid"))
    etcd_ptr = state_dir / "etcd-data-dir"
    if etcd_ptr.exists():
        shutil.rmtree(etcd_ptr.read_text().strip(), ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    left = [n for n, p in st["pids"].items() if pid_alive(p)]
    if left:
        print(f"controlplane: still alive after SIGKILL: {left}", file=sys.stderr)
        return 1
    print(f"controlplane: stopped {', '.join(st['pids'])}; removed {state_dir}", file=sys.stderr)
    return 0


def _cmd_status(args) -> int:
    sf = Path(args.state_dir).resolve() / "state.json"
    if not sf.exists():
        print("not running")
        return 1
    st = json.loads(sf.read_text())
    for n, p in st["pids"].items():
        print(f"{n:26s} pid {p:<8d} {'running' if pid_alive(p) else 'DEAD'}")
    print(f"export KUBECONFIG={st['kubeconfig']}")
    return 0 if all(pid_alive(p) for p in st["pids"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ensure", help="build/cache the binaries (minutes cold, instant warm)")
    default_state = os.environ.get("SABOT_CLUSTER_DIR", ".cluster")
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--state-dir", default=default_state)
        if name == "up":
            p.add_argument("--timeout", type=float, default=90)
    args = ap.parse_args(argv)
    return {"ensure": _cmd_ensure, "up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
