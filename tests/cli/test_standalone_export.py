"""An export stands alone: copied by itself into an empty directory, it runs with a copy of the
package that has no hardware/, models/ or configs beside it, and answers as the original does."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spikeclip_deploy
from spikeclip_deploy.inference import classify_images

LABELS = "cat,dog,ship"


def _run_alone(tmp_path: Path, export: Path, image: Path) -> dict:
    """``run --export COPY`` in a fresh process that imports a copy of the package alone (no
    hardware/, models/ beside it; the profile and model paths pointed at empty folders too),
    from an empty working directory."""
    package = tmp_path / "site" / "spikeclip_deploy"
    shutil.copytree(Path(spikeclip_deploy.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    copy = tmp_path / "alone" / "export"
    shutil.copytree(export, copy)
    (cwd := tmp_path / "cwd").mkdir()
    (empty := tmp_path / "empty").mkdir()
    env = {**os.environ, "PYTHONPATH": str(package.parent), "SPIKECLIP_HARDWARE": str(empty),
           "SPIKECLIP_MODELS": str(empty)}
    code = ("import sys, spikeclip_deploy, spikeclip_deploy.paths as p\n"
            f"assert spikeclip_deploy.__file__.startswith({str(package)!r}), spikeclip_deploy.__file__\n"
            "assert not (p.PROJECT_ROOT / 'hardware').exists() and not (p.PROJECT_ROOT / 'models').exists()\n"
            "from spikeclip_deploy.cli import main\n"
            "sys.argv = ['spikeclip-deploy'] + sys.argv[1:]\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code, "-q", "run", "--target", "loihi-emu",
                          "--export", str(copy), "--image", str(image), "--labels", LABELS,
                          "--json"], capture_output=True, text=True, cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in cwd.iterdir()) == []  # nothing written beside it
    return json.loads(out.stdout)


def test_an_export_copied_alone_runs_as_the_original(micro_exports, tmp_path, cat_png):
    alone = _run_alone(tmp_path, micro_exports["loihi"], cat_png)
    here = classify_images("loihi-emu", micro_exports["loihi"], [cat_png], LABELS)
    assert alone["results"][0]["scores"] == pytest.approx(here["results"][0]["scores"], abs=0)
    assert alone["results"][0]["prediction"] == here["results"][0]["prediction"]


def test_the_run_side_reads_the_chip_from_the_manifest_not_hardware(micro_exports, tmp_path):
    """The emulator's fixed point is the manifest's ``chip`` record: an export whose record
    says the state holds fewer bits than the profile in hardware/ runs on the record's."""
    from spikeclip_deploy.backends.emulator import EmulatorBackend
    from spikeclip_deploy.exchange.manifest import MANIFEST, seal

    copy = tmp_path / "export"
    shutil.copytree(micro_exports["loihi"], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["chip"]["fixed_point"]["state_bits"] = 9
    (copy / MANIFEST).write_text(json.dumps(seal(manifest)))
    with EmulatorBackend(copy) as edited, EmulatorBackend(micro_exports["loihi"]) as shipped:
        assert {e.fp.state_bits for e in edited.emulations.values()} == {9}
        assert {e.fp.state_bits for e in shipped.emulations.values()} == {24}
