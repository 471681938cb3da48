// Flows page with a flow whose upstream is a Langflow server (set through
// the API, as Langflow's clients and scripts do): the card names the
// server and Langflow's flow id, and saving the flow in the form keeps
// that upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startKeygate, launchBrowser, newPage, signIn, apiLogin, apiCall } from './harness.mjs';

let keygate;
let browser;

before(async () => {
  keygate = await startKeygate();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await keygate?.stop();
});

test('a Langflow upstream is shown and survives an edit in the form', async () => {
  const token = await apiLogin(keygate.base);
  const langflowId = '3c5e9a1e-0b7d-4c52-9e11-6f0a2d4b8c73';
  const created = await apiCall(keygate.base, 'POST', '/api/v1/flows/', {
    token,
    body: {
      name: 'Langflow chat',
      upstream: {
        langflow: { url: 'http://127.0.0.1:7861', flow_id: langflowId },
        credential: { provider: 'generic' },
      },
    },
  });
  assert.equal(created.status, 201);
  const upstream = created.body.upstream;

  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Flows' }).click();
  const card = page.locator('article.flow', { hasText: 'Langflow chat' });
  await card.getByText(`Langflow http://127.0.0.1:7861, flow ${langflowId}`).waitFor();
  await card.getByText('generic provider credential, in header x-api-key').waitFor();

  await card.getByRole('button', { name: 'Edit Langflow chat' }).click();
  await page.getByLabel('Name', { exact: true }).fill('Langflow chat, renamed');
  await page.getByRole('button', { name: 'Save flow' }).click();
  await page.locator('article.flow', { hasText: 'Langflow chat, renamed' }).waitFor();

  const read = await apiCall(keygate.base, 'GET', `/api/v1/flows/${created.body.id}`, { token });
  assert.equal(read.body.name, 'Langflow chat, renamed');
  assert.deepEqual(read.body.upstream, upstream);
});
