"""The child processes the tasks start (compilers, emulators, FTP clients, programs), tracked so that one Ctrl-C
stops every one of them.

Children run in their own session, so the terminal's Ctrl-C reaches only us: a compiler is then never reported as
failed because it was interrupted, and we stop the children ourselves (the whole process group: Wine and qemu start
helpers of their own).
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

_children = set()
_cleanups = []  # callables stop_all runs after the children are gone (a network namespace to remove, say)
_lock = threading.Lock()
_stopping = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Raised in a worker thread whose child was stopped because the user interrupted the task."""


def popen(command, **kwargs):
    """subprocess.Popen in a new session, tracked until `forget`."""
    if _stopping.is_set():
        raise Interrupted()
    child = subprocess.Popen(command, start_new_session=True, **kwargs)
    with _lock:
        _children.add(child)
    return child


def stop(child):
    """Stop a child `popen` started (its whole process group) and forget it."""
    _stop(child)
    forget(child)


def forget(child):
    with _lock:
        _children.discard(child)


@contextlib.contextmanager
def cleanup(callback):
    """Within the block, stop_all (Ctrl-C) also calls `callback`, after stopping the children: for what a worker
    thread's own `finally` would undo, since the task leaves without waiting for its threads."""
    with _lock:
        _cleanups.append(callback)
    try:
        yield
    finally:
        with _lock:
            with contextlib.suppress(ValueError):
                _cleanups.remove(callback)


@contextlib.contextmanager
def _waiting_for(child):
    """While waiting for `child`: stop it if the wait is cut short; afterwards, forget it, and raise Interrupted when
    the task is being stopped."""
    try:
        yield
    except BaseException:
        _stop(child)
        raise
    finally:
        forget(child)
    if _stopping.is_set():
        raise Interrupted()


def run(command, input=None, timeout=None, capture=True, text=False, **kwargs):
    """Like subprocess.run (capture_output by default); raises Interrupted when the task is being stopped and
    subprocess.TimeoutExpired (after stopping the child) when `timeout` passes."""
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE) if capture else {}
    child = popen(command, stdin=subprocess.PIPE if input is not None else None, text=text, **pipes, **kwargs)
    with _waiting_for(child):
        try:
            out, err = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(child)
            child.communicate()
            raise
    return subprocess.CompletedProcess(command, child.returncode, out, err)


def run_echoing(command, echo, **kwargs):
    """Run `command`, passing its output to `echo(data, is_stderr)` as it comes; a CompletedProcess with bytes."""
    child = popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    chunks = {False: [], True: []}

    def pump(stream, is_stderr):
        for data in iter(lambda: stream.read1(4096), b""):
            chunks[is_stderr].append(data)
            echo(data, is_stderr)

    pumps = [threading.Thread(target=pump, args=(child.stdout, False), daemon=True),
             threading.Thread(target=pump, args=(child.stderr, True), daemon=True)]
    for thread in pumps:
        thread.start()
    with _waiting_for(child):
        child.wait()
        for thread in pumps:
            thread.join()
    return subprocess.CompletedProcess(command, child.returncode, b"".join(chunks[False]), b"".join(chunks[True]))


def _stop(child, grace=1.0):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


def stop_all():
    """Stop every tracked child (SIGTERM to its process group, SIGKILL after a second)."""
    _stopping.set()
    with _lock:
        children = list(_children)
    threads = [threading.Thread(target=_stop, args=(child,), daemon=True) for child in children]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(1.5)
    with _lock:
        callbacks = list(_cleanups)
    for callback in callbacks:
        with contextlib.suppress(Exception):
            callback()


def exit_interrupted(report):
    """Stop the children, say so, and leave at once: worker threads may be blocked on a network peer, and nothing
    they hold is under a final name (every file is written under a temporary one and renamed)."""
    stop_all()
    report("interrupted")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(130)


def terminate_as_interrupt():
    """Treat SIGTERM like Ctrl-C in the main thread."""
    def handler(signum, frame):
        raise KeyboardInterrupt()

    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, handler)
