// Users page: superusers manage users; others are sent away.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, launchBrowser, newPage, signIn,
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

test('a superuser adds, promotes, deactivates, resets and deletes a user; others cannot reach the page', async () => {
  const admin = await newPage(browser);
  await signIn(admin, keygate.base);
  await admin.getByRole('link', { name: 'Users' }).click();
  await admin.getByRole('heading', { level: 1, name: 'Users' }).waitFor();

  await admin.getByLabel('Username', { exact: true }).fill('alice');
  await admin.getByLabel('Password', { exact: true }).fill('alice-first-password');
  await admin.getByRole('button', { name: 'Add user' }).click();
  const row = admin.locator('tr[data-user="alice"]');
  await row.waitFor();
  await admin.getByText('alice was added.').waitFor();

  await admin.getByRole('button', { name: 'Make superuser: alice' }).click();
  await admin.getByRole('dialog').getByRole('button', { name: 'Make superuser' }).click();
  await row.locator('td[data-label="Superuser"]', { hasText: 'Yes' }).waitFor();
  await admin.getByRole('button', { name: 'Remove superuser from alice' }).click();
  await row.locator('td[data-label="Superuser"]', { hasText: 'No' }).waitFor();

  await admin.getByRole('button', { name: 'Deactivate alice' }).click();
  await admin.getByRole('dialog').getByRole('button', { name: 'Deactivate user' }).click();
  await row.getByText('Inactive').waitFor();
  await admin.getByRole('button', { name: 'Activate alice' }).click();
  await row.getByText('Active', { exact: true }).waitFor();

  await admin.getByRole('button', { name: 'Reset password of alice' }).click();
  const dialog = admin.getByRole('dialog');
  await dialog.getByLabel('New password').fill('alice-second-password');
  await dialog.getByRole('button', { name: 'Set password' }).click();
  await admin.getByText('The password of alice was changed.').waitFor();

  // alice signs in with the new password; she has no Users page.
  const alice = await newPage(browser);
  await signIn(alice, keygate.base, 'alice', 'alice-second-password');
  assert.equal(await alice.getByRole('link', { name: 'Users' }).isVisible(), false);
  await alice.goto(`${keygate.base}/#/users`);
  await alice.waitForURL(/#\/keys$/);
  await alice.getByText('Only superusers can manage users.').waitFor();
  await alice.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
  assert.equal(await alice.getByRole('heading', { level: 1, name: 'Users' }).count(), 0);
  assert.deepEqual(alice.problems, []);

  // Deleting alice ends her session: her page falls back to sign-in.
  await admin.getByRole('button', { name: 'Delete alice' }).click();
  await admin.getByRole('dialog').getByRole('button', { name: 'Delete user' }).click();
  await row.waitFor({ state: 'detached' });
  // The sign-in dialog opens over her page; she may go to the sign-in page.
  await alice.getByRole('link', { name: 'Flows' }).click();
  const again = alice.getByRole('dialog', { name: 'Your session has ended' });
  await again.waitFor();
  await again.getByRole('button', { name: 'Sign in as someone else' }).click();
  await alice.getByRole('heading', { name: 'Sign in to keygate' }).waitFor();
  assert.deepEqual(admin.problems, []);
  await admin.context().close();
  await alice.context().close();
});
