"""`sweep.yaml`, the contract between a sweep (writer) and reports (reader): what the sweep
writes reads back the same, a file of the wrong shape is refused naming the key, and a report on
such a file still runs (from the run tags) and says why in one note."""

from __future__ import annotations

import pytest
import yaml
from mlflow.tracking import MlflowClient

from workbench import sweep_file
from workbench.errors import DataError
from workbench.reports.store import load_sweeps, spec_from_file
from workbench.sweeps.spec import load_spec


def test_what_the_sweep_writes_reads_back_the_same(tmp_path):
    path = tmp_path / "toggle.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "base",
                "variants": {"off": {"objectives.scl.enabled": False}, "on": {"objectives.scl.enabled": True}},
                "baseline": "on",
                "seeds": {"min": 2, "max": 4},
                "objective": {"metric": "eval/retrieval/r_mean", "direction": "minimize"},
                "delta": {"eval/retrieval/r_mean": 0.5},
            }
        )
    )
    spec = load_spec(path)
    text = sweep_file.dump(spec.sweep_file())
    assert yaml.safe_load(text) == spec.resolved()
    read = sweep_file.load(text, "here")
    assert read == spec.sweep_file()
    assert read.variants == {"off": {"objectives.scl.enabled": False}, "on": {"objectives.scl.enabled": True}}
    assert read.seeds == [0, 1, 2, 3] and read.sequential["min_seeds"] == 2 and read.sequential["max_seeds"] == 4
    report_spec = spec_from_file(read, "fallback")
    assert (report_spec.name, report_spec.variants, report_spec.baseline) == ("toggle", ["off", "on"], "on")
    assert (report_spec.objective, report_spec.direction, report_spec.delta) == (
        "eval/retrieval/r_mean",
        "minimize",
        {"eval/retrieval/r_mean": 0.5},
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"variants": {"a": {}}}, "here: variants: expected a list of {name, overrides}, got dict"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "here: variants[1]: variant 'a' is listed twice"),
        ({"variants": [{"name": "a"}], "baseline": "b"}, "here: baseline: 'b' is not a variant"),
        ({"seeds": 3}, "here: seeds: expected a list of integers, got 3"),
        ({"objective": {"metric": "m", "direction": "up"}}, "here: objective: direction 'up' is not one of"),
        ({"delta": {"m": -1}}, "here: delta.m: -1 is not a number > 0"),
        ({"retries": "2"}, "here: retries: expected an integer >= 0, got '2'"),
        ({"baselines": "a"}, "here: unknown key 'baselines' — did you mean 'baseline'?"),
        (["a"], "here: expected a mapping, got list"),
    ],
)
def test_a_file_of_the_wrong_shape_is_refused_naming_the_key(data, message):
    with pytest.raises(DataError) as err:
        sweep_file.parse(data, "here")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_report_on_a_refused_sweep_yaml_reads_the_tags_and_says_why(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("x", artifact_location=(tmp_path / "artifacts").as_uri())
    for sweep, text in (("shape", "variants: {a: {}}\n"), ("broken", "variants: [a\n")):
        tags = {"workbench.sweep": sweep, "workbench.baseline": "b"}
        parent = client.create_run(exp, run_name=sweep, tags=tags).info.run_id
        client.log_text(parent, text, "sweep.yaml")
        for variant in ("a", "b"):
            child_tags = {"mlflow.parentRunId": parent, "workbench.sweep": sweep, "workbench.variant": variant}
            child = client.create_run(exp, tags={**child_tags, "workbench.seed": "0"}).info.run_id
            client.log_metric(child, "eval/retrieval/r_mean", 1.0)
            client.set_terminated(child)
        client.set_terminated(parent)
    sweeps, _ = load_sweeps(tracking_uri=uri)
    by_name = {sweep.name: sweep for sweep in sweeps}
    for name, why in (("shape", "variants: expected a list"), ("broken", "invalid YAML")):
        spec = by_name[name].spec
        assert (spec.source, spec.baseline, spec.variants, spec.seeds) == ("tags", "b", ["b", "a"], [0])
        (note,) = [n for n in by_name[name].notes if "sweep.yaml" in n]
        assert note.startswith(f"runs:/{by_name[name].parent_run_id}/sweep.yaml: {why}")
        assert note.endswith(", so variants, seeds and baseline read from run tags") and "\n" not in note
