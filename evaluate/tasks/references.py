"""The built-in tiny tasks' shipped references: what ``sentiment``, ``arithmetic`` and the suite's tasks would build
at first use.

What ships (package data under ``evaluate/tasks/data/references``): for each task of ``SHIPPED``, in its default
configuration only (default options, task seed 1234, the default ``TinyModelSpec``), exactly the files ``TinyTask``
caches under ``$LOSSFORGE_CACHE/tasks/<name>-<key>``: ``data.json`` (preference pairs and held-out data) and
``reference/`` (the SFT model's safetensors and config, the tokenizer; not for the tasks whose reference is
``sentiment``'s, ``derived_sentiment``). ``manifest.json`` records, for each task,
its class, its build key (``TinyTask.build_key()``: the hash of everything that determines the build) and the
SHA-256 of every file.

How a task uses them (``TinyTask.cache_key`` and ``ensure_built``): when its class and build key equal the
manifest's, the files are checked against their hashes (once per process), the task's cache key covers those
hashes, and first use copies the files into the cache instead of training. Any other configuration (another
option, task seed or model size) builds its own reference, as before. A file that does not match its hash is a
``TaskError`` naming the file and how to rebuild.

Copied into the cache rather than loaded in place, so that everything downstream reads one layout: a cache
entry is the same self-contained directory whether it was built or shipped, the copy is verified once as it is
written (reading a file and checking the bytes that are written), and a package reinstalled under a running
discovery does not change the files its workers load. The price is ~0.6 MB of disk per task.

Why ship them: SFT training on the user's machine fed every difference in floating-point kernels between
machines (CPU, BLAS, torch version) into the reference, and so into every score, and made a newcomer's first
run wait for it. Shipped, the reference is the same bytes everywhere; what still differs between
machines is the LoRA training and scoring arithmetic (docs/REPRODUCIBILITY.md).

Maintainers rebuild them (after changing a task's grammar, data, SFT or model, or when ``--check`` says a shipped
reference is stale) and commit the files and the manifest::

    python -m lossforge.evaluate.tasks.references --check            # hashes and build keys of the shipped files
    python -m lossforge.evaluate.tasks.references --rebuild          # every shipped task; or name some
    python -m lossforge.evaluate.tasks.references --rebuild --dir D  # write elsewhere (a trial)

A rebuild trains on one thread with the fixed task seed: the same machine and versions rebuild the same bytes.
``$LOSSFORGE_REFERENCES`` points the tasks (and ``--check``/``--rebuild`` without ``--dir``) at another
directory of the same layout: tests, a maintainer's trial rebuild. It holds in the process that reads it; the
training and scoring processes start with the allowlisted environment of ``lossforge.evaluate.isolation.environment``,
which does not pass it on, so there the package's files are used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from lossforge.evaluate.tasks.base import TaskError

ENV_VAR = "LOSSFORGE_REFERENCES"
PACKAGE_DIR = Path(__file__).resolve().parent / "data" / "references"
MANIFEST = "manifest.json"
FORMAT = 1
REBUILD_COMMAND = "python -m lossforge.evaluate.tasks.references --rebuild"
# The tasks whose default configuration ships: name -> "module:Class".
SHIPPED: dict[str, str] = {
    "sentiment": "lossforge.evaluate.tasks.sentiment:SentimentTask",
    "arithmetic": "lossforge.evaluate.tasks.arithmetic:ArithmeticTask",
    "off_policy": "lossforge.evaluate.tasks.off_policy:OffPolicyTask",
    "noisy_labels": "lossforge.evaluate.tasks.noisy_labels:NoisyLabelsTask",
    "length_bias": "lossforge.evaluate.tasks.length_bias:LengthBiasTask",
    "overoptimization": "lossforge.evaluate.tasks.overoptimization:OverOptimizationTask",
}

# Files already checked in this process: (path, size, mtime_ns) -> SHA-256.
_checked: dict[tuple[str, int, int], str] = {}
_lookups_off = False  # while the maintainer commands construct a task (``_default_task``)


def references_dir() -> Path:
    """``$LOSSFORGE_REFERENCES`` if set, else the package's ``data/references``."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else PACKAGE_DIR


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class ShippedReference:
    """One task's shipped files: ``directory`` holds them, ``files`` maps each relative path to its SHA-256."""

    task: str
    directory: Path
    files: dict[str, str]

    @property
    def digest(self) -> str:
        """One hash over every file's hash: what the task's cache key covers."""
        return hashlib.sha256(json.dumps(self.files, sort_keys=True).encode()).hexdigest()[:16]

    def mismatch(self, relative: str, actual: str | None) -> TaskError:
        """The one message for a shipped file that is missing or damaged: which file, and how to fix it."""
        path, manifest = self.directory / relative, self.directory.parent / MANIFEST
        if actual is None:
            problem = f"is missing (it is listed in {manifest})"
        else:
            expected = self.files[relative]
            problem = f"does not match its SHA-256 in {manifest} (found {actual[:12]}..., expected {expected[:12]}...)"
        return TaskError(
            f"shipped reference file {path} {problem}; "
            f"reinstall lossforge, or rebuild the references with `{REBUILD_COMMAND} {self.task}`"
        )

    def verify(self) -> None:
        """Raise ``TaskError`` for the first file that is missing or does not match its hash."""
        for relative, expected in sorted(self.files.items()):
            path = self.directory / relative
            try:
                stat = path.stat()
            except OSError:
                raise self.mismatch(relative, None) from None
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            actual = _checked.get(key) or file_sha256(path)
            if actual != expected:
                raise self.mismatch(relative, actual)
            _checked[key] = actual

    def install(self, target: Path) -> None:
        """Copy the files into ``target``, checking the bytes that are written against their hashes."""
        for relative, expected in sorted(self.files.items()):
            try:
                content = (self.directory / relative).read_bytes()
            except OSError:
                raise self.mismatch(relative, None) from None
            actual = hashlib.sha256(content).hexdigest()
            if actual != expected:
                raise self.mismatch(relative, actual)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_bytes(content)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest in ``directory``; an empty one when there is none (nothing is shipped)."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return {"format": FORMAT, "tasks": {}}
    except (OSError, ValueError) as exc:
        raise TaskError(
            f"cannot read {path}: {exc}; reinstall lossforge, or rebuild with `{REBUILD_COMMAND}`"
        ) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("tasks"), dict)
    ):
        raise TaskError(
            f"{path} is not a format-{FORMAT} manifest; reinstall lossforge, or rebuild with `{REBUILD_COMMAND}`"
        )
    return manifest


