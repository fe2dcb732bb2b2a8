"""The job's result: staged by every agent, published all at once by agent 0.

Layout of an output location (a local directory or any pyarrow.fs URI, s3:// included):
    part-00000.parquet, part-00001.parquet, ...   the published parts (part-<agent index>)
    _SUCCESS                                     the manifest, written last: job, run, attempt, format,
                                                 parts (name, rows, bytes, checksum), rows, checksum
    _staging/<job>/attempt-<n>/                  parts an attempt wrote, not published yet, each named
                                                 after the agent and its instance (a replaced agent's
                                                 successor stages its own file next to the lost one's)
Readers (pyarrow datasets, duckdb, Spark) skip names starting with `_` or `.`, so only a published
result is visible, and only once its manifest exists. A failed attempt leaves at most its staging
directory, which `sabot run` removes, and which a later attempt of the job removes when it publishes.

Modes: `error-if-exists` (the default) refuses, before anything starts, a location holding anything a
reader would see (a published result, other files, the job's own inputs); `overwrite` replaces an
earlier result of the same job: its manifest goes first, then the parts it lists, then the new parts
move in and the new manifest is written. A run never deletes a file it did not write.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sabot_agent.inputs import IGNORED_PREFIXES, filesystem_and_path
from sabot_agent.jobspec import OutputSpec, StorageSpec

MANIFEST = "_SUCCESS"
STAGING = "_staging"
EXTENSIONS = {"parquet": "parquet", "csv": "csv", "ipc": "arrow"}
CHECKSUM_MASK = (1 << 64) - 1


class OutputError(RuntimeError):
    """An output location the job cannot write its result to, or no published result; one line."""


@dataclass(frozen=True)
class Part:
    name: str  # the published name
    rows: int
    bytes: int
    checksum: int
    staged: str = ""  # the name in the staging directory

    def as_dict(self) -> dict:
        return {"name": self.name, "rows": self.rows, "bytes": self.bytes, "checksum": str(self.checksum)}

    def claim(self) -> dict:
        """The part as an agent's done marker carries it to the publishing agent."""
        return {"rows": self.rows, "bytes": self.bytes, "checksum": self.checksum, "staged": self.staged}

    @classmethod
    def from_claim(cls, agent_index: int, output_format: str, claim: dict) -> "Part":
        return cls(part_name(agent_index, output_format), int(claim["rows"]), int(claim["bytes"]), int(claim["checksum"]), claim["staged"])


def part_name(agent_index: int, output_format: str) -> str:
    return f"part-{agent_index:05d}.{EXTENSIONS[output_format]}"


