"""Test harness: the real local stack, started once per session, with per-test isolation.

Integration tests get a ``settings`` object pointing at the stack with their own topic prefix and
PostgreSQL schema, so tests never see each other's data. A stack already running in the test
state folder (``.tickforge/test-stack``) is reused and left running; one this session started is
stopped at the end.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import pytest

from tickforge.platform.data_sets import SAMPLES_DIR, shared_data_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def samples() -> Path:
    """The compact real samples the repository ships (data/samples, cut by its script)."""
    return SAMPLES_DIR


@pytest.fixture
def shared_data(request: pytest.FixtureRequest) -> Path:
    """The full five-day shared files, for tests marked ``full_data`` only. `make test` deselects
    those tests where the files are absent; asked for and absent, they fail rather than skip."""
    if request.node.get_closest_marker("full_data") is None:
        pytest.fail(f"{request.node.nodeid} reads the full shared files: mark it full_data or use `samples`")
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.fail(
            f"the full shared market data is missing at {folder} (set TICKFORGE_SHARED_DATA, "
            f"or deselect these tests with -m 'not full_data' as `make test` does)"
        )
    return folder


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """TICKFORGE_* variables of a running local stack (Kafka, PostgreSQL, S3, Snowflake)."""
    from tickforge.platform.stack.launcher import LocalStack, endpoints_env

    state_dir = Path(os.environ.get("TICKFORGE_TEST_STATE_DIR", REPO / ".tickforge" / "test-stack"))
    stack = LocalStack(state_dir=state_dir)
    before = stack.status()
    already_running = all(svc.get("running") for svc in before.values()) if before else False
    # Concurrent test sessions share the stack: each registers itself, and the last one out
    # stops a stack that a test session started (a developer's running stack is left alone).
    users = state_dir / "test-sessions"
    users.mkdir(parents=True, exist_ok=True)
    me = users / str(os.getpid())
    me.touch()
    status = stack.up()
    if not already_running and not (state_dir / "started-by-tests").exists():
        (state_dir / "started-by-tests").touch()
    yield endpoints_env(status)
    me.unlink(missing_ok=True)
    others = [p for p in users.iterdir() if _pid_alive(int(p.name))]
    if not others and (state_dir / "started-by-tests").exists():
        stack.down()
        (state_dir / "started-by-tests").unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture()
def settings(stack_env, monkeypatch, tmp_path):
    """Settings on the local stack, isolated: own topic prefix, own PostgreSQL schema."""
    from tickforge.platform.io.kafka import apply_topics
    from tickforge.platform.settings import Settings

    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("TICKFORGE_KAFKA__TOPIC_PREFIX", f"t{tag}.")
    monkeypatch.setenv("TICKFORGE_POSTGRES__SCHEMA_NAME", f"t{tag}")
    monkeypatch.setenv("TICKFORGE_STREAMING__IDLE_TIMEOUT_MS", "1500")
    monkeypatch.setenv("TICKFORGE_STATE_DIR", str(tmp_path / "state"))
    s = Settings()
    apply_topics(s)
    yield s
    _delete_topics(s)


def _delete_topics(settings) -> None:
    """The test's topics go when it ends: a shared stack that kept every test's topics holds
    thousands of partitions after a few sessions, and its broker then takes minutes to start."""
    from confluent_kafka.admin import AdminClient

    from tickforge.platform.io.kafka import client_config

    prefix = settings.kafka.topic_prefix
    try:
        admin = AdminClient(client_config(settings))
        mine = [name for name in admin.list_topics(timeout=10).topics if name.startswith(prefix)]
        if mine:
            for future in admin.delete_topics(mine, request_timeout=30).values():
                future.result(30)
    except Exception as exc:  # a broker a test took away is not the test's failure
        warnings.warn(f"topics {prefix}* not deleted: {exc}", stacklevel=1)


WORKER_LOG_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that ran workers shows the end of their logs: a flake on a loaded CI machine
    is then explained by what the worker said (an aborted transaction, a rebalance), not guessed."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if not isinstance(tmp_path, Path):
        return
    for log in sorted(tmp_path.rglob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        if lines:
            report.sections.append((f"worker log {log.name}", "\n".join(lines[-WORKER_LOG_LINES:])))
