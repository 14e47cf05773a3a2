"""Running short-lived helper programs (runc, the shim, CNI plugins, nft) off the event loop.

`asyncio.create_subprocess_exec` forks in the event-loop thread; with uvloop that is a full
fork() of the whole process (page tables of a 150 MB server), ~2-4 ms each, during which the
API server sharing the loop stands still — a profile of 20 pod creates/s showed 29% of the
loop's time there. `subprocess` in a worker thread uses vfork() (CPython 3.10+), costs the
loop nothing, and the GIL is released while the child runs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="spawn")


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


def _run(argv: list[str], input: bytes | None, env: Mapping[str, str] | None,
         timeout: float | None, new_session: bool) -> Completed:
    result = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                            env=dict(env) if env is not None else None,
                            stdin=None if input is not None else subprocess.DEVNULL,
                            start_new_session=new_session, close_fds=True)
    return Completed(result.returncode, result.stdout, result.stderr)


async def run(argv: list[str], *, input: bytes | None = None,
              env: Mapping[str, str] | None = None, timeout: float | None = None,
              new_session: bool = False) -> Completed:
    """Run `argv` to completion in a worker thread; its exit status and output.

    Raises FileNotFoundError/PermissionError like subprocess, and TimeoutError after
    `timeout` seconds (the program is killed first)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_POOL, _run, argv, input, env, timeout, new_session)
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"{os.path.basename(argv[0])} did not finish in {timeout:g}s") \
            from exc
