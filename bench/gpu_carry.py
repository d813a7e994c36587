"""What the device call would carry, and whether it fits the device's 64 MiB (issue 17).

    python bench/gpu_carry.py [--carry .gpu ...] [--limit-mib 64] [--json]

The device tool sends the working tree (tracked files and untracked files git does not
ignore, ``shared/`` inside the checkout) plus each carried path, 64 MiB in all
(../.library/device/README.md). This lists each part's size, largest first, and exits 1
when the total is over the limit (0 otherwise), so ``bench/gpu_prepare.sh`` and a test can
check it before the one GPU call is spent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

MIB = 2**20
DEVICE_LIMIT_MIB = 64


def _size(path: Path) -> int:
    """Bytes of a file (a link counts as its own few bytes: the device sends links as links)."""
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def tree_files(repo: Path) -> list[Path]:
    """The working tree as the device sends it: tracked, and untracked-not-ignored, files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=repo, capture_output=True, check=True).stdout
    files = [repo / name for name in listed.decode().split("\0") if name]
    return [path for path in files if path.is_symlink() or path.is_file()]


def carried_files(repo: Path, carry: str) -> list[Path]:
    root = repo / carry
    if root.is_symlink() or root.is_file():
        return [root]
    return [Path(folder, name) for folder, _, names in os.walk(root) for name in names]


def measure(repo: Path, carry: list[str], limit_mib: float = DEVICE_LIMIT_MIB) -> dict:
    """``{"parts": {name: bytes}, "total": bytes, "limit": bytes, "fits": bool}``.

    Parts: ``tree`` (less what is carried or under ``shared/``), ``shared/`` where the
    checkout has one, and each carried path's first-level entries (``.gpu/wheels``...).
    """
    repo = repo.resolve()
    parts: dict[str, int] = {}
    seen: set[Path] = set()
    for path in tree_files(repo):
        relative = path.relative_to(repo)
        part = "shared/" if relative.parts[0] == "shared" else "tree"
        parts[part] = parts.get(part, 0) + _size(path)
        seen.add(path)
    shared = repo / "shared"
    if shared.is_dir():  # travels whatever git says of it
        for path in carried_files(repo, "shared"):
            if path not in seen:
                parts["shared/"] = parts.get("shared/", 0) + _size(path)
                seen.add(path)
    for name in carry:
        root = repo / name
        if not root.exists():
            parts[f"{name} (missing)"] = 0
            continue
        for path in carried_files(repo, name):
            if path in seen:
                continue
            relative = path.relative_to(root)
            part = f"{name}/{relative.parts[0]}" if relative.parts else name
            parts[part] = parts.get(part, 0) + _size(path)
            seen.add(path)
    total = sum(parts.values())
    limit = int(limit_mib * MIB)
    return {"parts": dict(sorted(parts.items(), key=lambda item: -item[1])), "total": total,
            "limit": limit, "fits": total <= limit}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--carry", nargs="*", default=[".gpu"],
                        help="carried paths, relative to the repository (default .gpu)")
    parser.add_argument("--limit-mib", type=float, default=DEVICE_LIMIT_MIB)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = measure(Path(args.repo), args.carry, args.limit_mib)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for part, size in report["parts"].items():
            print(f"{size / MIB:8.1f} MiB  {part}")
        verdict = "fits" if report["fits"] else "OVER the limit: the device tool will refuse it"
        print(f"{report['total'] / MIB:8.1f} MiB  total of {report['limit'] / MIB:.0f} MiB: {verdict}")
    return 0 if report["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
