// keygate settings UI: a small single page over the JSON API under /api/v1.
// No framework, no build step. Everything user-supplied is put in the page
// as text (textContent, input values), never as HTML. State-changing calls
// carry the session's CSRF token in X-CSRF-Token. Each page is one
// render* function; the shared parts (helpers, API, session, routing,
// messages, the pending new key) come first.
'use strict';

(function () {
  const state = {
    me: null,
    csrf: null,
    autoLogin: false,
    // When the session ends (ms since the epoch), from GET /session.
    expiresAt: null,
    // A key just created, until its owner dismisses it: memory only, never
    // storage, so it is gone with the tab.
    pendingKey: null,
    // A message to show after the next navigation: [text, kind].
    carry: null,
  };
  const main = document.getElementById('main');

  // ---------- small helpers ----------

  // h('tag.class', {attr: value, onclick: fn}, child, ...): builds an element.
  function h(spec, attrs, ...children) {
    const [tag, ...classes] = spec.split('.');
    const el = document.createElement(tag);
    if (classes.length) el.className = classes.join(' ');
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith('on') && typeof value === 'function') {
        el.addEventListener(name.slice(2), value);
      } else if (name === 'value' || name === 'checked' || name === 'disabled' || name === 'hidden') {
        el[name] = value;
      } else if (name === 'text') {
        el.textContent = value;
      } else {
        el.setAttribute(name, value === true ? '' : String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  let uid = 0;
  function nextId(prefix) {
    uid += 1;
    return `${prefix}-${uid}`;
  }

  // A labelled form control: label above, hints below (tied by aria-describedby).
  function field(labelText, control, ...hints) {
    if (!control.id) control.id = nextId('f');
    const parts = [h('label', { for: control.id, text: labelText }), control];
    const ids = [];
    for (const hint of hints) {
      if (!hint) continue;
      const el = hint instanceof Node ? hint : h('p.hint', { text: hint });
      if (!el.id) el.id = nextId('hint');
      ids.push(el.id);
      parts.push(el);
    }
    if (ids.length) control.setAttribute('aria-describedby', ids.join(' '));
    return h('div.field', {}, parts);
  }

  function checkboxField(labelText, control) {
    if (!control.id) control.id = nextId('f');
    return h('div.field.check', {}, control, h('label', { for: control.id, text: labelText }));
  }

  function plural(n, one, many) {
    return n === 1 ? one : many;
  }

  // ---------- times ----------

  // "UTC", "UTC+1", "UTC-8", "UTC+5:30": the zone of a date in this browser.
  function zoneOffset(date) {
    const minutes = -date.getTimezoneOffset();
    if (!minutes) return 'UTC';
    const abs = Math.abs(minutes);
    const mm = abs % 60;
    return `UTC${minutes > 0 ? '+' : '-'}${Math.floor(abs / 60)}${mm ? `:${String(mm).padStart(2, '0')}` : ''}`;
  }

  function zoneDescription() {
    const name = Intl.DateTimeFormat().resolvedOptions().timeZone;
    const offset = zoneOffset(new Date());
    return name && name !== 'UTC' ? `${name}, ${offset}` : offset;
  }

  // The exact time, with its zone stated.
  function exactTime(text) {
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return String(text);
    return `${date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })} ${zoneOffset(date)}`;
  }

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  function relativeTime(text) {
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return String(text);
    const seconds = (date.getTime() - Date.now()) / 1000;
    const abs = Math.abs(seconds);
    if (abs < 45) return seconds <= 0 ? 'just now' : 'in a moment';
    const steps = [[3600, 60, 'minute'], [86400, 3600, 'hour'], [86400 * 30, 86400, 'day'], [86400 * 365, 86400 * 30, 'month']];
    for (const [below, size, unit] of steps) {
      if (abs < below) return relative.format(Math.round(seconds / size), unit);
    }
    return relative.format(Math.round(seconds / (86400 * 365)), 'year');
  }

  // A relative time ("5 minutes ago"), the exact one on hover and focus.
  function timeCell(text, empty) {
    if (!text) return h('span.muted', { text: empty });
    return h('time', { datetime: text, title: exactTime(text), text: relativeTime(text) });
  }

  // The exact time with its zone ("31 Dec 2027, 00:00 UTC-8").
  function exactCell(text, empty) {
    if (!text) return h('span.muted', { text: empty });
    return h('time', { datetime: text, title: relativeTime(text), text: exactTime(text) });
  }

  // "2027-12-31T00:00" in this browser's zone, for datetime-local inputs.
  function localInputValue(date) {
    const pad = (n) => String(n).padStart(2, '0');
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }

  // ---------- errors in plain words ----------

  const FIELD_LABELS = {
    'upstream.url': 'The upstream URL',
    'upstream.credential': 'The credential',
    'upstream.method': 'The upstream method',
    endpoint_name: 'The endpoint name',
    expires_at: 'The expiry',
    secret_key: 'The secret',
    public_key: 'The public key',
    host: 'The host',
    name: 'The name',
    value: 'The value',
    type: 'The type',
    password: 'The password',
    username: 'The username',
  };

  // Turns the API's field-named messages ("host: host 10.0.0.1 resolves
  // only to private …") into sentences a person reads.
  function plainError(message) {
    let text = String(message || '').trim();
    text = text.replace(
      /host (\S+) resolves only to private, loopback or link-local addresses, which are not allowed \(the operator can allow them with (KEYGATE_ALLOW_PRIVATE_UPSTREAMS=true)\)/,
      '$1 is a private or local address, which keygate may not connect to (an operator can allow such addresses with $2)',
    );
    const match = text.match(/^([a-z_]+(?:\.[a-z_]+)?)(: | is not allowed: | )(.*)$/s);
    if (match && FIELD_LABELS[match[1]]) {
      const [, name, sep, rest] = match;
      const label = FIELD_LABELS[name];
      if (sep === ': ') {
        const bare = label.replace(/^The /, '');
        text = /private or local address/.test(rest)
          ? `${label} is not allowed: ${rest}`
          : `${bare.charAt(0).toUpperCase()}${bare.slice(1)}: ${rest}`;
      } else if (sep === ' is not allowed: ') {
        text = `${label} is not allowed: ${rest}`;
      } else {
        text = `${label} ${rest}`;
      }
    }
    if (text && !/[.!?)]$/.test(text)) text += '.';
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function errorBox() {
    return h('p.error', { role: 'alert', hidden: true });
  }

  function showError(box, message) {
    box.textContent = message;
    box.hidden = !message;
  }

  // An old error goes as soon as the browser's own validation stops the
  // next submit: it no longer describes the form.
  document.addEventListener('invalid', (event) => {
    const form = event.target.form;
    if (form) for (const box of form.querySelectorAll('.error')) showError(box, '');
  }, true);

  // ---------- messages (toasts) ----------

  // kind: success, info, warning or error. Toasts go on navigation; a
  // success also goes by itself after a while; every one can be dismissed.
  function toast(message, kind = 'success', extra) {
    const region = document.getElementById('toasts');
    const close = h('button.toast-close', { type: 'button', 'aria-label': 'Dismiss message', text: '×' });
    const item = h(`div.toast.${kind}`, { role: kind === 'error' || kind === 'warning' ? 'alert' : 'status' },
      h('span.toast-text', {}, message, extra ? [' ', extra] : null), close);
    close.addEventListener('click', () => {
      item.remove();
      focusHeading();
    });
    while (region.children.length >= 3) region.firstChild.remove();
    region.append(item);
    if (kind === 'success') setTimeout(() => item.remove(), 10000);
    return item;
  }

  function clearToasts() {
    document.getElementById('toasts').replaceChildren();
  }

  // ---------- copying ----------

  function selectContents(target) {
    if (!target) return;
    if (target instanceof HTMLInputElement) {
      target.focus();
      target.select();
      return;
    }
    const range = document.createRange();
    range.selectNodeContents(target);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // The clipboard API where the browser allows it (HTTPS, localhost);
  // elsewhere the text is selected and copied the old way, or left
  // selected with the reason said.
  async function copyText(text, target, status) {
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (_) {
        copied = false;
      }
    }
    if (!copied) {
      selectContents(target);
      try { copied = document.execCommand('copy'); } catch (_) { copied = false; }
    }
    if (copied) status.textContent = 'Copied.';
    else if (window.isSecureContext) status.textContent = 'The browser did not allow copying. The text is selected: press Ctrl+C (⌘C on a Mac).';
    else status.textContent = 'Copy buttons need HTTPS or localhost. The text is selected: press Ctrl+C (⌘C on a Mac).';
  }

  // ---------- the API ----------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function describe(detail, status) {
    if (typeof detail === 'string' && detail) return plainError(detail);
    if (Array.isArray(detail)) return detail.map((d) => plainError(d.msg || JSON.stringify(d))).join(' ');
    return `The server answered HTTP ${status}.`;
  }

  async function send(method, path, body) {
    const headers = { Accept: 'application/json' };
    let payload;
    if (body instanceof URLSearchParams) {
      payload = body;
    } else if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    if (state.csrf && method !== 'GET') headers['X-CSRF-Token'] = state.csrf;
    try {
      return await fetch(`/api/v1${path}`, {
        method, headers, body: payload, credentials: 'same-origin', cache: 'no-store',
      });
    } catch (_) {
      throw new ApiError(0, 'keygate could not be reached. Check that it is running and try again.');
    }
  }

  // A 401 while signed in means the session ended: the sign-in dialog
  // opens over the page (nothing typed is lost) and the call is made once
  // more with the new session.
  async function api(method, path, body, options) {
    for (let attempt = 0; ; attempt += 1) {
      const res = await send(method, path, body);
      let data = null;
      const text = await res.text();
      if (text) {
        try { data = JSON.parse(text); } catch (_) { data = null; }
      }
      if (res.ok) return data;
      if (res.status === 401 && state.me && attempt === 0 && !(options && options.quiet401)) {
        if (await reauthenticate('ended')) continue;
        throw new ApiError(401, 'Your session has ended; sign in again.');
      }
      throw new ApiError(res.status, describe(data && data.detail, res.status));
    }
  }

  // ---------- session ----------

  // The end of the session is kept in this browser's clock: the server's
  // `expires_at` moved by how far the two clocks differ (its Date header).
  async function loadSession() {
    const res = await send('GET', '/session?optional=true');
    const session = await res.json().catch(() => null);
    if (!res.ok || !session) throw new ApiError(res.status, describe(session && session.detail, res.status));
    const serverNow = Date.parse(res.headers.get('Date') || '');
    const skew = Number.isNaN(serverNow) ? 0 : Date.now() - serverNow;
    state.me = session.user;
    state.csrf = session.csrf_token;
    state.autoLogin = Boolean(session.auto_login);
    state.expiresAt = session.expires_at ? Date.parse(session.expires_at) + skew : null;
  }

  // The warning shown this long before the session ends.
  const WARN_BEFORE_MS = 5 * 60 * 1000;
  let sessionTimer = null;

  function watchSession() {
    clearInterval(sessionTimer);
    sessionTimer = null;
    checkSession();
    if (state.me && state.expiresAt) sessionTimer = setInterval(checkSession, 15000);
  }

  function checkSession() {
    const box = document.getElementById('session-warning');
    if (!state.me || !state.expiresAt) {
      box.hidden = true;
      return;
    }
    const left = state.expiresAt - Date.now();
    if (left <= 0) {
      box.hidden = true;
      reauthenticate('ended');
      return;
    }
    if (left > WARN_BEFORE_MS) {
      box.hidden = true;
      return;
    }
    const minutes = Math.max(1, Math.round(left / 60000));
    const at = new Date(state.expiresAt).toLocaleTimeString(undefined, { timeStyle: 'short' });
    const message = `Your session ends at ${at} (in ${minutes} ${plural(minutes, 'minute', 'minutes')}). Sign in again to keep working; what you typed stays.`;
    let text = box.querySelector('.session-text');
    if (!text) {
      text = h('span.session-text');
      const again = h('button.small', { type: 'button', text: 'Sign in again' });
      again.addEventListener('click', () => reauthenticate('renew'));
      box.replaceChildren(text, again);
    }
    if (text.textContent !== message) text.textContent = message;
    box.hidden = false;
  }

  let reauthInFlight = null;

  // Resolves true once the same user has signed in again, false when they
  // chose the sign-in page instead. One dialog for all callers at once.
  function reauthenticate(reason) {
    if (!state.me) return Promise.resolve(false);
    if (!reauthInFlight) {
      reauthInFlight = openReauth(reason).finally(() => { reauthInFlight = null; });
    }
    return reauthInFlight;
  }

  // The dialog's form exists only while it is open.
  function openReauth(reason) {
    const dialog = document.getElementById('reauth');
    const username = h('input', { name: 'username', autocomplete: 'username', readonly: true, value: state.me.username });
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const error = errorBox();
    const ok = h('button', { type: 'submit', text: 'Sign in' });
    const other = h('button.secondary', { type: 'button', text: 'Sign in as someone else' });
    const form = h('form', { id: 'reauth-form' },
      h('h2', { id: 'reauth-title', text: reason === 'renew' ? 'Sign in again' : 'Your session has ended' }),
      h('p', { text: reason === 'renew'
        ? 'Sign in again to start a new session. What you typed stays on the page.'
        : 'Sign in again to go on. What you typed stays on the page, and what you were saving is sent once you are back.' }),
      field('Username', username),
      field('Password', password),
      error,
      h('div.actions', {}, ok, other));
    dialog.replaceChildren(form);
    const opener = document.activeElement;
    return new Promise((resolve) => {
      const finish = (value) => {
        form.removeEventListener('submit', onSubmit);
        other.removeEventListener('click', onOther);
        dialog.removeEventListener('cancel', onCancel);
        dialog.close();
        dialog.replaceChildren();
        if (value && opener && opener.isConnected) opener.focus();
        resolve(value);
      };
      const onSubmit = async (event) => {
        event.preventDefault();
        showError(error, '');
        ok.disabled = true;
        const previous = state.me;
        try {
          const res = await send('POST', '/login', new URLSearchParams({ username: previous.username, password: password.value }));
          const answer = await res.json().catch(() => null);
          if (!res.ok) throw new ApiError(res.status, describe(answer && answer.detail, res.status));
          state.csrf = answer.csrf_token;
          await loadSession();
          password.value = '';
          showChrome();
          watchSession();
          finish(true);
        } catch (e) {
          showError(error, e.status === 401 ? 'Incorrect password.' : e.message);
          password.focus();
        } finally {
          ok.disabled = false;
        }
      };
      const onOther = () => {
        finish(false);
        endSession('Sign in.');
      };
      // Esc would leave a page that cannot save anything: keep it open.
      const onCancel = (event) => event.preventDefault();
      form.addEventListener('submit', onSubmit);
      other.addEventListener('click', onOther);
      dialog.addEventListener('cancel', onCancel);
      dialog.showModal();
      password.focus();
    });
  }

  // Forgets the session (and any pending key) and shows the sign-in page.
  function endSession(info) {
    state.me = null;
    state.csrf = null;
    state.expiresAt = null;
    state.pendingKey = null;
    watchSession();
    renderPendingKey();
    clearToasts();
    showChrome();
    renderLogin(null, info);
  }

  function showChrome() {
    const bar = document.getElementById('topbar');
    bar.hidden = !state.me;
    if (!state.me) return;
    document.getElementById('who').textContent = `Signed in as ${state.me.username}`;
    document.getElementById('nav-users').hidden = !state.me.is_superuser;
  }

  async function signOut() {
    if (state.pendingKey) {
      const ok = await confirmDialog('Sign out and lose the new key?',
        h('p', { text: 'The new key is shown only once. If you sign out before copying it, revoke it later and create another.' }),
        'Sign out');
      if (!ok) return;
    }
    try { await api('POST', '/logout', undefined, { quiet401: true }); } catch (_) { /* signed out anyway */ }
    endSession('You are signed out.');
  }

  // ---------- routing ----------

  const routes = {
    '/keys': renderKeys,
    '/credentials': renderCredentials,
    '/variables': renderVariables,
    '/flows': renderFlows,
    '/users': renderUsers,
    '/usage': renderUsage,
    '/audit': renderAudit,
  };

  // "#/variables?add=NAME" -> { path: '/variables', params }.
  function currentRoute() {
    const [path, query] = location.hash.replace(/^#/, '').split('?');
    return { path: routes[path] ? path : '/keys', params: new URLSearchParams(query || '') };
  }

  function page(title, lead) {
    document.title = `${title} · keygate`;
    const heading = h('h1', { tabindex: '-1', text: title });
    main.replaceChildren(heading);
    if (lead) main.append(h('p.lead', { text: lead }));
    return heading;
  }

  async function route() {
    // Messages belong to the page they were said on.
    clearToasts();
    if (state.carry) {
      toast(...state.carry);
      state.carry = null;
    }
    if (!state.me) {
      renderLogin();
      return;
    }
    const { path, params } = currentRoute();
    if (path === '/users' && !state.me.is_superuser) {
      state.carry = ['Only superusers can manage users.', 'info'];
      location.replace('#/keys');
      return;
    }
    for (const link of document.querySelectorAll('#nav a')) {
      // A key's usage is part of the keys pages.
      if (link.dataset.route === (path === '/usage' ? '/keys' : path)) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    renderPendingKey();
    await routes[path](params);
  }

  function focusHeading() {
    const heading = main.querySelector('h1');
    if (heading) heading.focus();
  }

  // ---------- sign in ----------

  function renderLogin(problem, info) {
    document.title = 'Sign in · keygate';
    const username = h('input', { name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const error = errorBox();
    const button = h('button', { type: 'submit', text: 'Sign in' });
    const form = h('form.card.narrow', { id: 'login-form', 'aria-labelledby': 'login-title' },
      h('h1', { id: 'login-title', tabindex: '-1', text: 'Sign in to keygate' }),
      info ? h('p.info', { role: 'status', text: info }) : null,
      field('Username', username),
      field('Password', password),
      error,
      h('div.actions', {}, button));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      showError(error, '');
      button.disabled = true;
      try {
        const answer = await api('POST', '/login', new URLSearchParams({ username: username.value, password: password.value }));
        state.csrf = answer.csrf_token;
        await loadSession();
        showChrome();
        watchSession();
        await route();
        focusHeading();
      } catch (e) {
        showError(error, e.message);
        password.select();
        password.focus();
      } finally {
        button.disabled = false;
      }
    });
    main.replaceChildren(form);
    if (problem) showError(error, problem);
    username.focus();
  }

  // ---------- the new key, shown once ----------

  // Shown above every page until dismissed, so going to Flows for the curl
  // command and back keeps it; leaving or reloading asks first.
  function renderPendingKey() {
    const region = document.getElementById('pending-key');
    const created = state.pendingKey;
    if (!created || !state.me) {
      region.replaceChildren();
      return;
    }
    if (region.firstChild && region.firstChild.dataset.keyId === created.id) return;
    const input = h('input.secret', { id: 'new-key', readonly: true, value: created.api_key, spellcheck: 'false', autocomplete: 'off' });
    const status = h('span.copy-status', { role: 'status', 'aria-live': 'polite' });
    const copy = h('button', { type: 'button', text: 'Copy key' });
    copy.addEventListener('click', () => copyText(input.value, input, status));
    const done = h('button.secondary', { type: 'button', text: 'I have copied it' });
    done.addEventListener('click', () => {
      input.value = '';
      state.pendingKey = null;
      region.replaceChildren();
      toast('The new key is no longer shown.', 'info');
      focusHeading();
    });
    let replaced = null;
    if (created.old_key_id) {
      const ends = created.old_key_expires_at;
      replaced = ends && new Date(ends) > new Date()
        ? h('p.old-key', { id: 'old-key-end' }, `It replaces ${created.old_key_prefix || 'the old key'}, which keeps working until `, exactCell(ends), ' so your scripts can switch over.')
        : h('p.old-key', { id: 'old-key-end', text: `It replaces ${created.old_key_prefix || 'the old key'}, which stopped working now.` });
    }
    const box = h('section.card.one-time', { 'aria-labelledby': 'one-time-title', 'data-key-id': created.id },
      h('h2', { id: 'one-time-title', tabindex: '-1', text: `Your new key${created.name ? `: ${created.name}` : ''}` }),
      replaced,
      h('p.warning', { text: 'Copy it now: this is the only time keygate shows the full key. Only its hash is stored, so it cannot be shown again. If you lose it, revoke it and create another.' }),
      field('New API key', input, 'It stays here while you move between pages until you click "I have copied it". Leaving or reloading the page asks first.'),
      h('div.actions', {}, copy, done, status));
    region.replaceChildren(box);
  }

  function showNewKey(created) {
    state.pendingKey = created;
    renderPendingKey();
    const heading = document.getElementById('one-time-title');
    if (heading) heading.focus();
  }

  window.addEventListener('beforeunload', (event) => {
    if (!state.pendingKey) return;
    event.preventDefault();
    event.returnValue = '';
  });

  // ---------- dialogs ----------

  function confirmDialog(title, body, okLabel, options) {
    const dialog = document.getElementById('dialog');
    const ok = document.getElementById('dialog-ok');
    document.getElementById('dialog-title').textContent = title;
    document.getElementById('dialog-body').replaceChildren(...[].concat(body).filter(Boolean));
    ok.textContent = okLabel;
    ok.className = options && options.safe ? '' : 'danger';
    dialog.returnValue = '';
    const opener = document.activeElement;
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => {
        // The callers keep the controls they read; the page keeps none.
        document.getElementById('dialog-body').replaceChildren();
        if (opener && opener.isConnected) opener.focus();
        resolve(dialog.returnValue === 'ok');
      }, { once: true });
      dialog.showModal();
      if (options && options.focus) options.focus.focus();
    });
  }

  // A dialog with a form that stays open until `action` succeeds: a
  // refusal is shown inside it and nothing typed is lost. Resolves with
  // what `action` returned, or null when cancelled.
  function actionDialog(title, body, okLabel, action, options) {
    const dialog = document.getElementById('dialog');
    const form = document.getElementById('dialog-form');
    const ok = document.getElementById('dialog-ok');
    const error = errorBox();
    document.getElementById('dialog-title').textContent = title;
    document.getElementById('dialog-body').replaceChildren(...[].concat(body).filter(Boolean), error);
    ok.textContent = okLabel;
    ok.className = options && options.danger ? 'danger' : '';
    dialog.returnValue = '';
    const opener = document.activeElement;
    let result = null;
    return new Promise((resolve) => {
      const onSubmit = async (event) => {
        if (!event.submitter || event.submitter.value !== 'ok') return;
        event.preventDefault();
        showError(error, '');
        ok.disabled = true;
        try {
          result = (await action()) ?? true;
          dialog.close('ok');
        } catch (e) {
          showError(error, e.message);
        } finally {
          ok.disabled = false;
        }
      };
      form.addEventListener('submit', onSubmit);
      dialog.addEventListener('close', () => {
        form.removeEventListener('submit', onSubmit);
        document.getElementById('dialog-body').replaceChildren();
        if (opener && opener.isConnected) opener.focus();
        resolve(dialog.returnValue === 'ok' ? result : null);
      }, { once: true });
      dialog.showModal();
      if (options && options.focus) options.focus.focus();
    });
  }

  // A live note under a name field when the name is already taken.
  function duplicateNote(input, takenNames, what) {
    const note = h('p.hint.note', { role: 'status' });
    const update = () => {
      const name = input.value.trim();
      note.textContent = name && takenNames().includes(name)
        ? `You already have ${what} named "${name}". A different name helps you tell them apart.`
        : '';
    };
    input.addEventListener('input', update);
    update();
    return note;
  }

  // ---------- API keys ----------

  async function loadFlows() {
    const flows = await api('GET', '/flows/');
    return Array.isArray(flows) ? flows : (flows.items || []);
  }

  function keyStatus(key) {
    if (key.expires_at && new Date(key.expires_at) <= new Date()) return 'Expired';
    return key.is_active ? 'Active' : 'Inactive';
  }

  // The list shows "sk-AbCdE" and asterisks; a few dots say as much.
  function maskKey(masked) {
    return `${String(masked || '').replace(/\*+$/, '')}…`;
  }

  const KEY_SORTS = {
    newest: { label: 'Newest first', compare: (a, b) => b.created_at.localeCompare(a.created_at) },
    oldest: { label: 'Oldest first', compare: (a, b) => a.created_at.localeCompare(b.created_at) },
    name: { label: 'Name (A to Z)', compare: (a, b) => (a.name || '').localeCompare(b.name || '') },
    used: { label: 'Last used', compare: (a, b) => (b.last_used_at || '').localeCompare(a.last_used_at || '') },
    uses: { label: 'Most uses', compare: (a, b) => b.total_uses - a.total_uses },
  };

  const SCOPES = [
    ['read', 'Read', 'GET routes about your own objects'],
    ['write', 'Write', 'create, change and delete your keys, credentials, variables, flows'],
    ['run', 'Run', 'run flows (/api/v1/run, /api/v1/process)'],
    ['admin', 'Admin', 'superuser routes'],
  ];

  // The scopes the signed-in user can give: admin only for a superuser.
  function offeredScopes() {
    return SCOPES.filter(([id]) => id !== 'admin' || (state.me && state.me.is_superuser));
  }

  // null (every scope) or the list, as the API takes it.
  function normalScopes(scopes) {
    if (!scopes) return null;
    const offered = offeredScopes().map(([id]) => id);
    const held = offered.filter((id) => scopes.includes(id));
    return held.length === offered.length ? null : held;
  }

  function describeScopes(key) {
    if (key.flow_id) return 'run (this flow only)';
    const scopes = normalScopes(key.scopes);
    return scopes ? scopes.join(', ') : 'all';
  }

  function describeRate(limit) {
    if (!limit) return null;
    const units = { 1: 'second', 60: 'minute', 3600: 'hour', 86400: 'day' };
    const per = units[limit.per_seconds] ? units[limit.per_seconds] : `${limit.per_seconds} seconds`;
    return `${limit.requests} ${plural(limit.requests, 'request', 'requests')} per ${per}`;
  }

  // The key's access fields (scopes, rate limit, addresses), for the
  // create form and the edit dialog. read() gives the API's values or
  // throws an Error saying what to fix.
  function accessFields(key, options) {
    const initial = key ? normalScopes(key.scopes) : null;
    const boxes = offeredScopes().map(([id, label, about]) => {
      const box = h('input', { type: 'checkbox', name: 'scope', value: id, checked: !initial || initial.includes(id) });
      return [id, box, checkboxField(`${label}: ${about}`, box)];
    });
    const scopeSet = h('fieldset.scopes', {},
      h('legend', { text: 'Scopes' }),
      h('p.hint', { text: 'What the key may do; all ticked: everything you may do.' }),
      boxes.map(([, , el]) => el));
    const bound = h('p.hint', { text: 'A key bound to a flow can only run that flow.' });
    const setBound = (isBound) => {
      scopeSet.hidden = isBound;
      bound.hidden = !isBound;
    };
    setBound(Boolean(options && options.flowBound));
    const limit = (key && key.rate_limit) || {};
    const requests = h('input', { name: 'rate_requests', type: 'number', min: '1', max: '1000000000', step: '1', inputmode: 'numeric', value: limit.requests ? String(limit.requests) : '' });
    const per = h('input', { name: 'rate_per_seconds', type: 'number', min: '1', max: '86400', step: '1', inputmode: 'numeric', value: limit.per_seconds ? String(limit.per_seconds) : '', placeholder: '60' });
    const rateSet = h('fieldset.rate', {},
      h('legend', { text: 'Rate limit (optional)' }),
      h('div.row', {}, field('Requests', requests), field('Per seconds', per)),
      h('p.hint', { text: 'E.g. 600 requests per 60 seconds; past it the key gets 429 until the window ends. Leave both empty for no limit.' }));
    const ips = h('textarea', { name: 'allowed_ips', rows: '3', spellcheck: 'false', autocomplete: 'off', placeholder: '203.0.113.0/24\n2001:db8::/32' });
    ips.value = key && key.allowed_ips ? key.allowed_ips.join('\n') : '';
    const ipField = field('Allowed addresses (optional)', ips, 'IP addresses or CIDR blocks, one per line or separated by commas. Leave empty for any address.');
    return {
      nodes: [bound, scopeSet, rateSet, ipField],
      setBound,
      read() {
        const out = {};
        if (scopeSet.hidden) {
          out.scopes = undefined;
        } else {
          const ticked = boxes.filter(([, box]) => box.checked).map(([id]) => id);
          if (!ticked.length) throw new Error('Tick at least one scope.');
          out.scopes = ticked.length === boxes.length ? null : ticked;
        }
        const r = requests.value.trim();
        const p = per.value.trim();
        if (!r && !p) out.rate_limit = null;
        else if (!r || !p) throw new Error('Give both the number of requests and the seconds for the rate limit, or leave both empty.');
        else out.rate_limit = { requests: Number(r), per_seconds: Number(p) };
        const list = ips.value.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
        out.allowed_ips = list.length ? list : null;
        return out;
      },
    };
  }

  const GRACE_CHOICES = [
    [0, 'Stop it now'],
    [3600, '1 hour'],
    [86400, '24 hours'],
    [7 * 86400, '7 days'],
    [30 * 86400, '30 days'],
  ];

  async function renderKeys() {
    page('API keys', 'Scripts call keygate with a key in the x-api-key header or the x-api-key query parameter. A key has your rights, or only the one flow it is bound to.');
    const error = errorBox();
    const createButton = h('button', { type: 'button', text: 'Create key', 'aria-expanded': 'false', 'aria-controls': 'create-key' });
    const revokeSelected = h('button.danger', { type: 'button', disabled: true, text: 'Revoke selected' });
    const search = h('input', { type: 'search', name: 'search', placeholder: 'Name or key prefix', autocomplete: 'off', spellcheck: 'false' });
    const statusFilter = h('select', { name: 'status' },
      ['All', 'Active', 'Inactive', 'Expired'].map((s) => h('option', { value: s, text: s === 'All' ? 'All keys' : s })));
    const sort = h('select', { name: 'sort' },
      Object.entries(KEY_SORTS).map(([value, s]) => h('option', { value, text: s.label })));
    const count = h('p.hint', { role: 'status' });
    const filters = h('div.filters', {},
      field('Search keys', search), field('Show', statusFilter), field('Sort by', sort));
    const toolbar = h('div.toolbar', {}, createButton, revokeSelected);
    const createArea = h('div', { id: 'create-key' });
    const listArea = h('div', { id: 'key-list' });
    main.append(toolbar, error, createArea, filters, count, listArea);
    for (const control of [search, statusFilter, sort]) {
      control.addEventListener('input', drawTable);
    }

    let flows = [];
    let keys = [];
    const selected = new Set();

    function updateSelection() {
      revokeSelected.disabled = selected.size === 0;
      revokeSelected.textContent = selected.size ? `Revoke selected (${selected.size})` : 'Revoke selected';
    }

    async function refresh() {
      try {
        const [list, flowList] = await Promise.all([api('GET', '/api_key/'), loadFlows()]);
        keys = list.api_keys;
        flows = flowList;
      } catch (e) {
        showError(error, e.message);
        return;
      }
      for (const id of [...selected]) if (!keys.some((k) => k.id === id)) selected.delete(id);
      drawTable();
      updateSelection();
    }

    function flowName(id) {
      if (!id) return null;
      const flow = flows.find((f) => f.id === id);
      return flow ? flow.name : id;
    }

    function visibleKeys() {
      const needle = search.value.trim().toLowerCase();
      return keys
        .filter((k) => !needle || (k.name || '').toLowerCase().includes(needle) || k.api_key.toLowerCase().startsWith(needle))
        .filter((k) => statusFilter.value === 'All' || keyStatus(k) === statusFilter.value)
        .sort(KEY_SORTS[sort.value].compare);
    }

    function drawTable() {
      // A filter in use stays visible, so it can be undone.
      filters.hidden = keys.length < 2 && !search.value && statusFilter.value === 'All';
      if (!keys.length) {
        count.textContent = '';
        listArea.replaceChildren(h('p.empty', { text: 'No API keys yet. Create one to call keygate from a script.' }));
        return;
      }
      const shown = visibleKeys();
      count.textContent = shown.length === keys.length
        ? `${keys.length} ${plural(keys.length, 'key', 'keys')}`
        : `${shown.length} of ${keys.length} keys shown`;
      if (!shown.length) {
        const clear = h('button.secondary.small', { type: 'button', text: 'Show all keys' });
        clear.addEventListener('click', () => {
          search.value = '';
          statusFilter.value = 'All';
          drawTable();
          search.focus();
        });
        listArea.replaceChildren(h('div.empty', {}, h('p', { text: 'No key matches.' }), clear));
        return;
      }
      const table = h('table.data.keys', {},
        h('caption.visually-hidden', { text: 'Your API keys' }),
        h('thead', {}, h('tr', {}, ['', 'Name', 'Key', 'Created', 'Last used', 'Uses', 'Status', 'Expires', 'Access', 'Actions']
          .map((name) => h('th', { scope: 'col' }, name || h('span.visually-hidden', { text: 'Select' }))))),
        h('tbody', {}, shown.map(keyRow)));
      listArea.replaceChildren(h('div.table-wrap', {}, table));
    }

    function keyRow(key) {
      const label = key.name || 'unnamed key';
      const box = h('input', { type: 'checkbox', 'aria-label': `Select ${label}`, checked: selected.has(key.id) });
      box.addEventListener('change', () => {
        if (box.checked) selected.add(key.id); else selected.delete(key.id);
        updateSelection();
      });
      const edit = h('button.secondary.small', { type: 'button', text: 'Edit', 'aria-label': `Edit ${label}` });
      edit.addEventListener('click', () => editKey(key));
      const rotate = h('button.secondary.small', { type: 'button', text: 'Rotate', 'aria-label': `Rotate ${label}` });
      rotate.addEventListener('click', () => rotateKey(key));
      const usage = h('a.button-link.small', { href: `#/usage?key=${encodeURIComponent(key.id)}`, text: 'Usage', 'aria-label': `Usage of ${label}` });
      const toggle = h('button.secondary.small', {
        type: 'button',
        text: key.is_active ? 'Deactivate' : 'Activate',
        'aria-label': `${key.is_active ? 'Deactivate' : 'Activate'} ${label}`,
      });
      toggle.addEventListener('click', async () => {
        showError(error, '');
        try {
          await api('PATCH', `/api_key/${key.id}`, { is_active: !key.is_active });
          toast(`${label} is now ${key.is_active ? 'inactive: scripts using it get 401 until you activate it' : 'active'}.`);
          await refresh();
        } catch (e) { showError(error, e.message); }
      });
      const revoke = h('button.danger.small', { type: 'button', text: 'Revoke', 'aria-label': `Revoke ${label}` });
      revoke.addEventListener('click', () => revokeKeys([key]));
      const status = keyStatus(key);
      return h('tr', { 'data-key-id': key.id },
        h('td.select', { 'data-label': 'Select' }, box),
        h('td.name', { 'data-label': 'Name' }, key.name ? key.name : h('span.muted', { text: 'unnamed' })),
        h('td', { 'data-label': 'Key' }, h('code.masked', { title: 'The full key is never shown again', text: maskKey(key.api_key) })),
        h('td.when', { 'data-label': 'Created' }, timeCell(key.created_at)),
        h('td.when', { 'data-label': 'Last used' }, timeCell(key.last_used_at, 'never'),
          key.last_used_from ? h('span.from', {}, 'from ', h('code', { text: key.last_used_from })) : null),
        h('td.num', { 'data-label': 'Uses' }, String(key.total_uses)),
        h('td', { 'data-label': 'Status' }, h(`span.badge.${status.toLowerCase()}`, { text: status })),
        h('td.when', { 'data-label': 'Expires' }, exactCell(key.expires_at, 'never')),
        h('td.access', { 'data-label': 'Access' }, accessSummary(key)),
        h('td.actions-cell', { 'data-label': 'Actions' }, h('div.btns', {}, edit, usage, rotate, toggle, revoke)));
    }

    // Flow, scopes, rate limit and allowed addresses, one line each.
    function accessSummary(key) {
      const rate = describeRate(key.rate_limit);
      return h('ul.access-list', {},
        h('li.flow', {}, h('span.muted', { text: 'Flow: ' }), key.flow_id ? flowName(key.flow_id) : 'all my flows'),
        h('li.scopes', {}, h('span.muted', { text: 'Scopes: ' }), describeScopes(key)),
        h('li.rate', {}, h('span.muted', { text: 'Limit: ' }), rate || 'none'),
        h('li.ips', {}, h('span.muted', { text: 'From: ' }), key.allowed_ips
          ? key.allowed_ips.map((ip, i) => [i ? ', ' : '', h('code', { text: ip })])
          : 'any address'));
    }

    async function editKey(key) {
      const label = key.name || 'unnamed key';
      const name = h('input', { name: 'name', maxlength: '255', autocomplete: 'off', value: key.name || '' });
      const note = duplicateNote(name, () => keys.filter((k) => k.id !== key.id).map((k) => k.name), 'a key');
      const active = h('input', { type: 'checkbox', name: 'is_active', checked: key.is_active });
      const access = accessFields(key, { flowBound: Boolean(key.flow_id) });
      const expiry = h('p.hint', {}, 'Expires: ', exactCell(key.expires_at, 'never'),
        '. The expiry cannot be changed; rotate the key or create another for a different one.');
      const saved = await actionDialog(`Edit ${label}`, [
        field('Name', name, 'Scripts are not affected: the key stays the same.', note),
        checkboxField('Active (an inactive key gets 401 until it is activated again)', active),
        ...access.nodes,
        h('div.expiry-readonly', {}, expiry),
      ], 'Save key', async () => {
        const wanted = access.read();
        const body = {};
        const newName = name.value.trim();
        if (newName !== (key.name || '')) body.name = newName || null;
        if (active.checked !== key.is_active) body.is_active = active.checked;
        if (wanted.scopes !== undefined && JSON.stringify(wanted.scopes) !== JSON.stringify(normalScopes(key.scopes))) body.scopes = wanted.scopes;
        if (JSON.stringify(wanted.rate_limit) !== JSON.stringify(key.rate_limit || null)) body.rate_limit = wanted.rate_limit;
        if (JSON.stringify(wanted.allowed_ips) !== JSON.stringify(key.allowed_ips || null)) body.allowed_ips = wanted.allowed_ips;
        if (!Object.keys(body).length) return 'unchanged';
        return api('PATCH', `/api_key/${key.id}`, body);
      }, { focus: name });
      if (!saved || saved === 'unchanged') return;
      showError(error, '');
      toast(`${saved.name || 'The key'} was saved.`);
      await refresh();
    }

    async function rotateKey(key) {
      const label = key.name || 'unnamed key';
      const grace = h('select', { name: 'grace_seconds' },
        GRACE_CHOICES.map(([seconds, text]) => h('option', { value: String(seconds), text })));
      grace.value = '86400';
      const rotated = await actionDialog(`Rotate ${label}`, [
        h('p', { text: 'A new key replaces this one, with the same name, scopes, limits, addresses, flow and expiry. It is shown once.' }),
        field('The old key keeps working for', grace, 'So your scripts can switch over; at most 30 days. After that the old key gets 401.'),
      ], 'Rotate key', () => api('POST', `/api_key/${key.id}/rotate`, { grace_seconds: Number(grace.value) }), { focus: grace });
      if (!rotated) return;
      showError(error, '');
      if (state.pendingKey && state.pendingKey.id === key.id) state.pendingKey = null;
      showNewKey({ ...rotated, old_key_prefix: maskKey(key.api_key) });
      await refresh();
    }

    async function revokeKeys(chosen) {
      const names = chosen.map((k) => k.name || 'unnamed key');
      const one = chosen.length === 1;
      const ok = await confirmDialog(
        one ? `Revoke ${names[0]}?` : `Revoke ${chosen.length} keys?`,
        [
          one ? null : h('p', { text: names.join(', ') }),
          h('p', { text: one ? 'Scripts using it get 401 at once. This cannot be undone.' : 'Scripts using them get 401 at once. This cannot be undone.' }),
        ],
        one ? 'Revoke key' : `Revoke ${chosen.length} keys`,
      );
      if (!ok) return;
      showError(error, '');
      const failed = [];
      for (const key of chosen) {
        try {
          await api('DELETE', `/api_key/${key.id}`);
          selected.delete(key.id);
          if (state.pendingKey && state.pendingKey.id === key.id) {
            state.pendingKey = null;
            renderPendingKey();
          }
        } catch (e) {
          failed.push(`${key.name || 'unnamed key'}: ${e.message}`);
        }
      }
      if (failed.length) showError(error, `Not revoked: ${failed.join(' ')}`);
      else toast(one ? `${names[0]} was revoked.` : `${chosen.length} keys were revoked.`);
      await refresh();
    }

    revokeSelected.addEventListener('click', () => {
      const chosen = keys.filter((k) => selected.has(k.id));
      if (chosen.length) revokeKeys(chosen);
    });

    function closeCreate() {
      createArea.replaceChildren();
      createButton.setAttribute('aria-expanded', 'false');
    }

    createButton.addEventListener('click', () => {
      if (createArea.firstChild) { closeCreate(); return; }
      createButton.setAttribute('aria-expanded', 'true');
      const name = h('input', { name: 'name', maxlength: '255', autocomplete: 'off' });
      const note = duplicateNote(name, () => keys.map((k) => k.name), 'a key');
      const expires = h('input', { name: 'expires', type: 'datetime-local', min: localInputValue(new Date()) });
      const flow = h('select', { name: 'flow' },
        h('option', { value: '', text: 'Not bound: all my flows and the API' }),
        flows.map((f) => h('option', { value: f.id, text: f.name })));
      // Presets fill in the date and time, which stays editable.
      const presets = h('div.presets', { role: 'group', 'aria-label': 'Expiry presets' },
        [30, 60, 90].map((days) => h('button.secondary.small', {
          type: 'button',
          text: `In ${days} days`,
          onclick: () => { expires.value = localInputValue(new Date(Date.now() + days * 86400000)); },
        })),
        h('button.secondary.small', { type: 'button', text: 'Never', onclick: () => { expires.value = ''; } }));
      const access = accessFields(null, { flowBound: false });
      flow.addEventListener('change', () => access.setBound(Boolean(flow.value)));
      const formError = errorBox();
      const submit = h('button', { type: 'submit', text: 'Create API key' });
      const cancel = h('button.secondary', { type: 'button', text: 'Cancel', onclick: closeCreate });
      const expiresField = field('Expires (optional)', expires, `Date and time in your time zone (${zoneDescription()}); the key stops working then. Leave empty for no expiry.`);
      expiresField.append(presets);
      const form = h('form.card', { 'aria-labelledby': 'create-title', id: 'create-key-form' },
        h('h2', { id: 'create-title', text: 'Create an API key' }),
        field('Name', name, 'So you can tell your keys apart, e.g. "nightly report script".', note),
        expiresField,
        field('Bound to flow (optional)', flow, 'A bound key can only run that one flow.'),
        access.nodes,
        formError,
        h('div.actions', {}, submit, cancel));
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        showError(formError, '');
        const body = { name: name.value.trim() || null };
        try {
          const wanted = access.read();
          // Omitted: every scope (and none of these for a flow-bound key).
          if (wanted.scopes) body.scopes = wanted.scopes;
          if (wanted.rate_limit) body.rate_limit = wanted.rate_limit;
          if (wanted.allowed_ips) body.allowed_ips = wanted.allowed_ips;
        } catch (e) {
          showError(formError, e.message);
          return;
        }
        if (expires.value) {
          const when = new Date(expires.value);
          if (Number.isNaN(when.getTime()) || when <= new Date()) {
            showError(formError, 'The expiry must be a date and time in the future.');
            expires.focus();
            return;
          }
          body.expires_at = when.toISOString();
        }
        if (flow.value) body.flow_id = flow.value;
        submit.disabled = true;
        try {
          const created = await api('POST', '/api_key/', body);
          closeCreate();
          showNewKey(created);
          await refresh();
        } catch (e) {
          showError(formError, e.message);
        } finally {
          submit.disabled = false;
        }
      });
      createArea.replaceChildren(form);
      name.focus();
    });

    await refresh();
  }

  // ---------- provider credentials ----------

  const PROVIDERS = [
    {
      id: 'langfuse',
      title: 'Langfuse',
      about: 'Checked against the Langfuse server (GET /api/public/projects) before it is stored.',
      fields: [
        { name: 'secret_key', label: 'secret key', secret: true, required: true, placeholder: 'sk-lf-…' },
        { name: 'public_key', label: 'public key', required: true, placeholder: 'pk-lf-…' },
        { name: 'host', label: 'host', required: true, type: 'url', placeholder: 'https://cloud.langfuse.com' },
      ],
    },
    {
      id: 'openai',
      title: 'OpenAI-compatible',
      about: 'Any OpenAI-compatible API; checked with GET /v1/models before it is stored.',
      fields: [
        { name: 'secret_key', label: 'API key', secret: true, required: true, placeholder: 'sk-…' },
        { name: 'host', label: 'base URL', required: true, type: 'url', placeholder: 'https://api.openai.com/v1' },
      ],
    },
    {
      id: 'generic',
      title: 'Generic',
      about: 'Any other secret, stored encrypted without a check, for flows to inject.',
      fields: [
        { name: 'secret_key', label: 'secret', secret: true, required: true },
        { name: 'public_key', label: 'public key or user name (optional)' },
        { name: 'host', label: 'host (optional)', type: 'url', placeholder: 'https://…' },
      ],
    },
  ];

  function providerTitle(id) {
    const provider = PROVIDERS.find((p) => p.id === id);
    return provider ? provider.title : id;
  }

  async function renderCredentials() {
    page('Provider credentials', 'keygate keeps one credential per provider for you, encrypted, and injects it into your flows\' upstream calls. Secrets are never shown again in full.');
    const error = errorBox();
    const grid = h('div.cards');
    main.append(error, grid);
    let stored = [];
    try {
      stored = await api('GET', '/providers/');
    } catch (e) {
      showError(error, e.message);
    }
    for (const provider of PROVIDERS) {
      grid.append(credentialCard(provider, stored.find((c) => c.provider === provider.id)));
    }
  }

  function credentialCard(provider, saved) {
    const titleId = `cred-${provider.id}-title`;
    const card = h('section.card.credential', { 'aria-labelledby': titleId, 'data-provider': provider.id, id: `credential-${provider.id}` });
    const status = h('div.saved', { 'aria-live': 'polite' });
    const error = errorBox();
    const inputs = {};
    let isSaved = Boolean(saved);
    const form = h('form', {});
    const secretHint = h('p.hint', { text: isSaved ? 'Stored. Type a new one to replace it.' : '' });
    for (const spec of provider.fields) {
      const input = h('input', {
        name: spec.name,
        type: spec.secret ? 'password' : (spec.type || 'text'),
        required: spec.required && !(spec.secret && saved) ? true : null,
        placeholder: spec.placeholder,
        autocomplete: spec.secret ? 'new-password' : 'off',
        spellcheck: 'false',
      });
      inputs[spec.name] = input;
      form.append(field(`${provider.title} ${spec.label}`, input, spec.secret ? secretHint : null));
    }
    const saveLabel = () => (isSaved ? 'Save changes' : 'Save');
    const save = h('button', { type: 'submit', text: saveLabel() });
    const remove = h('button.danger.secondary', { type: 'button', text: 'Delete', hidden: !saved, 'aria-label': `Delete the ${provider.title} credential` });
    form.append(error, h('div.actions', {}, save, remove));

    function fill(view) {
      if (!view) {
        status.replaceChildren(h('p.muted', { text: 'Not set.' }));
        return;
      }
      if (inputs.host && view.host) inputs.host.value = view.host;
      if (inputs.public_key && view.public_key) inputs.public_key.value = view.public_key;
      const rows = [['Secret', h('code', { text: view.secret_key })]];
      if (view.public_key) rows.push(['Public key', h('code', { text: view.public_key })]);
      if (view.host) rows.push(['Host', view.host]);
      if (provider.id === 'langfuse') {
        if (view.project_name !== undefined || view.project_error !== undefined) {
          rows.push(['Project', view.project_name
            ? h('strong.project', { text: `${view.project_name}` })
            : h('span.error-text', { text: plainError(view.project_error || 'unknown') })]);
        } else {
          rows.push(['Project', h('span.muted', { text: 'checking…' })]);
        }
      }
      rows.push(['Saved', timeCell(view.updated_at)]);
      status.replaceChildren(h('dl.facts', {}, rows.map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)])));
    }

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      showError(error, '');
      const body = {};
      for (const [name, input] of Object.entries(inputs)) {
        if (input.value.trim()) body[name] = input.value.trim();
      }
      if (!body.secret_key) {
        showError(error, `Enter the ${provider.fields[0].label} (secrets are never shown again, so saving asks for it each time).`);
        inputs.secret_key.focus();
        return;
      }
      save.disabled = true;
      save.textContent = 'Checking…';
      try {
        const view = await api('PUT', `/providers/${provider.id}`, body);
        inputs.secret_key.value = '';
        inputs.secret_key.required = false;
        isSaved = true;
        secretHint.textContent = 'Stored. Type a new one to replace it.';
        fill(view);
        remove.hidden = false;
        toast(`${provider.title} credential saved.`);
      } catch (e) {
        showError(error, e.message);
      } finally {
        save.disabled = false;
        save.textContent = saveLabel();
      }
    });

    remove.addEventListener('click', async () => {
      const ok = await confirmDialog(`Delete the ${provider.title} credential?`,
        h('p', { text: 'Flows that inject it will fail until you save a new one.' }), 'Delete credential');
      if (!ok) return;
      try {
        await api('DELETE', `/providers/${provider.id}`);
        for (const input of Object.values(inputs)) input.value = '';
        inputs.secret_key.required = true;
        isSaved = false;
        secretHint.textContent = '';
        save.textContent = saveLabel();
        fill(null);
        remove.hidden = true;
        toast(`${provider.title} credential deleted.`);
      } catch (e) { showError(error, e.message); }
    });

    card.append(h('h2', { id: titleId, text: provider.title }), h('p.hint', { text: provider.about }), status, form);
    fill(saved);
    if (saved && provider.id === 'langfuse') {
      api('GET', `/providers/${provider.id}`).then(fill).catch((e) => showError(error, e.message));
    }
    return card;
  }

  // ---------- variables ----------

  const CREDENTIAL = 'Credential';
  const GENERIC = 'Generic';

  async function loadVariables() {
    return api('GET', '/variables/');
  }

  // A value input that hides what is typed for a Credential.
  function valueInput(type, value) {
    return h('input', {
      name: 'value',
      type: type === CREDENTIAL ? 'password' : 'text',
      autocomplete: 'off',
      spellcheck: 'false',
      value: value || '',
    });
  }

  async function renderVariables(params) {
    page('Variables', 'Langflow-style global variables. A flow can inject a Credential variable into its upstream calls. Credential values are encrypted and never shown again; Generic values are shown as stored.');
    const error = errorBox();
    const formArea = h('div', { id: 'variable-form-area' });
    const list = h('div', { id: 'variable-list' });
    main.append(error, formArea, list);
    let variables = [];

    async function refresh() {
      try {
        variables = await loadVariables();
      } catch (e) {
        showError(error, e.message);
        return;
      }
      if (!variables.length) {
        list.replaceChildren(h('p.empty', { text: 'No variables yet.' }));
        return;
      }
      list.replaceChildren(h('div.table-wrap', {}, h('table.data', {},
        h('caption.visually-hidden', { text: 'Your variables' }),
        h('thead', {}, h('tr', {}, ['Name', 'Type', 'Value', 'Updated', 'Actions'].map((n) => h('th', { scope: 'col', text: n })))),
        h('tbody', {}, variables.map(variableRow)))));
    }

    function variableRow(variable) {
      const edit = h('button.secondary.small', { type: 'button', text: 'Edit', 'aria-label': `Edit ${variable.name}` });
      edit.addEventListener('click', () => editVariable(variable));
      const del = h('button.danger.small', { type: 'button', text: 'Delete', 'aria-label': `Delete ${variable.name}` });
      del.addEventListener('click', async () => {
        const ok = await confirmDialog(`Delete ${variable.name}?`,
          h('p', { text: 'Flows that inject it fail until you add it again. This cannot be undone.' }), 'Delete variable');
        if (!ok) return;
        showError(error, '');
        try {
          await api('DELETE', `/variables/${variable.id}`);
          toast(`${variable.name} was deleted.`);
        } catch (e) { showError(error, e.message); }
        await refresh();
      });
      const value = variable.type === CREDENTIAL
        ? h('span.muted', { text: variable.has_value ? 'stored, encrypted (never shown)' : 'empty' })
        : h('code.value', { text: variable.value });
      return h('tr', { 'data-variable': variable.name },
        h('td.name', { 'data-label': 'Name' }, h('code', { text: variable.name })),
        h('td', { 'data-label': 'Type' }, variable.type),
        h('td.value-cell', { 'data-label': 'Value' }, value),
        h('td.when', { 'data-label': 'Updated' }, timeCell(variable.updated_at)),
        h('td.actions-cell', { 'data-label': 'Actions' }, h('div.btns', {}, edit, del)));
    }

    function addForm(prefill) {
      const name = h('input', { name: 'name', required: true, maxlength: '255', autocomplete: 'off', spellcheck: 'false', value: prefill.name || '' });
      const note = duplicateNote(name, () => variables.map((v) => v.name), 'a variable');
      const type = h('select', { name: 'type' }, h('option', { value: CREDENTIAL, text: 'Credential (secret, never shown again)' }), h('option', { value: GENERIC, text: 'Generic (shown as stored)' }));
      type.value = prefill.type === GENERIC ? GENERIC : CREDENTIAL;
      let value = valueInput(type.value);
      value.required = true;
      const valueField = field('Value', value);
      type.addEventListener('change', () => { value.type = type.value === CREDENTIAL ? 'password' : 'text'; });
      const formError = errorBox();
      const submit = h('button', { type: 'submit', text: 'Add variable' });
      const form = h('form.card', { id: 'add-variable-form', 'aria-labelledby': 'add-variable-title' },
        h('h2', { id: 'add-variable-title', text: 'Add a variable' }),
        h('div.row', {}, field('Name', name, 'Unique among your variables, e.g. OPENAI_API_KEY.', note), field('Type', type)),
        valueField, formError, h('div.actions', {}, submit));
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        showError(formError, '');
        submit.disabled = true;
        try {
          const created = await api('POST', '/variables/', { name: name.value.trim(), type: type.value, value: value.value });
          toast(`${created.name} was added.`);
          form.reset();
          value.type = 'password';
          await refresh();
          name.focus();
        } catch (e) {
          showError(formError, e.message);
        } finally {
          submit.disabled = false;
        }
      });
      formArea.replaceChildren(form);
      if (prefill.name) value.focus();
    }

    async function editVariable(variable) {
      const name = h('input', { name: 'name', required: true, maxlength: '255', autocomplete: 'off', spellcheck: 'false', value: variable.name });
      const type = h('select', { name: 'type' }, h('option', { value: CREDENTIAL, text: CREDENTIAL }), h('option', { value: GENERIC, text: GENERIC }));
      type.value = variable.type;
      const value = valueInput(variable.type, variable.type === GENERIC ? variable.value : '');
      const hint = h('p.hint');
      const sync = () => {
        value.type = type.value === CREDENTIAL ? 'password' : 'text';
        const changed = type.value !== variable.type;
        value.required = changed || type.value === GENERIC;
        hint.textContent = changed
          ? 'Changing the type needs the value again.'
          : (type.value === CREDENTIAL ? 'Stored and never shown. Leave empty to keep it, or type a new one to replace it.' : '');
      };
      type.addEventListener('change', sync);
      sync();
      const ok = await confirmDialog(`Edit ${variable.name}`,
        [field('Name', name), field('Type', type), field('Value', value, hint)], 'Save variable', { safe: true, focus: name });
      if (!ok) return;
      const body = {};
      if (name.value.trim() !== variable.name) body.name = name.value.trim();
      if (type.value !== variable.type) body.type = type.value;
      if (value.value && !(type.value === GENERIC && type.value === variable.type && value.value === variable.value)) body.value = value.value;
      value.value = '';
      if (!Object.keys(body).length) return;
      showError(error, '');
      try {
        const saved = await api('PATCH', `/variables/${variable.id}`, body);
        toast(`${saved.name} was saved.`);
      } catch (e) { showError(error, e.message); }
      await refresh();
    }

    addForm({ name: params.get('add') || '', type: params.get('type') || CREDENTIAL });
    await refresh();
  }

  // ---------- flows ----------

  function curlCommands(flow) {
    const target = `${location.origin}/api/v1/run/${flow.endpoint_name || flow.id}`;
    const body = `'{"inputs": {"input_value": "Hello"}, "tweaks": {}}'`;
    return {
      header: `curl -X POST "${target}" \\\n  -H "Content-Type: application/json" \\\n  -H "x-api-key: $KEYGATE_API_KEY" \\\n  -d ${body}`,
      query: `curl -X POST "${target}?x-api-key=$KEYGATE_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d ${body}`,
    };
  }

  function describeUpstream(upstream) {
    if (upstream.langflow) return `Langflow ${upstream.langflow.url}, flow ${upstream.langflow.flow_id}`;
    return `${upstream.method} ${upstream.url}`;
  }

  function describeCredential(upstream) {
    const cred = upstream && upstream.credential;
    if (!cred) return 'none';
    const source = cred.provider ? `${cred.provider} provider credential` : `Credential variable ${cred.variable}`;
    const how = { bearer: 'as Authorization: Bearer', basic: 'as Basic auth', header: `in header ${cred.header}` }[cred.as] || '';
    return `${source}, ${how}`;
  }

  // What a flow injects but its owner has not stored, with where to add
  // it: the same rule as the API's `warnings`, from the lists at hand.
  function missingSecret(flow, providers, variables) {
    const cred = flow.upstream && flow.upstream.credential;
    if (!cred) return null;
    if (cred.provider) {
      if (providers.some((p) => p.provider === cred.provider)) return null;
      return {
        text: `Runs fail: you have no ${providerTitle(cred.provider)} credential stored.`,
        link: h('a', { href: '#/credentials', text: `Add the ${providerTitle(cred.provider)} credential` }),
      };
    }
    const variable = variables.find((v) => v.name === cred.variable);
    if (variable && variable.type === CREDENTIAL) return null;
    return {
      text: variable
        ? `Runs fail: ${cred.variable} is a ${variable.type} variable, not a Credential variable.`
        : `Runs fail: you have no variable named ${cred.variable}.`,
      link: variable
        ? h('a', { href: '#/variables', text: `Change ${cred.variable} on the Variables page` })
        : h('a', { href: `#/variables?add=${encodeURIComponent(cred.variable)}`, text: `Add ${cred.variable} as a Credential variable` }),
    };
  }

  function warningLink(warning) {
    if (warning.provider) return h('a', { href: '#/credentials', text: `Add the ${providerTitle(warning.provider)} credential` });
    if (warning.code === 'variable_missing') {
      return h('a', { href: `#/variables?add=${encodeURIComponent(warning.variable)}`, text: `Add ${warning.variable} as a Credential variable` });
    }
    return h('a', { href: '#/variables', text: 'Open the Variables page' });
  }

  async function renderFlows() {
    page('Flows', 'A flow forwards runs to its upstream with your stored credential injected. Scripts run it with one of your API keys.');
    const error = errorBox();
    const newButton = h('button', { type: 'button', text: 'New flow', 'aria-expanded': 'false' });
    const formArea = h('div', { id: 'flow-form-area' });
    const list = h('div', { id: 'flow-list' });
    const saveWarnings = h('div', { id: 'flow-warnings' });
    main.append(h('div.toolbar', {}, newButton), error, saveWarnings, formArea, list);
    let providers = [];
    let variables = [];

    async function refresh() {
      let flows;
      try {
        [flows, providers, variables] = await Promise.all([loadFlows(), api('GET', '/providers/'), loadVariables()]);
      } catch (e) {
        showError(error, e.message);
        return;
      }
      if (!flows.length) {
        list.replaceChildren(h('p.empty', { text: 'No flows yet. Create one to give your scripts a gateway to an upstream.' }));
        return;
      }
      list.replaceChildren(...flows.map(flowCard));
    }

    function flowCard(flow) {
      const titleId = nextId('flow');
      const cmds = curlCommands(flow);
      const edit = h('button.secondary.small', { type: 'button', text: 'Edit', 'aria-label': `Edit ${flow.name}` });
      edit.addEventListener('click', () => openForm(flow));
      const del = h('button.danger.small', { type: 'button', text: 'Delete', 'aria-label': `Delete ${flow.name}` });
      del.addEventListener('click', async () => {
        const ok = await confirmDialog(`Delete flow ${flow.name}?`,
          h('p', { text: 'Keys bound to this flow are revoked with it. This cannot be undone.' }), 'Delete flow');
        if (!ok) return;
        try {
          await api('DELETE', `/flows/${flow.id}`);
          toast(`Flow ${flow.name} was deleted.`);
          await refresh();
        } catch (e) { showError(error, e.message); }
      });
      const command = (label, text) => {
        const status = h('span.copy-status', { role: 'status' });
        const pre = h('pre.command', { tabindex: '0', 'aria-label': label }, h('code', { text }));
        const copy = h('button.secondary.small', { type: 'button', text: 'Copy', 'aria-label': `Copy: ${label}` });
        copy.addEventListener('click', () => copyText(text, pre, status));
        return h('div.command-block', {}, h('div.command-head', {}, h('span', { text: label }), copy, status), pre);
      };
      const upstream = flow.upstream;
      const missing = missingSecret(flow, providers, variables);
      return h('article.card.flow', { 'aria-labelledby': titleId, 'data-flow-id': flow.id },
        h('div.card-head', {}, h('h2', { id: titleId, text: flow.name }), h('div.actions', {}, edit, del)),
        missing ? h('p.warn-box', {}, missing.text, ' ', missing.link) : null,
        h('dl.facts', {},
          h('dt', { text: 'Endpoint name' }), h('dd', {}, flow.endpoint_name ? h('code', { text: flow.endpoint_name }) : h('span.muted', { text: 'none (run by id)' })),
          h('dt', { text: 'Flow id' }), h('dd', {}, h('code', { text: flow.id })),
          h('dt', { text: 'Upstream' }), h('dd', {}, upstream ? describeUpstream(upstream) : h('span.muted', { text: 'not set' })),
          h('dt', { text: 'Credential' }), h('dd', { text: describeCredential(upstream) })),
        h('h3', { text: 'Run it' }),
        h('p.hint', {}, 'Set ', h('code', { text: 'KEYGATE_API_KEY' }), ' to one of your keys (', h('a', { href: '#/keys', text: 'create or find one' }), '; a new key stays on screen until you dismiss it).'),
        command('With the x-api-key header', cmds.header),
        command('With the x-api-key query parameter', cmds.query));
    }

    function openForm(flow) {
      newButton.setAttribute('aria-expanded', 'true');
      saveWarnings.replaceChildren();
      const up = (flow && flow.upstream) || {};
      const cred = up.credential || {};
      const name = h('input', { name: 'name', required: true, maxlength: '255', value: flow ? flow.name : '' });
      const endpoint = h('input', { name: 'endpoint_name', maxlength: '128', pattern: '[A-Za-z0-9_\\-]+', value: (flow && flow.endpoint_name) || '', spellcheck: 'false' });
      const url = h('input', { name: 'upstream_url', type: 'url', value: up.url || '', placeholder: 'https://langflow.internal/api/v1/run/…', spellcheck: 'false' });
      const method = h('select', { name: 'method' }, ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'].map((m) => h('option', { value: m, text: m })));
      method.value = up.method || 'POST';
      const stored = (id) => (providers.some((p) => p.provider === id) ? '' : ' (not stored yet)');
      const source = h('select', { name: 'credential' },
        h('option', { value: '', text: 'None' }),
        h('option', { value: 'provider:langfuse', text: `Langfuse credential${stored('langfuse')}` }),
        h('option', { value: 'provider:openai', text: `OpenAI-compatible credential${stored('openai')}` }),
        h('option', { value: 'provider:generic', text: `Generic credential${stored('generic')}` }),
        h('option', { value: 'variable', text: 'A Credential variable' }));
      source.value = cred.provider ? `provider:${cred.provider}` : (cred.variable ? 'variable' : '');
      const names = h('datalist', { id: nextId('variables') },
        variables.filter((v) => v.type === CREDENTIAL).map((v) => h('option', { value: v.name })));
      const variable = h('input', { name: 'variable', value: cred.variable || '', list: names.id, autocomplete: 'off', spellcheck: 'false' });
      const inject = h('select', { name: 'as' },
        h('option', { value: 'bearer', text: 'Authorization: Bearer <secret>' }),
        h('option', { value: 'basic', text: 'Basic auth (public key and secret)' }),
        h('option', { value: 'header', text: 'A header of its own' }));
      inject.value = cred.as || 'bearer';
      const header = h('input', { name: 'header', value: cred.header || '', placeholder: 'x-api-key', spellcheck: 'false' });
      const variableField = field('Variable name', variable, h('p.hint', {}, 'One of your Credential variables (see ', h('a', { href: '#/variables', text: 'Variables' }), ').'));
      variableField.append(names);
      const injectField = field('Inject it as', inject);
      const headerField = field('Header name', header);
      function sync() {
        variableField.hidden = source.value !== 'variable';
        injectField.hidden = !source.value;
        headerField.hidden = !source.value || inject.value !== 'header';
      }
      source.addEventListener('change', sync);
      inject.addEventListener('change', sync);
      sync();
      const formError = errorBox();
      const submit = h('button', { type: 'submit', text: flow ? 'Save flow' : 'Create flow' });
      const cancel = h('button.secondary', { type: 'button', text: 'Cancel' });
      const close = () => { formArea.replaceChildren(); newButton.setAttribute('aria-expanded', 'false'); };
      cancel.addEventListener('click', close);
      const form = h('form.card', { id: 'flow-form', 'aria-labelledby': 'flow-form-title' },
        h('h2', { id: 'flow-form-title', text: flow ? `Edit ${flow.name}` : 'New flow' }),
        field('Name', name),
        field('Endpoint name (optional)', endpoint, 'Letters, digits, - and _. Scripts can run the flow by this name instead of its id.'),
        field('Upstream URL', url, 'Where runs are forwarded, e.g. a Langflow run endpoint.'),
        field('Upstream method', method),
        h('fieldset', {}, h('legend', { text: 'Credential injection' }),
          field('Credential', source, 'Which of your stored secrets keygate adds to the upstream call.'),
          variableField, injectField, headerField),
        formError,
        h('div.actions', {}, submit, cancel));
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        showError(formError, '');
        const body = { name: name.value.trim(), endpoint_name: endpoint.value.trim() || null };
        if (url.value.trim()) {
          body.upstream = { url: url.value.trim(), method: method.value };
          if (source.value) {
            const credential = { as: inject.value };
            if (source.value === 'variable') credential.variable = variable.value.trim();
            else credential.provider = source.value.split(':')[1];
            if (inject.value === 'header') credential.header = header.value.trim();
            body.upstream.credential = credential;
          }
        } else if (flow && !up.langflow) {
          // A Langflow upstream (set through the API) is kept as it is.
          body.upstream = null;
        }
        submit.disabled = true;
        try {
          const saved = flow ? await api('PATCH', `/flows/${flow.id}`, body) : await api('POST', '/flows/', body);
          close();
          toast(flow ? `Flow ${saved.name} was saved.` : `Flow ${saved.name} was created.`);
          const warnings = (saved && saved.warnings) || [];
          saveWarnings.replaceChildren(...warnings.map((w) => h('p.warn-box', { role: 'alert' },
            `Flow ${saved.name} was saved, but runs fail until this is fixed: ${plainError(w.detail)} `, warningLink(w))));
          await refresh();
        } catch (e) {
          showError(formError, e.message);
        } finally {
          submit.disabled = false;
        }
      });
      formArea.replaceChildren(form);
      name.focus();
    }

    newButton.addEventListener('click', () => {
      if (formArea.firstChild) { formArea.replaceChildren(); newButton.setAttribute('aria-expanded', 'false'); return; }
      openForm(null);
    });
    await refresh();
  }

  // ---------- usage charts ----------

  // SVG's namespace, derived from the page's own (XHTML) namespace name:
  // a name, never fetched.
  const SVG_NS = document.documentElement.namespaceURI.replace('1999/xhtml', '2000/svg');

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === 'text') el.textContent = value;
      else if (name === 'className') el.setAttribute('class', value);
      else el.setAttribute(name, String(value));
    }
    for (const child of children.flat(Infinity)) if (child) el.append(child);
    return el;
  }

  // The smallest of 1, 2, 5, 10, 20, 50, … at least n.
  function niceCeiling(n) {
    if (n <= 1) return 1;
    const power = 10 ** Math.floor(Math.log10(n));
    for (const step of [1, 2, 5, 10]) if (step * power >= n) return step * power;
    return 10 * power;
  }

  const dayFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', timeZone: 'UTC' });
  const dayHourFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });

  // A bar chart drawn by hand: one stacked bar per bucket (accepted
  // below, refused above), with the numbers as a table for anyone who
  // does not see the bars. buckets: [{ label, short, requests, refused }].
  function barChart(id, title, unitText, buckets) {
    const W = 720;
    const H = 220;
    const left = 44;
    const right = 8;
    const top = 12;
    const bottom = 28;
    const innerW = W - left - right;
    const innerH = H - top - bottom;
    const most = Math.max(0, ...buckets.map((b) => b.requests));
    const max = niceCeiling(most);
    const band = innerW / buckets.length;
    const barW = Math.max(1, band * 0.72);
    const y = (v) => top + innerH - (v / max) * innerH;
    const grid = [0, max / 2, max].filter(Number.isInteger).map((v) => svg('g', { className: 'grid' },
      svg('line', { x1: left, x2: W - right, y1: y(v), y2: y(v) }),
      svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end', text: String(v) })));
    const bars = buckets.map((b, i) => {
      const x = left + i * band + (band - barW) / 2;
      const refused = Math.min(b.refused, b.requests);
      const accepted = b.requests - refused;
      const parts = [svg('title', { text: `${b.label}: ${b.requests} ${plural(b.requests, 'request', 'requests')}, ${refused} refused` })];
      if (accepted > 0) parts.push(svg('rect', { className: 'accepted', x, width: barW, y: y(accepted), height: y(0) - y(accepted) }));
      if (refused > 0) parts.push(svg('rect', { className: 'refused', x, width: barW, y: y(b.requests), height: y(accepted) - y(b.requests) }));
      return svg('g', { className: 'bar', 'data-requests': b.requests, 'data-refused': refused, 'data-label': b.label }, parts);
    });
    const ticks = [0, Math.floor((buckets.length - 1) / 2), buckets.length - 1]
      .filter((v, i, all) => all.indexOf(v) === i && buckets[v])
      .map((i) => svg('text', { className: 'tick', x: left + i * band + band / 2, y: H - 8, 'text-anchor': i === 0 ? 'start' : (i === buckets.length - 1 ? 'end' : 'middle'), text: buckets[i].short }));
    const total = buckets.reduce((n, b) => n + b.requests, 0);
    const refusedTotal = buckets.reduce((n, b) => n + b.refused, 0);
    const busiest = buckets.reduce((best, b) => (b.requests > (best ? best.requests : 0) ? b : best), null);
    const summary = total
      ? `${title}: ${total} ${plural(total, 'request', 'requests')}, ${refusedTotal} refused; most ${unitText} ${busiest.label} (${busiest.requests}).`
      : `${title}: no requests.`;
    const chart = svg('svg', { className: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, focusable: 'false' },
      grid, bars, ticks);
    const legend = h('p.legend', {},
      h('span.swatch.accepted'), ' accepted ', h('span.swatch.refused'), ' refused (rate limit, address or scope)',
      h('span.muted', { text: ` · ${total} ${plural(total, 'request', 'requests')}, ${refusedTotal} refused` }));
    const table = h('table.data.usage-table', {},
      h('caption.visually-hidden', { text: title }),
      h('thead', {}, h('tr', {}, ['When', 'Requests', 'Refused'].map((n) => h('th', { scope: 'col', text: n })))),
      h('tbody', {}, buckets.map((b) => h('tr', {},
        h('td', { 'data-label': 'When', text: b.label }),
        h('td.num', { 'data-label': 'Requests', text: String(b.requests) }),
        h('td.num', { 'data-label': 'Refused', text: String(b.refused) })))));
    return h('section.card.usage', { id, 'aria-labelledby': `${id}-title` },
      h('h2', { id: `${id}-title`, text: title }),
      legend,
      chart,
      h('details', {}, h('summary', { text: 'Show the numbers as a table' }), h('div.table-wrap', {}, table)));
  }

  async function renderUsage(params) {
    const id = params.get('key') || '';
    const heading = page('Key usage', 'Requests made with the key, per day (UTC) and per hour, refused ones included: over its rate limit, from a wrong address, or outside its scopes.');
    const error = errorBox();
    const back = h('p', {}, h('a', { href: '#/keys', text: 'Back to API keys' }));
    const facts = h('div');
    const charts = h('div', { id: 'usage-charts' });
    const reload = h('button.secondary', { type: 'button', text: 'Refresh' });
    main.append(back, error, facts, h('div.toolbar', {}, reload), charts);

    async function refresh() {
      showError(error, '');
      let key;
      let usage;
      try {
        const [list, answer] = await Promise.all([
          api('GET', '/api_key/'),
          api('GET', `/api_key/${encodeURIComponent(id)}/usage?days=30`),
        ]);
        key = list.api_keys.find((k) => k.id === id);
        usage = answer;
      } catch (e) {
        showError(error, e.message);
        return;
      }
      const label = key ? (key.name || 'unnamed key') : 'a key';
      heading.textContent = `Usage of ${label}`;
      document.title = `Usage of ${label} · keygate`;
      facts.replaceChildren(key ? h('dl.facts.card', {},
        h('dt', { text: 'Key' }), h('dd', {}, h('code', { text: maskKey(key.api_key) })),
        h('dt', { text: 'Uses' }), h('dd', { text: String(key.total_uses) }),
        h('dt', { text: 'Last used' }), h('dd', {}, timeCell(key.last_used_at, 'never'),
          key.last_used_from ? [' from ', h('code', { text: key.last_used_from })] : null),
        h('dt', { text: 'Access' }), h('dd', {}, `Scopes: ${describeScopes(key)}; limit: ${describeRate(key.rate_limit) || 'none'}; from: ${key.allowed_ips ? key.allowed_ips.join(', ') : 'any address'}`),
        h('dt', { text: 'Audit' }), h('dd', {}, h('a', { href: `#/audit?key_id=${encodeURIComponent(key.id)}`, text: 'Events about this key' }))) : null);
      const days = usage.days.map((d) => {
        const label = dayFormat.format(new Date(`${d.day}T00:00:00Z`));
        return { label, short: label, requests: d.requests, refused: d.refused };
      });
      const hours = usage.hours.map((b) => {
        const at = new Date(b.hour);
        return { label: dayHourFormat.format(at), short: dayHourFormat.format(at), requests: b.requests, refused: b.refused };
      });
      charts.replaceChildren(
        barChart('usage-days', 'Requests per day, last 30 days', 'on', days),
        barChart('usage-hours', 'Requests per hour, last 48 hours', 'at', hours));
    }

    reload.addEventListener('click', refresh);
    await refresh();
  }

  // ---------- audit log ----------

  const AUDIT_ACTIONS = {
    key: ['key.create', 'key.update', 'key.rotate', 'key.revoke', 'key.revoke_leaked'],
    login: ['login.success', 'login.failure'],
    logout: ['logout'],
    password: ['password.change'],
    credential: ['credential.save', 'credential.delete'],
    variable: ['variable.create', 'variable.update', 'variable.delete'],
    flow: ['flow.create', 'flow.update', 'flow.delete'],
    user: ['user.create', 'user.update', 'user.delete'],
    secret: ['secret.rotate'],
  };

  function shortId(id) {
    return `${String(id).slice(0, 8)}…`;
  }

  function describeDetail(detail) {
    if (!detail || typeof detail !== 'object' || !Object.keys(detail).length) return h('span.muted', { text: '–' });
    const text = (value) => {
      if (value === null) return 'none';
      if (Array.isArray(value)) return value.map(text).join(', ') || 'none';
      if (typeof value === 'object') return JSON.stringify(value);
      return String(value);
    };
    return h('ul.detail-list', {}, Object.entries(detail).map(([k, v]) => h('li', {}, h('span.muted', { text: `${k}: ` }),
      k === 'rate_limit' && v ? describeRate(v) : text(v))));
  }

  async function renderAudit(params) {
    page('Audit log', 'What was done to your account, keys, credentials, variables and flows, newest first: who did it, from where, and with which key. Keys, passwords and secrets are never recorded.');
    const superuser = state.me.is_superuser;
    const error = errorBox();
    const action = h('select', { name: 'action' },
      h('option', { value: '', text: 'All actions' }),
      Object.entries(AUDIT_ACTIONS).map(([cls, names]) => h('optgroup', { label: cls },
        names.length > 1 ? h('option', { value: `${cls}.*`, text: `every ${cls}.* action` }) : null,
        names.map((n) => h('option', { value: n, text: n })))));
    action.value = params.get('action') || '';
    const keyList = h('datalist', { id: nextId('audit-keys') });
    const keyId = h('input', { name: 'key_id', list: keyList.id, autocomplete: 'off', spellcheck: 'false', placeholder: 'a key id', value: params.get('key_id') || '' });
    const user = superuser ? h('select', { name: 'user_id' }, h('option', { value: '', text: 'All users' })) : null;
    const limit = h('select', { name: 'limit' }, ['10', '50', '200'].map((n) => h('option', { value: n, text: n })));
    limit.value = '50';
    const apply = h('button', { type: 'submit', text: 'Show events' });
    const keyField = field('Key id', keyId, 'Events about this key or made with it.');
    keyField.append(keyList);
    const filters = h('form.card.filters.audit-filters', { id: 'audit-filters', 'aria-label': 'Audit filters' },
      field('Action', action),
      keyField,
      user ? field('User', user) : null,
      field('Events per page', limit),
      h('div.actions', {}, apply));
    const count = h('p.hint', { role: 'status', id: 'audit-status' });
    const list = h('div', { id: 'audit-list' });
    const more = h('button.secondary', { type: 'button', text: 'Load more', hidden: true });
    main.append(filters, error, count, list, h('div.actions', {}, more));

    const keyNames = new Map();
    const userNames = new Map();
    try {
      const [keys, users] = await Promise.all([
        api('GET', '/api_key/'),
        superuser ? api('GET', '/users/?skip=0&limit=1000') : Promise.resolve(null),
      ]);
      for (const k of keys.api_keys) {
        keyNames.set(k.id, k.name || 'unnamed key');
        keyList.append(h('option', { value: k.id, label: `${k.name || 'unnamed key'} (${maskKey(k.api_key)})` }));
      }
      if (users) {
        for (const u of users.users) {
          userNames.set(u.id, u.username);
          user.append(h('option', { value: u.id, text: u.username }));
        }
        user.value = params.get('user_id') || '';
      }
    } catch (e) {
      showError(error, e.message);
    }

    let shown = 0;
    let last = null;
    let tbody = null;

    function idCell(id, names) {
      if (!id) return h('span.muted', { text: '–' });
      const name = names.get(id);
      return h('span.id', {}, name ? `${name} ` : null, h('code', { title: id, text: shortId(id) }));
    }

    function eventRow(event) {
      const targetNames = event.action.startsWith('user.') || event.action === 'password.change' ? userNames : keyNames;
      return h('tr', { 'data-action': event.action, 'data-event-id': event.id },
        h('td.when', { 'data-label': 'When' }, exactCell(event.at)),
        h('td', { 'data-label': 'Action' }, h('code', { text: event.action })),
        superuser ? h('td', { 'data-label': 'User' }, event.user_id ? (userNames.get(event.user_id) || shortId(event.user_id)) : h('span.muted', { text: 'none' })) : null,
        h('td', { 'data-label': 'Key used' }, event.actor_key_id ? idCell(event.actor_key_id, keyNames) : h('span.muted', { text: 'session' })),
        h('td', { 'data-label': 'Target' }, idCell(event.target_id, targetNames)),
        h('td', { 'data-label': 'Address' }, event.address ? h('code', { text: event.address }) : h('span.muted', { text: '–' })),
        h('td.agent', { 'data-label': 'User agent' }, event.user_agent
          ? h('span', { title: event.user_agent, text: event.user_agent.length > 40 ? `${event.user_agent.slice(0, 40)}…` : event.user_agent })
          : h('span.muted', { text: '–' })),
        h('td.detail', { 'data-label': 'Detail' }, describeDetail(event.detail)));
    }

    async function load(reset) {
      showError(error, '');
      const query = new URLSearchParams({ limit: limit.value });
      if (action.value) query.set('action', action.value);
      if (keyId.value.trim()) query.set('key_id', keyId.value.trim());
      if (user && user.value) query.set('user_id', user.value);
      if (!reset && last) query.set('before', last);
      apply.disabled = true;
      more.disabled = true;
      list.setAttribute('aria-busy', 'true');
      let events;
      try {
        events = (await api('GET', `/audit?${query}`)).events;
      } catch (e) {
        showError(error, e.message);
        list.removeAttribute('aria-busy');
        return;
      } finally {
        apply.disabled = false;
        more.disabled = false;
      }
      if (reset) {
        shown = 0;
        tbody = h('tbody');
        const heads = ['When', 'Action', superuser ? 'User' : null, 'Key used', 'Target', 'Address', 'User agent', 'Detail'].filter(Boolean);
        list.replaceChildren(events.length ? h('div.table-wrap', {}, h('table.data.audit', {},
          h('caption.visually-hidden', { text: 'Audit events, newest first' }),
          h('thead', {}, h('tr', {}, heads.map((n) => h('th', { scope: 'col', text: n })))),
          tbody)) : h('p.empty', { text: 'No events match.' }));
      }
      tbody.append(...events.map(eventRow));
      shown += events.length;
      if (events.length) last = events[events.length - 1].id;
      const end = events.length < Number(limit.value);
      more.hidden = end || !shown;
      count.textContent = shown
        ? `${shown} ${plural(shown, 'event', 'events')} shown${end ? '; no more.' : '.'}`
        : '';
      list.removeAttribute('aria-busy');
    }

    filters.addEventListener('submit', (event) => {
      event.preventDefault();
      last = null;
      load(true);
    });
    more.addEventListener('click', () => load(false));
    await load(true);
  }

  // ---------- users ----------

  async function renderUsers() {
    page('Users', 'Superusers add people, turn accounts on and off, and reset passwords. Deactivating a user ends their sessions and stops their keys.');
    const error = errorBox();
    const username = h('input', { name: 'username', required: true, maxlength: '64', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
    const password = h('input', { name: 'password', type: 'password', required: true, minlength: '8', autocomplete: 'new-password' });
    const active = h('input', { type: 'checkbox', name: 'is_active', checked: true });
    const superuser = h('input', { type: 'checkbox', name: 'is_superuser' });
    const addError = errorBox();
    const add = h('button', { type: 'submit', text: 'Add user' });
    const form = h('form.card', { id: 'add-user-form', 'aria-labelledby': 'add-user-title' },
      h('h2', { id: 'add-user-title', text: 'Add a user' }),
      h('div.row', {}, field('Username', username), field('Password', password, 'At least 8 characters.')),
      h('div.row', {}, checkboxField('Active', active), checkboxField('Superuser', superuser)),
      addError,
      h('div.actions', {}, add));
    const list = h('div', { id: 'user-list' });
    main.append(error, form, list);

    async function refresh() {
      let users;
      try {
        users = (await api('GET', '/users/?skip=0&limit=1000')).users;
      } catch (e) {
        showError(error, e.message);
        return;
      }
      list.replaceChildren(h('div.table-wrap', {}, h('table.data', {},
        h('caption.visually-hidden', { text: 'Users' }),
        h('thead', {}, h('tr', {}, ['Username', 'Active', 'Superuser', 'Created', 'Last sign-in', 'Actions'].map((n) => h('th', { scope: 'col', text: n })))),
        h('tbody', {}, users.map(userRow)))));
    }

    async function change(user, body, message) {
      showError(error, '');
      try {
        await api('PATCH', `/users/${user.id}`, body);
        toast(message);
      } catch (e) { showError(error, e.message); }
      await refresh();
    }

    function userRow(user) {
      const self = user.id === state.me.id;
      const name = user.username;
      const toggleActive = h('button.secondary.small', {
        type: 'button', text: user.is_active ? 'Deactivate' : 'Activate',
        'aria-label': `${user.is_active ? 'Deactivate' : 'Activate'} ${name}`, disabled: self,
      });
      toggleActive.addEventListener('click', async () => {
        if (user.is_active) {
          const ok = await confirmDialog(`Deactivate ${name}?`,
            h('p', { text: `${name} is signed out everywhere and cannot sign in, and their API keys stop working, until you activate the account again.` }),
            'Deactivate user');
          if (!ok) return;
        }
        await change(user, { is_active: !user.is_active }, `${name} is now ${user.is_active ? 'inactive' : 'active'}.`);
      });
      const toggleSuper = h('button.secondary.small', {
        type: 'button', text: user.is_superuser ? 'Remove superuser' : 'Make superuser',
        'aria-label': `${user.is_superuser ? 'Remove superuser from' : 'Make superuser:'} ${name}`, disabled: self,
      });
      toggleSuper.addEventListener('click', async () => {
        if (!user.is_superuser) {
          const ok = await confirmDialog(`Make ${name} a superuser?`,
            h('p', { text: `${name} will be able to add, change and delete every user, including you, and to see and revoke anyone's API keys.` }),
            'Make superuser');
          if (!ok) return;
        }
        await change(user, { is_superuser: !user.is_superuser }, `${name} is ${user.is_superuser ? 'no longer' : 'now'} a superuser.`);
      });
      const reset = h('button.secondary.small', { type: 'button', text: 'Reset password', 'aria-label': `Reset password of ${name}` });
      reset.addEventListener('click', async () => {
        const input = h('input', { type: 'password', name: 'new_password', required: true, minlength: '8', autocomplete: 'new-password' });
        // Your own password takes the current one as well.
        const current = self ? h('input', { type: 'password', name: 'current_password', required: true, autocomplete: 'current-password' }) : null;
        const fields = [field('New password', input, self
          ? 'At least 8 characters. Your other sessions end; this one stays.'
          : `At least 8 characters. All of ${name}'s sessions end; their API keys keep working.`)];
        if (current) fields.unshift(field('Current password', current));
        const ok = await confirmDialog(`New password for ${name}`, fields, 'Set password', { safe: true, focus: current || input });
        if (!ok) return;
        showError(error, '');
        const body = { password: input.value };
        if (current) body.current_password = current.value;
        try {
          await api('PATCH', `/users/${user.id}/reset-password`, body);
          toast(`The password of ${name} was changed.`);
        } catch (e) { showError(error, e.message); }
      });
      const del = h('button.danger.small', { type: 'button', text: 'Delete', 'aria-label': `Delete ${name}`, disabled: self });
      del.addEventListener('click', async () => {
        const ok = await confirmDialog(`Delete ${name}?`,
          h('p', { text: 'Their keys, flows and credentials are deleted with them. This cannot be undone.' }), 'Delete user');
        if (!ok) return;
        showError(error, '');
        try {
          await api('DELETE', `/users/${user.id}`);
          toast(`${name} was deleted.`);
        } catch (e) { showError(error, e.message); }
        await refresh();
      });
      return h('tr', { 'data-user': name },
        h('td', { 'data-label': 'Username' }, name, self ? h('span.muted', { text: ' (you)' }) : null),
        h('td', { 'data-label': 'Active' }, h(`span.badge.${user.is_active ? 'active' : 'inactive'}`, { text: user.is_active ? 'Active' : 'Inactive' })),
        h('td', { 'data-label': 'Superuser' }, user.is_superuser ? 'Yes' : 'No'),
        h('td.when', { 'data-label': 'Created' }, timeCell(user.created_at)),
        h('td.when', { 'data-label': 'Last sign-in' }, timeCell(user.last_login_at, 'never')),
        h('td.actions-cell', { 'data-label': 'Actions' }, h('div.btns', {}, toggleActive, toggleSuper, reset, del)));
    }

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      showError(addError, '');
      add.disabled = true;
      try {
        await api('POST', '/users/', {
          username: username.value.trim(), password: password.value,
          is_active: active.checked, is_superuser: superuser.checked,
        });
        toast(`${username.value.trim()} was added.`);
        form.reset();
        active.checked = true;
        await refresh();
        username.focus();
      } catch (e) {
        showError(addError, e.message);
      } finally {
        add.disabled = false;
      }
    });

    await refresh();
  }

  // ---------- start ----------

  // One question on load: the session answer says whether someone is
  // signed in and whether auto-login is on; only then is auto-login asked.
  async function start() {
    document.getElementById('signout').addEventListener('click', signOut);
    window.addEventListener('hashchange', async () => {
      await route();
      focusHeading();
    });
    let problem = null;
    try {
      await loadSession();
      if (!state.me && state.autoLogin) {
        await api('GET', '/auto_login', undefined, { quiet401: true });
        await loadSession();
      }
    } catch (e) {
      state.me = null;
      problem = e.status === 401 ? 'Your session has ended; sign in again.' : e.message;
    }
    showChrome();
    watchSession();
    if (!state.me) {
      renderLogin(problem);
      return;
    }
    await route();
  }

  start();
}());
