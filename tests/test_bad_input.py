"""Property-based bad input where a user types or points: ``--set`` overrides, config files and prediction
files for ``seqcomp score``. Each gets a result or a clear one-line error, never a traceback; a rejected
input never writes a result that looks complete. (The SQuAD loaders' properties are in test_data.py.)"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqcomp.cli import main
from seqcomp.config import ConfigError, apply_overrides, flat_keys, load_config_file
from seqcomp.presets import get_preset
from seqcomp.synthetic import key_recall_examples, write_squad_json

KEYS = sorted(flat_keys(get_preset("tier1")))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                     max_size=3), max_leaves=6)
override_text = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | st.text(max_size=15),
              st.text(max_size=12) | st.integers().map(str) | st.floats().map(str) |
              st.sampled_from(["true", "false", "None", "nan", "-1", "0", "1e309", "\\n"])),
    st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.lists(override_text, min_size=1, max_size=4))
def test_set_overrides_give_a_config_or_a_config_error(overrides):
    try:
        config = apply_overrides(get_preset("tier1"), overrides)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err).strip()
        return
    assert type(config).__name__ == "ExperimentConfig"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["model", "data", "train", "nope", "name"]), json_values, max_size=3),
       st.sampled_from([".json", ".yaml"]))
def test_config_files_give_a_config_or_a_config_error(tmp_path, data, suffix):
    path = tmp_path / f"config{suffix}"
    path.write_text(json.dumps(data))  # JSON is also valid YAML
    try:
        load_config_file(path)
    except ConfigError as err:
        assert str(err)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(json_values, st.dictionaries(st.sampled_from([f"kr{i}" for i in range(6)]) | st.text(max_size=5),
                                              json_values | st.text(max_size=10), max_size=6)),
       st.booleans())
def test_score_on_odd_prediction_files_prints_a_result_or_one_line_error(tmp_path, capsys, predictions, as_text):
    examples = key_recall_examples(6, seed=1)
    data = write_squad_json(examples, tmp_path / "dev.json")
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(predictions)[:-1] if as_text and json.dumps(predictions) else json.dumps(predictions))
    code = main(["score", str(pred), "--data", str(data)])
    captured = capsys.readouterr()
    assert code in (0, 2)
    if code == 2:
        assert captured.out == "" and "pred.json" in captured.err and "Traceback" not in captured.err
    else:
        result = json.loads(captured.out)
        assert set(result) == {"exact_match", "f1"} and 0 <= result["f1"] <= 100
