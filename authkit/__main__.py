"""``python -m authkit``: the same as the ``authkit`` command."""

from __future__ import annotations

import sys

from authkit.cli import main

sys.exit(main())
