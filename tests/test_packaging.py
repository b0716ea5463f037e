"""The package's metadata agrees with itself: one version everywhere, the license it declares, and the files
it promises. What the built sdist and wheel hold is checked by ``.ci/check_dist.py`` in ``.ci/run``."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import cfaccess_mw

ROOT = Path(__file__).resolve().parents[1]


def project() -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    table: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return table


def test_one_version_in_pyproject_the_package_and_the_changelog() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.MULTILINE)

    assert project()["version"] == cfaccess_mw.__version__
    assert released[0] == cfaccess_mw.__version__


def test_the_license_file_is_the_license_the_metadata_declares() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")

    assert project()["license"] == "MIT"
    assert project()["license-files"] == ["LICENSE"]
    assert license_text.startswith("MIT License\n")
    assert "Copyright (c) " in license_text
    assert "cfaccess_mw developers" in license_text


def test_the_metadata_names_its_authors_and_claims_only_the_proxies_it_verifies() -> None:
    assert project()["authors"] == [{"name": "cfaccess_mw developers"}]
    description = project()["description"]
    # One name per preset in cfaccess_mw.providers, and no vague "other proxies" claim.
    for name in ("Cloudflare Access", "Google IAP", "Pomerium", "AWS ALB", "OIDC"):
        assert name in description
    assert "other" not in description


def test_the_sdist_ships_no_tests_rather_than_half_of_them() -> None:
    manifest = (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()

    assert "prune tests" in manifest


def test_the_readme_names_the_wheel_the_build_makes() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert f"dist/cfaccess_mw-{cfaccess_mw.__version__}-py3-none-any.whl[fastapi]" in readme
