"""`--catalogue catalogue.json`: the model's own fault names, symptoms and likely causes.

The file is a JSON list of eight entries in output order (fault0 first), each with
`category`, `observed` and `root_causes`; a whole manifest.json (an object with a
`catalogue` key) is accepted too, so one model's catalogue can be reused for the next.
Validation is edge/fdrest.py's, the same the runtime applies when it loads the manifest.
Standard library only, like manifest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from convert.errors import CatalogueError, SourceMissing
from edge import fdrest


def load(path: Path | None) -> tuple[dict[str, str], ...]:
    """The catalogue in `path`, or FD-REST's when `path` is None."""
    if path is None:
        return fdrest.CATALOGUE
    if not path.is_file():
        raise SourceMissing(f"catalogue not found: {path}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"catalogue {path} cannot be read: {exc}") from None
    except ValueError as exc:
        raise CatalogueError(f"catalogue {path} is not JSON: {exc}") from None
    if isinstance(value, dict) and "catalogue" in value:
        value = value["catalogue"]
    try:
        return fdrest.parse_catalogue(value)
    except ValueError as exc:
        raise CatalogueError(f"catalogue {path}: {exc}") from None
