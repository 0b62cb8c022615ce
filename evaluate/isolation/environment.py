"""The environment of every process that runs candidate code: an allowlist, with secrets removed.

A candidate reads ``os.environ`` (or ``/proc/self/environ``, or its own memory) without any system call the
sandbox could refuse, and whatever it reads can leave through its outputs (an error message, the profile's
curves, a score). So a process that executes candidate code, and the fork server those processes are forked
from, must never have held a secret: they start with ``candidate_environment()``.

Kept: the variables that locate programs, libraries and caches, choose threads and devices, and configure
lossforge itself (``ALLOWED_NAMES``, ``ALLOWED_PREFIXES``). Removed, even where the allowlist would keep them:
every variable whose name has a word that marks a credential (``HF_TOKEN``, ``OPENAI_API_KEY``,
``MY_SECRET``, ``DB_PASSWORD``; see ``SECRET_WORDS``) and every variable of a provider's namespace
(``OPENAI_*``, ``ANTHROPIC_*``, ``AWS_*``...). ``TOKENIZERS_PARALLELISM`` stays: its words are
``TOKENIZERS`` and ``PARALLELISM``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping

ALLOWED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "PWD",
        "SHELL",
        "TMPDIR",
        "TEMP",
        "TMP",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "NO_COLOR",
        "TOKENIZERS_PARALLELISM",
        "NUMEXPR_NUM_THREADS",
        "NVIDIA_VISIBLE_DEVICES",
        "SSL_CERT_FILE",
        "LOSSFORGE_CACHE",
        "LOSSFORGE_HOME",
        "LOSSFORGE_STRICT_ISOLATION",
        "LOSSFORGE_FORKSERVER_OWNER",
        "LOSSFORGE_REFERENCES",
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "ROLE_RANK",
        "ROLE_WORLD_SIZE",
        "TORCHELASTIC_RUN_ID",
    }
)
ALLOWED_PREFIXES = (
    "LC_",
    "PYTHON",
    "OMP_",
    "KMP_",
    "GOMP_",
    "MKL_",
    "OPENBLAS_",
    "BLIS_",
    "CUDA_",
    "NCCL_",
    "CUBLAS_",
    "CUDNN_",
    "TORCH",
    "PYTORCH_",
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "DATASETS_",
    "ACCELERATE_",
    "XDG_",
)
SECRET_WORDS = frozenset(
    {
        "KEY",
        "KEYS",
        "APIKEY",
        "TOKEN",
        "TOKENS",
        "SECRET",
        "SECRETS",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "CREDENTIAL",
        "CREDENTIALS",
        "AUTH",
        "COOKIE",
        "SESSION",
        "PRIVATE",
        "SIGNATURE",
    }
)
SECRET_PREFIXES = ("OPENAI_", "ANTHROPIC_", "AZURE_", "AWS_", "GOOGLE_", "GCP_", "WANDB_", "COHERE_", "MISTRAL_")

_WORD = re.compile(r"[A-Z0-9]+")


def is_secret(name: str) -> bool:
    """Whether the variable ``name`` may hold a credential (by its words or its provider's prefix)."""
    upper = name.upper()
    return upper.startswith(SECRET_PREFIXES) or any(word in SECRET_WORDS for word in _WORD.findall(upper))


def is_allowed(name: str) -> bool:
    """Whether a process that runs candidate code may see ``name``."""
    if is_secret(name):
        return False
    return name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)


def candidate_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) reduced to the allowlist, without any secret."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if is_allowed(name)}


@contextlib.contextmanager
def process_environment_reduced() -> Iterator[None]:
    """Meanwhile, the C-level environment that a new program inherits holds only ``candidate_environment()``.

    For starting a program that must not inherit secrets (the fork server) through an API that passes no
    environment. ``os.unsetenv``/``os.putenv`` change what ``exec`` passes on without touching ``os.environ``,
    so other threads of this process keep reading every variable while it lasts.
    """
    removed = {name: value for name, value in os.environ.items() if not is_allowed(name)}
    for name in removed:
        os.unsetenv(name)
    try:
        yield
    finally:
        for name, value in removed.items():
            os.putenv(name, value)


__all__ = ["candidate_environment", "is_allowed", "is_secret", "process_environment_reduced"]
