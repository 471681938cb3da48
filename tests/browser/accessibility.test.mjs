// Every page at desktop, narrow desktop and phone width (issue 13, items
// 2, 5 and 11): axe-core finds no serious or critical violation, and
// nothing makes the page scroll sideways.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, startUpstream, launchBrowser, newPage, signIn, apiLogin, apiCall, screenshot,
  seriousViolations, horizontalOverflow, DESKTOP, NARROW_DESKTOP, PHONE,
  LANGFUSE_PUBLIC, LANGFUSE_SECRET,
} from './harness.mjs';

let keygate;
let upstream;
let browser;

before(async () => {
  upstream = await startUpstream();
  keygate = await startKeygate();
  browser = await launchBrowser();
  // Something on every page: keys (one bound, one expiring, one inactive),
  // a Langfuse credential, both kinds of variable, flows (one warned), a user.
  const token = await apiLogin(keygate.base);
  const call = async (method, path, body, status) => {
    const res = await apiCall(keygate.base, method, path, { token, body });
    assert.equal(res.status, status, `${method} ${path}: ${JSON.stringify(res.body)}`);
    return res.body;
  };
  await call('PUT', '/api/v1/providers/langfuse', { secret_key: LANGFUSE_SECRET, public_key: LANGFUSE_PUBLIC, host: upstream.url }, 200);
  await call('POST', '/api/v1/variables/', { name: 'OPENAI_API_KEY', type: 'Credential', value: 'sk-variable-secret-0123456789' }, 201);
  await call('POST', '/api/v1/variables/', { name: 'REGION', type: 'Generic', value: 'eu-west-1' }, 201);
  const flow = await call('POST', '/api/v1/flows/', {
    name: 'Support bot', endpoint_name: 'support-bot',
    upstream: { url: `${upstream.url}/api/v1/run/support`, credential: { provider: 'langfuse', as: 'basic' } },
  }, 201);
  await call('POST', '/api/v1/flows/', {
    name: 'Needs a variable',
    upstream: { url: `${upstream.url}/api/v1/run/other`, credential: { variable: 'NOT_ADDED_YET' } },
  }, 201);
  const nightly = await call('POST', '/api/v1/api_key/', { name: 'nightly report script' }, 200);
  // Usage to chart, refusals included (the key's address list is changed
  // after the calls that count).
  for (let i = 0; i < 3; i += 1) await apiCall(keygate.base, 'GET', '/api/v1/users/whoami', { key: nightly.api_key });
  await call('PATCH', `/api/v1/api_key/${nightly.id}`, { allowed_ips: ['192.0.2.0/24'] }, 200);
  await apiCall(keygate.base, 'GET', '/api/v1/users/whoami', { key: nightly.api_key });
  await call('PATCH', `/api/v1/api_key/${nightly.id}`, { allowed_ips: null }, 200);
  await call('POST', '/api/v1/api_key/', {
    name: 'limited deploy key', scopes: ['read', 'run'], rate_limit: { requests: 600, per_seconds: 60 },
    allowed_ips: ['127.0.0.1', '2001:db8::/32'],
  }, 200);
  await call('POST', '/api/v1/api_key/', { name: 'support bot only', flow_id: flow.id }, 200);
  const expiring = await call('POST', '/api/v1/api_key/', {
    name: 'contractor until year end', expires_at: `${new Date().getUTCFullYear() + 1}-12-31T00:00:00Z`,
  }, 200);
  await call('PATCH', `/api/v1/api_key/${expiring.id}`, { is_active: false }, 200);
  await call('POST', '/api/v1/users/', { username: 'alice', password: 'alice-password-1', is_active: true }, 201);
});

after(async () => {
  await browser?.close();
  await keygate?.stop();
  await upstream?.stop();
});

