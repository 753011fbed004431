"""What the dbt step hands to dbt: the Snowflake resource's endpoint as the variables
dbt_marts/profiles.yml reads, and the target (no services)."""

from __future__ import annotations

import os

import pytest

from tickforge.defs.dbt.assets import environment, profile_env
from tickforge.defs.snowflake.resources import snowflake_resource
from tickforge.platform.settings import Settings


@pytest.fixture(autouse=True)
def no_snowflake_env(monkeypatch):
    """Settings from the arguments only, whatever the shell exports."""
    for key in [k for k in os.environ if k.startswith("TICKFORGE_SNOWFLAKE__") or k == "TICKFORGE_DBT_TARGET"]:
        monkeypatch.delenv(key)


def _resource(**snowflake):
    return snowflake_resource(Settings(snowflake=snowflake), env_secrets=False)


def test_the_local_endpoint_is_the_local_target():
    env = profile_env(_resource(host="127.0.0.1", port=18765, protocol="http", database="TF_X", password="pw"))
    assert env == {
        "TICKFORGE_SNOWFLAKE__ACCOUNT": "fakesnow",
        "TICKFORGE_SNOWFLAKE__USER": "fake",
        "TICKFORGE_SNOWFLAKE__PASSWORD": "pw",
        "TICKFORGE_SNOWFLAKE__DATABASE": "TF_X",
        "TICKFORGE_SNOWFLAKE__HOST": "127.0.0.1",
        "TICKFORGE_SNOWFLAKE__PORT": "18765",
        "TICKFORGE_SNOWFLAKE__PROTOCOL": "http",
        "TICKFORGE_DBT_TARGET": "local",
    }


def test_an_account_is_prod_unless_the_target_is_set(monkeypatch):
    account = _resource(account="xy12345.eu-west-1", user="loader", warehouse="WH", role="LOADER")
    env = profile_env(account)
    assert env["TICKFORGE_DBT_TARGET"] == "prod" and env["TICKFORGE_SNOWFLAKE__WAREHOUSE"] == "WH"
    assert not any(key.endswith(("__HOST", "__PORT", "__PROTOCOL")) for key in env)
    monkeypatch.setenv("TICKFORGE_DBT_TARGET", "local")
    assert profile_env(account)["TICKFORGE_DBT_TARGET"] == "local"


def test_environment_restores_what_was_there(monkeypatch):
    monkeypatch.setenv("TICKFORGE_SNOWFLAKE__DATABASE", "BEFORE")
    with environment({"TICKFORGE_SNOWFLAKE__DATABASE": "DURING", "TICKFORGE_SNOWFLAKE__HOST": "127.0.0.1"}):
        assert os.environ["TICKFORGE_SNOWFLAKE__DATABASE"] == "DURING"
        assert os.environ["TICKFORGE_SNOWFLAKE__HOST"] == "127.0.0.1"
    assert os.environ["TICKFORGE_SNOWFLAKE__DATABASE"] == "BEFORE" and "TICKFORGE_SNOWFLAKE__HOST" not in os.environ
