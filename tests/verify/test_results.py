"""Partial results read back from a shard's file: a malformed one is a one-line typed error
naming the field; figures of a hand-built result with known disagreements."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeclip_deploy.errors import ConfigError, DataError, SpikeClipError
from spikeclip_deploy.verify.results import (PARTIAL_FORMAT, check_partial, merge_partials,
                                             summarize)


def hand_built(preds: dict[str, list[int]], labels: list[int], shard=(0, 1)) -> dict:
    """A partial result of 3 classes with the given predictions (no spikes: no tallies)."""
    n = len(labels)
    return {"format": PARTIAL_FORMAT, "shard": list(shard),
            "run": {"model": "m", "weights": "checkpoint", "checkpoint_sha256": "c" * 64,
                    "data": {"source": "x", "content_sha256": "d" * 64}, "classes": ["a", "b", "c"],
                    "labels": ["a", "b", "c"], "templates": ["{}"], "protocol": {}, "export": None,
                    "backends": {}, "energy": None, "checkpoint_metrics": {}, "config": {}},
            "positions": list(range(n)), "index": list(range(n)), "labels": labels,
            "preds": preds, "tallies": {}, "divergence": {}}


def test_agreement_and_accuracy_of_a_result_with_known_disagreements():
    """emu and cpu disagree on 2 of 5 images, emu and float on 4 of 5, Lava ran 3 (-1: not
    run) and disagrees with emu on 1 of them: every figure is counted here by hand (an
    agreement computed between a backend and itself would be 1.0 throughout)."""
    labels = [0, 1, 2, 0, 1]
    r = summarize(hand_built({"emu": [0, 1, 2, 1, 0], "cpu": [0, 1, 0, 1, 2],
                              "lava": [0, 2, 2, -1, -1], "float": [1, 2, 0, 1, 2]}, labels))
    assert r["agreement"] == {"emu_vs_lava": 2 / 3, "emu_vs_cpu": 3 / 5, "emu_vs_float": 1 / 5,
                              "lava_vs_cpu": 1 / 3, "lava_vs_float": 1 / 3,
                              "cpu_vs_float": 3 / 5}
    assert r["agreement_n"] == {"emu_vs_lava": 3, "emu_vs_cpu": 5, "emu_vs_float": 5,
                                "lava_vs_cpu": 3, "lava_vs_float": 3, "cpu_vs_float": 5}
    assert r["accuracy"] == {"emu": 3 / 5, "lava": 2 / 3, "cpu": 2 / 5, "float": 0.0}
    assert r["lava_n"] == 3
    assert r["accuracy_on_lava_sample"] == {"emu": 1.0, "lava": 2 / 3, "cpu": 2 / 3,
                                            "float": 0.0}
    assert r["per_class_accuracy"]["emu"] == {"a": 0.5, "b": 0.5, "c": 1.0}


@pytest.mark.parametrize("edit, error, message", [
    (lambda p: [], ConfigError, "is not a partial verification result (format 'list'"),
    (lambda p: {**p, "format": "x"}, ConfigError, "format 'x'"),
    (lambda p: {**p, "shard": [2, 2]}, DataError, "field 'shard' must be [I, N]"),
    (lambda p: {**p, "shard": [True, 2]}, DataError, "field 'shard'"),
    (lambda p: {k: v for k, v in p.items() if k != "preds"}, DataError, "field 'preds' is missing"),
    (lambda p: {**p, "run": {**p["run"], "data": None} | {"classes": "abc"}}, DataError,
     "field 'run.classes'"),
    (lambda p: {**p, "run": {k: v for k, v in p["run"].items() if k != "templates"}}, DataError,
     "field 'run.templates' is missing"),
    (lambda p: {**p, "labels": p["labels"][:-1]}, DataError, "field 'positions' must be a list of 4"),
    (lambda p: {**p, "preds": {"emu": [0, 1, 2, "x", 0]}}, DataError, "field 'preds.emu'"),
    (lambda p: {**p, "labels": [0, 1, 2, 3, 0]}, DataError, "class indices 0 .. 2"),
    (lambda p: {**p, "tallies": {"emu": []}}, DataError, "field 'tallies'"),
])
def test_a_malformed_shard_is_a_typed_error_naming_the_field(edit, error, message):
    part = edit(hand_built({"emu": [0, 1, 2, 1, 0]}, [0, 1, 2, 0, 1]))
    with pytest.raises(error, match=message.replace("[", r"\[").replace("(", r"\(")) as err:
        check_partial(part, "p.json")
    assert "\n" not in str(err.value)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 5) | st.floats(allow_nan=False)
                    | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


@st.composite
def mangled_shards(draw):
    """A valid two-shard pair, one field of one of them (top level, in ``run`` or in ``preds``)
    replaced by arbitrary JSON, or removed."""
    base = hand_built({"emu": [0, 1, 2]}, [0, 1, 2], (0, 2))
    parts = [json.loads(json.dumps(base)), json.loads(json.dumps({**base, "shard": [1, 2]}))]
    victim = parts[draw(st.integers(0, 1))]
    where = draw(st.sampled_from([victim, victim["run"], victim["preds"], victim["run"]["data"]]))
    key = draw(st.sampled_from(sorted(where) + ["extra"]))
    if draw(st.booleans()) and key in where:
        del where[key]
    else:
        where[key] = draw(JSON)
    return parts


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(parts=mangled_shards())
def test_fuzzed_shards_give_a_typed_error_or_a_result(parts):
    """The reader and the merge of shards, on shards with any field mangled: a SpikeClipError or
    a result, never another exception (:func:`~spikeclip_deploy.verify.harness.merge` turns
    the deeper records' errors into a DataError; this fuzzes what it reads first)."""
    try:
        summarize(merge_partials([check_partial(p, "p.json") for p in parts]))
    except SpikeClipError:
        pass


@settings(max_examples=200, derandomize=True, deadline=None)
@given(doc=JSON)
def test_any_json_document_as_a_shard_is_a_typed_error(doc):
    with pytest.raises(SpikeClipError):
        check_partial(doc, "p.json")
