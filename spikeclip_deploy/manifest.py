"""The export reader: an export directory's ``manifest.json``, checked before anything is run.

An export is complete and intact when its manifest parses, has every key the backends read,
lists every file under the directory (no more, no fewer) with its sha256, and the files the
backends open are among them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ExportError
from .fileutil import sha256_file

FORMAT = "spikeclip-deploy/export@3"  # @2: registers in the NIR metadata; @3: LIF tau in seconds
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("format", "target", "time_steps", "model", "host", "files")
#: the files the backends open (the tokenizer folder must hold at least one file)
REQUIRED_FILES = ("chip/image_encoder.nir", "chip/text_encoder.nir", "host/image_encode.onnx",
                  "host/text_encode.onnx", "host/image_readout.onnx", "host/text_readout.onnx",
                  "host/labels.json", "host/label_features.npy")
REEXPORT = "re-run `spikeclip-deploy export --force`"


def _parse(folder: Path) -> dict[str, Any]:
    """``folder/manifest.json`` as a dict; ExportError otherwise."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{folder} is not an export (no {MANIFEST}); create one with "
                          f"`spikeclip-deploy export`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON ({exc}); {REEXPORT}") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{path} holds a {type(manifest).__name__}, not an export manifest; "
                          f"{REEXPORT}")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and shape-check ``folder/manifest.json`` (no file hashes); ExportError otherwise."""
    path, manifest = Path(folder) / MANIFEST, _parse(folder)
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}: "
                          f"not an export of this tool, or of another version; {REEXPORT}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ExportError(f"{path} lacks the key(s) {', '.join(missing)}; {REEXPORT}")
    if not isinstance(manifest["files"], dict):
        raise ExportError(f"{path}: 'files' must map each file to its sha256; {REEXPORT}")
    return manifest


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds a manifest of this tool, of this format or an earlier one (the
    only kind ``--force`` replaces; an earlier one is what ``--force`` renews)."""
    try:
        fmt = _parse(folder).get("format")
    except ExportError:
        return False
    return isinstance(fmt, str) and fmt.split("@")[0] == FORMAT.split("@")[0]


def load_export(folder: Path) -> dict[str, Any]:
    """Read an export's manifest and verify the directory against it: every file listed and
    unmodified, nothing unlisted, every file the backends read present."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = manifest["files"]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    on_disk.discard(MANIFEST)
    needed = set(REQUIRED_FILES)
    unlisted = sorted(on_disk - set(listed))
    absent = sorted(needed - set(listed)) + (
        [] if any(f.startswith("host/tokenizer/") for f in listed) else ["host/tokenizer/*"])
    if unlisted or absent:
        what = (f"files not in its 'files' map: {', '.join(unlisted[:5])}" if unlisted
                else f"required files not in its 'files' map: {', '.join(absent)}")
        raise ExportError(f"{folder / MANIFEST} is incomplete ({what}); {REEXPORT}")
    for rel, digest in listed.items():
        f = folder / rel
        if not f.is_file() or sha256_file(f) != digest:
            raise ExportError(f"export file {f} is missing or modified (sha256 mismatch); {REEXPORT}")
    return manifest
