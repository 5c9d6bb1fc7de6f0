"""Campaign config validation and store specs."""

import pytest
import yaml

from alcampaign.config import (
    ConfigError,
    embedded_store_spec,
    expand_env,
    load_config,
    read_store_spec,
)

from conftest import STORES, small_config_dict


def test_valid_config_resolves_structure_path(write_config):
    cfg = load_config(write_config(small_config_dict()))
    assert cfg.system.structure.is_absolute() and cfg.system.structure.is_file()
    assert cfg.acquisition.batch_size == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"acquisition": {"batch_size": 0}}, "acquisition.batch_size"),
        ({"acquisition": {"rule": "best_guess"}}, "acquisition.rule"),
        ({"stopping": {"max_oracle_calls": "many"}}, "stopping.max_oracle_calls"),
        ({"enumeration": {"max_sizes": 3}}, "enumeration.max_sizes"),
        ({"oracle": {"maker": "not a path"}}, "oracle.maker"),
        ({"features": {"cutoffs": [-1.0]}}, "features.cutoffs"),
        ({"colour": "blue"}, "colour"),
        ({"name": "has spaces"}, "name"),
        ({"surrogate": {"prior": "ard"}}, "surrogate.prior"),
        ({"surrogate": {"basis": "all"}}, "surrogate.basis"),
        ({"surrogate": {"cheap_energy": "yes"}}, "surrogate.cheap_energy"),
        ({"domain": {"ridge": -1.0}}, "domain.ridge"),
    ],
)
def test_bad_field_is_named(write_config, change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(write_config(small_config_dict(**change)))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_missing_structure_file(write_config, tmp_path):
    cfg = small_config_dict(system={"structure": str(tmp_path / "missing.cif")})
    with pytest.raises(ConfigError, match=r"system\.structure"):
        load_config(write_config(cfg))


def test_budget_smaller_than_initial_design(write_config):
    cfg = small_config_dict(initial_design={"n_initial": 20}, stopping={"max_oracle_calls": 5})
    with pytest.raises(ConfigError, match="n_initial"):
        load_config(write_config(cfg))


def test_expand_env():
    env = {"A": "1"}
    assert expand_env("${A}/${B:-two}", env) == "1/two"
    with pytest.raises(ConfigError, match="SECRET"):
        expand_env("${SECRET}", env)


def test_embedded_yaml_matches_builtin_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ALCAMPAIGN_HOME", str(tmp_path))
    assert read_store_spec(STORES / "embedded.yaml") == embedded_store_spec()


def test_mongodb_spec_takes_uri_from_environment(monkeypatch):
    monkeypatch.setenv("ALCAMPAIGN_MONGODB_URI", "mongodb://u:p@example.invalid:27017")
    spec = read_store_spec(STORES / "mongodb.yaml")
    assert spec["docs_store"]["uri"] == "mongodb://u:p@example.invalid:27017"
    assert "p@" not in (STORES / "mongodb.yaml").read_text()
    monkeypatch.delenv("ALCAMPAIGN_MONGODB_URI")
    with pytest.raises(ConfigError, match="ALCAMPAIGN_MONGODB_URI"):
        read_store_spec(STORES / "mongodb.yaml")


def test_store_spec_missing_collection(tmp_path):
    spec = yaml.safe_load((STORES / "memory.yaml").read_text())
    del spec["additional_stores"]["labels"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="labels"):
        read_store_spec(path)


def test_shipped_examples_are_valid():
    from alcampaign.md.config import load_md_config

    from conftest import EXAMPLES

    for path in sorted(EXAMPLES.glob("*.yaml")):
        # On-the-fly MD configs (alcampaign md) have their own schema.
        cfg = load_md_config(path) if "otf_md" in path.name else load_config(path)
        assert cfg.system.structure.is_file(), path


def test_rule_and_fidelity_consistency(write_config):
    with pytest.raises(ConfigError, match=r"oracle\.cheap"):
        load_config(write_config(small_config_dict(acquisition={"rule": "cost_aware"})))
    cheap = {"maker": "a.B", "fidelity": "emt"}
    with pytest.raises(ConfigError, match="only used by"):
        load_config(
            write_config(
                small_config_dict(oracle={"maker": "a.B", "fidelity": "x", "cheap": cheap})
            )
        )
    with pytest.raises(ConfigError, match="prescreen"):
        load_config(write_config(small_config_dict(features={"kind": "chgnet_embedding"})))


def test_set_overrides_fields_before_validation(write_config):
    path = write_config(small_config_dict())
    cfg = load_config(
        path,
        overrides=[
            "enumeration.max_size=2",
            "features.cutoffs=[4.0, 3.0]",
            "prescreen.enabled=true",
            "surrogate.n_members=4",  # a section the file does not have
        ],
    )
    assert cfg.enumeration.max_size == 2 and cfg.features.cutoffs == [4.0, 3.0]
    assert cfg.prescreen.enabled is True and cfg.surrogate.n_members == 4
    assert cfg.name == "test-cuau" and cfg.stopping.max_oracle_calls == 10  # the rest kept


@pytest.mark.parametrize(
    "override, message",
    [
        ("enumeration.max_size", "expected FIELD=VALUE"),
        ("=3", "expected FIELD=VALUE"),
        ("enumeration..max_size=3", "expected FIELD=VALUE"),
        ("features.cutoffs=[1, 2", "not valid YAML"),
        ("name.first=x", "name is not a mapping"),
        ("enumeration.maxsize=4", "enumeration.maxsize"),  # pydantic names the field
        ("stopping.max_oracle_calls=-1", "stopping.max_oracle_calls"),
    ],
)
def test_bad_set_is_a_config_error_naming_it(write_config, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(write_config(small_config_dict()), overrides=[override])


def test_cheap_energy_on_needs_the_prescreen(write_config):
    bad = small_config_dict(surrogate={"cheap_energy": "on"}, prescreen={"enabled": False})
    with pytest.raises(ConfigError, match="cheap_energy on needs prescreen"):
        load_config(write_config(bad))
    cfg = load_config(write_config(small_config_dict()))
    assert (cfg.surrogate.prior, cfg.surrogate.basis, cfg.surrogate.cheap_energy) == (
        "hierarchical", "evidence", "auto"
    )
    assert not cfg.surrogate.classic
    with pytest.raises(ConfigError, match=r"surrogate\.alpha"):
        load_config(write_config(small_config_dict(surrogate={"alpha": 2.0})))
    classic = {"alpha": 2.0, "prior": "isotropic", "basis": "fixed", "cheap_energy": "off"}
    assert load_config(write_config(small_config_dict(surrogate=classic))).surrogate.classic