class ResultLocation:
    """A job's output location: what it holds, staging, publishing."""

    def __init__(self, output: OutputSpec, job: str, storage: StorageSpec = StorageSpec(), run: str = ""):
        self.output = output
        self.job = job
        self.run = run  # this run of the job (one `sabot run`, one SabotJob): its manifest names it
        try:
            self.filesystem, base = filesystem_and_path(output.path, storage)
        except Exception as exc:  # noqa: BLE001 -- any filesystem error is a problem of this location
            raise OutputError(f"cannot open output location {output.path!r}: {_first_line(exc)}") from None
        self.base = base.rstrip("/")

    def staging(self, attempt: int) -> str:
        return f"{self.base}/{STAGING}/{self.job}/attempt-{attempt}"

    def visible_entries(self) -> list[str]:
        """Names in the location a reader would see (not `.`/`_`-prefixed)."""
        info = self.filesystem.get_file_info(self.base)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.type != pafs.FileType.Directory:
            return [self.base]
        entries = self.filesystem.get_file_info(pafs.FileSelector(self.base, recursive=False))
        return sorted(entry.base_name for entry in entries if not entry.base_name.startswith(IGNORED_PREFIXES))

    def manifest(self) -> dict | None:
        try:
            with self.filesystem.open_input_stream(f"{self.base}/{MANIFEST}") as handle:
                return json.loads(handle.read())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise OutputError(f"the manifest {self.output.path.rstrip('/')}/{MANIFEST} is not JSON: {exc}") from None

    def published_by_this_run(self) -> dict | None:
        """The manifest, when this very run already published it (an agent that replaces a lost one
        after the publish has nothing left to do)."""
        manifest = self.manifest()
        return manifest if manifest is not None and self.run and manifest.get("job") == self.job and manifest.get("run") == self.run else None

    def check(self) -> None:
        """Refuse a location the job may not write to (done before anything starts, and again by the
        agent that publishes)."""
        path = self.output.path
        try:
            entries, manifest = self.visible_entries(), self.manifest()
        except OSError as exc:
            raise OutputError(f"cannot inspect output location {path!r}: {_first_line(exc)}") from None
        self._check_writable()
        if manifest is not None and self.run and manifest.get("job") == self.job and manifest.get("run") == self.run:
            return  # this run's own result, published before an agent was replaced
        if self.output.mode == "overwrite":
            if manifest is not None and manifest.get("job") != self.job:
                raise OutputError(f"output {path!r} holds a result of job {manifest.get('job')!r}; overwrite replaces only this job's own")
            listed = {part["name"] for part in (manifest or {}).get("parts", [])}
            foreign = [name for name in entries if name not in listed]
            if foreign:
                raise OutputError(f"output {path!r} holds files this job did not write ({_names(foreign)}); give an empty or new location")
            return
        if manifest is not None:
            raise OutputError(f"output {path!r} already holds a result of job {manifest.get('job')!r} (output.mode: overwrite replaces it)")
        if entries:
            raise OutputError(f"output {path!r} is not empty ({_names(entries)}); give an empty or new location")

    def _check_writable(self) -> None:
        """A local location must be writable where it will be created: the output directory, or the
        nearest directory above it that exists (a read-only mount, a directory of another user). Object
        stores say so only when written to."""
        if not isinstance(self.filesystem, pafs.LocalFileSystem):
            return
        directory = os.path.abspath(self.base)
        while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
            directory = os.path.dirname(directory)
        if not os.access(directory, os.W_OK | os.X_OK):
            reason = "is on a read-only filesystem" if _read_only_mount(directory) else "is not writable by this user"
            raise OutputError(f"output {self.output.path!r}: {directory} {reason}")

    def write_part(self, table: pa.Table, attempt: int, agent_index: int, instance: str, checksum: int) -> Part:
        """This agent's part, into the attempt's staging directory (via a temporary name and a rename)."""
        directory = self.staging(attempt)
        self.filesystem.create_dir(directory, recursive=True)
        name = part_name(agent_index, self.output.format)
        staged = f"{name}.{instance}"
        temporary, final = f"{directory}/.{staged}.tmp-{os.getpid()}", f"{directory}/{staged}"
        try:
            with self.filesystem.open_output_stream(temporary) as sink:
                if self.output.format == "parquet":
                    pq.write_table(table, sink)
                elif self.output.format == "csv":
                    pa_csv.write_csv(table, sink)
                else:
                    with pa.ipc.new_file(sink, table.schema) as writer:
                        writer.write_table(table)
            self.filesystem.move(temporary, final)
        except BaseException:
            try:
                self.filesystem.delete_file(temporary)
            except OSError:
                pass
            raise
        return Part(name, table.num_rows, self.filesystem.get_file_info(final).size or 0, checksum, staged)

    def publish(self, attempt: int, parts: list[Part]) -> dict:
        """Move the attempt's staged parts into place and write the manifest last; returns it. Safe to
        repeat after a crash at any step (an agent replacing the publishing one does): a part already
        moved is found in place."""
        done = self.published_by_this_run()
        if done is not None:
            return done
        self.check()
        previous = self.manifest()
        if previous is not None:
            # the old manifest goes first: no manifest ever names a part that is gone
            self.filesystem.delete_file(f"{self.base}/{MANIFEST}")
            for part in previous.get("parts", []):
                try:
                    self.filesystem.delete_file(f"{self.base}/{part['name']}")
                except FileNotFoundError:
                    pass
        staged = self.staging(attempt)
        for part in parts:
            source, target = f"{staged}/{part.staged}", f"{self.base}/{part.name}"
            if self.filesystem.get_file_info(source).type == pafs.FileType.NotFound and self._holds(target, part):
                continue  # moved before a crash
            self.filesystem.move(source, target)
        manifest = {
            "job": self.job,
            "run": self.run,
            "attempt": attempt,
            "format": self.output.format,
            "parts": [part.as_dict() for part in parts],
            "rows": sum(part.rows for part in parts),
            "checksum": str(sum(part.checksum for part in parts) & CHECKSUM_MASK),
            "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        temporary = f"{self.base}/.{MANIFEST}.tmp-{os.getpid()}"
        with self.filesystem.open_output_stream(temporary) as sink:
            sink.write(json.dumps(manifest, indent=1).encode())
        self.filesystem.move(temporary, f"{self.base}/{MANIFEST}")
        self.remove_staging()
        return manifest

    def _holds(self, path: str, part: Part) -> bool:
        info = self.filesystem.get_file_info(path)
        return info.type == pafs.FileType.File and info.size == part.bytes

    def remove_staged_part(self, attempt: int, part: Part) -> None:
        """A staged part the publish did not take (a replacement agent's, staged after the publish)."""
        try:
            self.filesystem.delete_file(f"{self.staging(attempt)}/{part.staged}")
        except FileNotFoundError:
            pass
        self.remove_staging(attempt)

    def remove_staging(self, attempt: int | None = None) -> None:
        """Remove the job's staging directories (one attempt's, or all of them), then the parents left
        without files; best effort, since staging is hidden from readers anyway. A directory counts as
        empty when a recursive listing finds no file: object stores (SeaweedFS) keep listing emptied
        folders."""
        job_staging, staging = f"{self.base}/{STAGING}/{self.job}", f"{self.base}/{STAGING}"
        target = job_staging + (f"/attempt-{attempt}" if attempt is not None else "")
        for directory in dict.fromkeys((target, job_staging, staging)):
            try:
                if self.filesystem.get_file_info(directory).type != pafs.FileType.Directory:
                    continue
                selector = pafs.FileSelector(directory, recursive=True)
                if directory == target or not any(i.type == pafs.FileType.File for i in self.filesystem.get_file_info(selector)):
                    self.filesystem.delete_dir(directory)
            except FileNotFoundError:
                continue
            except OSError:
                return

    def read(self, limit: int | None = None) -> tuple[dict, pa.Table]:
        """(manifest, the first `limit` rows, all without a limit) of the published result."""
        manifest = self.manifest()
        if manifest is None:
            raise OutputError(f"no published result at {self.output.path!r} (no {MANIFEST} manifest there)")
        file_format = manifest.get("format", self.output.format)
        tables, remaining = [], limit
        for part in manifest["parts"]:
            if remaining is not None and remaining <= 0:
                break
            table = ds.dataset(f"{self.base}/{part['name']}", format=file_format, filesystem=self.filesystem).to_table()
            if remaining is not None:
                table = table.slice(0, remaining)
                remaining -= table.num_rows
            tables.append(table)
        return manifest, (pa.concat_tables(tables) if tables else pa.table({}))


def _names(entries: list[str]) -> str:
    return ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_only_mount(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False
