"""Native extension build. Metadata lives in pyproject.toml; this file only lists the extensions.

C++ sources live in native/src (no Python in them); each Cython module is a thin wrapper. The
executor sources are compiled into both modules, with hidden visibility so each module keeps its own
private copy of the C++ symbols.
"""
from glob import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

SRC = "native/src/"
COMPILE_ARGS = ["-std=c++17", "-O3", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
LINK_ARGS = ["-pthread"]

EXECUTOR_SOURCES = [SRC + "errors.cc", SRC + "executor.cc", SRC + "task_slots.cc"]
KERNEL_SOURCES = [SRC + "hash.cc", SRC + "arrow_data.cc", SRC + "partition.cc", SRC + "checksum.cc", SRC + "aggregate.cc",
                  SRC + "join.cc", SRC + "decimal.cc"]


def native_module(name, sources):
    return Extension(
        f"sabot_native.{name}",
        sources=[f"native/sabot_native/{name}.pyx", *sources],
        include_dirs=[SRC],
        depends=glob(SRC + "*.h") + glob(SRC + "*.inc"),
        language="c++",
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
    )


setup(
    ext_modules=cythonize(
        [
            native_module("_executor", EXECUTOR_SOURCES),
            native_module("_kernels", EXECUTOR_SOURCES + KERNEL_SOURCES),
        ],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        include_path=["native"],
    ),
)
