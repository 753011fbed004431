"""Prometheus in the local stack: its target files, its config, and that it is optional."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickforge.platform.settings import Settings
from tickforge.platform.stack import LocalStack, StackError
from tickforge.platform.stack.prometheus import (
    find_binary,
    read_targets,
    render_config,
    targets_dir,
    write_targets,
)


def test_targets_are_rewritten_only_when_they_change(tmp_path: Path) -> None:
    assert write_targets(tmp_path, {"bar-worker": 40001, "bar-store": 40002})
    path = targets_dir(tmp_path) / "workers.json"
    written = path.stat().st_mtime_ns
    assert not write_targets(tmp_path, {"bar-store": 40002, "bar-worker": 40001})
    assert path.stat().st_mtime_ns == written
    groups = json.loads(path.read_text())
    assert groups[0] == {"targets": ["127.0.0.1:40002"], "labels": {"service": "bar-store", "instance": "bar-store"}}
    assert write_targets(tmp_path, {"bar-worker": 40003})  # restarted on a new port, the store stopped
    assert read_targets(tmp_path) == {"bar-worker": 40003}
    assert [p.name for p in targets_dir(tmp_path).iterdir()] == ["workers.json"]  # no temp file left


def test_an_impossible_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a TCP port"):
        write_targets(tmp_path, {"bar-worker": 0})
    assert read_targets(tmp_path) == {}


def test_config_scrapes_the_target_files(tmp_path: Path) -> None:
    config = json.loads(render_config(port=9090, targets=tmp_path, scrape_interval_s=2))
    job = config["scrape_configs"][0]
    assert job["job_name"] == "tickforge"
    assert job["file_sd_configs"][0]["files"] == [f"{tmp_path}/*.json"]
    assert config["global"]["scrape_interval"] == "2s"


def test_binary_from_the_environment_or_a_hint(tmp_path: Path) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_binary({"TICKFORGE_PROMETHEUS_BIN": str(fake)}) == fake
    assert find_binary({"PATH": str(tmp_path)}, debian_binary=tmp_path / "absent") == fake
    fake.chmod(0o644)  # not executable: not a candidate
    with pytest.raises(StackError, match="apt-get install prometheus"):
        find_binary({"TICKFORGE_PROMETHEUS_BIN": str(fake), "PATH": str(tmp_path)}, debian_binary=tmp_path / "absent")
    assert find_binary({"PATH": str(tmp_path)}) == Path("/usr/bin/prometheus")  # the package's place


def test_prometheus_is_part_of_the_stack_only_when_asked(tmp_path: Path) -> None:
    plain = LocalStack(state_dir=tmp_path, settings=Settings())
    assert "prometheus" not in plain._select(None)
    assert "prometheus" not in plain.status()
    assert plain._select(["prometheus"]) == ["prometheus"]
    watched = LocalStack(state_dir=tmp_path, settings=Settings(), with_prometheus=True)
    assert watched._select(None)[-1] == "prometheus"
    assert watched.status()["prometheus"]["running"] is False
