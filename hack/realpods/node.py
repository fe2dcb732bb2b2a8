#!/usr/bin/env python3
"""One real Kubernetes node for the real-pods tier ("T2"): containerd + runc + a CNI bridge + kubelet
+ a minimal cluster DNS, joined to a control plane of hack/cluster/controlplane.py.

    node = Node(control_plane)      # a started controlplane.ControlPlane
    node.start()                    # bridge sabot0 10.244.0.1/24, containerd, images, DNS, kubelet; Node Ready
    ...                             # pods scheduled to node.name run for real; pod IPs reachable from the host
    node.stop()                     # pods' containers, sandboxes, netns, mounts, cgroups, veths, bridge: all gone

What this machine (a VM with the cgroup v1 hybrid layout; root, but without CAP_SYS_RESOURCE) needs:
containerd 1.6 with `restrict_oom_score_adj = true` (otherwise every sandbox fails with "can't get final
child's PID from pipe"); runc, not crun (crun refuses the hybrid cgroup layout); the CNI plugins of
Debian's containernetworking-plugins in /usr/lib/cni; the static pause image of build-image.py (no image
can be pulled); kubelet `cgroupDriver: cgroupfs`, `failSwapOn: false` and `--oom-score-adj=0` (lowering
its own score to the default -999 needs CAP_SYS_RESOURCE).

Network: a bridge the node creates (`sabot0`, 10.244.0.1/24) with host-local IPAM, `ipMasq: false`, no
default route in pods beyond the bridge gateway and no NAT: pod traffic reaches the host and other pods
only. The kubelet, the DNS server and the containerd streaming server listen on the bridge address or
loopback. There is no kube-proxy (no ClusterIP traffic); pods reach each other by pod IP or by the
per-pod DNS names the DNS server answers. The one exception is the API server (in-cluster config, e.g. the
operator as a pod): apiproxy.py relays the `kubernetes` Service's ClusterIP 10.0.0.1:443 (a /32 on the
bridge; pods get a route for exactly that /32 via the gateway) and the apiserver's advertised address
10.244.0.1:<port> (the Service's Endpoints) to the apiserver on loopback; its serving cert names both.

Everything lives under one work directory (containerd's content store and snapshots under the cache, so
imported images survive between runs); `stop()` also runs when `start()` fails halfway. A lock file makes
a second node on the same machine fail fast instead of fighting over the bridge.

Command line (for debugging; tests use the class):
    python3 hack/realpods/node.py preflight     # exit 3 + "missing: ..." when something is absent
    python3 hack/realpods/node.py up            # control plane + node, detached; prints export KUBECONFIG=...
    python3 hack/realpods/node.py down
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "hack" / "cluster"))
import controlplane  # noqa: E402

BRIDGE = "sabot0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
BRIDGE_MAC = "02:5a:b0:00:00:01"  # locally administered, fixed (see _bridge_up)
NODE_NAME = "sabot-node-0"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"
LOCK_FILE = "/run/sabot-realpods.lock"
NODE_LABEL = "sabot.io/realpods"
MISSING_EXIT = 3
CGROUP_ROOT = "/sys/fs/cgroup"
# kube-apiserver flags for a control plane with a real kubelet (controlplane.ControlPlane(extra_apiserver_args=)):
# reach the kubelet by its InternalIP (there is no DNS for node names) with the admin client certificate,
# so `kubectl logs/exec` work.
# The apiserver is advertised on the pod bridge (the `kubernetes` Service's Endpoints become
# 10.244.0.1:<port>, served by apiproxy.py), and its serving cert names that address (APISERVER_SANS).
APISERVER_ARGS = ["--kubelet-preferred-address-types=InternalIP",
                  "--kubelet-client-certificate={pki}/admin.crt", "--kubelet-client-key={pki}/admin.key",
                  f"--advertise-address={GATEWAY}", "--endpoint-reconciler-type=lease"]
APISERVER_SANS = [f"IP:{GATEWAY}"]
# The `kubernetes` Service's ClusterIP (the first address of controlplane.SERVICE_CIDR) and port: the
# KUBERNETES_SERVICE_HOST/PORT the kubelet gives every pod.
KUBERNETES_SERVICE_IP = controlplane.SERVICE_FIRST_IP
KUBERNETES_SERVICE_PORT = 443


class Missing(RuntimeError):
    """A prerequisite of the tier is absent (message starts with "missing:")."""


class NodeError(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"[node {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def cache_dir() -> Path:
    return controlplane.cache_dir()


def preflight() -> None:
    """Raise Missing naming the first absent prerequisite (before anything is started)."""
    if os.geteuid() != 0:
        raise Missing("missing: root (containerd, kubelet and the bridge need it)")
    for tool, pkg in (("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc"),
                      ("ip", "iproute2"), ("mount", "mount"), ("gcc", "gcc")):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise Missing(f"missing: {tool} (apt-get install {pkg}; hack/realpods/ensure.sh does it)")
    for plugin in ("bridge", "host-local", "loopback"):
        if not Path(CNI_BIN_DIR, plugin).exists():
            raise Missing(f"missing: CNI plugin {CNI_BIN_DIR}/{plugin} (apt-get install containernetworking-plugins)")
    if not Path(CGROUP_ROOT, "memory").is_dir() and not Path(CGROUP_ROOT, "cgroup.controllers").exists():
        raise Missing("missing: a cgroup filesystem at /sys/fs/cgroup")
    if os.path.exists(LOCK_FILE):  # fail before a control plane is started for nothing
        fd = os.open(LOCK_FILE, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(LOCK_FILE).read_text().strip() or "?"
            raise Missing(f"missing: a free machine: another real-pods node holds {LOCK_FILE} (pid {holder})") from None
        finally:
            os.close(fd)


def _mounts() -> list[str]:
    return [line.split()[1].replace("\\040", " ") for line in Path("/proc/mounts").read_text().splitlines()]


def _umount_under(*paths: Path) -> list[str]:
    done = []
    for _ in range(3):
        targets = sorted({m for m in _mounts() for p in paths if m == str(p) or m.startswith(str(p) + "/")},
                         key=len, reverse=True)
        if not targets:
            break
        for m in targets:
            if subprocess.run(["umount", m], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", m], capture_output=True)
            done.append(m)
    return done


def _cgroup_dirs(name: str) -> list[Path]:
    """Every <hierarchy>/<name> directory under /sys/fs/cgroup (v1 hierarchies and a v2 unified one)."""
    root = Path(CGROUP_ROOT)
    out = [root / name] if (root / "cgroup.controllers").exists() else []
    for h in sorted(root.iterdir()) if root.is_dir() else []:
        if (h / name).is_dir():
            out.append(h / name)
    return out


def _rmdir_tree(d: Path) -> bool:
    ok = True
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    try:
        d.rmdir()
    except OSError:
        ok = False
    return ok


class Node(controlplane.ProcessSupervisor):
    error_type = NodeError

    def __init__(self, cp: controlplane.ControlPlane, *, name: str = NODE_NAME, log=_log):
        self.cp = cp
        self.name = name
        self.log = log
        self.workdir = Path(tempfile.mkdtemp(prefix="sabot-node-"))
        # containerd's root (metadata, content, snapshots) persists so images are imported once.
        self.ctd_root = cache_dir() / "containerd" / "root"
        self.ctd_state = self.workdir / "containerd-state"
        self.socket = self.ctd_state / "containerd.sock"
        self.kubelet_dir = self.workdir / "kubelet"
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}
        self._lock_fd: int | None = None
        self._netns_before: set[str] = set()
        self._created_bridge = False
        self.kubelet_port = controlplane.free_port()
        self.kubelet_healthz_port = controlplane.free_port()

    # ------------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120) -> "Node":
        t0 = time.monotonic()
        try:
            self._start(timeout)
        except BaseException:
            self.log("node start failed; tearing down")
            self.stop()
            raise
        self.timings["node_total"] = time.monotonic() - t0
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "node_total")
        self.log(f"node {self.name} Ready in {self.timings['node_total']:.1f}s ({steps})")
        return self

    def _lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = Path(LOCK_FILE).read_text().strip() or "?"
            raise Missing(f"missing: a free machine: another real-pods node holds {LOCK_FILE} (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        (self.workdir / "logs").mkdir(exist_ok=True)
        logf = open(self.workdir / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                cwd=self.workdir, env=env,
                                preexec_fn=controlplane.child_setup(0, True))
        logf.close()
        self.procs[name] = proc
        return proc

    def _start(self, timeout: float) -> None:
        preflight()
        self._lock()
        self._cleanup_stale()
        self._netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()

        t = time.monotonic()
        self._bridge_up()
        self._write_cni()
        self._start_containerd(timeout)
        self.timings["containerd"] = time.monotonic() - t

        t = time.monotonic()
        self.import_images()
        self.timings["images"] = time.monotonic() - t

        t = time.monotonic()
        self._start_dns()
        self._start_apiproxy(timeout)
        self._start_kubelet(timeout)
        self.timings["kubelet"] = time.monotonic() - t

    def _cleanup_stale(self) -> None:
        """Leftovers of a killed earlier run (we hold the lock, so no live node owns them)."""
        if sh("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            self.log(f"removing leftover bridge {BRIDGE} of an earlier run")
            self._bridge_down()
        stale_shims = _shims_of(str(cache_dir() / "containerd"))
        for pid in stale_shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _umount_under(self.ctd_root)

    # ------------------------------------------------------------------------ network

    def _bridge_up(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        self._created_bridge = True
        # A bridge without an explicit MAC takes the lowest MAC of its ports, so it changes whenever a
        # pod's veth comes or goes; pods then send to the gateway's old MAC (stale ARP entry) and lose
        # every connection to the host (DNS, the API server via apiproxy.py, probe replies) for tens of
        # seconds. A fixed, locally administered address keeps the gateway's MAC stable.
        sh("ip", "link", "set", BRIDGE, "address", BRIDGE_MAC)
        sh("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        # the `kubernetes` Service's ClusterIP, local to the host, on the bridge (see apiproxy.py)
        sh("ip", "addr", "add", f"{KUBERNETES_SERVICE_IP}/32", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")

    def _bridge_down(self) -> None:
        out = sh("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout
        for line in out.splitlines():
            dev = line.split(":")[1].strip().split("@")[0]
            sh("ip", "link", "del", dev, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)

    def _write_cni(self) -> None:
        netd = self.workdir / "net.d"
        netd.mkdir()
        conf = {
            "cniVersion": "0.4.0",
            "name": "sabot-pods",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(self.workdir / "ipam"),
                         "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                         # pods get the bridge subnet and the `kubernetes` ClusterIP (a host address,
                         # apiproxy.py) and nothing else: no default route, no NAT
                         "routes": [{"dst": f"{KUBERNETES_SERVICE_IP}/32"}]},
            }],
        }
        (netd / "10-sabot.conflist").write_text(json.dumps(conf, indent=1))

    # ------------------------------------------------------------------------ containerd

    def _start_containerd(self, timeout: float) -> None:
        self.ctd_root.mkdir(parents=True, exist_ok=True)
        self.ctd_state.mkdir(parents=True)
        cfg = self.workdir / "containerd.toml"
        cfg.write_text(textwrap.dedent(f"""\
            version = 2
            root = "{self.ctd_root}"
            state = "{self.ctd_state}"
            disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                                "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                                "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
            [grpc]
              address = "{self.socket}"
            [ttrpc]
              address = "{self.socket}.ttrpc"
            [debug]
              level = "info"
            [plugins."io.containerd.internal.v1.opt"]
              path = "{self.ctd_root}/opt"
            [plugins."io.containerd.grpc.v1.cri"]
              sandbox_image = "sabot.local/pause:static"
              # cgroup v1 hybrid without CAP_SYS_RESOURCE: otherwise every sandbox fails with
              # "can't get final child's PID from pipe"
              restrict_oom_score_adj = true
              disable_apparmor = true
              stream_server_address = "127.0.0.1"
              stream_server_port = "0"
              enable_tls_streaming = false
              [plugins."io.containerd.grpc.v1.cri".containerd]
                snapshotter = "overlayfs"
                default_runtime_name = "runc"
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
                  runtime_type = "io.containerd.runc.v2"
                  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
                    BinaryName = "{RUNC}"
                    SystemdCgroup = false
              [plugins."io.containerd.grpc.v1.cri".cni]
                bin_dir = "{CNI_BIN_DIR}"
                conf_dir = "{self.workdir / 'net.d'}"
                max_conf_num = 1
            """))
        self._spawn("containerd", ["containerd", "--config", str(cfg)])
        self._wait("containerd socket", lambda: sh("ctr", "--address", str(self.socket), "version",
                                                    check=False).returncode == 0, timeout)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ctr", "--address", str(self.socket), "-n", "k8s.io", *args, check=check, timeout=600)

    def import_images(self) -> None:
        build = REPO / "hack" / "realpods" / "build-image.py"
        for extra in (["--pause"], []):
            proc = subprocess.run([sys.executable, str(build), *extra, "--import-to", str(self.socket)],
                                  capture_output=True, text=True)
            if proc.returncode == MISSING_EXIT:
                raise Missing(proc.stderr.strip().splitlines()[-1].split("ERROR:", 1)[-1].strip())
            if proc.returncode != 0:
                raise NodeError(f"build-image.py {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")

    # ------------------------------------------------------------------------ DNS + kubelet

    def _start_dns(self) -> None:
        pki = self.cp.workdir / "pki"
        self._spawn("dns", [sys.executable, str(HERE / "dns.py"), "--listen", GATEWAY, "--port", "53",
                            "--server", f"https://127.0.0.1:{self.cp.ports['apiserver']}",
                            "--ca", str(pki / "ca.crt"), "--cert", str(pki / "admin.crt"),
                            "--key", str(pki / "admin.key"), "--domain", CLUSTER_DOMAIN])

    def _start_apiproxy(self, timeout: float) -> None:
        port = self.cp.ports["apiserver"]
        self._spawn("apiproxy", [sys.executable, str(HERE / "apiproxy.py"),
                                 "--listen", f"{KUBERNETES_SERVICE_IP}:{KUBERNETES_SERVICE_PORT}",
                                 "--listen", f"{GATEWAY}:{port}", "--to", f"127.0.0.1:{port}"])

        def listening() -> bool:
            for host, p in ((KUBERNETES_SERVICE_IP, KUBERNETES_SERVICE_PORT), (GATEWAY, port)):
                with socket.create_connection((host, p), timeout=1):
                    pass
            return True
        self._wait("apiproxy listening", listening, timeout, interval=0.1)

    def _kubelet_credentials(self) -> Path:
        pki = self.cp.workdir / "pki"
        d = self.workdir / "pki"
        d.mkdir()
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        (d / "client.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                                      "extendedKeyUsage=clientAuth\n")
        sh("openssl", "req", *ec, "-keyout", str(d / "kubelet.key"), "-out", str(d / "kubelet.csr"),
           "-subj", f"/O=system:nodes/CN=system:node:{self.name}")
        sh("openssl", "x509", "-req", "-in", str(d / "kubelet.csr"), "-CA", str(pki / "ca.crt"),
           "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-CAserial", str(d / "ca.srl"), "-days", "30",
           "-extfile", str(d / "client.ext"), "-out", str(d / "kubelet.crt"))
        kc = self.workdir / "kubelet.kubeconfig"
        controlplane.write_kubeconfig(kc, f"https://127.0.0.1:{self.cp.ports['apiserver']}", pki / "ca.crt",
                                      cert=d / "kubelet.crt", key=d / "kubelet.key", user=f"system:node:{self.name}")
        return kc

    def _start_kubelet(self, timeout: float) -> None:
        kc = self._kubelet_credentials()
        pki = self.cp.workdir / "pki"
        (self.workdir / "resolv.conf").write_text("")  # pods get cluster DNS only, never the host's
        for d in ("kubelet", "pod-logs", "volume-plugins"):
            (self.workdir / d).mkdir(exist_ok=True)
        cfg = self.workdir / "kubelet.yaml"
        cfg.write_text(textwrap.dedent(f"""\
            apiVersion: kubelet.config.k8s.io/v1beta1
            kind: KubeletConfiguration
            address: {GATEWAY}
            port: {self.kubelet_port}
            readOnlyPort: 0
            healthzBindAddress: 127.0.0.1
            healthzPort: {self.kubelet_healthz_port}
            authentication:
              anonymous: {{enabled: false}}
              webhook: {{enabled: false}}
              x509: {{clientCAFile: "{pki / 'ca.crt'}"}}
            authorization: {{mode: AlwaysAllow}}
            containerRuntimeEndpoint: "unix://{self.socket}"
            cgroupDriver: cgroupfs
            failCgroupV1: false
            failSwapOn: false
            oomScoreAdj: 0
            clusterDomain: {CLUSTER_DOMAIN}
            clusterDNS: ["{GATEWAY}"]
            resolvConf: "{self.workdir / 'resolv.conf'}"
            podLogsDir: "{self.workdir / 'pod-logs'}"
            volumePluginDir: "{self.workdir / 'volume-plugins'}"
            makeIPTablesUtilChains: false
            registerNode: true
            rotateCertificates: false
            serverTLSBootstrap: false
            maxPods: 50
            imageGCHighThresholdPercent: 100
            imageGCLowThresholdPercent: 99
            evictionHard: {{"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}}
            nodeStatusUpdateFrequency: 2s
            syncFrequency: 5s
            fileCheckFrequency: 5s
            logging: {{verbosity: 1}}
            """))
        self._spawn("kubelet", [
            str(self.cp.bins.bin_dir / "kubelet"),
            f"--config={cfg}", f"--kubeconfig={kc}",
            f"--root-dir={self.kubelet_dir}", f"--cert-dir={self.workdir / 'kubelet-certs'}",
            f"--hostname-override={self.name}", f"--node-ip={GATEWAY}",
            f"--node-labels={NODE_LABEL}=true",
            "--oom-score-adj=0",
        ])
        self._wait(f"node {self.name} Ready (kubelet)", self._ready, timeout, interval=0.5)

    def _ready(self) -> bool:
        out = self.cp.kubectl("get", "node", self.name, "-o",
                              "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
        return out.returncode == 0 and out.stdout.strip() == "True"

    def kubelet_error(self) -> str:
        """The kubelet's most telling log line (for skip reasons)."""
        lines = self.tail("kubelet", 400).splitlines()
        for marker in ("command failed", "Failed to start ContainerManager", "failed to run Kubelet", "E0", "F0"):
            hits = [l for l in lines if marker in l]
            if hits:
                return hits[-1].strip()[:600]
        return lines[-1] if lines else "(empty kubelet log)"

    # ------------------------------------------------------------------------ teardown

    def stop(self) -> None:
        t = time.monotonic()
        kubelet = self.procs.get("kubelet")
        if kubelet and kubelet.poll() is None:
            # Let the kubelet stop what it started where it still can: delete the pods bound here.
            self.cp.kubectl("delete", "pods", "--all-namespaces", "--field-selector", f"spec.nodeName={self.name}",
                            "--grace-period=0", "--force", "--wait=false", check=False, timeout=30)
        self._stop_proc("kubelet")
        self._stop_proc("dns")
        self._stop_proc("apiproxy")
        if self.procs.get("containerd") and self.procs["containerd"].poll() is None:
            self._remove_all_containers()
        self._stop_proc("containerd")
        for pid in _shims_of(str(self.ctd_state)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        _umount_under(self.workdir, self.ctd_root)
        for ns in (set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()) - self._netns_before:
            if ns.startswith("cni-"):
                _umount_under(Path("/run/netns") / ns)
                with contextlib.suppress(OSError):
                    os.unlink(Path("/run/netns") / ns)
        for d in _cgroup_dirs("kubepods"):
            _rmdir_tree(d)
        if self._created_bridge:
            self._bridge_down()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(LOCK_FILE)
            os.close(self._lock_fd)
            self._lock_fd = None
        self.timings["stop"] = time.monotonic() - t

    def _stop_proc(self, name: str, grace: float = 10) -> None:
        proc = self.procs.get(name)
        if not proc or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _remove_all_containers(self) -> None:
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                "RUNNING" in l for l in self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]):
            time.sleep(0.1)
        for task in tasks:
            self.ctr("tasks", "rm", "-f", task, check=False)
        for c in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "rm", c, check=False)


