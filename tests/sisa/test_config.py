import pytest

from sisa.config import ConfigError, build_config, load_config, parse_assignments


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_toml_then_env_then_cli(tmp_path):
    path = write(tmp_path, "[sisa]\nshards = 3\nslices = 2\n[model]\nhidden = [16]\n")
    cfg = load_config(path, environ={})
    assert (cfg.sisa.shards, cfg.sisa.slices, cfg.model.hidden) == (3, 2, (16,))
    cfg = load_config(path, environ={"SISA_SISA__SHARDS": "7", "SISA_MODEL__HIDDEN": "[8, 4]"})
    assert cfg.sisa.shards == 7 and cfg.model.hidden == (8, 4)
    cfg = load_config(
        path, environ={"SISA_SISA__SHARDS": "7"}, overrides=parse_assignments(["sisa.shards=9"])
    )
    assert cfg.sisa.shards == 9


@pytest.mark.parametrize(
    "text, field",
    [
        ("[sisa]\nshardz = 3\n", "sisa.shardz"),
        ("[sisa]\nshards = 0\n", "sisa.shards"),
        ("[sisa]\nsharding = 'random'\n", "sisa.sharding"),
        ("[sisa]\naggregation = 'max'\n", "sisa.aggregation"),
        ("[optim]\nname = 'rmsprop'\n", "optim.name"),
        ("[optim]\nlr = -1\n", "optim.lr"),
        ("[data]\ntest_fraction = 1.5\n", "data.test_fraction"),
        ("[model]\nname = 'vgg'\n", "model.name"),
        ("[resources]\nnum_gpus = -0.5\n", "resources.num_gpus"),
        ("[resources]\ndevice = 'tpu'\n", "resources.device"),
        ("[extra]\nx = 1\n", "extra"),
        ("[sisa]\ndeletion_risk = 'often'\n", "sisa.deletion_risk"),
        ("[sisa]\ndeletion_risk = 'a:b:c'\n", "sisa.deletion_risk"),
        ("[sisa]\nrisk_threshold = 0\n", "sisa.risk_threshold"),
        ("[sisa]\nrisk_threshold = 1.5\n", "sisa.risk_threshold"),
        ("[sisa]\nrisky_shard_fraction = 1\n", "sisa.risky_shard_fraction"),
        ("[sisa]\nrisky_slice_fraction = 0\n", "sisa.risky_slice_fraction"),
    ],
)
def test_bad_values_name_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(write(tmp_path, text), environ={})


def test_env_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"sisa\.epochs"):
        load_config(environ={"SISA_SISA__EPOCHS": "lots"})


def test_bad_files_and_assignments(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[sisa\n"), environ={})
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_assignments(["shards"])
    with pytest.raises(ConfigError, match="section.key"):
        load_config(environ={}, overrides={"shards": 3})


def test_training_hash_ignores_scheduling_resources():
    a = load_config(environ={})
    b = load_config(environ={}, overrides={"resources.num_cpus": 2, "resources.num_gpus": 0.5})
    c = load_config(environ={}, overrides={"optim.lr": 0.01})
    assert a.training_hash() == b.training_hash() != c.training_hash()


def test_risk_settings_enter_the_training_hash_only_when_risk_is_used():
    base = load_config(environ={})
    idle = load_config(environ={}, overrides={"sisa.risk_threshold": 0.9})
    assert base.training_hash() == idle.training_hash()  # placement ignores them
    on = load_config(environ={}, overrides={"sisa.deletion_risk": "column"})
    tuned = load_config(
        environ={}, overrides={"sisa.deletion_risk": "column", "sisa.risk_threshold": 0.9}
    )
    assert len({base.training_hash(), on.training_hash(), tuned.training_hash()}) == 3
    assert on.sisa.deletion_risk == "column"
    assert load_config(environ={"SISA_SISA__DELETION_RISK": "pkg.mod:fn"}).sisa.deletion_risk == (
        "pkg.mod:fn"
    )


def test_shipped_examples_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("digits.toml", "purchase.toml"):
        load_config(root / name, environ={})


def test_serving_token_is_secret_raw_and_never_stored(tmp_path):
    from sisa.store.artifacts import SisaStore
    from sisa.training.train import train
    from tests.conftest import tiny_config

    token = "1979-05-27" + "0" * 10  # would parse as a TOML date+number, must stay text
    cfg = load_config(environ={"SISA_SERVING__TOKEN": token, "SISA_SERVING__PORT": "8123"})
    assert cfg.serving.token.get_secret_value() == token and cfg.serving.port == 8123
    assert token not in repr(cfg) and "serving" not in cfg.stored()
    assert cfg.training_hash() == load_config(environ={}).training_hash()
    cli = load_config(environ={}, overrides=parse_assignments([f"serving.token={token}"]))
    assert cli.serving.token.get_secret_value() == token

    url = str(tmp_path / "s")
    stored = tiny_config(**{"serving.token": token, "sisa.slices": 1, "sisa.epochs": 1})
    train(stored, url)
    assert token not in "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.json"))
    assert SisaStore(url).config().serving.token is None


@pytest.mark.parametrize(
    "token", ["short", "0123456789abcde", "0123456789abcdef\u00e9", "a b c d e f g h i"]
)
def test_weak_tokens_are_refused_without_echoing_them(token):
    with pytest.raises(ConfigError) as err:
        load_config(environ={"SISA_SERVING__TOKEN": token})
    assert "serving.token: " in str(err.value)
    assert token not in str(err.value)


# The training hashes of configs as stores recorded them before any later field existed.
# A new config field must keep them (list it in its section's LATER_FIELDS), or every store
# trained before it would look trained under another config.
RECORDED_HASHES = {
    "default": "5867f9a5bdc5b42ef486ad88b234c97f9fc99e97f96c6d45381d95aa2563f8d9",
    "tiny": "3e421cb0be8a5fa5d79ff75e6137fd8af0523e84dbd313240ae05fea715b51a6",
    "risk": "67dbfb2bf95d30170a5e4a2976bdb29398161f0ce264a6ce73bf0a83227c45e1",
}


def test_training_hashes_of_existing_configs_never_change(tiny):
    from sisa.config import Config

    assert Config().training_hash() == RECORDED_HASHES["default"]
    assert tiny().training_hash() == RECORDED_HASHES["tiny"]
    risk = build_config({"sisa": {"deletion_risk": "column"}})
    assert risk.training_hash() == RECORDED_HASHES["risk"]


def test_a_later_field_enters_the_hash_only_when_set(monkeypatch):
    from sisa.config import OptimConfig

    monkeypatch.setattr(OptimConfig, "LATER_FIELDS", frozenset({"weight_decay"}))
    assert build_config({}).training_hash() != RECORDED_HASHES["default"]  # now left out
    changed = build_config({"optim": {"weight_decay": 0.01}}).training_hash()
    assert changed != build_config({}).training_hash()
