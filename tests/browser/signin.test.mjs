// Sign-in page: wrong password, sign in and out, headers, auto-login.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, launchBrowser, newPage, signIn, ADMIN, ADMIN_PASSWORD,
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

test('a wrong password shows an error; the right one signs in; sign out signs out', async () => {
  const page = await newPage(browser);
  const response = await page.goto(`${keygate.base}/`);
  const headers = response.headers();
  assert.match(headers['content-type'], /^text\/html/);
  assert.match(headers['content-security-policy'], /script-src 'self';/);
  assert.equal(headers['x-frame-options'], 'DENY');
  assert.equal(headers['referrer-policy'], 'no-referrer');
  assert.equal(headers['cache-control'], 'no-store');

  await page.getByRole('heading', { name: 'Sign in to keygate' }).waitFor();
  // The username field has the focus: type straight away, submit with Enter.
  await page.keyboard.type(ADMIN);
  await page.keyboard.press('Tab');
  await page.keyboard.type('not-the-password');
  await page.keyboard.press('Enter');
  await page.getByRole('alert').filter({ hasText: 'Incorrect username or password' }).waitFor();

  await page.getByLabel('Password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
  await page.getByText(`Signed in as ${ADMIN}`).waitFor();
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'keygate_session');
  assert.ok(session.httpOnly, 'session cookie is HttpOnly');
  assert.equal(session.sameSite, 'Strict');
  // Page scripts cannot read it.
  assert.equal(await page.evaluate(() => document.cookie), '');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByText('You are signed out.').waitFor();
  await page.reload();
  await page.getByRole('heading', { name: 'Sign in to keygate' }).waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('without a session the navigation leads to the sign-in page', async () => {
  const page = await newPage(browser);
  await page.goto(`${keygate.base}/#/users`);
  await page.getByRole('heading', { name: 'Sign in to keygate' }).waitFor();
  await signIn(page, keygate.base);
  await page.context().close();
});

test('with KEYGATE_AUTO_LOGIN the UI opens as the superuser without a password', async () => {
  const auto = await startKeygate({ KEYGATE_AUTO_LOGIN: 'true' });
  try {
    const page = await newPage(browser);
    await page.goto(`${auto.base}/`);
    await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
    await page.getByText(`Signed in as ${ADMIN}`).waitFor();
    await page.getByRole('link', { name: 'Users' }).waitFor();
    // The JSON API still wants a key or a session.
    const res = await fetch(`${auto.base}/api/v1/users/whoami`);
    assert.equal(res.status, 401);
    await page.context().close();
  } finally {
    await auto.stop();
  }
});
