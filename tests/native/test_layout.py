"""The native code's structure: C++ modules depend on each other without cycles, C++ has no Python in
it, each header has exactly one .pxd, and every C++ call turns its errors into Python exceptions through
the one mapping in errors.pxd."""
import pathlib
import re

NATIVE = pathlib.Path(__file__).resolve().parents[2] / "native"
SRC = NATIVE / "src"
PXD = NATIVE / "sabot_native"


def module_dependencies():
    """module (file stem) -> the modules whose headers it includes."""
    graph = {}
    for path in list(SRC.glob("*.h")) + list(SRC.glob("*.cc")) + list(SRC.glob("*.inc")):
        stem = path.name.split(".")[0]
        included = {name.split(".")[0] for name in re.findall(r'#include "([\w.]+)"', path.read_text())}
        graph.setdefault(stem, set()).update(included - {stem})
    return graph


def find_cycle(graph):
    state = {}

    def visit(node, path):
        state[node] = "active"
        for neighbour in sorted(graph.get(node, ())):
            if state.get(neighbour) == "active":
                return path + [node, neighbour]
            if neighbour not in state:
                cycle = visit(neighbour, path + [node])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_cpp_modules_have_no_dependency_cycle():
    graph = module_dependencies()
    assert {"hash", "checksum", "partition", "aggregate", "executor", "arrow_data", "errors"} <= set(graph)
    assert find_cycle(graph) is None, find_cycle(graph)
    # the one value hash: checksum and partition use hash, hash uses neither
    assert "hash" in graph["checksum"] and "hash" in graph["partition"]
    assert not graph["hash"] & {"checksum", "partition", "aggregate", "executor"}


def test_cpp_has_no_python():
    for path in SRC.iterdir():
        text = path.read_text()
        assert "Python.h" not in text and "PyObject" not in text, path.name


def test_each_header_has_exactly_one_pxd():
    headers = {path.stem for path in SRC.glob("*.h")}
    declared = {}
    for pxd in PXD.glob("*.pxd"):
        for header in re.findall(r'cdef extern from "([\w.]+)\.h"', pxd.read_text()):
            declared.setdefault(header, set()).add(pxd.stem)
    assert set(declared) == headers
    for header, pxds in declared.items():
        assert pxds == {header}, f"{header}.h is declared in {sorted(pxds)}"


def test_every_cpp_call_that_can_throw_maps_errors_in_one_place():
    for pxd in PXD.glob("*.pxd"):
        for clause in re.findall(r"except \+\w*", pxd.read_text()):
            assert clause == "except +raise_py_error", (pxd.name, clause)
    raisers = [path.name for path in PXD.glob("*.p*") if "def inline int raise_py_error" in path.read_text()]
    assert raisers == ["errors.pxd"]
