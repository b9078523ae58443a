"""The run side never imports the build side: backends read an export, not a model."""
import subprocess
import sys


def test_backends_import_no_model_lowering_or_checkpoint_code():
    code = ("import sys, spikeclip_deploy.backends.cpu, spikeclip_deploy.backends.lava; "
            "print(sorted(m for m in sys.modules if m.startswith('spikeclip_deploy.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)  # noqa: S307 - our own printed list
    build = [m for m in loaded if m.split(".")[1] in
             ("nn", "lowering", "checkpoint", "export", "host", "training", "teachers")]
    assert build == [] and "spikeclip_deploy.backends.cpu" in loaded