/** The states to check, each reached from a signed-in page. */
const SIGNED_IN_STATES = [
  ['keys, a new key shown and the create form open', async (page) => {
    await page.locator('#key-list tbody tr').nth(2).waitFor();
    await page.getByRole('button', { name: 'Create key', exact: true }).click();
    await page.getByLabel('Name', { exact: true }).fill('ci deploy');
    await page.getByRole('button', { name: 'Create API key' }).click();
    await page.getByLabel('New API key').waitFor();
    await page.getByRole('button', { name: 'Create key', exact: true }).click();
    await page.locator('#create-key-form').waitFor();
    return 'keys-one-time';
  }],
  ['a confirmation dialog', async (page) => {
    await page.getByRole('button', { name: 'Revoke nightly report script' }).click();
    await page.getByRole('dialog').waitFor();
    return null;
  }],
  ['provider credentials', async (page) => {
    await page.keyboard.press('Escape');
    // The new key was checked above; the other pages are shown without it.
    await page.getByRole('button', { name: 'I have copied it' }).click();
    await page.getByRole('link', { name: 'Provider credentials' }).click();
    await page.getByText('Demo project').waitFor();
    return 'credentials';
  }],
  ['variables', async (page) => {
    await page.getByRole('link', { name: 'Variables' }).click();
    await page.locator('tr[data-variable="REGION"]').waitFor();
    return 'variables';
  }],
  ['flows, one with a warning', async (page) => {
    await page.getByRole('link', { name: 'Flows' }).click();
    await page.getByText('Runs fail: you have no variable named NOT_ADDED_YET.').waitFor();
    return 'flows';
  }],
  ['users', async (page) => {
    await page.getByRole('link', { name: 'Users' }).click();
    await page.locator('tr[data-user="alice"]').waitFor();
    return 'users';
  }],
  ['the edit dialog', async (page) => {
    await page.getByRole('link', { name: 'API keys' }).click();
    await page.getByRole('button', { name: 'Edit limited deploy key' }).first().click();
    await page.getByRole('dialog', { name: 'Edit limited deploy key' }).getByLabel('Allowed addresses (optional)').waitFor();
    return null;
  }],
  ['the rotate dialog', async (page) => {
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'hidden' });
    await page.getByRole('button', { name: 'Rotate limited deploy key' }).first().click();
    await page.getByRole('dialog', { name: 'Rotate limited deploy key' }).getByLabel('The old key keeps working for').waitFor();
    return null;
  }],
  ['a rotated key shown once', async (page) => {
    await page.getByRole('dialog').getByRole('button', { name: 'Rotate key' }).click();
    await page.locator('#old-key-end').waitFor();
    return null;
  }],
  ['a key\'s usage charts and table', async (page) => {
    await page.getByRole('button', { name: 'I have copied it' }).click();
    await page.getByRole('link', { name: 'Usage of nightly report script' }).click();
    await page.locator('#usage-days svg g.bar[data-refused="1"]').waitFor();
    await page.locator('#usage-days').getByText('Show the numbers as a table').click();
    await page.locator('#usage-days tbody tr').first().waitFor();
    return null;
  }],
  ['the audit log', async (page) => {
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.locator('#audit-list tr[data-action="key.rotate"]').first().waitFor();
    return null;
  }],
];

for (const [label, viewport] of [['desktop', DESKTOP], ['narrow desktop', NARROW_DESKTOP], ['phone', PHONE]]) {
  test(`every page at ${label} width (${viewport.width} px): no serious axe violation, no sideways scrolling`, async () => {
    const page = await newPage(browser, viewport);
    const check = async (what, shot) => {
      assert.deepEqual(await seriousViolations(page), [], `${what} at ${viewport.width} px`);
      assert.equal(await horizontalOverflow(page), 0, `${what} scrolls sideways at ${viewport.width} px`);
      if (shot && viewport === DESKTOP) await screenshot(page, shot);
      if (shot === 'keys-one-time' && viewport === PHONE) await screenshot(page, 'keys-phone');
    };
    await page.goto(`${keygate.base}/`);
    await page.getByRole('heading', { name: 'Sign in to keygate' }).waitFor();
    await check('sign-in', 'sign-in');
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').waitFor();
    await check('sign-in error', 'sign-in-error');
    await signIn(page, keygate.base);
    for (const [what, reach] of SIGNED_IN_STATES) {
      const shot = await reach(page);
      await check(what, shot);
    }
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });
}
