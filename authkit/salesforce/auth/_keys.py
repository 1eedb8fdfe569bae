"""The JWT flow's private key: loaded carefully, never quoted.

Key text must never reach an error message, a repr or a log line, and text that
is not a key must never be silently taken for something else.  A ``str`` is PEM
text when it holds a ``-----BEGIN`` line; any other ``str`` is a path (the error
for an unreadable path does not repeat it, since it might be key text that lost
its first line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from authkit.errors import ConfigurationError

# No PEM private key is anywhere near this large: a bigger file is not a key, and
# reading it whole (a device, a log file) is pointless.
_MAX_KEY_FILE = 1 << 20

NOT_A_KEY = "not a PEM private key"


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        # The path itself is not repeated: a caller who pasted key text without its
        # -----BEGIN line would see it echoed.
        raise ConfigurationError(
            f"cannot read the JWT private key file: {exc.strerror or type(exc).__name__}"
        ) from None
    if len(data) > _MAX_KEY_FILE:
        raise ConfigurationError(f"the JWT private key file is {NOT_A_KEY} (it is larger than 1 MiB)")
    return data


def load_private_key(private_key: object, passphrase: object) -> Any:
    """An RSA private key object from PEM text, PEM bytes or a path; ConfigurationError if unusable."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key
    if passphrase is not None and not isinstance(passphrase, (str, bytes)):
        raise TypeError("passphrase must be a str, bytes or None")
    password = passphrase.encode() if isinstance(passphrase, str) else passphrase
    if isinstance(private_key, bytes):
        data = private_key
    elif isinstance(private_key, str) and "-----BEGIN" in private_key:
        data = private_key.encode()
    elif isinstance(private_key, str):
        if not private_key.strip() or "\n" in private_key.strip() or len(private_key) > 4096:
            # Several lines, or a long blob: key text without its header, never a path.
            raise ConfigurationError(f"the JWT private key is {NOT_A_KEY} (no -----BEGIN line)")
        data = _read_key_file(Path(private_key))
    elif isinstance(private_key, os.PathLike):
        data = _read_key_file(Path(private_key))
    else:
        raise TypeError("private_key must be PEM text, PEM bytes or a path to a PEM file")
    if b"-----BEGIN" not in data:
        raise ConfigurationError(f"the JWT private key is {NOT_A_KEY}")
    try:
        key = load_pem_private_key(data, password=password)
    except TypeError:
        raise ConfigurationError(
            "the JWT private key is encrypted: pass passphrase=" if password is None
            else "a passphrase was given but the JWT private key is not encrypted"
        ) from None
    except ValueError:
        # Never chain the parser's error: it may quote key material.
        raise ConfigurationError(
            f"cannot load the JWT private key: {NOT_A_KEY}, or a wrong passphrase"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError("the JWT private key must be an RSA key (Salesforce signs with RS256)")
    return key
