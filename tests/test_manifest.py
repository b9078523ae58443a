"""Fuzz tests of the export reader: any manifest, edited or forged, is either accepted with every
path inside the export, or refused with an ExportError (never another exception)."""
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.exchange.manifest import MANIFEST, check_manifest, read_manifest, seal

FUZZ = settings(max_examples=300, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**40) | st.floats()
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
#: path-like text: separators, dots, drive letters, NUL and backslashes are likely
PATHS = st.lists(st.sampled_from(list("ab./\\:\0C ~") + ["..", "host/", "chip/"]),
                 max_size=8).map("".join)


@pytest.fixture(scope="module")
def manifest(micro_exports) -> dict:
    return json.loads((micro_exports["loihi"] / MANIFEST).read_text())


@st.composite
def edits(draw, manifest):
    """One field of the manifest (top level, ``host``, ``model``, the ``chip`` record's or a
    ``files`` entry) replaced
    by arbitrary JSON, removed, or a new ``files`` entry with a path-like name; sealed again
    (a forged export) or not (an edit)."""
    m = json.loads(json.dumps(manifest))
    kind = draw(st.sampled_from(["top", "host", "model", "path", "digest", "fixed_point",
                                 "cores"]))
    if kind == "path":
        m["files"][draw(PATHS)] = draw(st.sampled_from(["0" * 64, "x"]))
    else:
        where = {"top": m, "host": m["host"], "model": m["model"], "digest": m,
                 "fixed_point": m["chip"]["fixed_point"], "cores": m["chip"]["cores"]}[kind]
        key = draw(st.sampled_from(sorted(where) + ["extra"]))
        if draw(st.booleans()) and key in where:
            del where[key]
        else:
            where[key] = draw(JSON)
    return seal(m) if draw(st.booleans()) and kind != "digest" else m


@FUZZ
@given(data=st.data())
def test_fuzzed_manifests_are_refused_or_confined(manifest, micro_exports, data):
    m = data.draw(edits(manifest))
    folder = micro_exports["loihi"]
    try:
        checked = check_manifest(m, folder / MANIFEST)
    except ExportError as exc:
        assert "\n" not in str(exc)
        return
    for rel in checked["files"]:  # accepted: every path stays inside the export
        assert Path(os.path.normpath(folder / rel)).is_relative_to(folder), rel


@FUZZ
@given(text=st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_as_a_manifest_file_are_refused(text):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MANIFEST).write_bytes(text)
        with pytest.raises(ExportError):
            read_manifest(Path(tmp))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_in_a_manifest_is_refused(micro_exports, tmp_path, constant):
    """JSON has no NaN or infinity, but Python's reader takes them: a sealed manifest with
    ``dt: NaN`` would pass every type check and the digest."""
    m = json.loads((micro_exports["loihi"] / MANIFEST).read_text())
    m["dt"] = "@"
    text = json.dumps(seal(m), indent=1).replace('"dt": "@"', f'"dt": {constant}')
    text = text.replace(seal(m)["manifest_sha256"]["dt"],
                        hashlib.sha256(constant.encode()).hexdigest())
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(ExportError, match=f"not valid JSON.*{constant} is not a finite number"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("chip"), "lacks the field 'chip'"),
    (lambda m: m.update(chip=None), "field 'chip' must be the fixed point and cores of hardware "
                                    "profile 'loihi2'"),
    (lambda m: m["chip"]["fixed_point"].update(state_bits="24"),
     "field chip.fixed_point.state_bits must be an integer"),
    (lambda m: m["chip"]["cores"].pop("neurons_per_core"),
     "lacks the field(s) chip.cores.neurons_per_core"),
    (lambda m: m["chip"]["cores"]["systems"][0].update(chips=1.5),
     "field chip.cores.systems[0].chips must be an integer"),
])
def test_the_chip_record_is_checked(manifest, micro_exports, edit, message):
    """The fixed point and cores the export was lowered for, which the run side reads instead
    of hardware/: present exactly when a profile is named, each field typed (a forged record,
    sealed again, is refused naming the field)."""
    m = json.loads(json.dumps(manifest))
    assert m["chip"]["fixed_point"]["state_bits"] == 24 and m["hardware"] == "loihi2"
    check_manifest(seal(m), micro_exports["loihi"] / MANIFEST)
    edit(m)
    with pytest.raises(ExportError, match=re.escape(message)):
        check_manifest(seal(m), micro_exports["loihi"] / MANIFEST)


def test_a_float_export_has_no_chip_record(micro_exports):
    m = json.loads((micro_exports["cpu"] / MANIFEST).read_text())
    assert m["hardware"] is None and m["chip"] is None
    m["chip"] = json.loads((micro_exports["loihi"] / MANIFEST).read_text())["chip"]
    with pytest.raises(ExportError, match=re.escape("field 'chip' must be null")):
        check_manifest(seal(m), micro_exports["cpu"] / MANIFEST)
