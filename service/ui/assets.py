"""The dashboard's browser libraries: which file of which npm package is served, and the copy that
`make assets` makes of them (with their licences) from the packages package-lock.json pins.

Run as ``python -m service.ui.assets NODE_MODULES``: copies each file into static/vendor and writes
MANIFEST.json (package, version, SHA-256 of each file), which the dashboard's tests check.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

VENDOR = Path(__file__).parent / "static" / "vendor"

# package: {file in the package: name served under /ui/static/vendor/}
FILES: dict[str, dict[str, str]] = {
    "htmx.org": {"dist/htmx.min.js": "htmx.min.js", "LICENSE": "htmx.LICENSE.txt"},
    "chart.js": {"dist/chart.umd.min.js": "chart.umd.min.js", "LICENSE.md": "chart.js.LICENSE.txt"},
    "mermaid": {"dist/mermaid.min.js": "mermaid.min.js", "LICENSE": "mermaid.LICENSE.txt"},
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy(node_modules: Path, vendor: Path = VENDOR) -> dict:
    """Copy the served files out of ``node_modules`` and return the manifest written beside them."""
    vendor.mkdir(parents=True, exist_ok=True)
    manifest: dict = {}
    for package, files in FILES.items():
        root = node_modules / package
        version = json.loads((root / "package.json").read_text())["version"]
        entry = manifest[package] = {"version": version, "files": {}}
        for source, served in files.items():
            shutil.copyfile(root / source, vendor / served)
            entry["files"][served] = sha256(vendor / served)
    (vendor / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def installed(vendor: Path = VENDOR) -> bool:
    """Whether every served file is there, as the manifest says."""
    manifest_path = vendor / "MANIFEST.json"
    if not manifest_path.exists():
        return False
    manifest = json.loads(manifest_path.read_text())
    return all((vendor / name).exists() and sha256(vendor / name) == digest
               for entry in manifest.values() for name, digest in entry["files"].items())


if __name__ == "__main__":
    copy(Path(sys.argv[1]))