def _shims_of(marker: str) -> list[int]:
    """pids of containerd-shim processes whose command line names our containerd (its socket/state dir)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and any(marker.encode() in a for a in argv):
            out.append(int(p.name))
    return out


def leftovers() -> list[str]:
    """What a node could have left on this machine (empty when clean)."""
    found = []
    if sh("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        found.append(f"link {BRIDGE}")
    for m in _mounts():
        if "sabot-node-" in m or str(cache_dir() / "containerd") in m:
            found.append(f"mount {m}")
    if _shims_of(str(cache_dir() / "containerd")) or _shims_of("sabot-node-"):
        found.append("containerd-shim processes")
    for d in _cgroup_dirs("kubepods"):
        found.append(f"cgroup {d}")
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (p / "cmdline").read_bytes()
                if b"sabot-node-" in cmd and b"containerd" in cmd.split(b"\0")[0] or (
                        b"--hostname-override=" + NODE_NAME.encode()) in cmd or (
                        str(HERE / "apiproxy.py").encode() in cmd):
                    found.append(f"process {p.name}")
    return found


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["preflight", "up", "leftovers"])
    args = ap.parse_args(argv)
    if args.cmd == "preflight":
        try:
            preflight()
        except Missing as e:
            print(f"node: {e}", file=sys.stderr)
            return MISSING_EXIT
        print("ok")
        return 0
    if args.cmd == "leftovers":
        left = leftovers()
        print("\n".join(left) or "clean")
        return 1 if left else 0
    # up: foreground, until Ctrl-C (debugging aid)
    bins = controlplane.ensure_binaries()
    cp = controlplane.ControlPlane(bins, extra_apiserver_args=APISERVER_ARGS, extra_sans=APISERVER_SANS)
    cp.start()
    node = None
    try:
        cp.kubectl("delete", "node", controlplane.FAKE_NODE, "--wait=false")
        node = Node(cp).start()
        print(f"export KUBECONFIG={cp.kubeconfig}   # Ctrl-C stops everything", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        if node:
            node.stop()
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
