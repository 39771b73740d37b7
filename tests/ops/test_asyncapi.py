"""docs/asyncapi.yaml is generated from the code and covers every topic and event type."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.common import asyncapi
from services.common.config import TopicSettings
from services.common.events import EVENT_SPECS
from services.common.topics import TOPIC_SPECS

DOC = yaml.safe_load(asyncapi.ASYNCAPI_FILE.read_text(encoding="utf-8"))


def test_asyncapi_document_is_up_to_date():
    assert not asyncapi.is_stale(), "docs/asyncapi.yaml is stale: run `python -m services.common.asyncapi`"


def test_check_mode_reports_a_stale_file(tmp_path: Path):
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text("asyncapi: 3.0.0\n", encoding="utf-8")
    assert asyncapi.main(["--check", "--output", str(stale)]) == 1
    assert asyncapi.main(["--output", str(stale)]) == 0
    assert asyncapi.main(["--check", "--output", str(stale)]) == 0


def test_every_topic_is_a_channel_at_its_default_address():
    addresses = {channel["address"] for channel in DOC["channels"].values()}
    assert addresses == {TopicSettings.model_fields[t.key].default for t in TOPIC_SPECS}


def test_every_event_type_is_a_message_on_its_topics_channel():
    for spec in EVENT_SPECS.values():
        channel = DOC["channels"][asyncapi.channel_id(spec.topic)]
        message_ref = channel["messages"][asyncapi.message_id(spec)]["$ref"]
        message = DOC["components"]["messages"][message_ref.rsplit("/", 1)[1]]
        assert message["name"] == spec.type


def test_payload_refs_point_at_committed_json_schemas():
    for message in DOC["components"]["messages"].values():
        target = (asyncapi.ASYNCAPI_FILE.parent / message["payload"]["$ref"]).resolve()
        assert target.is_file(), f"{message['name']}: {target} does not exist"


def test_operations_reference_existing_channels_and_their_messages():
    assert DOC["asyncapi"].startswith("3.")
    for name, operation in DOC["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel_key = operation["channel"]["$ref"].removeprefix("#/channels/")
        channel = DOC["channels"][channel_key]
        for ref in operation["messages"]:
            prefix = f"#/channels/{channel_key}/messages/"
            assert ref["$ref"].startswith(prefix) and ref["$ref"].removeprefix(prefix) in channel["messages"]
