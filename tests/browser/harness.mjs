// Shared set-up of the browser tests: the real keygate binary on a free
// port over a temporary SQLite data directory, a local server speaking
// Langfuse's projects API (and answering flow runs), and Debian's headless
// Chromium driven by playwright-core. Nothing here sleeps for a fixed time:
// every wait is on a log line, a response or a page condition.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
// The docs' screenshots are rewritten only when asked
// (KEYGATE_REFRESH_SCREENSHOTS=1); otherwise they go to a temporary
// directory, so a test run leaves the work tree as it was.
export const REFRESH_SCREENSHOTS = process.env.KEYGATE_REFRESH_SCREENSHOTS === '1';
export const SCREENSHOTS = REFRESH_SCREENSHOTS
  ? join(ROOT, 'docs', 'screenshots')
  : join(tmpdir(), 'keygate-screenshots');
export const ADMIN = 'admin';
export const ADMIN_PASSWORD = 'admin-password-for-browser-tests';
export const LANGFUSE_PUBLIC = 'pk-lf-browser-test';
export const LANGFUSE_SECRET = 'sk-lf-browser-test-secret-0123456789';
export const CHROMIUM = process.env.KEYGATE_TEST_CHROMIUM || '/usr/bin/chromium';

// The flags that work on a machine without a network beyond loopback.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** The keygate binary `cargo test` builds; built here when missing or stale. */
export function keygateBinary() {
  const target = process.env.CARGO_TARGET_DIR
    ? resolve(ROOT, process.env.CARGO_TARGET_DIR)
    : join(ROOT, 'target');
  const binary = join(target, 'debug', 'keygate');
  if (process.env.KEYGATE_TEST_SKIP_BUILD !== 'true' || !existsSync(binary)) {
    // A no-op when `cargo test` has just built it.
    const built = spawnSync('cargo', ['build', '--quiet', '--bin', 'keygate'], { cwd: ROOT, stdio: 'inherit' });
    if (built.status !== 0) throw new Error('cargo build failed');
  }
  return binary;
}

/** Starts keygate; resolves once it logs "keygate is listening". */
export async function startKeygate(extraEnv = {}) {
  const binary = keygateBinary();
  const dataDir = mkdtempSync(join(tmpdir(), 'keygate-browser-'));
  const env = { PATH: process.env.PATH, HOME: process.env.HOME };
  Object.assign(env, {
    KEYGATE_DATA_DIR: dataDir,
    KEYGATE_HOST: '127.0.0.1',
    KEYGATE_PORT: '0',
    KEYGATE_WORKERS: '2',
    KEYGATE_SUPERUSER: ADMIN,
    KEYGATE_SUPERUSER_PASSWORD: ADMIN_PASSWORD,
    KEYGATE_ALLOW_PRIVATE_UPSTREAMS: 'true',
    KEYGATE_LOG: 'info',
    ...extraEnv,
  });
  const child = spawn(binary, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const base = await new Promise((resolveStart, rejectStart) => {
    const timer = setTimeout(() => rejectStart(new Error(`keygate did not start:\n${log}`)), 60000);
    const onData = (chunk) => {
      log += chunk.toString();
      const line = log.split('\n').find((l) => l.includes('keygate is listening'));
      const match = line && line.match(/addr=([0-9.]+:\d+)/);
      if (match) {
        clearTimeout(timer);
        resolveStart(`http://${match[1]}`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      rejectStart(new Error(`keygate exited with ${code}:\n${log}`));
    });
  });
  return {
    base,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A local HTTP server speaking what keygate calls: Langfuse's
 * `GET /api/public/projects` with Basic auth, and flow runs
 * (`POST /api/v1/run/...`), which it answers with what it received.
 */
export async function startUpstream() {
  const runs = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const send = (status, body) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'GET' && req.url === '/api/public/projects') {
        const expected = `Basic ${Buffer.from(`${LANGFUSE_PUBLIC}:${LANGFUSE_SECRET}`).toString('base64')}`;
        if (req.headers.authorization !== expected) {
          send(401, { message: 'Invalid credentials. Confirm that you\'ve configured the correct host.' });
          return;
        }
        send(200, { data: [{ id: 'proj-1', name: 'Demo project' }] });
        return;
      }
      if (req.method === 'POST' && req.url.startsWith('/api/v1/run/')) {
        const run = { url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() };
        runs.push(run);
        send(200, { session_id: 'session-1', outputs: [{ echo: JSON.parse(run.body || 'null') }] });
        return;
      }
      send(404, { detail: 'Not Found' });
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    runs,
    stop: () => new Promise((r) => server.close(r)),
  };
}

/** `extraArgs`: more Chromium flags (e.g. a host-resolver rule to loopback). */
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs] });
}

export const DESKTOP = { width: 1280, height: 860 };
export const NARROW_DESKTOP = { width: 1024, height: 768 };
export const PHONE = { width: 390, height: 844 };

/** A fresh context (own cookies) and page at desktop width. */
export async function newPage(browser, viewport = DESKTOP, { timezoneId = 'UTC' } = {}) {
  const context = await browser.newContext({ viewport, locale: 'en-GB', timezoneId });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const problems = [];
  // Script errors and CSP violations. Chromium also logs every 4xx answer
  // ("Failed to load resource"): the page expects those (no session yet,
  // auto-login off, a refused form) and shows them in words.
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
      problems.push(msg.text());
    }
  });
  page.on('pageerror', (err) => problems.push(String(err)));
  page.problems = problems;
  return page;
}

/** How many pixels the page is wider than the window (0 when it fits). */
export async function horizontalOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** axe-core's serious and critical violations on the page as it is now. */
export async function seriousViolations(page) {
  if (!(await page.evaluate(() => Boolean(window.axe)))) {
    // Through the DevTools protocol, so the page's CSP does not apply.
    await page.evaluate(AXE_SOURCE);
  }
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

/** WCAG contrast ratio of two CSS colours `rgb(r, g, b)`. */
export function contrast(a, b) {
  const lum = (css) => {
    const [r, g, bl] = css.match(/[\d.]+/g).slice(0, 3).map(Number).map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Signs in through the form and waits for the keys page. */
export async function signIn(page, base, username = ADMIN, password = ADMIN_PASSWORD) {
  await page.goto(`${base}/`);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
}

/** JSON API calls from the test itself (not through the page). */
export async function apiLogin(base, username = ADMIN, password = ADMIN_PASSWORD) {
  const res = await fetch(`${base}/api/v1/login`, {
    method: 'POST',
    body: new URLSearchParams({ username, password }),
  });
  if (res.status !== 200) throw new Error(`login as ${username}: ${res.status}`);
  return (await res.json()).access_token;
}

export async function apiCall(base, method, path, { token, key, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (key) headers['x-api-key'] = key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { json = text; }
  return { status: res.status, body: json, headers: res.headers };
}
