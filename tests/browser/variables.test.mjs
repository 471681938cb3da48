// Variables and what flows need (issue 13, item 3), errors in plain words
// that fit a phone (item 5), and copying without a secure context (item 8).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, startUpstream, launchBrowser, newPage, signIn, apiLogin, apiCall, horizontalOverflow,
  PHONE,
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

async function newFlow(page, name, choose) {
  await page.getByRole('button', { name: 'New flow' }).click();
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Endpoint name (optional)').fill(name);
  await page.getByLabel('Upstream URL').fill(`${upstream.url}/api/v1/run/${name}`);
  await choose();
  await page.getByRole('button', { name: 'Create flow' }).click();
  await page.locator('article.flow', { hasText: name }).waitFor();
}

test('3: a flow naming a missing credential or variable warns with a link to add it; the Variables page adds it', async () => {
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Flows' }).click();
  await page.getByText('No flows yet').waitFor();

  // A Langfuse credential never stored.
  const saved = page.waitForResponse((r) => r.url().endsWith('/api/v1/flows/') && r.request().method() === 'POST');
  await newFlow(page, 'traced', async () => {
    await page.getByLabel('Credential', { exact: true }).selectOption({ label: 'Langfuse credential (not stored yet)' });
  });
  assert.equal((await (await saved).json()).warnings[0].code, 'credential_missing');
  const warned = page.locator('#flow-warnings [role="alert"]');
  await warned.filter({ hasText: 'You have no langfuse provider credential stored' }).waitFor();
  await warned.getByRole('link', { name: 'Add the Langfuse credential' }).waitFor();
  const traced = page.locator('article.flow', { hasText: 'traced' });
  await traced.getByText('Runs fail: you have no Langfuse credential stored.').waitFor();

  // A Credential variable that does not exist.
  await newFlow(page, 'secretive', async () => {
    await page.getByLabel('Credential', { exact: true }).selectOption({ label: 'A Credential variable' });
    await page.getByLabel('Variable name').fill('NO_SUCH_VAR');
    await page.getByLabel('Inject it as').selectOption('header');
    await page.getByLabel('Header name').fill('x-upstream-key');
  });
  await warned.filter({ hasText: 'NO_SUCH_VAR' }).waitFor();
  const secretive = page.locator('article.flow', { hasText: 'secretive' });
  await secretive.getByText('Runs fail: you have no variable named NO_SUCH_VAR.').waitFor();

  // The link opens the Variables page with the name filled in.
  await secretive.getByRole('link', { name: 'Add NO_SUCH_VAR as a Credential variable' }).click();
  await page.getByRole('heading', { level: 1, name: 'Variables' }).waitFor();
  assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'NO_SUCH_VAR');
  assert.equal(await page.getByLabel('Type').inputValue(), 'Credential');
  await page.getByLabel('Value').fill('variable-secret-0123456789');
  await page.getByRole('button', { name: 'Add variable' }).click();
  const row = page.locator('tr[data-variable="NO_SUCH_VAR"]');
  await row.getByText('stored, encrypted (never shown)').waitFor();
  assert.ok(!(await page.content()).includes('variable-secret-0123456789'), 'the value is in the page');

  // A Generic variable shows its value; editing keeps a Credential's value
  // when none is typed; deleting asks first.
  await page.getByLabel('Name', { exact: true }).fill('REGION');
  await page.getByLabel('Type').selectOption('Generic');
  assert.equal(await page.getByLabel('Value').getAttribute('type'), 'text');
  await page.getByLabel('Value').fill('eu-west');
  await page.getByRole('button', { name: 'Add variable' }).click();
  await page.locator('tr[data-variable="REGION"]').getByText('eu-west').waitFor();
  await page.getByRole('button', { name: 'Edit REGION' }).click();
  const edit = page.getByRole('dialog', { name: 'Edit REGION' });
  await edit.getByLabel('Name').fill('AWS_REGION');
  await edit.getByRole('button', { name: 'Save variable' }).click();
  await page.locator('tr[data-variable="AWS_REGION"]').getByText('eu-west').waitFor();
  await page.getByRole('button', { name: 'Delete AWS_REGION' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete variable' }).click();
  await page.locator('tr[data-variable="AWS_REGION"]').waitFor({ state: 'detached' });

  // Back on Flows the variable's warning is gone; the run injects it.
  await page.getByRole('link', { name: 'Flows' }).click();
  await secretive.waitFor();
  assert.equal(await secretive.locator('.warn-box').count(), 0);
  await traced.getByText('Runs fail: you have no Langfuse credential stored.').waitFor();
  const token = await apiLogin(keygate.base);
  const key = (await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { token, body: { name: 'runner' } })).body.api_key;
  const run = await apiCall(keygate.base, 'POST', '/api/v1/run/secretive', { key, body: { inputs: {} } });
  assert.equal(run.status, 200, JSON.stringify(run.body));
  assert.equal(upstream.runs.at(-1).headers['x-upstream-key'], 'variable-secret-0123456789');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('5: a long error wraps at phone width and speaks plainly', async () => {
  const strict = await startKeygate({ KEYGATE_ALLOW_PRIVATE_UPSTREAMS: 'false' });
  try {
    const page = await newPage(browser, PHONE);
    await signIn(page, strict.base);
    await page.getByRole('link', { name: 'Provider credentials' }).click();
    const card = page.locator('section[data-provider="langfuse"]');
    await card.getByLabel('Langfuse secret key').fill('sk-lf-browser-test-secret-0123456789');
    await card.getByLabel('Langfuse public key').fill('pk-lf-browser-test');
    // A literal private address is refused before anything is sent.
    await card.getByLabel('Langfuse host').fill('http://10.1.2.3');
    await card.getByRole('button', { name: 'Save' }).click();
    const alert = card.getByRole('alert');
    await alert.waitFor();
    const text = await alert.innerText();
    assert.match(text, /^The host is not allowed: 10\.1\.2\.3 is a private or local address/);
    assert.doesNotMatch(text, /host: host/);
    assert.equal(await horizontalOverflow(page), 0);
    const box = await alert.evaluate((el) => [el.scrollWidth, el.clientWidth]);
    assert.ok(box[0] <= box[1], `the error is ${box[0]} px in ${box[1]}`);

    await page.getByRole('link', { name: 'Flows' }).click();
    await page.getByRole('button', { name: 'New flow' }).click();
    await page.getByLabel('Name', { exact: true }).fill('private');
    await page.getByLabel('Upstream URL').fill('http://10.1.2.3/api/v1/run/x');
    await page.getByRole('button', { name: 'Create flow' }).click();
    const flowError = page.locator('#flow-form').getByRole('alert');
    await flowError.waitFor();
    assert.match(await flowError.innerText(), /^The upstream URL is not allowed: 10\.1\.2\.3 is a private or local address/);
    assert.equal(await horizontalOverflow(page), 0);
    await page.context().close();
  } finally {
    await strict.stop();
  }
});

test('8: copy buttons work, or say why, on plain HTTP to a LAN name', async () => {
  // keygate.test resolves to loopback in this browser only.
  const lan = await startKeygate({ KEYGATE_ALLOWED_HOSTS: 'keygate.test,127.0.0.1' });
  const lanBrowser = await launchBrowser(['--host-resolver-rules=MAP keygate.test 127.0.0.1']);
  try {
    const token = await apiLogin(lan.base);
    await apiCall(lan.base, 'POST', '/api/v1/flows/', { token, body: { name: 'copied', endpoint_name: 'copied' } });
    const base = lan.base.replace('127.0.0.1', 'keygate.test');
    const page = await newPage(lanBrowser);
    await signIn(page, base);
    assert.equal(await page.evaluate(() => window.isSecureContext), false);
    await page.getByRole('link', { name: 'Flows' }).click();
    const card = page.locator('article.flow', { hasText: 'copied' });
    await card.getByRole('button', { name: 'Copy: With the x-api-key header' }).click();
    const status = card.locator('.copy-status').first();
    await status.filter({ hasText: /Copied\.|Copy buttons need HTTPS or localhost/ }).waitFor();
    const selected = await page.evaluate(() => window.getSelection().toString());
    const command = await card.getByLabel('With the x-api-key header', { exact: true }).innerText();
    assert.equal(selected.trim(), command.trim());
    assert.match(command, /^curl -X POST "http:\/\/keygate\.test:\d+\/api\/v1\/run\/copied"/);

    // The one-time key's Copy button too.
    await page.getByRole('navigation').getByRole('link', { name: 'API keys' }).click();
    await page.getByRole('button', { name: 'Create key', exact: true }).click();
    await page.getByRole('button', { name: 'Create API key' }).click();
    await page.getByRole('button', { name: 'Copy key' }).click();
    await page.locator('.one-time .copy-status').filter({ hasText: /Copied\.|Copy buttons need HTTPS/ }).waitFor();
    const key = await page.getByLabel('New API key').inputValue();
    assert.equal(await page.evaluate(() => {
      const el = document.getElementById('new-key');
      return el.value.slice(el.selectionStart, el.selectionEnd);
    }), key);
    await page.getByRole('button', { name: 'I have copied it' }).click();
    assert.deepEqual(page.problems, []);
    await page.context().close();
  } finally {
    await lanBrowser.close();
    await lan.stop();
  }
});
