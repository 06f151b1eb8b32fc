"""What every bad-input case asserts: exit code 2 (bad input; 1 where the disk or the network failed instead),
exactly one line on stderr that names the problem (and the fix), and no file created, changed or removed outside
what the command owns (pre-existing files byte-identical).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.conftest import run_cli


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """path relative to `root` -> (content hash or "dir", mode) for everything below `root`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root)) + "/"] = ("dir", p.stat().st_mode)
        for name in filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def fails_cleanly(args: list, capsys, root: Path, *expect: str, owned: tuple[str, ...] = (),
                  code: int | None = 2) -> str:
    """Run the CLI in process; assert the contract above over the tree `root`; return the one stderr line.

    `owned`: paths (relative to `root`, prefixes) the command may leave behind, e.g. an output folder a rerun
    accepts. `expect`: fragments the line must contain (case-insensitive). `code`: the exit code (2, bad input, by
    default: an unexpected exception also prints one line, but exits 1), or None where any non-zero one will do.
    """
    before = snapshot(root)
    exit_code, _, err = run_cli([str(a) for a in args], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_code != 0, f"exit 0 for {args}"
    assert code is None or exit_code == code, f"exit {exit_code}, not {code}, for {args}: {err}"
    assert len(lines) == 1, f"{len(lines)} stderr lines for {args}:\n{err}"
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in expect:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"
    after = snapshot(root)
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and not k.startswith(owned or ("\0",)))
    assert changed == [], f"{args} changed {changed}"
    return line
