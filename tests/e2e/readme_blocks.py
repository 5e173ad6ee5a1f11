"""The README's runnable examples: its fenced shell blocks marked `runnable`, run in order in one
bash session per walk, each block's output held to the `text output` block that follows it.

A block is marked in its info string, which Markdown renderers ignore past the language:
```` ```sh runnable buf ```` runs in the `buf` walk, ```` ```sh runnable ```` in every walk. An
expected output is a ```` ```text output ```` block right after a runnable block: each of its
lines must match one line of what the block printed, in order (`…` stands for any text, a line
of `…` alone for any lines, and runs of spaces count as one), after grpcurl's answers have their
keys spelled as buf curl's.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(`{3,})(.*)$")


@dataclass(frozen=True)
class Block:
    """A fenced block of the README: its first line's number (1-based), info string, text."""

    line: int
    info: tuple[str, ...]
    text: str

    @property
    def walks(self) -> frozenset[str] | None:
        """The walks this block runs in (empty: every walk); None if it is not runnable."""
        if self.info[:2] not in {("sh", "runnable"), ("bash", "runnable")}:
            return None
        return frozenset(self.info[2:])


@dataclass(frozen=True)
class Step:
    """A runnable block and the output it must show, if the README shows one."""

    block: Block
    expected: Block | None


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced block, in order; a block's text excludes its fences."""
    blocks, lines, at = [], markdown.splitlines(), 0
    while at < len(lines):
        opening = FENCE.match(lines[at])
        if opening is None:
            at += 1
            continue
        fence, end = opening.group(1), at + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        blocks.append(
            Block(at + 1, tuple(opening.group(2).split()), "\n".join(lines[at + 1 : end]))
        )
        at = end + 1
    return blocks


def steps(markdown: str, walk: str) -> list[Step]:
    """The runnable blocks of one walk, in order, each with its expected output."""
    blocks, found = fenced_blocks(markdown), []
    lines = markdown.splitlines()
    for index, block in enumerate(blocks):
        if block.walks is None or (block.walks and walk not in block.walks):
            continue
        expected = None
        if index + 1 < len(blocks) and blocks[index + 1].info[:2] == ("text", "output"):
            after = blocks[index + 1]
            end = block.line + block.text.count("\n") + 2  # the closing fence
            between = lines[end : after.line - 1]
            if all(not line.strip() or line.strip().startswith("<!--") for line in between):
                expected = after
        found.append(Step(block, expected))
    return found


CAMEL_KEY = re.compile(r'"([a-z0-9]+(?:_[a-z0-9]+)+)":')


def as_buf_curl_prints(output: str) -> str:
    """grpcurl's JSON keys (the protos' names) spelled as buf curl spells them (camelCase)."""
    return CAMEL_KEY.sub(
        lambda m: '"' + re.sub(r"_([a-z0-9])", lambda c: c.group(1).upper(), m.group(1)) + '":',
        output,
    )


def shape_mismatch(expected: str, output: str) -> str | None:
    """Why the output does not have the expected shape; None when it does."""
    actual = [" ".join(line.split()) for line in output.splitlines()]
    at = 0
    for wanted in (" ".join(line.split()) for line in expected.splitlines()):
        if not wanted or wanted == "…":
            continue
        pattern = re.compile(".*?".join(re.escape(part) for part in wanted.split("…")))
        while at < len(actual) and not pattern.fullmatch(actual[at]):
            at += 1
        if at == len(actual):
            return f"no line matching {wanted!r} (in order)"
        at += 1
    return None


@dataclass(frozen=True)
class Outcome:
    """What running a walk did: the failure, if any, as a message naming the README line."""

    failure: str | None
    blocks_run: int


def run_walk(
    markdown: str,
    walk: str,
    cwd: Path,
    env: dict[str, str],
    ports: dict[int, int],
    timeout: float = 120,
    readme_name: str = "README.md",
) -> Outcome:
    """Run one walk's blocks in one bash session (`set -euo pipefail`) in `cwd`; the README's
    ports (50051…) are replaced by `ports`' values."""
    state = cwd / ".walk" / walk
    state.mkdir(parents=True, exist_ok=True)
    script = ["set -euo pipefail", f"trap 'echo $LINENO > {state}/line' ERR"]
    origin: list[tuple[int, int]] = []  # per script line: (README line, block index)
    origin += [(0, -1)] * len(script)
    walk_steps = steps(markdown, walk)
    for index, step in enumerate(walk_steps):
        prologue = (
            f"echo {index} > {state}/block; exec > {state}/{index}.out 2> {state}/{index}.err"
        )
        script.append(prologue)
        origin.append((step.block.line, index))
        text = step.block.text
        for readme_port, port in ports.items():
            text = text.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{port}")
        for offset, line in enumerate(text.splitlines(), start=1):
            script.append(line)
            origin.append((step.block.line + offset, index))
    script.append(f"echo done > {state}/block")
    (state / "script.sh").write_text("\n".join(script) + "\n")
    try:
        done = subprocess.run(
            ["bash", str(state / "script.sh")],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        status, why_stopped = done.returncode, f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        status, why_stopped = -1, f"still running after {timeout:.0f} s"
    reached = (state / "block").read_text().strip() if (state / "block").exists() else "0"
    if reached != "done" or status != 0:
        index = int(reached) if reached.isdigit() else len(walk_steps) - 1
        step = walk_steps[index]
        failed_line = step.block.line
        if (state / "line").exists():
            script_line = int((state / "line").read_text().strip())
            if 0 < script_line <= len(origin) and origin[script_line - 1][1] == index:
                failed_line = origin[script_line - 1][0]
        return Outcome(
            f"{readme_name}:{failed_line}: the {walk} walk failed ({why_stopped}) in the block at "
            f"line "
            f"{step.block.line}:\n{step.block.text}\n--- stdout\n{_read(state, index, 'out')}"
            f"--- stderr\n{_read(state, index, 'err')}",
            index,
        )
    for index, step in enumerate(walk_steps):
        if step.expected is None:
            continue
        output = _read(state, index, "out")
        if walk == "grpcurl":
            output = as_buf_curl_prints(output)
        why = shape_mismatch(step.expected.text, output)
        if why is not None:
            return Outcome(
                f"{readme_name}:{step.expected.line}: the {walk} walk's output of the block at "
                f"line {step.block.line} does not have the shape shown: {why}\n"
                f"--- stdout\n{output}",
                len(walk_steps),
            )
    return Outcome(None, len(walk_steps))


def _read(state: Path, index: int, kind: str) -> str:
    path = state / f"{index}.{kind}"
    return path.read_text(errors="replace") if path.exists() else ""


def reader_env(home: Path, addresses: dict[str, str]) -> dict[str, str]:
    """A newcomer's environment: no Canopy settings but where the services listen."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CANOPY_", "VIRTUAL_ENV", "UV_")) and k != "DATABASE_URL"
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p
    )
    env["HOME"] = str(home)
    env.update(addresses)
    return env
