"""What every part of the sandbox shares: the constants, the result type, the error, and the default mode.

``DEFAULT_MODE`` lives here and only here: :func:`resolve_mode` reads it at call time, :func:`using_mode` sets it
for a while. Set it there (``sdft.evaluation.sandbox.base.DEFAULT_MODE``), not on the package, whose
``DEFAULT_MODE`` only reads this one.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

STATUSES = ("passed", "failed", "timeout", "error", "killed")
MODES = ("bwrap", "guard")
DEFAULT_MODE = "bwrap"  # what ``mode=None`` means; set it with resolve_mode's result (e.g. from the config)
SANDBOX_UID = SANDBOX_GID = 65534  # "nobody"
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
STDERR_TAIL = 2000
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; "
                "scripts/setup.sh does it as root) or choose the weaker in-process sandbox by name: mode='guard' "
                "(sdft eval/score: --sandbox guard)")
BOX, SRC = "/sandbox", "/sdft"  # inside bwrap: the writable working folder, the read-only program folder
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class SandboxUnavailable(RuntimeError):
    """The requested sandbox mode cannot run here (bwrap missing or unable to create namespaces)."""


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str  # one of STATUSES
    stderr: str = ""  # the last STDERR_TAIL characters
    returncode: int | None = None
    seconds: float = 0.0
    mode: str = DEFAULT_MODE  # the sandbox mode it ran in (one of MODES)


def resolve_mode(name: str | None = None) -> str:
    """A sandbox mode by name: ``"bwrap"`` | ``"guard"``; ``None`` means ``DEFAULT_MODE``.

    >>> resolve_mode("guard"), resolve_mode(None)
    ('guard', 'bwrap')
    >>> resolve_mode("none")
    Traceback (most recent call last):
    ...
    ValueError: unknown sandbox mode 'none': choose bwrap (bubblewrap namespaces, the default) or guard (in-process guard only, weaker)
    """
    mode = DEFAULT_MODE if name is None else str(name).strip().lower()
    if mode not in MODES:
        raise ValueError(f"unknown sandbox mode {name!r}: choose bwrap (bubblewrap namespaces, the default) or "
                         "guard (in-process guard only, weaker)")
    return mode


@contextmanager
def using_mode(name: str | None) -> Iterator[str]:
    """``DEFAULT_MODE`` is ``name`` (checked by :func:`resolve_mode`; ``None``: unchanged) inside the block, and
    what it was before afterwards, also on an error. It is one setting for the whole process: enter it before
    any worker threads start (they read it when each program runs) and leave it after they are done.

    >>> with using_mode("guard") as mode:
    ...     mode, resolve_mode(None)
    ('guard', 'guard')
    >>> resolve_mode(None)
    'bwrap'
    """
    global DEFAULT_MODE
    mode = resolve_mode(name)
    previous, DEFAULT_MODE = DEFAULT_MODE, mode
    try:
        yield mode
    finally:
        DEFAULT_MODE = previous
