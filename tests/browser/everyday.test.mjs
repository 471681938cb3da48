// The settings UI as a person uses it (issue 13): the new key kept until
// dismissed, a keys table that fits, messages that go away, plain wording,
// expiry with its zone, confirmations, finding and renaming keys, focus
// and badge contrast. Numbers in test names are the items.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, startUpstream, launchBrowser, newPage, signIn, apiLogin, apiCall, contrast,
  NARROW_DESKTOP, DESKTOP,
} from './harness.mjs';

let keygate;
let upstream;
let browser;
let admin;

before(async () => {
  upstream = await startUpstream();
  keygate = await startKeygate();
  browser = await launchBrowser();
  admin = await apiLogin(keygate.base);
});

after(async () => {
  await browser?.close();
  await keygate?.stop();
  await upstream?.stop();
});

const keysOf = async (token) => (await apiCall(keygate.base, 'GET', '/api/v1/api_key/', { token })).body.api_keys;

/** Each test starts with the admin holding no keys. */
async function clearKeys() {
  for (const key of await keysOf(admin)) {
    assert.equal((await apiCall(keygate.base, 'DELETE', `/api/v1/api_key/${key.id}`, { token: admin })).status, 200);
  }
}

async function createKey(page, name, extra) {
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByLabel('Name', { exact: true }).fill(name);
  if (extra) await extra();
  await page.getByRole('button', { name: 'Create API key' }).click();
  return page.getByLabel('New API key').inputValue();
}

