"""``tickforge risk halt | reduce | resume`` on the local stack's Kafka: the commands land on the
compacted ``trading.control`` topic, a reader that starts later ends at the state in force, a
malformed message is refused and changes nothing, and ``risk status`` reports it."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from tickforge.cli import app
from tickforge.platform.io.kafka import topic_name
from tickforge.platform.topics import TRADING_CONTROL
from tickforge.streaming.trading_control import CONTROL_PARTITION, ControlReader
from tickforge.trading.control import ControlAction

pytestmark = pytest.mark.integration


def _cli(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_commands_by_hand_reach_every_reader(settings):
    topic = topic_name(settings, TRADING_CONTROL)
    resource = ConfigResource("topic", topic)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["cleanup.policy"].value == "compact"

    assert _cli("risk", "status", "--account", "paper")["state"] == "ACTIVE"  # nothing said yet
    halted = _cli("risk", "halt", "--reason", "broker outage", "--operator", "alice")
    assert halted["state"] == "HALTED" and halted["partition"] == CONTROL_PARTITION

    reader = ControlReader(settings, "paper")  # a risk instance starting now
    try:
        seen = reader.catch_up()
        assert [c.action for c in seen] == [ControlAction.HALT]
        assert reader.in_force().operator == "alice" and reader.in_force().reason == "broker outage"

        _cli("risk", "reduce", "--reason", "paper book only", "--operator", "bob", "--scope", "paper")
        # a message that is not a command: refused, nothing changes
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
        producer.produce(topic, b'{"action": "pause"}', b"all", partition=CONTROL_PARTITION)
        producer.flush(10)
        polled = []
        for _ in range(50):
            polled += reader.poll(0.2)
            if reader.refused:
                break
        assert [c.action for c in polled] == [ControlAction.REDUCE] and reader.refused == 1
        assert reader.in_force().action is ControlAction.REDUCE
        assert reader.state.in_force("live").action is ControlAction.HALT  # another account keeps 'all'
    finally:
        reader.close()

    status = _cli("risk", "status", "--account", "paper")
    assert status["state"] == "REDUCING" and status["refused_messages"] == 1 and status["command"]["operator"] == "bob"
    _cli("risk", "resume", "--reason", "clear", "--operator", "alice")
    assert _cli("risk", "status", "--account", "paper")["state"] == "ACTIVE"


def test_a_bad_command_line_is_a_clear_error(settings):
    result = CliRunner().invoke(app, ["risk", "halt", "--reason", "   "])
    assert result.exit_code == 2 and "reason must be a non-empty text" in result.output
