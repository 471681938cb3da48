// Provider credentials page against a local Langfuse-speaking server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startKeygate, startUpstream, launchBrowser, newPage, signIn,
  LANGFUSE_PUBLIC, LANGFUSE_SECRET,
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

test('a Langfuse credential is checked, saved, masked and shows its project', async () => {
  const page = await newPage(browser);
  await signIn(page, keygate.base);
  await page.getByRole('link', { name: 'Provider credentials' }).click();
  const card = page.locator('section[data-provider="langfuse"]');
  await card.getByText('Not set.').waitFor();

  // Wrong keys: Langfuse's refusal in words, nothing stored.
  await card.getByLabel('Langfuse secret key').fill('sk-lf-wrong-secret-000000000000');
  await card.getByLabel('Langfuse public key').fill(LANGFUSE_PUBLIC);
  await card.getByLabel('Langfuse host').fill(upstream.url);
  await card.getByRole('button', { name: 'Save' }).click();
  await card.getByRole('alert').filter({ hasText: 'Langfuse rejected the credentials' }).waitFor();
  await card.getByText('Not set.').waitFor();

  // Right keys: saved, the project named, the secret masked and cleared.
  await card.getByLabel('Langfuse secret key').fill(LANGFUSE_SECRET);
  const saved = page.waitForResponse((r) => r.url().endsWith('/api/v1/providers/langfuse') && r.request().method() === 'PUT');
  await card.getByRole('button', { name: 'Save' }).click();
  const savedRes = await saved;
  assert.equal(savedRes.status(), 200, await savedRes.text());
  await card.getByText('Demo project').waitFor();
  await card.getByText('sk-lf-…6789').waitFor();
  assert.equal(await card.getByLabel('Langfuse secret key').inputValue(), '');
  assert.ok(!(await page.content()).includes(LANGFUSE_SECRET), 'the secret is in the page');

  // A generic secret has no provider to check.
  const generic = page.locator('section[data-provider="generic"]');
  await generic.getByLabel('Generic secret').fill('generic-secret-value-1234567890');
  await generic.getByRole('button', { name: 'Save' }).click();
  await generic.getByText('…7890').waitFor();

  // After a reload the project is looked up again.
  await page.reload();
  await card.getByText('Demo project').waitFor();
  assert.equal(await card.getByLabel('Langfuse host').inputValue(), upstream.url);

  // An OpenAI-compatible server that is not there: the cause in words.
  const openai = page.locator('section[data-provider="openai"]');
  await openai.getByLabel('OpenAI-compatible API key').fill('sk-openai-test');
  await openai.getByLabel('OpenAI-compatible base URL').fill('http://127.0.0.1:9/v1');
  await openai.getByRole('button', { name: 'Save' }).click();
  const problem = await openai.getByRole('alert').textContent();
  assert.match(problem, /OpenAI-compatible provider/i);

  // Delete with a confirmation.
  await generic.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete credential' }).click();
  await generic.getByText('Not set.').waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
