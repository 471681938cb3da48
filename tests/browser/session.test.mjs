// Sessions as people meet them (issue 13, items 13 and 14): a warning
// before the session ends, a sign-in dialog that keeps what was typed, and
// one quiet question on a signed-out page load.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, launchBrowser, newPage, signIn, apiLogin, apiCall, ADMIN_PASSWORD,
} from './harness.mjs';

let keygate;
let browser;

before(async () => {
  keygate = await startKeygate({ KEYGATE_SESSION_TTL_MINUTES: '10' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await keygate?.stop();
});

/** Every answer of status 400 or more, and every call to auto-login. */
function watchRequests(page) {
  const seen = { failed: [], autoLogin: 0, consoleErrors: [] };
  page.on('response', (r) => {
    if (r.status() >= 400) seen.failed.push(`${r.status()} ${r.url()}`);
  });
  page.on('request', (r) => {
    if (r.url().includes('/api/v1/auto_login')) seen.autoLogin += 1;
  });
  page.on('console', (m) => {
    if (m.type() === 'error') seen.consoleErrors.push(m.text());
  });
  return seen;
}

test('14: a signed-out page load asks one question, gets no error and does not probe auto-login', async () => {
  const page = await newPage(browser);
  const seen = watchRequests(page);
  await page.goto(`${keygate.base}/`);
  await page.getByRole('heading', { name: 'Sign in to keygate' }).waitFor();
  await page.reload();
  await page.getByRole('heading', { name: 'Sign in to keygate' }).waitFor();
  assert.deepEqual(seen.failed, []);
  assert.equal(seen.autoLogin, 0);
  assert.deepEqual(seen.consoleErrors, []);
  await page.context().close();
});

test('14: with auto-login on, the session answer says so and the page asks for it once', async () => {
  const auto = await startKeygate({ KEYGATE_AUTO_LOGIN: 'true' });
  try {
    const page = await newPage(browser);
    const seen = watchRequests(page);
    await page.goto(`${auto.base}/`);
    await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
    assert.equal(seen.autoLogin, 1);
    assert.deepEqual(seen.failed, []);
    await page.context().close();
  } finally {
    await auto.stop();
  }
});

test('13: the page warns before the session ends and keeps what was typed when it does', async () => {
  const page = await newPage(browser);
  await page.clock.install();
  await signIn(page, keygate.base);
  const warning = page.locator('#session-warning');
  assert.equal(await warning.isVisible(), false, 'warned at once');

  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByLabel('Name', { exact: true }).fill('typed before the end');

  // Six minutes on, four are left: the warning says when, and how to go on.
  await page.clock.fastForward('06:00');
  await warning.getByText(/Your session ends at .* \(in 4 minutes\)/).waitFor();
  await warning.getByRole('button', { name: 'Sign in again' }).waitFor();

  // At the end, the sign-in dialog opens over the page; the form stays.
  await page.clock.fastForward('05:00');
  const dialog = page.getByRole('dialog', { name: 'Your session has ended' });
  await dialog.waitFor();
  assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'typed before the end');
  assert.equal(await dialog.getByLabel('Username').inputValue(), 'admin');

  // A wrong password is said in the dialog; the right one closes it.
  await dialog.getByLabel('Password').fill('not-the-password');
  await dialog.getByRole('button', { name: 'Sign in', exact: true }).click();
  await dialog.getByRole('alert').filter({ hasText: 'Incorrect password' }).waitFor();
  await dialog.getByLabel('Password').fill(ADMIN_PASSWORD);
  await dialog.getByRole('button', { name: 'Sign in', exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });
  assert.equal(await warning.isVisible(), false, 'a new session is not about to end');
  assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'typed before the end');
  await page.getByRole('button', { name: 'Create API key' }).click();
  await page.getByLabel('New API key').waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('13: a session ended on the server asks for the password and then saves what was typed', async () => {
  const admin = await apiLogin(keygate.base);
  const made = await apiCall(keygate.base, 'POST', '/api/v1/users/', {
    token: admin, body: { username: 'bob', password: 'bob-first-password', is_active: true },
  });
  assert.equal(made.status, 201);
  const page = await newPage(browser);
  await signIn(page, keygate.base, 'bob', 'bob-first-password');
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByLabel('Name', { exact: true }).fill('made after sign-in again');

  // A superuser sets a new password: every session of bob ends.
  const changed = await apiCall(keygate.base, 'PATCH', `/api/v1/users/${made.body.id}`, {
    token: admin, body: { password: 'bob-second-password' },
  });
  assert.equal(changed.status, 200);

  await page.getByRole('button', { name: 'Create API key' }).click();
  const dialog = page.getByRole('dialog', { name: 'Your session has ended' });
  await dialog.waitFor();
  await dialog.getByLabel('Password').fill('bob-second-password');
  await dialog.getByRole('button', { name: 'Sign in', exact: true }).click();
  // The refused call is made again with the new session.
  const key = await page.getByLabel('New API key').inputValue();
  assert.match(key, /^sk-/);
  const whoami = await apiCall(keygate.base, 'GET', '/api/v1/users/whoami', { key });
  assert.equal(whoami.body.username, 'bob');
  const keys = await apiCall(keygate.base, 'GET', '/api/v1/api_key/', { key });
  assert.deepEqual(keys.body.api_keys.map((k) => k.name), ['made after sign-in again']);
  await page.context().close();
});
