"""The multi-LLM planner's application specs: validation (one-line errors naming the field) and sampling
(prompts and output lengths per topology, seeds, context caps)."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.errors import InputError
from scheduler.app import Application, load_application
from scheduler.planner import Planner
from tests.planner_helpers import EXAMPLES, assert_one_line_input_error, ensemble_spec


# === 1. spec validation =================================================================================
def _routing(raw, shares):
    raw["topology"] = "routing"
    for m, s in zip(raw["models"], shares, strict=True):
        if s is not None:
            m["share"] = s


def _cycle(raw):
    raw["topology"] = "chain"
    raw["models"][0]["upstream"] = "b"
    raw["models"][1]["upstream"] = "a"


def _set(path, value):
    def mutate(raw):
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


INVALID_SPECS = {
    "unknown topology": (_set(["topology"], "star"), ["topology", "ensemble"]),
    "routing shares not summing to 1": (lambda r: _routing(r, [0.5, 0.4]), ["routing", "shares", "sum to 1"]),
    "routing without shares": (lambda r: _routing(r, [None, None]), ["routing", "share"]),
    "routing with one share missing": (lambda r: _routing(r, [1.0, None]), ["routing", "share"]),
    "upstream outside chain": (_set(["models", 1, "upstream"], "a"), ["upstream", "chain", "'b'"]),
    "upstream unknown": (lambda r: (r.update(topology="chain"), r["models"][1].update(upstream="zzz")),
                         ["upstream", "'zzz'"]),
    "upstream is itself": (lambda r: (r.update(topology="chain"), r["models"][1].update(upstream="b")),
                           ["upstream", "'b'"]),
    "cycle": (_cycle, ["cycle"]),
    "chain without upstream": (_set(["topology"], "chain"), ["chain", "upstream"]),
    "duplicate names": (_set(["models", 1, "name"], "a"), ["names", "unique"]),
    "nvlink GPU twice": (_set(["node", "nvlink_groups"], [[0], [0]]), ["nvlink_groups", "partition"]),
    "nvlink GPU missing": (_set(["node", "nvlink_groups"], [[0]]), ["nvlink_groups", "partition"]),
    "nvlink GPU outside node": (_set(["node", "nvlink_groups"], [[0, 1, 2]]), ["nvlink_groups", "partition"]),
    "unknown key": (_set(["colour"], "blue"), ["colour"]),
    "two length sources": (_set(["models", 0, "output_lengths"], {"fixed": 3, "lognormal": True, "mean": 4}),
                           ["models.0.output_lengths", "exactly one"]),
    "lognormal without mean": (_set(["models", 0, "output_lengths"], {"lognormal": True}),
                               ["models.0.output_lengths", "mean"]),
    "bad name": (_set(["models", 0, "name"], "a b"), ["models.0.name"]),
    "zero prompts": (_set(["prompts", "count"], 0), ["prompts.count"]),
    "measured prompts": (_set(["prompts"], {"measured": "Llama-2-7b-hf", "count": 3}), ["prompts.measured"]),
    "upstream with count > 1": (lambda r: (r.update(topology="chain"), r["models"][0].update(count=2),
                                           r["models"][1].update(upstream="a")), ["models.b.upstream", "count"]),
}


@pytest.mark.parametrize("case", list(INVALID_SPECS), ids=list(INVALID_SPECS))
def test_invalid_spec_is_one_line_input_error_naming_the_field(case):
    mutate, fragments = INVALID_SPECS[case]
    raw = ensemble_spec()
    mutate(raw)
    with pytest.raises(InputError) as excinfo:
        Application.from_dict(raw)
    assert_one_line_input_error(excinfo, *fragments)


def test_valid_variants_load():
    raw = ensemble_spec()
    _routing(raw, [0.75, 0.25])
    assert Application.from_dict(raw).names == ["a", "b"]
    raw = ensemble_spec()
    raw["topology"] = "routing"
    raw["models"][0].update(share=0.25, count=2)  # 2 x 0.25 + 0.5 = 1
    raw["models"][1].update(share=0.5)
    assert Application.from_dict(raw).names == ["a-1", "a-2", "b"]
    raw = ensemble_spec(gpus=4)
    raw["node"]["nvlink_groups"] = [[3, 1], [2, 0]]
    assert Application.from_dict(raw).nvlink_groups == [[3, 1], [2, 0]]


def test_unknown_model_name_is_an_input_error():
    raw = ensemble_spec()
    raw["models"][1]["model"] = "not-a-model"
    with pytest.raises(InputError) as excinfo:
        Application.from_dict(raw)
    assert_one_line_input_error(excinfo, "not-a-model")


def test_unknown_measured_distribution_is_reported_when_sampling(roofline):
    """An unknown measured distribution is a one-line input error: today when lengths are drawn (the spec
    itself loads), at load once the spec checks it."""
    raw = ensemble_spec()
    raw["models"][1]["output_lengths"] = {"measured": "no-such-model"}
    try:
        app = Application.from_dict(raw)
    except InputError as err:
        assert "\n" not in str(err) and "no-such-model" in str(err)
        return
    with pytest.raises(InputError) as excinfo:
        app.sample(0)
    assert_one_line_input_error(excinfo, "no-such-model")
    with pytest.raises(InputError):
        Planner(app, roofline).run()


@pytest.mark.parametrize("field", ["model", "measured"])
def test_unknown_names_are_reported_against_the_yaml_field(field):
    raw = ensemble_spec()
    if field == "model":
        raw["models"][1]["model"] = "not-a-model"
    else:
        raw["models"][1]["output_lengths"] = {"measured": "no-such-model"}
    with pytest.raises(InputError) as excinfo:
        Application.from_dict(raw)  # at load, like every other spec error
    message = str(excinfo.value)
    assert "models." in message and "--" not in message, message


def test_expanded_names_must_stay_unique():
    raw = ensemble_spec()
    raw["models"][0].update(name="x", count=2)
    raw["models"][1].update(name="x-1")
    with pytest.raises(InputError):
        app = Application.from_dict(raw)
        assert len(app.names) == len(app.by_name), app.names


@pytest.mark.parametrize("raw", [[1, 2], "text", None, 3])
def test_non_mapping_spec(raw, tmp_path):
    with pytest.raises(InputError) as excinfo:
        Application.from_dict(raw)
    assert_one_line_input_error(excinfo, "mapping")
    path = tmp_path / "app.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(InputError) as excinfo:
        load_application(path)
    assert_one_line_input_error(excinfo, str(path), "mapping", "list")


def test_load_application_file_errors(tmp_path):
    bad, binary, invalid = tmp_path / "bad.yaml", tmp_path / "binary.yaml", tmp_path / "invalid.yaml"
    bad.write_text("topology: [ensemble\nmodels: {")
    binary.write_bytes(b"\xff\xfe\x00garbage")
    invalid.write_text("topology: star\nprompts: {fixed: 1}\nmodels: []\n")
    cases = [(tmp_path / "missing.yaml", ("does not exist", "missing.yaml")), (tmp_path, ("directory",)),
             (bad, ("not valid YAML", "line")), (binary, ("UTF-8",)), (invalid, (str(invalid),))]
    for path, fragments in cases:
        with pytest.raises(InputError) as excinfo:
            load_application(path)
        assert_one_line_input_error(excinfo, *fragments)


def test_example_count():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_shipped_examples_load_and_sample(path):
    app = load_application(path)
    assert app.names and app.num_gpus == app.spec.node.count
    sample = app.sample(app.spec.seed)
    for name in app.names:
        llm = app.by_name[name]
        assert len(sample.prompts[name]) == len(sample.outputs[name])
        assert np.all(sample.outputs[name] >= 1) and np.all(sample.prompts[name] >= 1)
        assert np.all(sample.prompts[name] + sample.outputs[name] <= llm.max_model_len)
    if app.spec.topology == "chain":
        assert app.names[:2] == ["summarizer", "evaluator-1"] and len(app.names) == 4
    if app.spec.topology == "routing":
        assert sum(len(sample.prompts[n]) for n in app.names) == app.spec.prompts.count


# === 2. sampling =========================================================================================
def measured_spec(topology: str = "ensemble", count: int = 60) -> dict:
    spec = {"topology": topology, "node": {"count": 2}, "prompts": {"lognormal": True, "mean": 500, "count": count},
            "models": [{"name": "a", "model": "llama-2-7b", "output_lengths": {"measured": "Llama-2-7b-hf"}},
                       {"name": "b", "model": "mistral-7b", "output_lengths": {"lognormal": True, "mean": 300}},
                       {"name": "c", "model": "phi-2", "output_lengths": {"fixed": 40}}]}
    if topology == "routing":
        for m, s in zip(spec["models"], (0.5, 0.3, 0.2), strict=True):
            m["share"] = s
    if topology == "chain":
        spec["models"][1]["upstream"] = "a"
        spec["models"][2]["upstream"] = "b"
    return spec


@pytest.mark.parametrize("topology", ["ensemble", "routing", "chain"])
def test_same_seed_same_sample(topology):
    app = Application.from_dict(measured_spec(topology))
    s1, s2, other = app.sample(3), app.sample(3), app.sample(4)
    assert s1.seed == 3
    for name in app.names:
        np.testing.assert_array_equal(s1.prompts[name], s2.prompts[name])
        np.testing.assert_array_equal(s1.outputs[name], s2.outputs[name])
    assert any(not np.array_equal(s1.outputs[n], other.outputs[n]) or not np.array_equal(s1.prompts[n], other.prompts[n])
               for n in app.names)


def test_ensemble_gives_every_llm_the_same_prompts():
    app = Application.from_dict(measured_spec("ensemble"))
    sample = app.sample(0)
    assert len(sample.prompts["a"]) == 60
    for name in ("b", "c"):
        np.testing.assert_array_equal(sample.prompts[name], sample.prompts["a"])
        assert sample.upstream_index[name] is None
    assert len(np.unique(sample.prompts["a"])) > 10  # really drawn (log-normal)
    lengths = set(np.unique(sample.outputs["a"]))
    from scheduler.workload import output_length_distribution

    support, _ = output_length_distribution("Llama-2-7b-hf")
    assert lengths <= set(support.tolist()) | {int(4096 - p) for p in sample.prompts["a"]}
    assert np.all(sample.outputs["c"] == 40)


def test_routing_splits_prompts():
    spec = measured_spec("routing", count=2000)
    spec["prompts"]["max"] = 2000  # below every model's context: no prompt is cut
    app = Application.from_dict(spec)
    sample = app.sample(5)
    counts = {n: len(sample.prompts[n]) for n in app.names}
    assert sum(counts.values()) == 2000
    for name, share in zip(app.names, (0.5, 0.3, 0.2), strict=True):
        assert abs(counts[name] / 2000 - share) < 0.04, counts
    # each prompt goes to exactly one LLM: the routed prompts are a partition of the drawn base prompts
    base = app._draw(app.spec.prompts, 2000, np.random.default_rng(5), None)
    routed = np.concatenate([sample.prompts[n] for n in app.names])
    np.testing.assert_array_equal(np.sort(routed), np.sort(base))
    assert len(np.unique(base)) > 500


def test_routing_with_count_expands_llms():
    raw = ensemble_spec(count=1000)
    raw["topology"] = "routing"
    raw["models"][0].update(share=0.25, count=2)
    raw["models"][1].update(share=0.5)
    app = Application.from_dict(raw)
    sample = app.sample(0)
    counts = [len(sample.prompts[n]) for n in ("a-1", "a-2", "b")]
    assert sum(counts) == 1000 and all(abs(c / 1000 - s) < 0.06 for c, s in zip(counts, (0.25, 0.25, 0.5), strict=True))


def test_chain_prompts_are_upstream_outputs_plus_template_capped():
    raw = {"topology": "chain", "node": {"count": 2}, "prompts": {"lognormal": True, "mean": 1500, "count": 300},
           "models": [{"name": "up", "model": "llama-2-7b", "output_lengths": {"lognormal": True, "mean": 1500, "sigma": 1.0}},
                      {"name": "down", "model": "llama-2-7b", "upstream": "up", "prompt_template_tokens": 2000,
                       "output_lengths": {"lognormal": True, "mean": 800}},
                      {"name": "third", "model": "phi-2", "upstream": "down", "prompt_template_tokens": 0,
                       "output_lengths": {"fixed": 5}}]}
    app = Application.from_dict(raw)
    sample = app.sample(1)
    up, down, third = app.by_name["up"], app.by_name["down"], app.by_name["third"]
    expected = np.minimum(sample.outputs["up"] + 2000, down.max_model_len - 1)
    np.testing.assert_array_equal(sample.prompts["down"], expected)
    assert np.any(sample.outputs["up"] + 2000 > down.max_model_len - 1)  # the cap is exercised
    np.testing.assert_array_equal(sample.prompts["third"], np.minimum(sample.outputs["down"], third.max_model_len - 1))
    for name in ("down", "third"):
        np.testing.assert_array_equal(sample.upstream_index[name], np.arange(300))
    assert sample.upstream_index["up"] is None
    for llm in (up, down, third):
        assert np.all(sample.prompts[llm.name] + sample.outputs[llm.name] <= llm.max_model_len)
        assert np.all(sample.outputs[llm.name] >= 1)


def test_outputs_capped_to_context():
    raw = ensemble_spec(count=20)
    raw["prompts"] = {"fixed": 4000, "count": 20}
    raw["models"][0]["output_lengths"] = {"fixed": 500}
    raw["models"][1]["output_lengths"] = {"lognormal": True, "mean": 2000}
    app = Application.from_dict(raw)
    sample = app.sample(0)
    a, b = app.by_name["a"], app.by_name["b"]
    assert a.max_model_len == 4096
    np.testing.assert_array_equal(sample.outputs["a"], np.full(20, 96))
    assert np.all(sample.prompts["b"] + sample.outputs["b"] <= b.max_model_len)
    raw["prompts"] = {"fixed": 10_000, "count": 5}  # longer than the context: cut to leave one output token
    sample = Application.from_dict(raw).sample(0)
    np.testing.assert_array_equal(sample.prompts["a"], np.full(5, 4095))
    np.testing.assert_array_equal(sample.outputs["a"], np.ones(5))


def test_mean_lengths_gives_constant_outputs():
    app = Application.from_dict(measured_spec("ensemble"))
    sample = app.sample(0, mean_lengths=True)
    from scheduler.workload import output_length_distribution

    support, probs = output_length_distribution("Llama-2-7b-hf")
    expected = {"a": float((support * probs).sum() / probs.sum()), "b": 300.0, "c": 40.0}
    for name in app.names:
        values = np.unique(sample.outputs[name])
        assert values.size == 1, (name, values)
        assert abs(values[0] - expected[name]) <= 0.03 * expected[name] + 1, (name, values, expected[name])
    np.testing.assert_array_equal(app.sample(0, mean_lengths=True).outputs["a"], sample.outputs["a"])
