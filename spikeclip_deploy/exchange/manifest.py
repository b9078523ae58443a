"""The export's ``manifest.json``: written sealed, read back as a closed world.

An export is complete and intact when its manifest parses, carries its own digest
(``manifest_sha256``: the sha256 of each other field's canonical JSON, so an edit is named by its
field), fits the schema (:data:`FIELDS`, :data:`HOST_FIELDS`, :data:`MODEL_FIELDS`), lists every
file under the directory (no more, no fewer) with its sha256, each by a normalised relative path
inside the export, holds no symbolic link, and the files the backends open are among them. The
path rules are those of tar's ``data`` filter and pip's wheel installer: no absolute path, no
``..``, no link, nothing outside the export's own directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from ..errors import ExportError
from ..fieldtypes import has_type, type_name
from ..fileutil import sha256_file
from ..targets import TARGETS
from .chip import PROFILE_NAME, ChipRecord, RecordProblem, build_record

FORMAT = "spikeclip-deploy/export@3"  # @2: registers in the NIR metadata; @3: LIF tau in seconds
MANIFEST = "manifest.json"
#: the manifest's own digest: {field: sha256 of the field's canonical JSON} for every other field
DIGEST = "manifest_sha256"
#: the fields every export has, with their JSON types; other fields (records a later version of
#: the exporter adds, such as ``netx``) are allowed, and covered by the digest like these
FIELDS: dict[str, Any] = {
    "format": str, "target": str, "dt": float, "discretisation": str, "time_steps": int,
    "model": dict, "hardware": str | None, "chip": dict | None, "passes": list,
    "versions": dict, "layers": dict, "resources": dict, "partition": dict, "host": dict,
    "files": dict[str, str]}
#: what the run side reads of ``host`` and ``model``
HOST_FIELDS: dict[str, Any] = {"image_size": int, "context_length": int, "time_steps": int,
                               "image_stem_macs": int, "image_readout_macs": int}
MODEL_FIELDS: dict[str, Any] = {"name": str, "weights": str, "checkpoint_sha256": str | None}
#: the targets that write exports (the others run one of these)
EXPORT_TARGETS = tuple(name for name, t in TARGETS.items() if t.exports is None)
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: the files the backends open (the tokenizer folder must hold at least one file)
REQUIRED_FILES = ("chip/image_encoder.nir", "chip/text_encoder.nir", "host/image_encode.onnx",
                  "host/text_encode.onnx", "host/image_readout.onnx", "host/text_readout.onnx",
                  "host/labels.json", "host/label_features.npy")
REEXPORT = "re-run `spikeclip-deploy export --force`"


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` (JSON data) with its :data:`DIGEST` record last."""
    fields = {k: v for k, v in manifest.items() if k != DIGEST}
    return {**fields, DIGEST: {k: hashlib.sha256(_canonical(v)).hexdigest()
                               for k, v in fields.items()}}


def manifest_bytes(manifest: dict[str, Any], default: Callable[[Any], Any]) -> bytes:
    """The bytes of ``manifest.json``: ``manifest`` as JSON (``default`` converting what JSON
    lacks), sealed."""
    data = json.loads(json.dumps(manifest, default=default))
    return (json.dumps(seal(data), indent=1) + "\n").encode()


def _non_finite(constant: str) -> None:
    """``json.loads``' hook for ``NaN``, ``Infinity`` and ``-Infinity``, which JSON itself lacks
    and an export never holds."""
    raise json.JSONDecodeError(f"{constant} is not a finite number", constant, 0)


def _parse(folder: Path) -> dict[str, Any]:
    """``folder/manifest.json`` as a dict; ExportError otherwise."""
    path = Path(folder) / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise ExportError(f"{folder} is not an export (no {MANIFEST}); create one with "
                          f"`spikeclip-deploy export`")
    try:
        manifest = json.loads(path.read_text(), parse_constant=_non_finite)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ExportError(f"{path} is not valid JSON ({exc}); {REEXPORT}") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{path} holds a {type(manifest).__name__}, not an export manifest; "
                          f"{REEXPORT}")
    return manifest


def check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """Validate a parsed manifest before anything uses it: its format, its own digest, the
    schema, and that every path in ``files`` stays inside the export. Every problem is a
    one-line ExportError naming the field; returns ``manifest``."""
    if not isinstance(manifest, dict):
        raise ExportError(f"{path} holds a {type(manifest).__name__}, not an export manifest; "
                          f"{REEXPORT}")
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{path} has format {str(manifest.get('format'))[:80]!r}, expected "
                          f"{FORMAT!r}: not an export of this tool, or of another version; "
                          f"{REEXPORT}")
    _check_digest(manifest, path)
    _check_fields(manifest, FIELDS, path, "")
    _check_fields(manifest["host"], HOST_FIELDS, path, "host.")
    _check_fields(manifest["model"], MODEL_FIELDS, path, "model.")
    if manifest["target"] not in EXPORT_TARGETS:
        raise ExportError(f"{path}: field 'target' is {str(manifest['target'])[:40]!r}, not one "
                          f"of {', '.join(EXPORT_TARGETS)}; {REEXPORT}")
    hardware = manifest["hardware"]
    if hardware is not None and not PROFILE_NAME.fullmatch(hardware):
        raise ExportError(f"{path}: field 'hardware' must name a profile in hardware/ (letters, "
                          f"digits, - and _), got {hardware[:40]!r}; {REEXPORT}")
    _check_chip(manifest, path)
    for key in ("time_steps", "host.image_size", "host.context_length"):
        owner, name = (manifest["host"], key[5:]) if key.startswith("host.") else (manifest, key)
        if owner[name] < 1:
            raise ExportError(f"{path}: field '{key}' must be at least 1, got {owner[name]}; "
                              f"{REEXPORT}")
    for rel, digest in manifest["files"].items():
        why = _outside(rel)
        if why:
            raise ExportError(f"{path}: 'files' entry {rel[:80]!r} {why}; an export lists only "
                              f"its own files, by relative paths inside it: {REEXPORT}")
        if not _SHA256.fullmatch(digest):
            raise ExportError(f"{path}: 'files' entry {rel!r} has no sha256 (got "
                              f"{digest[:20]!r}); {REEXPORT}")
    return manifest


