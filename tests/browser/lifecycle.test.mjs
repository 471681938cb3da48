// Key lifecycle in the settings UI (issue 12, item 9): scopes, rate
// limits, allowed addresses and expiry presets on create; the edit dialog;
// rotation with a grace period; the usage charts; the audit page. Each
// step is checked against the API and by using the keys.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, launchBrowser, newPage, signIn, screenshot, apiLogin, apiCall,
  horizontalOverflow, PHONE, NARROW_DESKTOP,
} from './harness.mjs';

let keygate;
let browser;
let admin;

before(async () => {
  keygate = await startKeygate();
  browser = await launchBrowser();
  admin = await apiLogin(keygate.base);
});

after(async () => {
  await browser?.close();
  await keygate?.stop();
});

const whoami = (key) => apiCall(keygate.base, 'GET', '/api/v1/users/whoami', { key });
const keysOf = async (token) => (await apiCall(keygate.base, 'GET', '/api/v1/api_key/', { token })).body.api_keys;
const keyNamed = async (name, token = admin) => (await keysOf(token)).find((k) => k.name === name);

async function createKey(body) {
  const res = await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { token: admin, body });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

test('create a key with two scopes, a rate limit, allowed addresses and a 90-day preset expiry', async () => {
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  const form = page.locator('#create-key-form');
  // A superuser is offered all four scopes, all ticked.
  for (const scope of ['Read', 'Write', 'Run', 'Admin']) {
    assert.equal(await form.getByRole('checkbox', { name: new RegExp(`^${scope}:`) }).isChecked(), true, scope);
  }
  await form.getByLabel('Name', { exact: true }).fill('ci deploy');
  await form.getByRole('checkbox', { name: /^Write:/ }).uncheck();
  await form.getByRole('checkbox', { name: /^Admin:/ }).uncheck();
  await form.getByLabel('Requests', { exact: true }).fill('5');
  await form.getByLabel('Per seconds').fill('60');
  await form.getByLabel('Allowed addresses (optional)').fill('127.0.0.1\n10.0.0.0/8, not-an-address');
  await form.getByRole('button', { name: 'In 90 days' }).click();
  const presetValue = await form.getByLabel('Expires (optional)').inputValue();
  assert.match(presetValue, /^\d{4}-\d\d-\d\dT\d\d:\d\d$/);

  // The server refuses the address: the error is in the form, nothing is lost.
  const refused = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/api/v1/api_key/'));
  await form.getByRole('button', { name: 'Create API key' }).click();
  assert.equal((await refused).status(), 422);
  await form.getByRole('alert').filter({ hasText: 'not-an-address' }).waitFor();
  assert.equal(await form.getByLabel('Name', { exact: true }).inputValue(), 'ci deploy');
  assert.equal(await form.getByLabel('Requests', { exact: true }).inputValue(), '5');
  assert.equal(await form.getByLabel('Expires (optional)').inputValue(), presetValue);
  assert.equal(await form.getByRole('checkbox', { name: /^Write:/ }).isChecked(), false);
  assert.equal(await keyNamed('ci deploy'), undefined);

  // Half a rate limit is pointed out before anything is sent.
  await form.getByLabel('Per seconds').fill('');
  await form.getByRole('button', { name: 'Create API key' }).click();
  await form.getByRole('alert').filter({ hasText: 'Give both the number of requests and the seconds' }).waitFor();
  await form.getByLabel('Per seconds').fill('60');
  await form.getByLabel('Allowed addresses (optional)').fill('127.0.0.1\n10.0.0.0/8, 2001:db8::/32');
  await form.getByRole('button', { name: 'Create API key' }).click();
  const key = await page.getByLabel('New API key').inputValue();
  assert.match(key, /^sk-/);

  const stored = await keyNamed('ci deploy');
  assert.deepEqual(stored.scopes, ['read', 'run']);
  assert.deepEqual(stored.rate_limit, { requests: 5, per_seconds: 60 });
  assert.deepEqual(stored.allowed_ips, ['127.0.0.1', '10.0.0.0/8', '2001:db8::/32']);
  const days = (Date.parse(stored.expires_at) - Date.now()) / 86400000;
  assert.ok(days > 89.99 && days <= 90, `expires in ${days} days`);

  const row = page.locator('#key-list tbody tr', { hasText: 'ci deploy' });
  const access = row.locator('td[data-label="Access"]');
  await access.getByText('read, run').waitFor();
  await access.getByText('5 requests per minute').waitFor();
  await access.getByText('10.0.0.0/8').waitFor();
  await row.locator('td[data-label="Last used"]').getByText('never').waitFor();

  // The key reads, but cannot write; the list then says from where it was used.
  assert.equal((await whoami(key)).status, 200);
  const write = await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { key, body: { name: 'x' } });
  assert.equal(write.status, 403);
  assert.equal(write.headers.get('x-keygate-reason'), 'MISSING_SCOPE');
  await page.getByRole('button', { name: 'I have copied it' }).click();
  await page.reload();
  await row.locator('td[data-label="Last used"]').getByText('from 127.0.0.1').waitFor();

  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByRole('button', { name: 'In 30 days' }).click();
  await page.getByLabel('Name', { exact: true }).fill('no scope');
  for (const box of await form.getByRole('checkbox').all()) await box.uncheck();
  await form.getByRole('button', { name: 'Create API key' }).click();
  await form.getByRole('alert').filter({ hasText: 'Tick at least one scope.' }).waitFor();
  await screenshot(page, 'keys-create-access');
  await form.getByRole('button', { name: 'Cancel' }).click();
  assert.equal(await keyNamed('no scope'), undefined);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('a user who is not a superuser is not offered the admin scope; all three ticked means every scope', async () => {
  const made = await apiCall(keygate.base, 'POST', '/api/v1/users/', {
    token: admin, body: { username: 'bob', password: 'bob-password-1', is_active: true },
  });
  assert.equal(made.status, 201);
  const page = await newPage(browser);
  await signIn(page, keygate.base, 'bob', 'bob-password-1');
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  const form = page.locator('#create-key-form');
  await form.getByRole('checkbox', { name: /^Run:/ }).waitFor();
  assert.equal(await form.getByRole('checkbox', { name: /^Admin:/ }).count(), 0);
  assert.equal(await form.getByRole('checkbox').count(), 3);
  await form.getByLabel('Name', { exact: true }).fill('bob everything');
  const sent = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/api/v1/api_key/'));
  await form.getByRole('button', { name: 'Create API key' }).click();
  const body = JSON.parse((await sent).postData());
  assert.equal('scopes' in body, false, 'all ticked: scopes omitted');
  await page.getByLabel('New API key').waitFor();
  const bob = await apiLogin(keygate.base, 'bob', 'bob-password-1');
  const stored = await keyNamed('bob everything', bob);
  assert.deepEqual(stored.scopes, ['read', 'write', 'run', 'admin']);
  await page.locator('#key-list tr', { hasText: 'bob everything' }).locator('td[data-label="Access"]').getByText('all').first().waitFor();
  await page.context().close();
});

test('the edit dialog changes name, scopes, rate limit, addresses and the active flag; expiry is shown, not editable', async () => {
  const year = new Date().getUTCFullYear() + 1;
  const made = await createKey({
    name: 'editable', scopes: ['read', 'run'], rate_limit: { requests: 100, per_seconds: 60 },
    allowed_ips: ['127.0.0.1'], expires_at: `${year}-06-30T00:00:00Z`,
  });
  const key = made.api_key;
  assert.equal((await whoami(key)).status, 200);
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('button', { name: 'Edit editable' }).click();
  const dialog = page.getByRole('dialog', { name: 'Edit editable' });
  await dialog.getByText(`30 Jun ${year}, 00:00 UTC`).waitFor();
  assert.equal(await dialog.getByLabel('Expires').count(), 0, 'no expiry control');
  assert.equal(await dialog.getByRole('checkbox', { name: /^Write:/ }).isChecked(), false);
  assert.equal(await dialog.getByRole('checkbox', { name: /^Read:/ }).isChecked(), true);
  assert.equal(await dialog.getByLabel('Requests', { exact: true }).inputValue(), '100');
  assert.equal(await dialog.getByLabel('Allowed addresses (optional)').inputValue(), '127.0.0.1');

  // A refused address keeps the dialog open with what was typed.
  await dialog.getByLabel('Name', { exact: true }).fill('edited');
  await dialog.getByLabel('Allowed addresses (optional)').fill('300.1.2.3');
  await dialog.getByRole('button', { name: 'Save key' }).click();
  await dialog.getByRole('alert').filter({ hasText: '300.1.2.3' }).waitFor();
  assert.equal(await dialog.getByLabel('Name', { exact: true }).inputValue(), 'edited');
  assert.equal((await keyNamed('editable')).allowed_ips[0], '127.0.0.1');

  await dialog.getByRole('checkbox', { name: /^Run:/ }).uncheck();
  await dialog.getByLabel('Requests', { exact: true }).fill('');
  await dialog.getByLabel('Per seconds').fill('');
  await dialog.getByLabel('Allowed addresses (optional)').fill('192.0.2.0/24');
  const patched = page.waitForRequest((r) => r.method() === 'PATCH');
  await dialog.getByRole('button', { name: 'Save key' }).click();
  const body = JSON.parse((await patched).postData());
  assert.deepEqual(body, { name: 'edited', scopes: ['read'], rate_limit: null, allowed_ips: ['192.0.2.0/24'] });
  await dialog.waitFor({ state: 'hidden' });
  const row = page.locator('#key-list tbody tr', { hasText: 'edited' });
  await row.locator('td[data-label="Access"]').getByText('192.0.2.0/24').waitFor();
  await row.locator('td[data-label="Access"]').getByText('none').waitFor();
  const stored = await keyNamed('edited');
  assert.deepEqual(stored.scopes, ['read']);
  assert.equal(stored.rate_limit, null);
  assert.deepEqual(stored.allowed_ips, ['192.0.2.0/24']);
  assert.equal(stored.expires_at.slice(0, 10), `${year}-06-30`);
  const elsewhere = await whoami(key);
  assert.equal(elsewhere.status, 403);
  assert.equal(elsewhere.headers.get('x-keygate-reason'), 'FORBIDDEN_ADDRESS');

  // Any address again, then switched off in the same dialog.
  await page.getByRole('button', { name: 'Edit edited' }).click();
  const again = page.getByRole('dialog', { name: 'Edit edited' });
  await again.getByLabel('Allowed addresses (optional)').fill('');
  await again.getByRole('button', { name: 'Save key' }).click();
  await again.waitFor({ state: 'hidden' });
  await row.locator('td[data-label="Access"]').getByText('any address').waitFor();
  assert.equal((await whoami(key)).status, 200);
  await page.getByRole('button', { name: 'Edit edited' }).click();
  await again.getByRole('checkbox', { name: /^Active/ }).uncheck();
  await again.getByRole('button', { name: 'Save key' }).click();
  await row.getByText('Inactive').waitFor();
  assert.equal((await keyNamed('edited')).is_active, false);
  assert.equal((await whoami(key)).status, 401);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('rotate: the new key is shown once, the old one works through the grace period; grace 0 stops it at once', async () => {
  const old = await createKey({ name: 'rotating', scopes: ['read', 'run'], rate_limit: { requests: 50, per_seconds: 60 } });
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('button', { name: 'Rotate rotating' }).click();
  const dialog = page.getByRole('dialog', { name: 'Rotate rotating' });
  const grace = dialog.getByLabel('The old key keeps working for');
  assert.equal(await grace.inputValue(), '86400');
  const options = await grace.locator('option').allInnerTexts();
  assert.deepEqual(options, ['Stop it now', '1 hour', '24 hours', '7 days', '30 days']);
  const rotated = page.waitForResponse((r) => r.url().endsWith(`/api_key/${old.id}/rotate`));
  await dialog.getByRole('button', { name: 'Rotate key' }).click();
  const answer = await (await rotated).json();
  assert.equal(answer.old_key_id, old.id);
  const display = page.getByLabel('New API key');
  const fresh = await display.inputValue();
  assert.equal(fresh, answer.api_key);
  assert.notEqual(fresh, old.api_key);
  const end = page.locator('#old-key-end');
  await end.getByText('keeps working until').waitFor();
  assert.equal(await end.locator('time').getAttribute('datetime'), answer.old_key_expires_at);
  const hours = (Date.parse(answer.old_key_expires_at) - Date.now()) / 3600000;
  assert.ok(hours > 23.9 && hours <= 24, `grace of ${hours} hours`);
  await screenshot(page, 'keys-rotated');

  // Both work; the new one carries the scopes and limit.
  assert.equal((await whoami(fresh)).status, 200);
  assert.equal((await whoami(old.api_key)).status, 200);
  const copy = (await keysOf(admin)).find((k) => k.id === answer.id);
  assert.deepEqual(copy.scopes, ['read', 'run']);
  assert.deepEqual(copy.rate_limit, { requests: 50, per_seconds: 60 });
  assert.equal((await keysOf(admin)).find((k) => k.id === old.id).expires_at, answer.old_key_expires_at);

  // The one-time display goes once dismissed.
  await page.getByRole('button', { name: 'I have copied it' }).click();
  await display.waitFor({ state: 'detached' });
  assert.ok(!(await page.content()).includes(fresh));

  // Rotate the new key with no grace: the one before is refused at once.
  const newRow = page.locator(`#key-list tr[data-key-id="${answer.id}"]`);
  await newRow.getByRole('button', { name: 'Rotate rotating' }).click();
  await dialog.getByLabel('The old key keeps working for').selectOption({ label: 'Stop it now' });
  await dialog.getByRole('button', { name: 'Rotate key' }).click();
  await page.locator('#old-key-end').getByText('which stopped working now').waitFor();
  const third = await page.getByLabel('New API key').inputValue();
  assert.notEqual(third, fresh);
  assert.equal((await whoami(fresh)).status, 401);
  assert.equal((await whoami(third)).status, 200);
  assert.equal((await whoami(old.api_key)).status, 200, 'the first key is still in its grace');

  // An inactive key cannot be rotated: the refusal stays in the dialog.
  const off = await createKey({ name: 'switched off' });
  await apiCall(keygate.base, 'PATCH', `/api/v1/api_key/${off.id}`, { token: admin, body: { is_active: false } });
  await page.getByRole('button', { name: 'I have copied it' }).click();
  await page.reload();
  await page.getByRole('button', { name: 'Rotate switched off' }).click();
  const offDialog = page.getByRole('dialog', { name: 'Rotate switched off' });
  await offDialog.getByRole('button', { name: 'Rotate key' }).click();
  await offDialog.getByRole('alert').filter({ hasText: 'Only an active, unexpired key can be rotated' }).waitFor();
  await offDialog.getByRole('button', { name: 'Cancel' }).click();
  await offDialog.waitFor({ state: 'hidden' });
  assert.equal(await page.getByLabel('New API key').count(), 0);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('the usage page charts requests and refusals per day and per hour, with the numbers as a table', async () => {
  const made = await createKey({ name: 'busy', rate_limit: { requests: 3, per_seconds: 86400 } });
  let refused = 0;
  for (let i = 0; i < 5; i += 1) {
    const res = await whoami(made.api_key);
    if (res.status === 429) refused += 1;
    else assert.equal(res.status, 200);
  }
  assert.ok(refused >= 2, `${refused} refused`);
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Usage of busy' }).click();
  await page.getByRole('heading', { level: 1, name: 'Usage of busy' }).waitFor();
  assert.equal(await page.locator('#nav a[aria-current="page"]').innerText(), 'API keys');

  const days = page.locator('#usage-days');
  const dayBars = days.locator('svg g.bar');
  assert.equal(await dayBars.count(), 30);
  // Summed over the bars, so a request just after midnight (UTC) or on
  // the hour still counts.
  const sum = (bars, name) => bars.evaluateAll((gs, attr) => gs.reduce((n, g) => n + Number(g.getAttribute(attr)), 0), name);
  assert.equal(await sum(dayBars, 'data-requests'), 5);
  assert.equal(await sum(dayBars, 'data-refused'), refused);
  assert.ok(await days.locator('svg rect.accepted').count() >= 1);
  assert.ok(await days.locator('svg rect.refused').count() >= 1);
  const heights = await days.locator('svg rect').evaluateAll((rects) => rects.map((r) => Number(r.getAttribute('height'))));
  assert.ok(heights.length <= 4 && heights.every((v) => v > 0), String(heights));
  // The busiest day is the last (today) but for a request past midnight.
  assert.ok(Number(await dayBars.last().getAttribute('data-requests')) >= 1);
  const label = await days.locator('svg').getAttribute('aria-label');
  assert.match(label, new RegExp(`5 requests, ${refused} refused`));
  assert.equal(await days.locator('svg').getAttribute('role'), 'img');

  const hours = page.locator('#usage-hours');
  assert.equal(await hours.locator('svg g.bar').count(), 48);
  assert.equal(await sum(hours.locator('svg g.bar'), 'data-requests'), 5);

  await screenshot(page, 'usage-chart');

  // The table: 30 rows, the last with the counts.
  await days.getByText('Show the numbers as a table').click();
  const rows = days.locator('tbody tr');
  assert.equal(await rows.count(), 30);
  const counted = await rows.evaluateAll((trs) => trs.map((tr) => [...tr.cells].slice(1).map((td) => Number(td.textContent))));
  assert.deepEqual(counted.reduce(([a, b], [r, f]) => [a + r, b + f], [0, 0]), [5, refused]);
  assert.ok(counted[29][0] >= 1, 'today has requests');

  // One more request and Refresh: the bar grows.
  await whoami(made.api_key);
  await page.getByRole('button', { name: 'Refresh' }).click();
  await page.waitForFunction(() => [...document.querySelectorAll('#usage-days svg g.bar')]
    .reduce((n, g) => n + Number(g.dataset.requests), 0) === 6);

  for (const viewport of [NARROW_DESKTOP, PHONE]) {
    await page.setViewportSize(viewport);
    assert.equal(await horizontalOverflow(page), 0, `usage at ${viewport.width}`);
  }
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('the audit page lists events newest first, filters by action, key and user, and loads more', async () => {
  const target = await createKey({ name: 'audited' });
  await apiCall(keygate.base, 'PATCH', `/api/v1/api_key/${target.id}`, { token: admin, body: { name: 'audited twice' } });
  for (let i = 0; i < 11; i += 1) await createKey({ name: `filler ${i}` });
  const bob = await apiLogin(keygate.base, 'bob', 'bob-password-1');
  assert.ok(bob);

  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Audit log' }).click();
  await page.getByRole('heading', { level: 1, name: 'Audit log' }).waitFor();
  const rows = page.locator('#audit-list tbody tr');
  await rows.first().waitFor();
  const times = await page.locator('#audit-list tbody td.when time').evaluateAll((els) => els.map((e) => e.getAttribute('datetime')));
  assert.deepEqual([...times].sort().reverse(), times, 'newest first');
  await page.locator('#audit-list tr[data-action="key.create"]').first().waitFor();
  await page.locator('#audit-list tr[data-action="key.rotate"]').first().waitFor();
  // A row shows address, user agent and detail.
  const created = page.locator('#audit-list tr[data-action="key.create"]', { hasText: 'filler 10' });
  await created.locator('td[data-label="Address"]').getByText('127.0.0.1').waitFor();
  assert.ok((await created.locator('td[data-label="User agent"]').innerText()).trim().length > 0);
  await created.locator('td[data-label="Detail"]').getByText('name: filler 10').waitFor();
  await created.locator('td[data-label="Key used"]').getByText('session').waitFor();
  await screenshot(page, 'audit-log');

  // By action.
  const filters = page.locator('#audit-filters');
  // Applies the filters; resolves once the answer is on the page.
  const show = async (button = filters.getByRole('button', { name: 'Show events' })) => {
    const answered = page.waitForResponse((r) => r.url().includes('/api/v1/audit?'));
    await button.click();
    await answered;
    await page.locator('#audit-list:not([aria-busy])').waitFor();
  };
  await filters.getByLabel('Action').selectOption('key.rotate');
  await show();
  const rotations = await rows.count();
  assert.ok(rotations >= 2, `${rotations} rotations`);
  assert.deepEqual(new Set(await rows.evaluateAll((r) => r.map((x) => x.dataset.action))), new Set(['key.rotate']));

  // By key: its create and its update, nothing else.
  await filters.getByLabel('Action').selectOption('');
  await filters.getByLabel('Key id').fill(target.id);
  await show();
  assert.deepEqual(await rows.evaluateAll((r) => r.map((x) => x.dataset.action)), ['key.update', 'key.create']);
  await page.locator('#audit-list tr[data-action="key.update"]').getByText('name: audited twice').waitFor();

  // A refused filter is said in words.
  await filters.getByLabel('Key id').fill('not-a-uuid');
  await filters.getByRole('button', { name: 'Show events' }).click();
  await page.getByRole('alert').filter({ hasText: 'must be a UUID' }).waitFor();

  // By user (superusers): bob's events only.
  await filters.getByLabel('Key id').fill('');
  await filters.getByLabel('User').selectOption({ label: 'bob' });
  await show();
  const users = await page.locator('#audit-list tbody td[data-label="User"]').allInnerTexts();
  assert.ok(users.length >= 2 && users.every((u) => u === 'bob'), String(users));

  // Paging: 10 a page, then 10 more, none repeated, still newest first.
  await filters.getByLabel('User').selectOption('');
  await filters.getByLabel('Events per page').selectOption('10');
  await show();
  await page.getByText('10 events shown.').waitFor();
  const firstIds = await rows.evaluateAll((r) => r.map((x) => x.dataset.eventId));
  await show(page.getByRole('button', { name: 'Load more' }));
  await page.getByText('20 events shown.').waitFor();
  const allIds = await rows.evaluateAll((r) => r.map((x) => x.dataset.eventId));
  assert.deepEqual(allIds.slice(0, 10), firstIds);
  assert.equal(new Set(allIds).size, 20);
  const pagedTimes = await page.locator('#audit-list tbody td.when time').evaluateAll((els) => els.map((e) => e.getAttribute('datetime')));
  assert.deepEqual([...pagedTimes].sort().reverse(), pagedTimes);
  // To the end: the last page says so and offers no more.
  const status = page.locator('#audit-status');
  const more = page.getByRole('button', { name: 'Load more' });
  while (await more.isVisible()) await show(more);
  await status.getByText(/events shown; no more\./).waitFor();
  const total = (await apiCall(keygate.base, 'GET', '/api/v1/audit?limit=500', { token: admin })).body.events.length;
  assert.equal(await rows.count(), total);
  assert.deepEqual(page.problems, []);

  // Someone else sees only their own events and has no user filter.
  const other = await newPage(browser);
  await signIn(other, keygate.base, 'bob', 'bob-password-1');
  await other.getByRole('link', { name: 'Audit log' }).click();
  await other.locator('#audit-list tbody tr').first().waitFor();
  assert.equal(await other.locator('#audit-filters').getByLabel('User').count(), 0);
  assert.equal(await other.locator('#audit-list tr', { hasText: 'filler' }).count(), 0);
  await other.locator('#audit-list tr[data-action="login.success"]').first().waitFor();
  await other.context().close();
  await page.context().close();
});
