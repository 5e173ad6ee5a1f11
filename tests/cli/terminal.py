"""`canopy` run as a process on a pseudo-terminal, for what only happens at a terminal: the
questions asked before a change. CliRunner's stdin is never a terminal, so the command would
refuse to ask there (as it must without one)."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import dataclass

from tests.cli.conftest import Cli

_CANOPY = "from canopy_cli.main import app; app(prog_name='canopy')"


@dataclass(frozen=True)
class TerminalRun:
    """What the terminal showed, whether a question was asked, and the exit status."""

    exit_code: int
    screen: str
    asked: bool


def _run(env: dict[str, str], args: tuple[str, ...], answer: str, deadline: float) -> TerminalRun:
    main, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", _CANOPY, *args], stdin=child, stdout=child, stderr=child, env=env
    )
    os.close(child)
    screen, asked = b"", False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the process ended and closed the terminal
                break
            if not chunk:
                break
            screen += chunk
            if not asked and b"[y/N]" in screen:
                os.write(main, answer.encode() + b"\n")
                asked = True
        return TerminalRun(process.wait(timeout=10), screen.decode(errors="replace"), asked)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)


async def in_terminal(cli: Cli, *args: str, answer: str, timeout: float = 40) -> TerminalRun:
    """`canopy ARGS…` at a terminal, answering `answer` to a yes/no question if one is asked."""
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    for name, value in cli.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    deadline = time.monotonic() + timeout
    return await asyncio.to_thread(_run, env, args, answer, deadline)
