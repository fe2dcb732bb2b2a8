"""Fixtures of the real-pods tier (T2): the T1 control plane plus one real node (containerd, runc, CNI
bridge, kubelet, hack/realpods/dns.py), the project image imported into containerd, the SabotJob CRD,
and (per test module that asks for it) the operator running in-process (kopf.testing.KopfRunner, all
namespaces).

Skips, naming what is missing, when the machine cannot run it: not root, the Debian packages
(containerd, runc, containernetworking-plugins, debootstrap) absent, Go/the module proxy/etcd absent
(T1's binaries), the Debian mirror or PyPI unreachable for the image, or the kubelet refusing to start
here (the skip quotes its error line). `hack/realpods/ensure.sh` installs and builds everything up front.

Results go to object storage, as on any cluster (agent 0 commits the result by moving every agent's
staged part into place, so the output must be a location all agents reach): ``pod_s3`` (session) is one
SeaweedFS S3 server (hack/s3/s3server.py) bound to the pod bridge's gateway address 10.244.0.1, which
the pods and the host both reach; per job a bucket, a Secret with the server's keys in the job's
namespace, and `spec.storage.s3` naming them (``pod_s3.output_for``); ``pod_s3.read`` reads a published
result back by its `_SUCCESS` manifest. Skips, naming what is missing, when weed cannot be built (Go /
the module proxy; tests/conftest.py's ``s3_weed``).

Env: SABOT_E2E_NO_BUILD=1 skips instead of building the Kubernetes binaries (and weed); SABOT_KEEP_CLUSTER_DIR=1
keeps the control plane's directory, SABOT_KEEP_S3_DIR=1 the S3 server's. The node always removes what it created (bridge, veths, netns,
mounts, cgroups, processes); the session asserts it at the end.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

REPO = Path(__file__).resolve().parents[2]
for folder in ("operator", "agent"):
    if str(REPO / folder) not in sys.path:
        sys.path.insert(0, str(REPO / folder))
sys.path.insert(0, str(REPO / "hack" / "cluster"))
sys.path.insert(0, str(REPO / "hack" / "realpods"))
import controlplane  # noqa: E402
import node as realnode  # noqa: E402
from helpers import control_plane, fresh_namespace  # noqa: E402

CRD_FILE = REPO / "crds" / "sabotjob.yaml"
IMAGE = os.environ.get("SABOT_IMAGE", "sabot.local/sabot:dev")
# The Secret a job's spec.storage.s3.credentialsSecret names (one per namespace, the server's keys).
S3_SECRET = "sabot-s3"
MANIFEST = "_SUCCESS"


@dataclass
class RealPodsCluster:
    cp: controlplane.ControlPlane
    node: realnode.Node
    image: str
    timings: dict = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60):
        return self.cp.kubectl(*args, input=input, check=check, timeout=timeout)


@pytest.fixture(scope="session")
def realpods_cluster():
    try:
        realnode.preflight()
    except realnode.Missing as e:
        pytest.skip(f"T2 real pods unavailable: {e}")
    t0 = time.monotonic()
    with control_plane("T2 real pods (T1 binaries)", quiet=True, extra_apiserver_args=realnode.APISERVER_ARGS,
                       extra_sans=realnode.APISERVER_SANS) as cp:
        node = None
        try:
            t_cp = time.monotonic() - t0
            # kwok's fake node would take pods that never run: this tier has only the real node.
            cp.kubectl("delete", "node", controlplane.FAKE_NODE, "--wait=false")
            node = realnode.Node(cp)
            try:
                node.start()
            except realnode.Missing as e:
                node = None
                pytest.skip(f"T2 real pods unavailable: {e}")
            except realnode.NodeError as e:
                kubelet_dead = "kubelet exited" in str(e) or "waiting for node" in str(e)
                line = node.kubelet_error() if kubelet_dead else ""
                node = None
                if kubelet_dead:
                    pytest.skip(f"T2 real pods unavailable: the kubelet does not start on this machine: {line}")
                raise
            cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
            cp.kubectl("wait", "--for=condition=Established", "crd/sabotjobs.sabot.io", "--timeout=30s")
            cluster = RealPodsCluster(cp=cp, node=node, image=IMAGE,
                                      timings={"controlplane": t_cp, **node.timings,
                                               "session_setup": time.monotonic() - t0})
            print(f"\n[realpods] setup: {', '.join(f'{k} {v:.1f}s' for k, v in cluster.timings.items())}",
                  file=sys.stderr)
            yield cluster
        finally:
            if node is not None:
                node.stop()
    left = realnode.leftovers()
    assert not left, f"the real-pods node left this behind: {left}"


@pytest.fixture(scope="module")
def operator(realpods_cluster):
    """The operator, in-process for the tests of one module, watching all namespaces.

    Module-scoped, so it is stopped before the next module runs: test_helm_on_real_pods.py installs the
    operator as a pod with the chart and must be the only operator then."""
    from kopf.testing import KopfRunner

    import kubernetes.config.kube_config as kube_config

    old = os.environ.get("KUBECONFIG")
    old_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ["KUBECONFIG"] = str(realpods_cluster.kubeconfig)
    # The kubernetes client reads $KUBECONFIG when first imported, which may have been earlier.
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(realpods_cluster.kubeconfig)
    try:
        with KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "sabot_operator.handlers"],
                        timeout=60) as runner:
            yield runner
        assert runner.exception is None, runner.output[-5000:]
    finally:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = old_default
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old


@pytest.fixture
def namespace(realpods_cluster):
    with fresh_namespace(realpods_cluster, "t2-") as name:
        yield name


@dataclass
class PodS3:
    """The tier's S3 server on the pod bridge (hack/s3/s3server.py's S3Server): agents write to it from
    their pods, the tests read from the host, both at http://10.244.0.1:<port>."""

    server: object  # s3server.S3Server

    def storage(self, secret: str = S3_SECRET) -> dict:
        """spec.storage for a job whose namespace holds `secret` (see `grant`)."""
        return {"s3": {"endpoint": self.server.url, "region": self.server.region, "credentialsSecret": secret}}

    def grant(self, cluster, namespace: str, secret: str = S3_SECRET) -> None:
        """A Secret with the server's keys in `namespace`, under the names the operator passes on."""
        manifest = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": secret, "namespace": namespace},
                    "stringData": {"AWS_ACCESS_KEY_ID": self.server.access_key,
                                   "AWS_SECRET_ACCESS_KEY": self.server.secret_key}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def bucket(self, name: str) -> str:
        """A new, empty bucket named after `name` (S3 names: 3-63 lowercase letters, digits, hyphens)."""
        prefix = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())[:50].strip("-")
        return self.server.create_bucket(f"{prefix}-{secrets.token_hex(4)}")

    def output_for(self, cluster, namespace: str, job_name: str) -> tuple[dict, str]:
        """(spec.storage, output path) for one job: a bucket of its own, the Secret in its namespace."""
        self.grant(cluster, namespace)
        return self.storage(), f"s3://{self.bucket(job_name)}/{job_name}/"

    def filesystem(self) -> pafs.S3FileSystem:
        return self.server.filesystem()

    def read(self, path: str) -> tuple[dict, pa.Table]:
        """(manifest, table) of the result published at `path` (s3://bucket/prefix/): the parts its
        `_SUCCESS` manifest lists, read with pyarrow. Asserts that the files there are exactly those
        parts and the manifest (nothing staged or temporary left), and that the manifest's row count is the
        table's."""
        fs, base = self.filesystem(), path[len("s3://"):].rstrip("/")
        try:
            with fs.open_input_stream(f"{base}/{MANIFEST}") as f:
                manifest = json.loads(f.read())
        except FileNotFoundError:
            listing = [i.path for i in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))]
            raise AssertionError(f"no {MANIFEST} at {path}; there: {listing}") from None
        # Every file there is the manifest or a part it lists: no staged part, no temporary file left.
        # (Only files: SeaweedFS may briefly list an emptied `_staging` prefix, and the agent's cleanup
        # can give up on it after a failed attempt; an empty prefix holds nothing a reader sees.)
        entries = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        files = sorted(i.path[len(base) + 1:] for i in entries if i.type == pafs.FileType.File)
        if files != sorted([MANIFEST, *(p["name"] for p in manifest["parts"])]):
            raise AssertionError(f"{path} holds more than the published result: {files}; manifest: {manifest}")
        tables = [ds.dataset(f"{base}/{p['name']}", format=manifest["format"], filesystem=fs).to_table()
                  for p in manifest["parts"]]
        table = pa.concat_tables(tables) if tables else pa.table({})
        assert table.num_rows == manifest["rows"], (table.num_rows, manifest)
        return manifest, table


@pytest.fixture(scope="session")
def pod_s3(realpods_cluster, s3_weed):
    """One S3 server for the session, on the node's bridge address (it exists once the node started)."""
    sys.path.insert(0, str(REPO / "hack" / "s3"))
    import s3server

    server = s3server.S3Server(s3_weed, host=realnode.GATEWAY)
    server.start()
    print(f"\n[realpods] S3 (SeaweedFS) on {server.url}: {', '.join(f'{k} {v:.1f}s' for k, v in server.timings.items())}",
          file=sys.stderr)
    try:
        yield PodS3(server)
    finally:
        server.stop(remove=not os.environ.get("SABOT_KEEP_S3_DIR"))
