"""A gate that holds a subprocess at a known point, so a test can kill it there (no timing involved).

The test side (:class:`Gate`) passes ``STEMSEP_TEST_GATE`` in the child's environment. In the
child, every call of :func:`checkpoint` (``helpers.slow_net.SlowNet.forward`` calls it; :func:`gated`
wraps any function) counts; the call numbered ``at`` (0-based, counted per process) writes the
marker file ("I am inside call ``at``") and then waits there until the process is killed. The test
waits for the marker (:meth:`Gate.wait_reached`) and kills the child: everything before call ``at``
has happened, nothing after it has.

Safety nets, not assertions: the child gives up waiting (raises) after :data:`HOLD_LIMIT` seconds or
when its parent is gone, so a broken test cannot leave it blocked forever; the test fails with a
clear message if the child exits without reaching the gate, or has not reached it in ``timeout`` s.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ENV = "STEMSEP_TEST_GATE"
HOLD_LIMIT = 600.0  # seconds a child holds at the gate before giving up (only if never killed)
POLL = 0.01

_calls = itertools.count()
F = TypeVar("F", bound=Callable)


def checkpoint() -> None:
    """Count a call; at the gate's call, signal it and hold until killed (no-op without ``STEMSEP_TEST_GATE``)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    gate = json.loads(spec)
    call = next(_calls)
    if call != gate["at"]:
        return
    marker = Path(gate["marker"])
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, marker)  # atomic: the test never sees it half-written
    deadline = time.monotonic() + HOLD_LIMIT
    while True:  # interrupted by SIGTERM like any sleep (stemsep's handler raises SystemExit here)
        if os.getppid() != gate["parent"]:
            raise RuntimeError(f"test gate: the test process is gone (held at call {call})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"test gate: not killed within {HOLD_LIMIT:.0f} s of reaching call {call}")
        time.sleep(POLL)


def gated(fn: F) -> F:
    """``fn`` with a :func:`checkpoint` before each call."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        checkpoint()
        return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


class Gate:
    """Test side: hold the child at its call number ``at`` (0-based); ``folder`` holds the marker."""

    def __init__(self, folder: Path, at: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.at, self.marker = at, folder / f"gate-{at}.reached"
        self.marker.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        """The child's environment additions (the child must be started by this process)."""
        return {ENV: json.dumps({"at": self.at, "marker": str(self.marker), "parent": os.getpid()})}

    def wait_reached(self, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
        """Return once ``proc`` holds at the gate; fail clearly if it exits first (it cannot finish
        without passing the gate) or, as a safety net, has not got there in ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            if proc.poll() is not None and not self.marker.exists():
                raise AssertionError(f"the child exited ({proc.returncode}) before reaching gate call {self.at}:\n"
                                     f"{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"safety net: the child did not reach gate call {self.at} in {timeout:.0f} s:\n"
                                     f"{log.read_text(errors='replace')[-3000:]}")
            time.sleep(POLL)
        assert self.marker.read_text() == str(proc.pid), "the gate was reached by another process"
