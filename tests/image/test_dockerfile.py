"""Static checks of the Dockerfile (no Docker engine needed): multi-stage, base image as a build
argument, non-root numeric user, read-only-root-filesystem friendly, OCI labels, the two commands."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from sabot_operator.builders import SPILL_DIR

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    return parsed


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def env_of(stage) -> dict[str, str]:
    env = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_base_image_is_a_build_argument_used_by_every_stage():
    parsed = instructions()
    first_from = [keyword for keyword, _ in parsed].index("FROM")
    (base_arg,) = [rest for keyword, rest in parsed[:first_from] if keyword == "ARG"]
    name, _, default = base_arg.partition("=")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", default), default
    froms = [rest for keyword, rest in parsed if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    assert all(rest.startswith(f"${{{name}}} AS ") for rest in froms), froms


def test_compilers_only_in_the_build_stage():
    build, *_, runtime = stages()
    assert any("g++" in rest for keyword, rest in build if keyword == "RUN")
    assert not any(re.search(r"\b(gcc|g\+\+|build-essential)\b", rest) for keyword, rest in runtime)
    assert any(keyword == "COPY" and rest.startswith("--from=") for keyword, rest in runtime)


def test_runtime_runs_as_a_numeric_non_root_user():
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0)


def test_writable_paths_are_home_tmpdir_workdir_and_the_spill_dir():
    runtime = stages()[-1]
    env = env_of(runtime)
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
    assert [rest for keyword, rest in runtime if keyword == "WORKDIR"][-1] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert any(SPILL_DIR in rest and "65532" in rest for keyword, rest in runtime if keyword == "RUN")


def test_user_name_in_the_environment():
    """The numeric user has no /etc/passwd entry: getpass.getuser() (kopf names the operator with it at
    startup) raises unless USER or LOGNAME is set, so the operator pod would crash-loop."""
    env = env_of(stages()[-1])
    assert env.get("USER") or env.get("LOGNAME"), env


def test_t2_image_recipe_has_the_same_environment():
    """hack/realpods/build-image.py (the image of the real-pods tier, built without Docker) sets the
    Dockerfile's runtime environment, user and working directory."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_image", REPO / "hack" / "realpods" / "build-image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.image_config()["config"]
    t2_env = dict(item.split("=", 1) for item in config["Env"])
    runtime = stages()[-1]
    env = env_of(runtime)
    assert env.pop("PATH").split(":")[0] == t2_env.pop("PATH").split(":")[0] == "/opt/sabot/bin"
    assert env == t2_env
    assert config["User"] == [rest for keyword, rest in runtime if keyword == "USER"][-1]
    assert config["WorkingDir"] == [rest for keyword, rest in runtime if keyword == "WORKDIR"][-1]


def test_oci_labels():
    labels = " ".join(rest for keyword, rest in stages()[-1] if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_both_commands_are_installed_and_checked():
    build = stages()[0]
    install = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "sabot-operator --help" in install and "sabot-agent --help" in install


def test_dockerignore_keeps_the_build_context_small_but_complete():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for excluded in (".git", ".venv*", "tests", "examples", "charts"):
        assert excluded in ignored, excluded
    sources = [source for keyword, rest in stages()[0] if keyword == "COPY" for source in rest.split()[:-1]]
    assert "native/" in sources and "operator/" in sources
    for source in sources:
        assert source.rstrip("/") not in ignored, f"{source} is copied but ignored"
    assert "!README.md" in ignored
