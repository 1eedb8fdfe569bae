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
    assert "tox -e \"min,$others\"" in ci  # the minimum versions with every service


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


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_the_metadata_the_index_shows(tmp_path: Path) -> None:
    """What ``pip install authkit-sf`` gets (CI also installs it into a fresh virtualenv and runs the quickstart)."""
    import email
    import importlib.util
    import subprocess
    import zipfile

    # build.env, not build: a setuptools build/ directory in the checkout imports as "build" too.
    if importlib.util.find_spec("build") is None or importlib.util.find_spec("build.env") is None:
        pytest.skip("the wheel test needs the dev extra's `build` (pypa/build)")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name.startswith("authkit_sf-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [meta_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(archive.read(meta_name))
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_text = archive.read(entry_points).decode()
    assert meta["Name"] == "authkit-sf" and meta["Requires-Python"] == ">=3.10"
    assert [c for c in meta.get_all("Classifier") if c.startswith("Programming Language :: Python :: 3.")] == [
        f"Programming Language :: Python :: {v}" for v in SUPPORTED]
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "](docs/" not in (meta.get_payload() or "")  # the README's links work on the index page
    for required in ("authkit/__init__.py", "authkit/py.typed", "authkit/maintenance.py", "authkit/testing/clock.py",
                     "authkit/contrib/django/management/commands/authkit_cleanup.py"):
        assert required in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    assert "authkit = authkit.cli:main" in entry_text and "authkit = authkit.testing.pytest_plugin" in entry_text
