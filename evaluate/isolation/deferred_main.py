"""The caller's ``__main__`` in children of the fork server: imported only when a pickle needs it.

``in_fork_server(owner_env)`` tells the fork server's preload import apart from any other import of
``fork_server``; ``defer_main_in_children()`` (called there) makes children set up ``__main__`` lazily.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any


class _DeferredMain(types.ModuleType):
    """A child's ``__main__`` until a pickle needs something from it; only then is the caller's script imported.

    Multiprocessing re-runs the caller's main script in every child so that targets defined there unpickle.
    lossforge's own targets live in modules, so that import is pure cost for them and, for a script without
    an ``if __name__ == "__main__":`` guard, it re-runs the user's whole experiment inside the child (which
    then fails to start processes of its own). Deferring it keeps both cases right: a target defined in
    ``__main__`` still imports the script (with multiprocessing's usual rules); nothing else ever does.
    """

    def __init__(self, kind: str, where: str) -> None:
        super().__init__("__mp_main__")
        self.__dict__["_lossforge_main"] = (kind, where)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # multiprocessing and pickle probe dunders; they must not import the script
        from multiprocessing import spawn

        kind, where = self.__dict__["_lossforge_main"]
        (spawn._fixup_main_from_name if kind == "name" else spawn._fixup_main_from_path)(where)
        main = sys.modules["__main__"]
        if main is self:  # a package's __main__.py: multiprocessing never re-runs those
            raise AttributeError(f"module '__main__' has no attribute {name!r}")
        return getattr(main, name)


def defer_main_in_children() -> None:
    """In the fork server: children forked from it set up ``__main__`` lazily (``_DeferredMain``)."""
    from multiprocessing import spawn

    prepare = spawn.prepare

    def prepare_deferring_main(data: dict[str, Any]) -> None:
        data = dict(data)
        name, path = data.pop("init_main_from_name", None), data.pop("init_main_from_path", None)
        prepare(data)
        if name is not None:
            sys.modules["__main__"] = _DeferredMain("name", name)
        elif path is not None:
            sys.modules["__main__"] = _DeferredMain("path", path)

    spawn.prepare = prepare_deferring_main


def in_fork_server(owner_env: str) -> bool:
    """True when imported as a preload by a fork server that our caller started.

    The server imports its preloads from inside ``multiprocessing.forkserver.main``, so that function is on
    the stack; the environment variable names the process that started it (a plain ``python -c`` child of
    the caller inherits the variable too, but never runs inside ``forkserver.main``).
    """
    from multiprocessing import forkserver

    owner = os.environ.get(owner_env, "")
    if owner != str(os.getppid()):
        return False
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


__all__ = ["defer_main_in_children", "in_fork_server"]
