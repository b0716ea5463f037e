#!/usr/bin/env python3
"""Check what the built sdist and wheel hold, so a packaging change cannot quietly drop or add files.

    python .ci/check_dist.py DIST_DIR     # DIST_DIR holds one .tar.gz and one .whl (python -m build)

Both must carry every module of the checkout's ``cfaccess_mw/`` (subpackages included) and ``py.typed``; the
sdist also the README, LICENSE, CHANGELOG and pyproject.toml; the wheel the LICENSE. Neither may carry tests,
examples, benchmarks or fuzz targets: the test suite needs the whole checkout, so the sdist ships
none of it rather than half (MANIFEST.in says the same).
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = ("tests/", "examples/", "benchmarks/", "fuzz/", ".ci/")


def main(dist_dir: str) -> int:
    dist = Path(dist_dir)
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    package = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "cfaccess_mw").rglob("*") if p.suffix in (".py", ".typed")
    }

    with tarfile.open(sdist) as archive:
        # Every member sits under "<name>-<version>/"; compare what follows.
        sdist_files = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as archive:
        wheel_files = set(archive.namelist())

    problems = []
    for kind, files, needed in (
        ("sdist", sdist_files, package | {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml"}),
        ("wheel", wheel_files, package),
    ):
        problems += [f"{kind} lacks {name}" for name in sorted(needed - files)]
        problems += [f"{kind} ships {name}" for name in sorted(files) if name.startswith(NOT_SHIPPED)]
    if not any(name.endswith(".dist-info/licenses/LICENSE") for name in wheel_files):
        problems.append("wheel lacks its LICENSE")
    if f"dist/{wheel.name}[" not in (ROOT / "README.md").read_text(encoding="utf-8"):
        problems.append(f"README.md's install-from-a-wheel line does not name {wheel.name}")

    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {sdist.name} ({len(sdist_files)} entries) and {wheel.name} ({len(wheel_files)}) look right")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
