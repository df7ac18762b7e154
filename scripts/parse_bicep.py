"""Parse every .bicep file under a directory and print one JSON document.

Run with the infra venv's interpreter (``.venv-infra/bin/python scripts/parse_bicep.py infra``),
never the app's: it uses the pycep-parser that scripts/infra-tools.sh installs in
``.venv-infra/parser`` (a newer one than checkov's pin, able to read the ``extension`` keyword).

Output: ``{"parser_version": "...", "files": {"<path relative to the directory>":
{"ok": true, "template": {...}} | {"ok": false, "error": "..."}}}``. Exit status 0 even when a
file fails to parse: the caller decides what a failure means.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

_PARSER_DIR = Path(sys.prefix) / "parser"
if _PARSER_DIR.is_dir():
    sys.path.insert(0, str(_PARSER_DIR))

from pycep import BicepParser  # noqa: E402  (needs the sys.path entry above)


def parse_tree(root: Path) -> dict[str, object]:
    """Parse each ``*.bicep`` below ``root``; map its relative POSIX path to the result."""
    parser = BicepParser()
    results: dict[str, object] = {}
    for path in sorted(root.rglob("*.bicep")):
        relative = path.relative_to(root).as_posix()
        try:
            template = parser.parse(file_path=path)
        except Exception as exc:  # any parser failure is reported, not raised
            results[relative] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        else:
            results[relative] = {"ok": True, "template": template}
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("directory", type=Path, help="folder to search for .bicep files")
    options = arguments.parse_args(argv)
    document = {
        "parser_version": metadata.version("pycep-parser"),
        "files": parse_tree(options.directory),
    }
    json.dump(document, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