def shipped_reference(location: str, task: str, build_key: str) -> ShippedReference | None:
    """The verified shipped reference of task class ``location`` ("module:Class") at ``build_key``, or None
    when none ships for that class and configuration. Raises ``TaskError`` when a file does not match its hash."""
    if _lookups_off:
        return None
    directory = references_dir()
    entry = read_manifest(directory)["tasks"].get(task)
    if not isinstance(entry, dict) or entry.get("class") != location or entry.get("build_key") != build_key:
        return None
    reference = ShippedReference(task=task, directory=directory / task, files=dict(entry["files"]))
    reference.verify()
    return reference


# --- maintainers: rebuild and check --------------------------------------------------------------------------


def _default_task(name: str) -> Any:
    """The task ``name`` in its default configuration, constructed without looking at its shipped files (they
    may be the damaged ones being rebuilt or checked)."""
    from lossforge.evaluate.tasks import load_task_class

    global _lookups_off
    _lookups_off = True
    try:
        return load_task_class(SHIPPED[name])()
    finally:
        _lookups_off = False


def rebuild(names: Sequence[str], directory: Path) -> dict[str, Any]:
    """Train each named task's default reference, write its files into ``directory/<name>`` and its hashes into
    the manifest (other tasks' entries are kept); returns the manifest."""
    import torch
    import transformers

    manifest = read_manifest(directory) if (directory / MANIFEST).exists() else {"format": FORMAT, "tasks": {}}
    for name in names:
        task = _default_task(name)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory if directory.exists() else None))
        try:
            task.build_into(staging, record_seconds=False)  # no timing in the files: a rebuild is reproducible
            files = {
                p.relative_to(staging).as_posix(): file_sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()
            }
            directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(directory / name, ignore_errors=True)
            shutil.move(str(staging), directory / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for path in [directory / name, *(directory / name).rglob("*")]:  # package data is world-readable
            path.chmod(0o755 if path.is_dir() else 0o644)  # (mkdtemp and safetensors make theirs private)
        built_with = {"torch": torch.__version__, "transformers": transformers.__version__, "lossforge": _version()}
        manifest["tasks"][name] = {
            "class": SHIPPED[name],
            "build_key": task.build_key(),
            "files": files,
            "built_with": built_with,
        }
        print(f"{name}: {sum((directory / name / f).stat().st_size for f in files) / 1e3:.0f} kB in {len(files)} files")
    manifest["rebuild"] = REBUILD_COMMAND
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def check(directory: Path) -> list[str]:
    """Problems with the shipped references in ``directory``: a task missing, stale or not matching its hashes."""
    problems = []
    tasks = read_manifest(directory)["tasks"]
    for name, location in SHIPPED.items():
        entry = tasks.get(name)
        if entry is None:
            problems.append(f"{name}: not shipped; run `{REBUILD_COMMAND} {name}`")
            continue
        task = _default_task(name)
        try:
            build_key = task.build_key()
        except TaskError as exc:  # it builds on another shipped task's files (``derived_sentiment``), damaged
            problems.append(f"{name}: not checked, it builds on a damaged shipped reference: {exc}")
            continue
        if entry.get("class") != location or entry.get("build_key") != build_key:
            problems.append(f"{name}: stale (the task now builds another reference); run `{REBUILD_COMMAND} {name}`")
            continue
        try:
            ShippedReference(task=name, directory=directory / name, files=dict(entry["files"])).verify()
        except TaskError as exc:
            problems.append(f"{name}: {exc}")
    return problems


def _version() -> str:
    try:
        return metadata.version("lossforge")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lossforge.evaluate.tasks.references", description=__doc__.split("\n")[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--rebuild", nargs="*", metavar="TASK", help=f"rebuild these tasks (default: {', '.join(SHIPPED)})"
    )
    action.add_argument("--check", action="store_true", help="verify the shipped files' hashes and build keys")
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"references directory (default: ${ENV_VAR} or the package's)"
    )
    args = parser.parse_args(argv)
    directory = args.dir or references_dir()
    if args.check:
        problems = check(directory)
        print("\n".join(problems) or f"{', '.join(SHIPPED)}: shipped references match their hashes and build keys")
        return 1 if problems else 0
    names = args.rebuild or list(SHIPPED)
    unknown = [n for n in names if n not in SHIPPED]
    if unknown:
        parser.error(f"{', '.join(map(repr, unknown))} not shipped; choose from {', '.join(SHIPPED)}")
    try:
        rebuild(names, directory)
    except TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {directory / MANIFEST}")
    return 0


__all__ = [
    "ENV_VAR",
    "MANIFEST",
    "PACKAGE_DIR",
    "REBUILD_COMMAND",
    "SHIPPED",
    "ShippedReference",
    "check",
    "main",
    "read_manifest",
    "rebuild",
    "references_dir",
    "shipped_reference",
]


if __name__ == "__main__":
    sys.exit(main())