test('1: a new key stays on screen across pages until dismissed; leaving asks first; nothing is stored', async () => {
  await clearKeys();
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  const key = await createKey(page, 'kept key');
  const display = page.getByLabel('New API key');

  await page.getByRole('link', { name: 'Flows' }).click();
  await page.getByRole('heading', { level: 1, name: 'Flows' }).waitFor();
  assert.equal(await display.inputValue(), key, 'gone on the Flows page');
  await page.getByRole('navigation').getByRole('link', { name: 'API keys' }).click();
  await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
  assert.equal(await display.inputValue(), key, 'gone after coming back');

  // Memory only: nothing in the browser's storage.
  const stored = await page.evaluate(() => JSON.stringify([{ ...localStorage }, { ...sessionStorage }]));
  assert.equal(stored, '[{},{}]');

  // Reloading asks first; staying keeps the key.
  const asked = new Promise((resolve) => {
    page.once('dialog', async (dialog) => {
      resolve(dialog.type());
      await dialog.dismiss();
    });
  });
  const reload = page.reload({ timeout: 3000 }).catch(() => 'stayed');
  assert.equal(await asked, 'beforeunload');
  assert.equal(await reload, 'stayed');
  assert.equal(await display.inputValue(), key);

  // Signing out asks too; staying keeps it.
  await page.getByRole('button', { name: 'Sign out' }).click();
  const signOut = page.getByRole('dialog', { name: 'Sign out and lose the new key?' });
  await signOut.getByRole('button', { name: 'Cancel' }).click();
  await signOut.waitFor({ state: 'hidden' });
  assert.equal(await display.inputValue(), key);

  // Dismissed, it is gone from the page, and leaving asks nothing.
  await page.getByRole('button', { name: 'I have copied it' }).click();
  await display.waitFor({ state: 'detached' });
  assert.ok(!(await page.content()).includes(key));
  await page.reload();
  await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('2: the keys table fits at 1280 and 1024 px: a short key column, relative times with the exact one on hover', async () => {
  await clearKeys();
  const flow = await apiCall(keygate.base, 'POST', '/api/v1/flows/', { token: admin, body: { name: 'Nightly reports flow' } });
  const nextYear = new Date().getUTCFullYear() + 1;
  for (const [name, body] of [
    ['a rather long key name for the nightly job', { expires_at: `${nextYear}-12-31T00:00:00Z` }],
    ['bound key', { flow_id: flow.body.id }],
  ]) {
    assert.equal((await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { token: admin, body: { name, ...body } })).status, 200);
  }
  for (const viewport of [DESKTOP, NARROW_DESKTOP]) {
    const page = await newPage(browser, viewport);
    await signIn(page, keygate.base);
    const row = page.locator('#key-list tbody tr', { hasText: 'a rather long key name' });
    await row.waitFor();
    const wrap = await page.locator('#key-list .table-wrap').evaluate((el) => [el.scrollWidth, el.clientWidth]);
    assert.ok(wrap[0] <= wrap[1], `at ${viewport.width} px the table is ${wrap[0]} px in ${wrap[1]}`);
    for (const button of await page.locator('#key-list tbody button').all()) {
      const box = await button.boundingBox();
      assert.ok(box.x + box.width <= viewport.width, `a button is cut off at ${viewport.width} px`);
    }
    const masked = (await row.locator('td[data-label="Key"]').innerText()).trim();
    assert.match(masked, /^sk-[A-Za-z0-9_-]{5}…$/);
    const created = row.locator('td[data-label="Created"] time');
    assert.match(await created.innerText(), /now|minute/);
    assert.match(await created.getAttribute('title'), /\d{4}, \d\d:\d\d UTC$/);
    // No date wraps onto more lines.
    for (const cell of await page.locator('#key-list time').all()) {
      assert.equal(await cell.evaluate((el) => el.getClientRects().length), 1, await cell.innerText());
    }
    assert.equal(await horizontalOverflow(page), 0);
    await page.context().close();
  }
});

async function horizontalOverflow(page) {
  return page.evaluate(() => Math.max(0, document.documentElement.scrollWidth - window.innerWidth));
}

test('4: messages go away on navigation and can be dismissed; a browser-blocked submit clears an old error', async () => {
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByLabel('Username', { exact: true }).fill('carol');
  await page.getByLabel('Password', { exact: true }).fill('carol-password-1');
  await page.getByRole('button', { name: 'Add user' }).click();
  const added = page.locator('.toast', { hasText: 'carol was added.' });
  await added.waitFor();
  assert.match(await added.getAttribute('class'), /success/);
  await page.getByRole('link', { name: 'Flows' }).click();
  await page.getByRole('heading', { level: 1, name: 'Flows' }).waitFor();
  assert.equal(await added.count(), 0, 'the success message followed to another page');

  // Dismissed with its button.
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByLabel('Username', { exact: true }).fill('dave');
  await page.getByLabel('Password', { exact: true }).fill('dave-password-1');
  await page.getByRole('button', { name: 'Add user' }).click();
  const toast = page.locator('.toast', { hasText: 'dave was added.' });
  await toast.getByRole('button', { name: 'Dismiss message' }).click();
  await toast.waitFor({ state: 'detached' });

  // A refused add shows an error; an empty name stopped by the browser
  // clears it, since it no longer describes the form.
  await page.getByLabel('Username', { exact: true }).fill('carol');
  await page.getByLabel('Password', { exact: true }).fill('carol-password-2');
  await page.getByRole('button', { name: 'Add user' }).click();
  const refused = page.locator('#add-user-form .error');
  await refused.waitFor();
  assert.ok((await refused.innerText()).length > 0);
  await page.getByLabel('Username', { exact: true }).fill('');
  await page.getByRole('button', { name: 'Add user' }).click();
  await refused.waitFor({ state: 'hidden' });

  // A non-superuser sent away from Users gets an information, not a success.
  const carol = await newPage(browser);
  await signIn(carol, keygate.base, 'carol', 'carol-password-1');
  await carol.goto(`${keygate.base}/#/users`);
  const note = carol.locator('.toast', { hasText: 'Only superusers can manage users.' });
  await note.waitFor();
  assert.match(await note.getAttribute('class'), /\binfo\b/);
  assert.doesNotMatch(await note.getAttribute('class'), /success/);
  assert.deepEqual(page.problems, []);
  assert.deepEqual(carol.problems, []);
  await page.context().close();
  await carol.context().close();
});

test('6: a short secret is not mostly shown', async () => {
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Provider credentials' }).click();
  const generic = page.locator('section[data-provider="generic"]');
  await generic.getByLabel('Generic secret').fill('sk-openai-good');
  await generic.getByRole('button', { name: 'Save' }).click();
  const shown = generic.locator('dl.facts dd').first();
  await shown.locator('code').waitFor();
  const text = await shown.innerText();
  assert.ok(!/openai|good|ope/.test(text), `shown: ${text}`);
  assert.ok(!(await page.content()).includes('sk-openai-good'));
  await generic.getByRole('button', { name: 'Delete the Generic credential' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete credential' }).click();
  await generic.getByText('Not set.').waitFor();
  await page.context().close();
});

test('7: an expiry is picked and shown as a date-time in the browser\'s zone, with the zone stated', async () => {
  await clearKeys();
  const page = await newPage(browser, DESKTOP, { timezoneId: 'America/Los_Angeles' });
  await signIn(page, keygate.base);
  const year = new Date().getUTCFullYear() + 1;
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByText(/in your time zone \(America\/Los_Angeles, UTC-8\)/).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('year end');
  await page.getByLabel('Expires (optional)').fill(`${year}-12-31T00:00`);
  await page.getByRole('button', { name: 'Create API key' }).click();
  await page.getByLabel('New API key').waitFor();
  const stored = (await keysOf(admin)).find((k) => k.name === 'year end');
  assert.equal(new Date(stored.expires_at).toISOString(), `${year}-12-31T08:00:00.000Z`);
  const cell = page.locator('#key-list tr', { hasText: 'year end' }).locator('td[data-label="Expires"]');
  assert.equal((await cell.innerText()).trim(), `31 Dec ${year}, 00:00 UTC-8`);
  await page.getByRole('button', { name: 'I have copied it' }).click();
  await page.context().close();
});

test('9: making a superuser and deactivating a user ask first', async () => {
  const made = await apiCall(keygate.base, 'POST', '/api/v1/users/', {
    token: admin, body: { username: 'erin', password: 'erin-password-1', is_active: true },
  });
  assert.equal(made.status, 201);
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Users' }).click();
  const row = page.locator('tr[data-user="erin"]');
  await row.waitFor();

  await page.getByRole('button', { name: 'Make superuser: erin' }).click();
  const promote = page.getByRole('dialog', { name: 'Make erin a superuser?' });
  await promote.getByText('add, change and delete every user').waitFor();
  await promote.getByRole('button', { name: 'Cancel' }).click();
  await page.getByRole('button', { name: 'Deactivate erin' }).click();
  const deactivate = page.getByRole('dialog', { name: 'Deactivate erin?' });
  await deactivate.getByText('their API keys stop working').waitFor();
  await deactivate.getByRole('button', { name: 'Cancel' }).click();
  const user = (await apiCall(keygate.base, 'GET', `/api/v1/users/?skip=0&limit=100`, { token: admin }))
    .body.users.find((u) => u.username === 'erin');
  assert.equal(user.is_superuser, false);
  assert.equal(user.is_active, true);
  await page.context().close();
});

test('10: keys are newest first, searched, filtered, sorted and renamed; a duplicate name is pointed out', async () => {
  await clearKeys();
  for (const name of ['alpha', 'beta', 'gamma']) {
    await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { token: admin, body: { name } });
  }
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  const names = () => page.locator('#key-list tbody td[data-label="Name"]').allInnerTexts();
  await page.locator('#key-list tbody tr').nth(2).waitFor();
  assert.deepEqual(await names(), ['gamma', 'beta', 'alpha']);

  await page.getByLabel('Search keys').fill('bet');
  assert.deepEqual(await names(), ['beta']);
  await page.getByText('1 of 3 keys shown').waitFor();
  const prefix = (await page.locator('#key-list tbody td[data-label="Key"]').innerText()).slice(0, 7);
  await page.getByLabel('Search keys').fill(prefix);
  assert.deepEqual(await names(), ['beta']);
  await page.getByLabel('Search keys').fill('');

  await page.getByLabel('Sort by').selectOption({ label: 'Name (A to Z)' });
  assert.deepEqual(await names(), ['alpha', 'beta', 'gamma']);

  await page.getByRole('button', { name: 'Deactivate alpha' }).click();
  await page.getByRole('button', { name: 'Activate alpha', exact: true }).waitFor();
  await page.getByLabel('Show').selectOption('Inactive');
  assert.deepEqual(await names(), ['alpha']);
  await page.getByLabel('Show').selectOption('All');

  await page.getByRole('button', { name: 'Edit beta' }).click();
  const dialog = page.getByRole('dialog', { name: 'Edit beta' });
  await dialog.getByLabel('Name', { exact: true }).fill('gamma');
  await dialog.getByText('You already have a key named "gamma"').waitFor();
  await dialog.getByLabel('Name', { exact: true }).fill('beta renamed');
  await dialog.getByRole('button', { name: 'Save key' }).click();
  await page.locator('#key-list td[data-label="Name"]', { hasText: 'beta renamed' }).waitFor();
  assert.ok((await keysOf(admin)).some((k) => k.name === 'beta renamed'));

  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  await page.getByLabel('Name', { exact: true }).fill('alpha');
  await page.locator('#create-key-form').getByText('You already have a key named "alpha"').waitFor();
  await page.getByRole('button', { name: 'Cancel' }).click();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('11: the focus ring has 3:1 against its background and the Active badge 4.5:1', async () => {
  await clearKeys();
  await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { token: admin, body: { name: 'badge' } });
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.locator('#key-list .badge.active').first().waitFor();
  const badge = await page.locator('#key-list .badge.active').first().evaluate((el) => {
    const s = getComputedStyle(el);
    return [s.color, s.backgroundColor];
  });
  assert.ok(contrast(...badge) >= 4.5, `badge ${badge} at ${contrast(...badge).toFixed(2)}:1`);

  // Tab from the heading to buttons in the page and in the top bar.
  const rings = [];
  await page.getByRole('heading', { level: 1, name: 'API keys' }).focus();
  for (let i = 0; i < 4; i += 1) {
    await page.keyboard.press('Tab');
    rings.push(await page.evaluate(() => {
      const el = document.activeElement;
      const s = getComputedStyle(el);
      let bg = 'rgba(0, 0, 0, 0)';
      for (let node = el.parentElement; node; node = node.parentElement) {
        bg = getComputedStyle(node).backgroundColor;
        if (!bg.endsWith(', 0)') && bg !== 'transparent') break;
      }
      return { what: el.textContent || el.getAttribute('aria-label'), style: s.outlineStyle, color: s.outlineColor, bg };
    }));
  }
  await page.getByRole('button', { name: 'Sign out' }).focus();
  await page.keyboard.press('Shift+Tab');
  await page.keyboard.press('Tab');
  rings.push(await page.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return { what: 'Sign out', style: s.outlineStyle, color: s.outlineColor, bg: getComputedStyle(document.getElementById('topbar')).backgroundColor };
  }));
  for (const ring of rings) {
    assert.equal(ring.style, 'solid', JSON.stringify(ring));
    assert.ok(contrast(ring.color, ring.bg) >= 3, `${JSON.stringify(ring)} at ${contrast(ring.color, ring.bg).toFixed(2)}:1`);
  }
  await page.context().close();
});

test('12: the words fit the case: them for several keys, all sessions of another user, Save stays Save, the port named', async () => {
  await clearKeys();
  for (const name of ['one', 'two']) await apiCall(keygate.base, 'POST', '/api/v1/api_key/', { token: admin, body: { name } });
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('checkbox', { name: 'Select one' }).check();
  await page.getByRole('checkbox', { name: 'Select two' }).check();
  await page.getByRole('button', { name: 'Revoke selected (2)' }).click();
  await page.getByRole('dialog').getByText('Scripts using them get 401 at once.').waitFor();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();

  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByRole('button', { name: 'Reset password of carol' }).click();
  await page.getByRole('dialog').getByText("All of carol's sessions end; their API keys keep working.").waitFor();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
  await page.getByRole('button', { name: 'Reset password of admin' }).click();
  await page.getByRole('dialog').getByText('Your other sessions end').waitFor();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();

  await page.getByRole('link', { name: 'Provider credentials' }).click();
  const openai = page.locator('section[data-provider="openai"]');
  await openai.getByLabel('OpenAI-compatible API key').fill('sk-openai-test');
  await openai.getByLabel('OpenAI-compatible base URL').fill('http://127.0.0.1:9/v1');
  await openai.getByRole('button', { name: 'Save', exact: true }).click();
  const problem = await openai.getByRole('alert').innerText();
  assert.match(problem, /127\.0\.0\.1:9\b/);
  assert.equal(await openai.getByRole('button', { name: 'Save', exact: true }).count(), 1, 'the button changed its name');
  await page.context().close();
});
