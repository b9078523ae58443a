"""The source rewrites that make lava-nc 0.10 importable on Python 3.11."""
from spikeclip_deploy.lava_compat import rewrite_mutable_defaults, rewrite_start_method


def test_mutable_dataclass_default_becomes_a_factory():
    src = "class A:\n    enc: ByteEncoder = ByteEncoder()\n    n: int = 3\n"
    out = rewrite_mutable_defaults(src)
    assert "enc: ByteEncoder = __import__('dataclasses').field(default_factory=ByteEncoder)" in out
    assert "n: int = 3" in out


def test_start_method_is_set_only_when_unset():
    out = rewrite_start_method("if x:\n    mp.set_start_method('fork')\n")
    assert out == "if x:\n    mp.get_start_method(allow_none=True) or mp.set_start_method('fork')\n"
