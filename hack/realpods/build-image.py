#!/usr/bin/env python3
"""Build the project image without Docker or a registry, as an OCI image layout tarball.

The recipe is the Dockerfile's, step for step, on a Debian bookworm base made by debootstrap
instead of python:3.11-slim-bookworm (both are Debian 12 with Python 3.11):

  layer 1  debootstrap --variant=minbase --include=python3 bookworm     (cached by suite + packages)
  layer 2  virtualenv /opt/sabot with the project's dependencies,        (cached by the pinned deps)
           /var/lib/sabot/spill owned by 65532
  layer 3  the project wheel (sabot_native, sabot_agent, sabot_operator) (cached by the source hash)
           unpacked into /opt/sabot plus its console scripts
  config   Env PATH=/opt/sabot/bin:..., HOME=/tmp, USER=sabot, TMPDIR=/tmp, PYTHONDONTWRITEBYTECODE=1,
           PYTHONUNBUFFERED=1; WorkingDir /tmp; User 65532:65532; Cmd ["sabot-agent"]

The wheel is built on the host (`pip wheel --no-deps --no-build-isolation`) from a copy of exactly
what the Dockerfile COPYs (pyproject.toml, setup.py, README.md, native/, agent/, operator/); the host
is Debian 12 with CPython 3.11, so the cp311 wheel and the dependency wheels (downloaded from PyPI at
the versions installed in the host's .venv) run on the bookworm base. Everything is cached under
${SABOT_CACHE:-~/.cache/sabot}/image/; a rerun with nothing changed takes about a second.

    hack/realpods/build-image.py                       # prints the path of the OCI tarball
    hack/realpods/build-image.py --pause               # the static pause image instead
    hack/realpods/build-image.py --import-to SOCKET    # also `ctr -n k8s.io images import` it

Exit 3 with "missing: ..." when a prerequisite (debootstrap, gcc, the Debian mirror, PyPI) is absent.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILDER_VERSION = "1"  # bump to invalidate every cached layer
SUITE = "bookworm"
MIRROR = os.environ.get("SABOT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
INCLUDE = ["python3", "ca-certificates"]
IMAGE_NAME = os.environ.get("SABOT_IMAGE", "sabot.local/sabot:dev")
PAUSE_NAME = "sabot.local/pause:static"
UID = 65532
VENV = "/opt/sabot"
PYVER = "3.11"
# What the Dockerfile copies into its build stage.
SOURCES = ["pyproject.toml", "setup.py", "README.md", "native", "agent", "operator"]
SOURCE_SKIP = {"__pycache__", ".built", "build", "dist"}
SOURCE_SKIP_SUFFIX = (".pyc", ".so", ".o", ".cpp", ".html", ".egg-info")
MISSING_EXIT = 3


class Missing(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[build-image {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("SABOT_CACHE") or Path.home() / ".cache" / "sabot") / "image"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def short_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# ------------------------------------------------------------------------------------ layer tarballs


def _skip_member(rel: str, excludes: tuple[str, ...]) -> bool:
    return any(rel == e or rel.startswith(e + "/") for e in excludes)


def tar_tree(root: Path, out: Path, *, excludes: tuple[str, ...] = (), prefix_filter=None) -> None:
    """An uncompressed layer tar of `root` (owners, modes, symlinks and hard links kept)."""
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if _skip_member(rel, excludes) or (prefix_filter and not prefix_filter(rel)):
                    continue
                info = tar.gettarinfo(full, arcname=rel)
                if info.isdev() or info.isfifo():
                    continue  # the runtime mounts /dev itself
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
            # do not descend into excluded directories
            dirnames[:] = [d for d in dirnames if not _skip_member(os.path.normpath(os.path.join(rel_dir, d)), excludes)]
    tmp.rename(out)


def tar_members(out: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    tmp.rename(out)


def _dir(name: str, uid: int = 0, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, uid, 0
    return info, None


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    return info, data


def oci_archive(out: Path, layers: list[Path], config: dict, name: str) -> Path:
    """Write an OCI image layout tarball (oci-layout, index.json, blobs/sha256/...) for `ctr import`."""
    blobs: list[tuple[str, Path | bytes]] = []
    layer_descs, diff_ids = [], []
    for layer in layers:
        digest = sha256_file(layer)  # uncompressed layers: digest == diff_id
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": f"sha256:{digest}", "size": layer.stat().st_size})
        diff_ids.append(f"sha256:{digest}")
        blobs.append((digest, layer))
    config = {**config, "architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    blobs.append((config_digest, config_bytes))
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": f"sha256:{config_digest}", "size": len(config_bytes)},
                "layers": layer_descs}
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    blobs.append((manifest_digest, manifest_bytes))
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": f"sha256:{manifest_digest}", "size": len(manifest_bytes),
                            "platform": {"architecture": "amd64", "os": "linux"},
                            "annotations": {"io.containerd.image.name": name,
                                            "org.opencontainers.image.ref.name": tag}}]}
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        def add_bytes(arc: str, data: bytes) -> None:
            info = tarfile.TarInfo(arc)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index).encode())
        for digest, blob in blobs:
            if isinstance(blob, bytes):
                add_bytes(f"blobs/sha256/{digest}", blob)
            else:
                tar.add(str(blob), arcname=f"blobs/sha256/{digest}")
    tmp.rename(out)
    (out.parent / (out.name + ".manifest")).write_text(f"sha256:{manifest_digest}\n")
    return out


# ------------------------------------------------------------------------------------ pause image

PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
static void quit(int s) { (void)s; _exit(0); }
int main(void) {
  struct sigaction r = {0}, q = {0};
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, NULL);
  q.sa_handler = quit; sigaction(SIGINT, &q, NULL); sigaction(SIGTERM, &q, NULL);
  for (;;) pause();
}
"""


