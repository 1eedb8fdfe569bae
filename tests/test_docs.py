"""The API reference (docs/reference, built by ``mkdocs build --strict`` in CI) covers every public name."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = [
    "authkit",
    "authkit.errors",
    "authkit.models",
    "authkit.storage",
    "authkit.salesforce",
    "authkit.salesforce.events",
    "authkit.maintenance",
    "authkit.testing",
    "authkit.contrib.flask",
    "authkit.contrib.django",
]


def _directives() -> tuple[set[str], set[str]]:
    """``(every ::: identifier, the modules rendered with their members)``."""
    rendered: set[str] = set()
    whole: set[str] = set()
    for page in sorted((ROOT / "docs" / "reference").glob("*.md")):
        blocks = re.findall(r"^::: (\S+)\n((?:    .*\n)*)", page.read_text() + "\n", re.M)
        for identifier, options in blocks:
            rendered.add(identifier)
            if "members: false" not in options:
                whole.add(identifier)
    return rendered, whole


def _resolve(identifier: str) -> object:
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(identifier)


def _documented() -> list[object]:
    """Every object the reference renders: each ``::: X``, and the members of each whole module."""
    rendered, whole = _directives()
    objects = [_resolve(identifier) for identifier in sorted(rendered)]
    for identifier in whole:
        module = _resolve(identifier)
        if inspect.ismodule(module):
            objects += [getattr(module, name) for name in getattr(module, "__all__", [])]
    return objects


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module_name: str) -> None:
    module = importlib.import_module(module_name)
    documented = _documented()
    assert any(obj is module for obj in documented), f"{module_name} has no reference page"
    missing = [name for name in module.__all__
               if not name.startswith("__") and not any(obj is getattr(module, name) for obj in documented)]
    assert not missing, f"{module_name}: not in docs/reference: {missing}"


def test_every_guide_links_into_the_api_reference() -> None:
    for guide in sorted((ROOT / "docs").glob("*.md")):
        assert "](reference/" in guide.read_text(), f"{guide.name} does not link into the API reference"


def test_the_reference_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs" / "reference").glob("*.md")):
        assert f"reference/{page.name}" in config
    assert "strict: true" in config


# What issue 14 found looking public although only authkit itself uses it.
INTERNALS = {"TokenEndpoint", "TokenResponse", "SharedToken", "check_id", "copy_token", "copy_session",
             "format_report", "format_failure", "session_lock"}


def _public_looking_modules() -> list[str]:
    """Every module a user can import by a name without a leading underscore in any part."""
    import pkgutil

    import authkit

    return ["authkit"] + [info.name for info in pkgutil.walk_packages(authkit.__path__, "authkit.")
                          if not any(part.startswith("_") for part in info.name.split("."))]


def test_internals_are_reachable_only_through_private_modules() -> None:
    modules = _public_looking_modules()
    assert "authkit.salesforce.client" in modules and "authkit.salesforce._oauth" not in modules
    for name in modules:
        module = importlib.import_module(name)
        exported = INTERNALS & set(getattr(module, "__all__", ()))
        assert not exported, f"{name} exports internals: {sorted(exported)}"
        # A class is public wherever it can be reached; these must live in private modules only.
        for cls in ("TokenEndpoint", "TokenResponse", "SharedToken"):
            assert not hasattr(module, cls), f"{name}.{cls} looks public"
