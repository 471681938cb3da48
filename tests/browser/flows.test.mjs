// Flows page: create, see the curl commands (and run one), edit, delete.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, startUpstream, launchBrowser, newPage, signIn, apiLogin, apiCall,
} from './harness.mjs';

let keygate;
let upstream;
let browser;

before(async () => {
  upstream = await startUpstream();
  keygate = await startKeygate();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await keygate?.stop();
  await upstream?.stop();
});

test('create a flow, run it with its curl command, edit it, delete it', async () => {
  const token = await apiLogin(keygate.base);
  const stored = await apiCall(keygate.base, 'PUT', '/api/v1/providers/generic', {
    token, body: { secret_key: 'upstream-secret-0123456789abcdef' },
  });
  assert.equal(stored.status, 200);

  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Flows' }).click();
  await page.getByText('No flows yet').waitFor();

  await page.getByRole('button', { name: 'New flow' }).click();
  await page.getByLabel('Name', { exact: true }).fill('Support bot');
  await page.getByLabel('Endpoint name (optional)').fill('support-bot');
  await page.getByLabel('Upstream URL').fill(`${upstream.url}/api/v1/run/abc`);
  await page.getByLabel('Credential', { exact: true }).selectOption({ label: 'Generic credential' });
  await page.getByLabel('Inject it as').selectOption('header');
  await page.getByLabel('Header name').fill('X-Upstream-Key');
  await page.getByRole('button', { name: 'Create flow' }).click();

  const card = page.locator('article.flow', { hasText: 'Support bot' });
  await card.waitFor();
  const target = `${keygate.base}/api/v1/run/support-bot`;
  const headerForm = await card.getByLabel('With the x-api-key header', { exact: true }).innerText();
  const queryForm = await card.getByLabel('With the x-api-key query parameter', { exact: true }).innerText();
  assert.ok(headerForm.includes(`curl -X POST "${target}"`), headerForm);
  assert.ok(headerForm.includes('-H "x-api-key: $KEYGATE_API_KEY"'), headerForm);
  assert.ok(queryForm.includes(`"${target}?x-api-key=$KEYGATE_API_KEY"`), queryForm);
  await card.getByText('generic provider credential, in header x-upstream-key').waitFor();

  // The command works as shown, with a real key in place of the placeholder.
  const key = (await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { token, body: { name: 'runner' } })).body.api_key;
  const bodyText = headerForm.match(/-d '(.*)'/)[1];
  const run = await fetch(target, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key },
    body: bodyText,
  });
  assert.equal(run.status, 200);
  const answer = await run.json();
  assert.equal(answer.outputs[0].echo.inputs.input_value, 'Hello');
  const seen = upstream.runs.at(-1);
  assert.equal(seen.headers['x-upstream-key'], 'upstream-secret-0123456789abcdef');
  assert.equal(seen.headers['x-api-key'], undefined, 'the caller\'s key reached the upstream');
  const byQuery = await fetch(`${target}?x-api-key=${key}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: bodyText,
  });
  assert.equal(byQuery.status, 200);

  // A key bound to the flow, made on the keys page, runs it and nothing else.
  await page.getByRole('link', { name: 'API keys' }).click();
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByLabel('Name', { exact: true }).fill('bound to support');
  await page.getByLabel('Bound to flow (optional)').selectOption({ label: 'Support bot' });
  await page.getByRole('button', { name: 'Create API key' }).click();
  const bound = await page.getByLabel('New API key').inputValue();
  await page.locator('tr', { hasText: 'bound to support' }).locator('td[data-label="Access"] li.flow', { hasText: 'Support bot' }).waitFor();
  const boundRun = await fetch(target, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': bound }, body: bodyText,
  });
  assert.equal(boundRun.status, 200);
  const boundList = await apiCall(keygate.base, 'GET', '/api/v1/api_key/', { key: bound });
  assert.equal(boundList.status, 403);
  await page.getByRole('button', { name: 'I have copied it' }).click();
  await page.getByRole('link', { name: 'Flows' }).click();

  // Edit.
  await page.getByRole('button', { name: 'Edit Support bot' }).click();
  await page.getByLabel('Name', { exact: true }).fill('Support bot v2');
  await page.getByRole('button', { name: 'Save flow' }).click();
  await page.getByRole('heading', { name: 'Support bot v2' }).waitFor();

  // A duplicate endpoint name is refused in words.
  await page.getByRole('button', { name: 'New flow' }).click();
  await page.getByLabel('Name', { exact: true }).fill('Clone');
  await page.getByLabel('Endpoint name (optional)').fill('support-bot');
  await page.getByRole('button', { name: 'Create flow' }).click();
  await page.getByRole('alert').filter({ hasText: 'endpoint name "support-bot"' }).waitFor();
  await page.getByRole('button', { name: 'Cancel' }).click();

  // Delete with a confirmation.
  await page.getByRole('button', { name: 'Delete Support bot v2' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete flow' }).click();
  await page.getByText('No flows yet').waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
