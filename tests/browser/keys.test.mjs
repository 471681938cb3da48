// API keys page: create (shown once), use, revoke, deactivate, bulk revoke,
// phone width.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, launchBrowser, newPage, signIn, screenshot, apiLogin, apiCall,
} from './harness.mjs';

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

const whoami = (key) => apiCall(keygate.base, 'GET', '/api/v1/users/whoami', { key });

test('create a key, read it from the one-time display, use it, revoke it in the UI', async () => {
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByText('No API keys yet').waitFor();
  await screenshot(page, 'keys-empty');

  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByLabel('Name', { exact: true }).fill('nightly report');
  const nextYear = `${new Date().getUTCFullYear() + 1}-06-30T00:00`;
  await page.getByLabel('Expires (optional)').fill(nextYear);
  await page.getByRole('button', { name: 'Create API key' }).click();

  const display = page.getByLabel('New API key');
  await display.waitFor();
  const key = await display.inputValue();
  assert.match(key, /^sk-[A-Za-z0-9_-]{43}$/);
  await page.getByText('this is the only time keygate shows the full key').waitFor();
  const row = page.locator('#key-list tbody tr', { hasText: 'nightly report' });
  await row.waitFor();
  // The table shows the key masked, never in full.
  const rowText = await row.innerText();
  assert.ok(!rowText.includes(key), 'the table shows the full key');
  assert.ok(rowText.includes(key.slice(0, 8)), rowText);
  assert.ok(rowText.includes('2'), 'expiry shown');
  await page.getByRole('button', { name: 'Copy key' }).click();
  await page.locator('.one-time .copy-status').filter({ hasText: /Copied|copy it/ }).waitFor();

  // The key works for a script.
  const ok = await whoami(key);
  assert.equal(ok.status, 200);
  assert.equal(ok.body.username, 'admin');

  // Once dismissed, the full key is gone from the page.
  await page.getByRole('button', { name: 'I have copied it' }).click();
  await display.waitFor({ state: 'detached' });
  assert.ok(!(await page.content()).includes(key), 'the full key stayed in the page');

  // Usage shows after a reload of the list.
  await page.reload();
  await row.waitFor();
  assert.equal((await row.locator('td[data-label="Uses"]').innerText()).trim(), '1');
  assert.ok(!(await page.content()).includes(key));

  // Revoke with a confirmation; the same call now gets 401.
  await page.getByRole('button', { name: 'Revoke nightly report' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByText('Scripts using it get 401 at once').waitFor();
  const deleted = page.waitForResponse((r) => r.request().method() === 'DELETE' && r.url().includes('/api/v1/api_key/'));
  await dialog.getByRole('button', { name: 'Revoke key' }).click();
  assert.equal((await deleted).status(), 200);
  await page.getByText('No API keys yet').waitFor();
  const refused = await whoami(key);
  assert.equal(refused.status, 401);
  assert.equal(refused.body.detail, 'Invalid API key');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('cancelling the confirmation keeps the key; deactivate, activate, revoke several', async () => {
  const token = await apiLogin(keygate.base);
  const made = [];
  for (const name of ['deploy bot', 'backup job', 'keep me']) {
    const res = await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { token, body: { name } });
    made.push(res.body.api_key);
  }
  const [deploy, backup, keep] = made;
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.locator('#key-list tbody tr').nth(2).waitFor();

  await page.getByRole('button', { name: 'Revoke keep me' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
  await page.getByRole('dialog').waitFor({ state: 'hidden' });
  assert.equal((await whoami(keep)).status, 200);

  await page.getByRole('button', { name: 'Deactivate deploy bot' }).click();
  await page.getByRole('button', { name: 'Activate deploy bot' }).waitFor();
  await page.locator('tr', { hasText: 'deploy bot' }).getByText('Inactive').waitFor();
  assert.equal((await whoami(deploy)).status, 401);
  await page.getByRole('button', { name: 'Activate deploy bot' }).click();
  await page.getByRole('button', { name: 'Deactivate deploy bot' }).waitFor();
  assert.equal((await whoami(deploy)).status, 200);

  // Keyboard: tick two boxes with Space, then revoke them together.
  await page.getByRole('checkbox', { name: 'Select deploy bot' }).focus();
  await page.keyboard.press('Space');
  await page.getByRole('checkbox', { name: 'Select backup job' }).check();
  const bulk = page.getByRole('button', { name: 'Revoke selected (2)' });
  await bulk.click();
  await page.getByRole('dialog').getByText('deploy bot, backup job').waitFor();
  await page.getByRole('dialog').getByRole('button', { name: 'Revoke 2 keys' }).click();
  await page.getByText('2 keys were revoked.').waitFor();
  await page.locator('#key-list tbody tr').nth(1).waitFor({ state: 'detached' });
  assert.equal((await whoami(deploy)).status, 401);
  assert.equal((await whoami(backup)).status, 401);
  assert.equal((await whoami(keep)).status, 200);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('the keys page is readable at phone width', async () => {
  const page = await newPage(browser, { width: 390, height: 844 });
  await signIn(page, keygate.base);
  await page.locator('#key-list tbody tr', { hasText: 'keep me' }).waitFor();
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByLabel('Name', { exact: true }).fill('phone key');
  await page.getByRole('button', { name: 'Create API key' }).click();
  await page.getByLabel('New API key').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
  await page.context().close();
});