def build_pause() -> Path:
    root = cache_root() / "pause" / short_hash(BUILDER_VERSION, PAUSE_C)
    out = root / "pause.oci.tar"
    if out.exists():
        return out
    if not shutil.which("gcc"):
        raise Missing("missing: gcc (apt-get install gcc libc6-dev) to build the static pause binary")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        src, binary = Path(tmp) / "pause.c", Path(tmp) / "pause"
        src.write_text(PAUSE_C)
        try:
            run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(src)])
        except RuntimeError as e:
            raise Missing(f"missing: a static libc for gcc -static (apt-get install libc6-dev): {e}") from e
        layer = root / "layer.tar"
        tar_members(layer, [_file("pause", binary.read_bytes(), 0o755)])
    config = {"config": {"Entrypoint": ["/pause"], "User": "65535:65535"}}
    return oci_archive(out, [layer], config, PAUSE_NAME)


# ------------------------------------------------------------------------------------ project image


def base_layer() -> Path:
    key = short_hash(BUILDER_VERSION, SUITE, MIRROR, INCLUDE)
    d = cache_root() / "base" / key
    layer = d / "layer.tar"
    if layer.exists():
        return layer
    if not shutil.which("debootstrap"):
        raise Missing("missing: debootstrap (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise Missing("missing: root (debootstrap and the layer ownership need it)")
    d.mkdir(parents=True, exist_ok=True)
    rootfs = d / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    log(f"debootstrap --variant=minbase --include={','.join(INCLUDE)} {SUITE} (about a minute, once)")
    t = time.monotonic()
    proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE,
                           str(rootfs), MIRROR], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        _unmount_under(rootfs)
        shutil.rmtree(rootfs, ignore_errors=True)
        raise Missing(f"missing: the Debian mirror {MIRROR} for debootstrap: {' | '.join(tail)}")
    _unmount_under(rootfs)
    log(f"debootstrap done in {time.monotonic() - t:.0f}s")
    # The venv (layer 2) is created by the image's own interpreter, here, once.
    run(["chroot", str(rootfs), f"/usr/bin/python{PYVER}", "-m", "venv", "--without-pip", VENV])
    tar_tree(rootfs, layer, excludes=("dev", "proc", "sys", "run", "tmp", "var/cache/apt/archives",
                                      "var/lib/apt/lists", "var/log", "debootstrap"))
    shutil.rmtree(rootfs, ignore_errors=True)  # the layer tar is all later builds need
    return layer


