from __future__ import annotations

import subprocess
import sys

import pytest

from authkit.errors import ConfigurationError
from authkit.storage import MemoryStorage, open_storage


def test_memory_url() -> None:
    with open_storage("memory://") as storage:
        assert isinstance(storage, MemoryStorage)
        storage.store_kv("k", b"v")
        assert storage.get_kv("k") == b"v"


@pytest.mark.parametrize("url", ["ftp://host/x", "nosuch://", "bogus+psycopg://x"])
def test_unknown_scheme_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown storage scheme"):
        open_storage(url)


@pytest.mark.parametrize("url", ["", "authkit.db", "://x"])
def test_url_without_scheme_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="no scheme"):
        open_storage(url)


def test_url_must_be_a_str() -> None:
    with pytest.raises(TypeError):
        open_storage(b"memory://")  # type: ignore[arg-type]


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="nonsense"):
        open_storage("memory://", nonsense=1)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://postgres@127.0.0.1/test", "psycopg", "postgres"),
        ("mysql://root@127.0.0.1/test", "pymysql", "mysql"),
        ("redis://127.0.0.1:6379/0", "redis", "redis"),
    ],
)
def test_missing_driver_names_the_pip_install(url: str, module: str, extra: str) -> None:
    # A child process where the driver cannot be imported, as on a machine without the extra.
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        "from authkit.errors import ConfigurationError\n"
        "from authkit.storage import open_storage\n"
        "try:\n"
        f"    open_storage({url!r})\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit('no ConfigurationError')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"pip install 'authkit-sf[{extra}]'" in result.stdout


def test_memory_options_are_checked_never_silently_dropped() -> None:
    with open_storage("memory://", prefix="myapp_", create_schema=False) as storage:
        assert isinstance(storage, MemoryStorage)
    for bad, error in [(" x", ValueError), ("", ValueError), ("x" * 65, ValueError), ("a\nb", ValueError),
                       (3, TypeError)]:
        with pytest.raises(error):
            open_storage("memory://", prefix=bad)
    with pytest.raises(TypeError, match="create_schema"):
        open_storage("memory://", create_schema="no")
    for url in ("memory://host", "memory:///path", "memory://?x=1"):
        with pytest.raises(ConfigurationError, match="memory://"):
            open_storage(url)
