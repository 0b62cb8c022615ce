"""RunConfig: YAML + dotted overrides, one collected error message quoting values and valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest
from lossforge.discovery.config import ConfigError, RunConfig, load_config
from pydantic import ValidationError

from tests.paths import ROOT

EXAMPLE = ROOT / "examples" / "run.yaml"


def test_defaults_are_offline_evolve() -> None:
    config = load_config()
    assert config.proposer.kind == "evolve"
    assert config.search.seed_candidates == ("dpo", "hinge", "ipo", "kto_pair")
    assert config.search.repair_rounds == 2
    assert config.training.task == "sentiment"


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert isinstance(config, RunConfig)
    assert config.resolved()["search"]["generations"] == config.search.generations


def test_overrides_win_over_yaml_and_none_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("search:\n  generations: 2\n  population: 3\nseed: 5\n")
    config = load_config(path, {"search.generations": 7, "search.population": None, "out": str(tmp_path / "o")})
    assert config.search.generations == 7
    assert config.search.population == 3  # None = flag not given
    assert config.seed == 5
    assert config.out == tmp_path / "o"


def test_errors_are_collected_into_one_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("proposer:\n  kind: gpt\n  colour: red\nsearch:\n  seed_candidates: [dpo, nope]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"search.generations": -1})
    message = str(info.value)
    assert str(path) in message
    assert "proposer.kind: 'gpt' is not one of 'evolve', 'openai'" in message
    assert "proposer.colour: unknown key; valid keys here: kind, model" in message
    assert "search.seed_candidates: 'nope' not in the built-in library; valid: dpo, hinge" in message
    assert "search.generations: -1 is invalid" in message
    assert len(info.value.problems) == 4


def test_unknown_top_level_key_names_the_valid_groups() -> None:
    with pytest.raises(ConfigError, match=r"trainer: unknown key; valid keys here: proposer, budget, search"):
        load_config(None, {"trainer.steps": 3})


def test_openai_requires_a_model() -> None:
    with pytest.raises(ConfigError, match=r"openai proposer requires proposer.model \(--llm-model\)"):
        load_config(None, {"proposer.kind": "openai"})
    config = load_config(None, {"proposer.kind": "openai", "proposer.model": "gpt-4o-mini"})
    assert config.proposer.model == "gpt-4o-mini"


def test_cost_budget_needs_a_price_for_the_model() -> None:
    overrides = {"proposer.kind": "openai", "proposer.model": "m", "budget.max_cost_usd": 2.0}
    with pytest.raises(ConfigError, match=r"proposer.prices has no entry for model 'm'"):
        load_config(None, overrides)
    prices = {"m": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}
    config = load_config(None, {**overrides, "proposer.prices": prices})
    assert config.proposer.price() is not None and config.proposer.price().output_per_mtok == 0.6


def test_unknown_task_lists_the_tasks() -> None:
    with pytest.raises(ConfigError, match=r"training.task: 'imdb' is not one of 'sentiment'"):
        load_config(None, {"training.task": "imdb"})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_override_into_a_scalar_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("seed: 3\n")
    with pytest.raises(ConfigError, match=r"override seed.x: 'seed' is not a group"):
        load_config(path, {"seed.x": 1})


def test_config_is_frozen_and_resolved_is_json() -> None:
    import json

    config = load_config(None, {"training.task_options": {"n": 3}})
    with pytest.raises(ValidationError, match="frozen"):
        config.seed = 3  # type: ignore[misc]
    resolved = config.resolved()
    assert json.loads(json.dumps(resolved)) == resolved
    assert resolved["training"]["task_options"] == {"n": 3}
    assert RunConfig.model_validate(resolved) == config


def test_workers_per_gpu_and_its_memory_floor_are_validated() -> None:
    execution = load_config().execution
    assert (execution.workers, execution.workers_per_gpu, execution.gpu_memory_per_worker_gb) == (2, 1, 8.0)
    with pytest.raises(ConfigError) as info:
        load_config(None, {"execution.workers_per_gpu": 0, "execution.gpu_memory_per_worker_gb": 0})
    assert "execution.workers_per_gpu: 0 is invalid: input should be greater than or equal to 1" in str(info.value)
    assert "execution.gpu_memory_per_worker_gb: 0 is invalid: input should be greater than 0" in str(info.value)


def test_workers_per_gpu_flag_sets_the_field_also_when_resuming(tmp_path: Path) -> None:
    from lossforge.discovery.commands import run as run_command
    from lossforge.discovery.storage.archive import Archive

    config, _ = run_command.resolve_config(None, None, {"workers_per_gpu": 4, "out": tmp_path / "old"})
    assert config.execution.workers_per_gpu == 4
    with Archive.open(tmp_path / "old") as archive:
        archive.set_meta("config", config.resolved())
    resumed, _ = run_command.resolve_config(None, tmp_path / "old", {"workers_per_gpu": 2})
    assert resumed.execution.workers_per_gpu == 2


def test_evolve_refuses_llm_settings_it_would_ignore() -> None:
    for field, value in (("model", "gpt-4o"), ("base_url", "http://127.0.0.1:8000/v1")):
        with pytest.raises(ConfigError, match=rf"proposer.{field} is '{value}', but the evolve proposer uses no LLM"):
            load_config(None, {"proposer.kind": "evolve", f"proposer.{field}": value})


def test_the_default_suite_sets_the_search_tasks_and_the_heldout_confirmation() -> None:
    config = load_config(overrides={"training.suite": "default"})
    assert config.training.tasks == ("sentiment", "noisy_labels", "off_policy")
    assert config.training.task == "sentiment" and config.training.run_tasks == config.training.tasks
    assert config.search.confirm.tasks == ("length_bias", "overoptimization", "arithmetic")
    assert RunConfig.model_validate(config.resolved()) == config  # a resumed run reads its resolved config back
    chosen = load_config(overrides={"training.suite": "default", "search.confirm.tasks": ["arithmetic"]})
    assert chosen.search.confirm.tasks == ("arithmetic",)


def test_several_tasks_take_options_per_task_and_one_task_is_unchanged() -> None:
    options = {"noisy_labels": {"flip_rate": 0.2}}
    config = load_config(overrides={"training.tasks": ["sentiment", "noisy_labels"], "training.task_options": options})
    assert config.training.options_for("noisy_labels") == {"flip_rate": 0.2}
    assert config.training.options_for("sentiment") == {}
    single = load_config(overrides={"training.task_options": {"sample_temperature": 0.7}})
    assert single.training.run_tasks == ("sentiment",)
    assert single.training.options_for("sentiment") == {"sample_temperature": 0.7}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"training.suite": "nope"}, "training: unknown suite 'nope'; built-in suites: default"),
        (
            {"training.suite": "default", "training.tasks": ["sentiment"]},
            "tasks ['sentiment'] and suite 'default'",
        ),
        (
            {"training.tasks": ["sentiment", "arithmetic"], "training.task": "arithmetic"},
            "task 'arithmetic' is not the first of tasks ['sentiment', 'arithmetic']",
        ),
        ({"training.tasks": ["sentiment", "sentiment"]}, "names a task twice"),
        ({"training.tasks": ["sentiment", "nope"]}, "'nope' is not one of"),
        (
            {"training.tasks": ["sentiment", "arithmetic"], "training.task_options": {"sample_temperature": 0.7}},
            "with several tasks, map each task to its options",
        ),
        ({"search.aggregate": "max"}, "search.aggregate: 'max' is not one of 'mean', 'min'"),
    ],
)
def test_multi_task_settings_are_refused_with_one_message(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(overrides=overrides)
    assert message in str(raised.value)
