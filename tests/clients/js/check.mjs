// DataStax's Langflow JavaScript client, unchanged, pointed at keygate in
// front of the stand-in Langflow. Started by the Rust test module
// `clients` with KEYGATE_URL, KEYGATE_KEY, KEYGATE_FLOW (keygate's flow
// id) and KEYGATE_ENDPOINT (the flow's endpoint name); exits non-zero on
// the first failed check.
import assert from 'node:assert/strict';
import { LangflowClient } from '@datastax/langflow-client';
import { LangflowError } from '@datastax/langflow-client/errors';

const baseUrl = process.env.KEYGATE_URL;
const apiKey = process.env.KEYGATE_KEY;
const flowId = process.env.KEYGATE_FLOW;
const endpoint = process.env.KEYGATE_ENDPOINT;
assert.ok(baseUrl && apiKey && flowId && endpoint, 'KEYGATE_* variables missing');

const client = new LangflowClient({ baseUrl, apiKey });
const flow = client.flow(flowId);

// run(): the chat text, Langflow's default session id (keygate's flow id).
const answer = await flow.run('hello from js');
assert.equal(answer.chatOutputText(), 'echo: hello from js');
assert.equal(answer.sessionId, flowId);

// A session id passes through; the endpoint name works as the id.
const named = await client.flow(endpoint).run('by name', { session_id: 'js-session' });
assert.equal(named.sessionId, 'js-session');
assert.equal(named.chatOutputText(), 'echo: by name');

// stream(): NDJSON events, tokens, ending with `end`.
const events = [];
for await (const event of await flow.stream('one two three')) {
  events.push(event);
}
assert.equal(events[0].event, 'add_message');
assert.equal(events.at(-1).event, 'end');
const tokens = events.filter((e) => e.event === 'token').map((e) => e.data.chunk).join('');
assert.equal(tokens, 'echo: one two three');
assert.equal(events.at(-1).data.result.session_id, flowId);

// uploadFile(): keygate's flow id and a path under it, which a run's
// tweak then names.
const file = new File(['words in a js file'], 'js-notes.txt', { type: 'text/plain' });
const upload = await flow.uploadFile(file);
assert.equal(upload.flowId, flowId);
assert.ok(upload.filePath.startsWith(`${flowId}/`), upload.filePath);
assert.ok(upload.filePath.endsWith('_js-notes.txt'), upload.filePath);
const withFile = await flow
  .tweak('File-1', { path: upload.filePath })
  .run('what does it say?');
assert.equal(
  withFile.chatOutputText(),
  `echo: what does it say? | ${upload.filePath}: words in a js file`,
);

// A wrong key is refused (401), for a run and for an upload.
const wrong = new LangflowClient({ baseUrl, apiKey: `sk-${'A'.repeat(43)}` });
for (const call of [
  () => wrong.flow(flowId).run('x'),
  () => wrong.flow(flowId).uploadFile(new Blob(['x'])),
]) {
  await assert.rejects(call, (error) => {
    assert.ok(error instanceof LangflowError, String(error));
    assert.equal(error.cause.status, 401);
    return true;
  });
}
console.log(JSON.stringify({ ok: true, events: events.length, filePath: upload.filePath }));
