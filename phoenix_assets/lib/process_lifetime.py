"""Processes that do Phoenix's work die with the process that started them.

Why: `kill -9` of `dagster asset materialize` (or of a run worker) used to leave the step's child process
running. Nobody waits for its events any more, yet it kept going, committed its Delta version and left the run
STARTED forever. Linux can tie a child's life to its parent's: `prctl(PR_SET_PDEATHSIG, SIGKILL)` makes the
kernel SIGKILL the child when its parent dies. Three kinds of process set it on themselves:

- a step process of Dagster's multiprocess executor (`die_with_dagster_step_parent`, called when the child
  imports `phoenix_assets.definitions`): a `spawn` child whose target is Dagster's child-process wrapper, the
  function object that `phoenix_assets.defs.ops.dagster_internals` imports (MULTIPROCESS_STEP_TARGET) and
  `phoenix_assets.definitions` passes in: if Dagster renames it, that import fails when the definitions load.
  Run workers that a code server spawns are deliberately left alone: the code server starts them from a
  gRPC worker thread (PDEATHSIG fires when the parent *thread* exits), and Dagster lets runs outlive a
  code-server reload; a dead run worker's run is failed by its code server, or by `run_worker_sweep`.
- the training subprocess launched through Dagster Pipes (`phoenix_rl.train.pipes_entry`), told its parent's pid
  through `PARENT_PID_ENV` (set by `mamba_sac_model`).
- a worker of `phoenix_rl.train.pool.training_pool` (HPO study, walk-forward, ablation), told the pool owner's pid
  through the pool's initializer; the pool takes jobs only from the thread that opened it, the thread that
  starts the workers (CPython spawns them in `submit`). multiprocessing's resource tracker needs nothing: it
  exits once no process holds its pipe, i.e. when the owner and its workers are gone.

The multiprocess executor starts step processes from the run process's main thread (its step loop is
cooperative, no threads), and the Pipes client starts training from the step's main thread: the death signal
does not fire early because some short-lived thread that forked ended. After `prctl` the child compares
`os.getppid()` with the pid its parent had: if the parent died between fork and `prctl` the child was already
re-parented, and it exits at once.

No dagster import: this module is also used by `phoenix_rl`, which runs where only `dagster-pipes` exists.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable

__all__ = [
    "ORPHAN_EXIT_CODE",
    "PARENT_PID_ENV",
    "die_with_dagster_step_parent",
    "die_with_parent",
    "die_with_parent_from_env",
    "pid_alive",
]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_PID_ENV = "PHOENIX_PARENT_PID"  # the launching process's pid, for children started with subprocess
ORPHAN_EXIT_CODE = 70  # exit status of a child whose parent was already gone when it set the death signal


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies; exit at once (status
    ORPHAN_EXIT_CODE) if the parent, `parent_pid`, is already gone. Returns False where the platform has no
    PR_SET_PDEATHSIG (not Linux): the process then lives on as before."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    if os.getppid() != parent_pid:  # the parent died before prctl: no signal will ever come
        os._exit(ORPHAN_EXIT_CODE)
    return True


def die_with_parent_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """`die_with_parent` with the parent pid from `PARENT_PID_ENV`; does nothing (False) when it is not set,
    e.g. a training script run by hand."""
    value = environ.get(PARENT_PID_ENV, "").strip()
    if not value:
        return False
    return die_with_parent(int(value))


def die_with_dagster_step_parent(step_target: Callable[..., object]) -> bool:
    """In a step process of Dagster's multiprocess executor, die with the run process that started it; a
    no-op (False) in any other process (`dagster dev`, the daemon, code servers, run workers, tests).

    `step_target` is the function the executor runs as the `multiprocessing.Process` target of a step process
    (`phoenix_assets.defs.ops.dagster_internals.MULTIPROCESS_STEP_TARGET`): this process is a step process when
    its own target is that function (the same object: a spawn child unpickles its target by module and name).

    A `spawn` or `fork` child knows the pid of the process that created it (`multiprocessing.parent_process`);
    a `forkserver` child's OS parent is the fork server (which exits when the run process does), so there
    the death signal is tied to the fork server."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return False
    target = getattr(multiprocessing.current_process(), "_target", None)
    if target is None or not _same_function(target, step_target):
        return False
    forkserver = getattr(multiprocessing.current_process(), "_start_method", None) == "forkserver"
    return die_with_parent(os.getppid() if forkserver else parent.pid)


def _same_function(a: object, b: object) -> bool:
    """The same function: the same object, or (should its module have been imported twice) the same module and
    qualified name."""
    if a is b:
        return True
    names = [(getattr(f, "__module__", None), getattr(f, "__qualname__", None)) for f in (a, b)]
    return None not in names[0] and names[0] == names[1]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True  # no procfs (not Linux): kill(0) said it exists
