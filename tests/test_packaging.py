"""The package as the index shows it: its name, the versions it claims, and the matrix that tests them."""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg")
TOX = configparser.ConfigParser()
TOX.read(ROOT / "tox.ini")
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


def _requirements(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines() if line.strip()]


def _floors() -> dict[str, str]:
    """``name -> lowest version`` of every dependency setup.cfg declares with a floor."""
    floors: dict[str, str] = {}
    lines = _requirements(SETUP["options"]["install_requires"])
    for extra in ("postgres", "mysql", "redis", "flask", "django", "test"):
        lines += _requirements(SETUP["options.extras_require"][extra])
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*>=\s*([0-9.]+)", line)
        assert match, f"every dependency needs a floor: {line!r}"
        floors[match.group(1).lower()] = match.group(2)
    return floors


def test_the_distribution_name_is_ours_and_the_import_name_stays() -> None:
    # "authkit" on the index is an unrelated 2009 WSGI toolkit: the distribution is authkit-sf.
    assert SETUP["metadata"]["name"] == "authkit-sf"
    assert "authkit" in SETUP["options.packages.find"]["include"]
    readme = (ROOT / "README.md").read_text()
    installs = re.findall(r"pip install '?([A-Za-z0-9_.-]+)(?:\[|'|\s|$)", readme)
    assert installs and all(name in ("authkit-sf", "-e") for name in installs), installs
    for path in [*sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "authkit").rglob("*.py"))]:
        text = path.read_text()
        assert not re.search(r"pip install '?authkit(?!-sf)\b", text), f"{path}: an install line names 'authkit'"


def test_python_versions_claimed_are_the_ones_tested() -> None:
    assert SETUP["options"]["python_requires"].strip() == f">={SUPPORTED[0]}"
    classifiers = _requirements(SETUP["metadata"]["classifiers"])
    claimed = [c.rsplit(" :: ", 1)[1] for c in classifiers if re.match(r"Programming Language :: Python :: 3\.\d+$", c)]
    assert claimed == SUPPORTED
    envs = [env.strip() for env in TOX["tox"]["envlist"].split(",")]
    assert [env for env in envs if env.startswith("py3")] == [f"py{v.replace('.', '')}" for v in SUPPORTED]
    assert "min" in envs and "docs" in envs
    ci = (ROOT / ".ci" / "run").read_text()
    # The whole suite on CI's own Python, the database-free part on each of the others.
    assert "for env in " + " ".join(f"py{v.replace('.', '')}" for v in SUPPORTED) + "; do" in ci
    assert "tox -e min" in ci


def test_the_minimum_versions_environment_pins_every_declared_floor() -> None:
    pinned: dict[str, str] = {}
    for line in (ROOT / ".ci" / "minimum-versions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[name.strip().lower()] = version.strip()
    floors = _floors()
    from packaging.version import Version

    assert {name: Version(pinned[name]) if name in pinned else None for name in floors} == {
        name: Version(floor) for name, floor in floors.items()}
    assert TOX["testenv:min"]["basepython"].strip() == f"python{SUPPORTED[0]}"
    assert "minimum-versions.txt" in TOX["testenv:min"]["install_command"]


def test_this_interpreter_is_a_supported_one() -> None:
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in SUPPORTED


@pytest.mark.parametrize("extra", ["postgres", "mysql", "redis", "flask", "django", "docs", "test", "dev"])
def test_every_extra_named_in_the_docs_exists(extra: str) -> None:
    assert extra in SETUP["options.extras_require"]