def _check_chip(manifest: dict[str, Any], path: Path) -> None:
    """A ``chip`` record (:class:`~.chip.ChipRecord`) exactly when the export names a hardware
    profile, and well formed."""
    hardware = manifest["hardware"]
    if (manifest["chip"] is None) != (hardware is None):
        should = ("null (no hardware profile)" if hardware is None else
                  f"the fixed point and cores of hardware profile {hardware!r}")
        raise ExportError(f"{path}: field 'chip' must be {should} (an export of an earlier "
                          f"version, or an edited manifest); {REEXPORT}")
    if manifest["chip"] is not None:
        try:
            build_record(ChipRecord, manifest["chip"], "chip")
        except RecordProblem as exc:
            raise ExportError(f"{path}: {exc}; {REEXPORT}") from None


def chip_record(manifest: dict[str, Any], export_dir: Path) -> ChipRecord:
    """The fixed point and cores a checked manifest's export was lowered for; an export with no
    hardware profile (a float one) is an ExportError."""
    if manifest["chip"] is None:
        raise ExportError(f"{export_dir} is a --target {manifest['target']} export with no "
                          f"hardware profile (lowered for no chip); map a --target loihi export")
    return build_record(ChipRecord, manifest["chip"], "chip")


def _check_digest(manifest: dict[str, Any], path: Path) -> None:
    """Every field's sha256 matches the :data:`DIGEST` record; none added or removed."""
    sealed = manifest.get(DIGEST)
    if not has_type(sealed, dict[str, str]):
        raise ExportError(f"{path} lacks its digest record '{DIGEST}' (an export of an earlier "
                          f"version, or an edited manifest); {REEXPORT}")
    now = seal(manifest)[DIGEST]
    for key in sorted(set(now) | set(sealed)):
        if key not in sealed:
            what = "was added after export"
        elif key not in now:
            what = "was removed after export"
        elif now[key] != sealed[key]:
            what = "was edited after export (its sha256 differs from the one sealed in it)"
        else:
            continue
        raise ExportError(f"{path}: field '{key[:60]}' {what}; an export is read only as it was "
                          f"written: {REEXPORT}")


def _check_fields(record: dict[str, Any], fields: dict[str, Any], path: Path, prefix: str) -> None:
    for key, hint in fields.items():
        if key not in record:
            raise ExportError(f"{path} lacks the field '{prefix}{key}'; {REEXPORT}")
        if not has_type(record[key], hint):
            raise ExportError(f"{path}: field '{prefix}{key}' must be {type_name(hint)}, got "
                              f"{json.dumps(record[key])[:40]}; {REEXPORT}")


def _outside(rel: str) -> str | None:
    """Why the manifest path ``rel`` may name something outside the export (None: it cannot)."""
    pure = PurePosixPath(rel)
    if not rel or "\\" in rel or "\0" in rel:
        return "is empty or holds a backslash or NUL"
    if pure.is_absolute() or re.match(r"[A-Za-z]:", rel):
        return "is an absolute path"
    if ".." in pure.parts:
        return "climbs out with '..'"
    if pure.as_posix() != rel:
        return "is not a normalised path of an export file"
    return None


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds a manifest of this tool, of this format or an earlier one (the
    only kind ``--force`` replaces; an earlier one is what ``--force`` renews)."""
    try:
        fmt = _parse(folder).get("format")
    except ExportError:
        return False
    return isinstance(fmt, str) and fmt.split("@")[0] == FORMAT.split("@")[0]


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and validate ``folder/manifest.json`` (:func:`check_manifest`; no file hashes)."""
    return check_manifest(_parse(folder), Path(folder) / MANIFEST)


def _files_on_disk(folder: Path) -> set[str]:
    """Every file under ``folder`` (relative, ``/``-separated); a symbolic link anywhere in it
    is an ExportError (an export holds none: a link could lead outside)."""
    found = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink():
                raise ExportError(f"{p} is a symbolic link; an export holds only its own "
                                  f"regular files: {REEXPORT}")
        found.update((Path(root) / f).relative_to(folder).as_posix() for f in files)
    found.discard(MANIFEST)
    return found


def load_export(folder: Path) -> dict[str, Any]:
    """Read an export's manifest and verify the directory against it: every file listed and
    unmodified, nothing unlisted, no link, every file the backends read present."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = manifest["files"]
    on_disk = _files_on_disk(folder)
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