def _unmount_under(path: Path) -> None:
    """debootstrap mounts /proc and /sys inside the target while it runs; never leave one behind."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for m in sorted((m for m in mounts if m.startswith(str(path) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def host_pip() -> list[str]:
    py = REPO / ".venv" / "bin" / "python"
    return [str(py if py.exists() else sys.executable), "-m", "pip"]


def source_hash() -> str:
    h = hashlib.sha256(BUILDER_VERSION.encode())
    for top in SOURCES:
        p = REPO / top
        paths = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
        for f in paths:
            rel = f.relative_to(REPO)
            if any(part in SOURCE_SKIP for part in rel.parts) or str(rel).endswith(SOURCE_SKIP_SUFFIX):
                continue
            h.update(str(rel).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def project_wheel() -> Path:
    d = cache_root() / "wheel" / source_hash()
    wheels = sorted(d.glob("sabot-*.whl"))
    if wheels:
        return wheels[0]
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sabot-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns(*SOURCE_SKIP, *(f"*{s}" for s in SOURCE_SKIP_SUFFIX))
        for top in SOURCES:
            p = REPO / top
            if p.is_dir():
                shutil.copytree(p, src / top, ignore=ignore)
            elif p.exists():
                shutil.copy2(p, src / top)
        log("building the project wheel (native extension; a minute or two on 2 cores)")
        t = time.monotonic()
        env = {**os.environ, "MAX_JOBS": "2"}
        run([*host_pip(), "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp + "/out", str(src)], env=env)
        (whl,) = Path(tmp, "out").glob("sabot-*.whl")
        shutil.move(str(whl), d / whl.name)
        log(f"wheel built in {time.monotonic() - t:.0f}s")
    return sorted(d.glob("sabot-*.whl"))[0]


def wheel_requirements(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return sorted(line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("Requires-Dist:") and "extra ==" not in line)


def host_pins() -> list[str]:
    out = run([*host_pip(), "list", "--format=json", "--exclude-editable"]).stdout
    return sorted(f"{p['name']}=={p['version']}" for p in json.loads(out) if p["name"].lower() != "sabot")


def deps_layer(requirements: list[str]) -> Path:
    pins = host_pins()
    key = short_hash(BUILDER_VERSION, SUITE, requirements, pins)
    d = cache_root() / "deps" / key
    layer = d / "layer.tar"
    if layer.exists():
        return layer
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sabot-deps-", dir=d) as tmp:
        tmp = Path(tmp)
        (tmp / "constraints.txt").write_text("\n".join(pins) + "\n")
        (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
        log(f"downloading {len(requirements)} dependencies (+ transitive) at the host .venv's versions")
        try:
            run([*host_pip(), "download", "-q", "--only-binary=:all:", "-d", str(tmp / "wheels"),
                 "-c", str(tmp / "constraints.txt"), "-r", str(tmp / "requirements.txt")])
        except RuntimeError as e:
            raise Missing(f"missing: PyPI (pip download of the image's dependencies failed): {str(e)[-400:]}") from e
        stage = tmp / "stage"
        site = stage / VENV.lstrip("/") / "lib" / f"python{PYVER}" / "site-packages"
        run([*host_pip(), "install", "-q", "--no-deps", "--no-index", "--no-compile", "--target", str(site),
             *map(str, sorted((tmp / "wheels").glob("*.whl")))])
        shutil.rmtree(site / "bin", ignore_errors=True)  # dependency scripts would name the host's python
        members = [_dir("var"), _dir("var/lib"), _dir("var/lib/sabot", UID), _dir("var/lib/sabot/spill", UID)]
        tar_members(tmp / "extra.tar", members)
        tar_tree(stage, tmp / "venv.tar", excludes=("var",))
        # One layer: the venv's packages plus the spill directory owned by the agents' user.
        with tarfile.open(d / "layer.tmp2", "w", format=tarfile.PAX_FORMAT) as out:
            for part in ("venv.tar", "extra.tar"):
                with tarfile.open(tmp / part) as t:
                    for m in t.getmembers():
                        out.addfile(m, t.extractfile(m) if m.isreg() else None)
        os.rename(d / "layer.tmp2", layer)
    return layer


def app_layer(whl: Path) -> Path:
    d = cache_root() / "app" / short_hash(BUILDER_VERSION, sha256_file(whl))
    layer = d / "layer.tar"
    if layer.exists():
        return layer
    d.mkdir(parents=True, exist_ok=True)
    site = f"{VENV.lstrip('/')}/lib/python{PYVER}/site-packages"
    members, seen_dirs = [], set()

    def ensure_dirs(path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in seen_dirs:
                seen_dirs.add(p)
                members.append(_dir(p))

    scripts: dict[str, str] = {}
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.endswith("/"):
                continue
            data = z.read(name)
            target = f"{site}/{name}"
            if ".data/" in name.split("/", 1)[0] + "/":  # <pkg>.data/{purelib,platlib,scripts}/...
                _, kind, rest = name.split("/", 2)
                target = f"{VENV.lstrip('/')}/bin/{rest}" if kind == "scripts" else f"{site}/{rest}"
            if name.endswith(".dist-info/entry_points.txt"):
                section = None
                for line in data.decode().splitlines():
                    line = line.strip()
                    if line.startswith("["):
                        section = line.strip("[]")
                    elif section == "console_scripts" and "=" in line:
                        k, v = (s.strip() for s in line.split("=", 1))
                        scripts[k] = v
            mode = 0o755 if name.endswith(".so") else 0o644
            ensure_dirs(target)
            members.append(_file(target, data, mode))
    for script, target in sorted(scripts.items()):
        module, func = target.split(":")
        body = (f"#!{VENV}/bin/python\nimport sys\nfrom {module} import {func.split('.')[0]}\n"
                f"if __name__ == '__main__':\n    sys.exit({func}())\n")
        path = f"{VENV.lstrip('/')}/bin/{script}"
        ensure_dirs(path)
        members.append(_file(path, body.encode(), 0o755))
    tar_members(layer, members)
    return layer


def image_config() -> dict:
    env = [f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME=/tmp", "USER=sabot", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"]
    return {"config": {"Env": env, "Cmd": ["sabot-agent"], "WorkingDir": "/tmp", "User": f"{UID}:{UID}",
                       "Labels": {"org.opencontainers.image.title": "sabot",
                                  "org.opencontainers.image.source": "hack/realpods/build-image.py"}}}


def build_project() -> Path:
    base = base_layer()
    whl = project_wheel()
    deps = deps_layer(wheel_requirements(whl))
    app = app_layer(whl)
    # Every layer's cache path already names the hash of its inputs; the config (Env, User, ...) is hashed here.
    key = short_hash(BUILDER_VERSION, IMAGE_NAME, str(base), str(deps), str(app),
                     json.dumps(image_config(), sort_keys=True))
    out = cache_root() / "images" / key / "sabot.oci.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    archive = oci_archive(out, [base, deps, app], image_config(), IMAGE_NAME)
    prune(keep={out.parent, base.parent, deps.parent, app.parent, whl.parent})
    return archive


def prune(keep: set[Path], keep_recent: int = 2) -> None:
    """Each image tarball is a full copy of its layers: keep the current one and the newest few inputs."""
    for kind, n in (("images", 0), ("app", keep_recent), ("wheel", keep_recent), ("deps", keep_recent),
                    ("base", keep_recent)):
        d = cache_root() / kind
        if not d.is_dir():
            continue
        old = sorted((p for p in d.iterdir() if p not in keep), key=lambda p: p.stat().st_mtime, reverse=True)
        for p in old[n:]:
            shutil.rmtree(p, ignore_errors=True)


def import_image(archive: Path, address: str, name: str) -> None:
    """`ctr -n k8s.io images import` unless containerd already holds this exact manifest."""
    digest = (archive.parent / (archive.name + ".manifest")).read_text().strip()
    have = subprocess.run(["ctr", "--address", address, "-n", "k8s.io", "images", "ls"],
                          capture_output=True, text=True).stdout
    if any(line.split()[:1] == [name] and digest in line for line in have.splitlines()):
        return
    cmd = ["ctr", "--address", address, "-n", "k8s.io", "images", "import", "--all-platforms", str(archive)]
    try:
        run(cmd)
    except RuntimeError as e:
        # containerd 1.6: re-importing a tag whose new image shares lower layers with the old one can
        # race the garbage collector, which drops the shared parent snapshots the old image held
        # ("parent snapshot ... does not exist"); a second import unpacks them again.
        if "parent snapshot" not in str(e):
            raise
        log("import raced containerd's garbage collector (parent snapshot gone); importing again")
        run(cmd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pause", action="store_true", help="build the static pause image instead")
    ap.add_argument("--import-to", metavar="SOCKET", help="import into this containerd (namespace k8s.io)")
    args = ap.parse_args(argv)
    t = time.monotonic()
    try:
        archive = build_pause() if args.pause else build_project()
    except Missing as e:
        print(f"build-image: ERROR: {e}", file=sys.stderr)
        return MISSING_EXIT
    if args.import_to:
        import_image(archive, args.import_to, PAUSE_NAME if args.pause else IMAGE_NAME)
    log(f"{PAUSE_NAME if args.pause else IMAGE_NAME}: {archive} ({time.monotonic() - t:.1f}s)")
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
