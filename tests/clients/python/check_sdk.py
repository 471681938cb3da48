"""Langflow's Python SDK (langflow-sdk), unchanged, pointed at keygate in
front of the stand-in Langflow. Started by the Rust test module `clients`
with KEYGATE_URL, KEYGATE_KEY, KEYGATE_FLOW (keygate's flow id) and
KEYGATE_ENDPOINT (its endpoint name); exits non-zero on the first failed
check."""

import json
import os

from langflow_sdk import Client
from langflow_sdk.exceptions import LangflowAuthError, LangflowNotFoundError
from langflow_sdk.models import FlowCreate, FlowUpdate

base = os.environ["KEYGATE_URL"]
key = os.environ["KEYGATE_KEY"]
flow_id = os.environ["KEYGATE_FLOW"]
endpoint = os.environ["KEYGATE_ENDPOINT"]

client = Client(base, api_key=key)

# Flows with Langflow's own model: create, read, update, list, delete.
created = client.create_flow(
    FlowCreate(
        name="made by the sdk",
        description="through keygate",
        data={"nodes": [], "edges": []},
        endpoint_name="sdk-made",
        tags=["sdk", "keygate"],
        icon="bot",
        icon_bg_color="#00FF00",
        mcp_enabled=True,
    )
)
assert created.name == "made by the sdk", created
assert created.tags == ["sdk", "keygate"], created.tags
assert created.icon_bg_color == "#00FF00"
assert created.mcp_enabled is True and created.locked is False
assert created.access_type == "PRIVATE"
assert created.user_id is not None and created.updated_at is not None
assert client.get_flow(created.id) == created

updated = client.update_flow(created.id, FlowUpdate(locked=True, tags=["changed"]))
assert updated.locked is True and updated.tags == ["changed"], updated
assert updated.mcp_enabled is True

listed = client.list_flows(get_all=True)
assert {str(created.id), flow_id} <= {str(f.id) for f in listed}, listed

client.delete_flow(created.id)
try:
    client.get_flow(created.id)
    raise AssertionError("a deleted flow was found")
except LangflowNotFoundError:
    pass

# upsert_flow(): PUT creates the flow under the caller's id (201), then
# replaces it (200), keeping the id.
import uuid

stable = uuid.uuid4()
made, was_created = client.upsert_flow(stable, FlowCreate(name="upserted", endpoint_name="sdk-upsert"))
assert was_created is True and str(made.id) == str(stable), made
again, was_created = client.upsert_flow(stable, FlowCreate(name="upserted again", tags=["v2"]))
assert was_created is False and str(again.id) == str(stable), again
assert again.name == "upserted again" and again.tags == ["v2"] and again.endpoint_name is None, again
client.delete_flow(stable)

# run(): the chat text and Langflow's default session id (keygate's id).
answer = client.run(flow_id, "hello from python")
assert answer.first_text_output() == "echo: hello from python", answer
assert answer.session_id == flow_id, answer.session_id
assert client.run(endpoint, "by name").first_text_output() == "echo: by name"

# stream(): events ending with `end`, whose result is the run's.
chunks = list(client.stream(flow_id, "one two three"))
assert chunks and chunks[-1].is_end, [c.event for c in chunks]
assert "".join(c.text for c in chunks if c.is_token) == "echo: one two three"
final = chunks[-1].final_response()
assert final.first_text_output() == "echo: one two three"
assert final.session_id == flow_id

# A wrong key is refused.
wrong = Client(base, api_key="sk-" + "A" * 43)
for call in (lambda: wrong.run(flow_id, "x"), lambda: wrong.list_flows(get_all=True)):
    try:
        call()
        raise AssertionError("a wrong key was accepted")
    except LangflowAuthError as error:
        assert error.status_code == 401, error

print(json.dumps({"ok": True, "chunks": len(chunks)}))
