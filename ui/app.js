// keygate settings UI: a small single page over the JSON API under /api/v1.
// No framework, no build step. Everything user-supplied is put in the page
// as text (textContent, input values), never as HTML. State-changing calls
// carry the session's CSRF token in X-CSRF-Token.
'use strict';

(function () {
  const state = { me: null, csrf: null, autoLogin: false };
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

  // A labelled form control: label above, hint below (tied by aria-describedby).
  function field(labelText, control, hint) {
    if (!control.id) control.id = nextId('f');
    const parts = [h('label', { for: control.id, text: labelText }), control];
    if (hint) {
      const hintId = nextId('hint');
      control.setAttribute('aria-describedby', hintId);
      parts.push(h('p.hint', { id: hintId, text: hint }));
    }
    return h('div.field', {}, parts);
  }

  function checkboxField(labelText, control) {
    if (!control.id) control.id = nextId('f');
    return h('div.field.check', {}, control, h('label', { for: control.id, text: labelText }));
  }

  function formatTime(text) {
    if (!text) return null;
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return text;
    return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  }

  function timeCell(text, empty) {
    if (!text) return h('span.muted', { text: empty });
    return h('time', { datetime: text, title: text, text: formatTime(text) });
  }

  function errorBox() {
    return h('p.error', { role: 'alert', hidden: true });
  }

  function showError(box, message) {
    box.textContent = message;
    box.hidden = !message;
  }

  let noticeTimer = null;
  function notice(message) {
    const box = document.getElementById('notice');
    box.textContent = message;
    box.hidden = !message;
    clearTimeout(noticeTimer);
    if (message) noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
  }

  async function copyText(text, input, status) {
    let copied = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        copied = true;
      }
    } catch (_) {
      copied = false;
    }
    if (!copied && input) {
      input.focus();
      input.select();
      try { copied = document.execCommand('copy'); } catch (_) { copied = false; }
    }
    if (status) status.textContent = copied ? 'Copied.' : 'Select the text and copy it (Ctrl+C).';
  }

  // ---------- the API ----------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function describe(detail, status) {
    if (typeof detail === 'string' && detail) return detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join('; ');
    return `The server answered HTTP ${status}`;
  }

  async function api(method, path, body, options) {
    const headers = { Accept: 'application/json' };
    let payload;
    if (body instanceof URLSearchParams) {
      payload = body;
    } else if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    if (state.csrf && method !== 'GET') headers['X-CSRF-Token'] = state.csrf;
    let res;
    try {
      res = await fetch(`/api/v1${path}`, {
        method, headers, body: payload, credentials: 'same-origin', cache: 'no-store',
      });
    } catch (_) {
      throw new ApiError(0, 'keygate could not be reached; check that it is running');
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const detail = describe(data && data.detail, res.status);
      if (res.status === 401 && state.me && !(options && options.quiet401)) {
        sessionEnded();
      }
      throw new ApiError(res.status, detail);
    }
    return data;
  }

  // ---------- session ----------

  async function loadSession() {
    const session = await api('GET', '/session', undefined, { quiet401: true });
    state.me = session.user;
    state.csrf = session.csrf_token;
  }

  function sessionEnded() {
    state.me = null;
    state.csrf = null;
    showChrome();
    renderLogin('Your session has ended; sign in again.');
  }

  function showChrome() {
    const bar = document.getElementById('topbar');
    bar.hidden = !state.me;
    if (!state.me) return;
    document.getElementById('who').textContent = `Signed in as ${state.me.username}`;
    document.getElementById('nav-users').hidden = !state.me.is_superuser;
  }

  async function signOut() {
    try { await api('POST', '/logout'); } catch (_) { /* signed out anyway */ }
    state.me = null;
    state.csrf = null;
    showChrome();
    renderLogin(null, 'You are signed out.');
  }

  // ---------- routing ----------

  const routes = {
    '/keys': renderKeys,
    '/credentials': renderCredentials,
    '/flows': renderFlows,
    '/users': renderUsers,
  };

  function currentRoute() {
    const path = location.hash.replace(/^#/, '');
    return routes[path] ? path : '/keys';
  }

  function page(title, lead) {
    document.title = `${title} · keygate`;
    const heading = h('h1', { tabindex: '-1', text: title });
    main.replaceChildren(heading);
    if (lead) main.append(h('p.lead', { text: lead }));
    return heading;
  }

  async function route() {
    if (!state.me) {
      renderLogin();
      return;
    }
    const path = currentRoute();
    if (path === '/users' && !state.me.is_superuser) {
      notice('Only superusers can manage users.');
      location.replace('#/keys');
      return;
    }
    for (const link of document.querySelectorAll('#nav a')) {
      if (link.dataset.route === path) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    await routes[path]();
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
        await route();
        focusHeading();
      } catch (e) {
        showError(error, e.status === 401 ? `${e.message}.` : e.message);
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

  // ---------- API keys ----------

  async function loadFlows() {
    const flows = await api('GET', '/flows/');
    return Array.isArray(flows) ? flows : (flows.items || []);
  }

  function keyStatus(key) {
    if (key.expires_at && new Date(key.expires_at) <= new Date()) return 'Expired';
    return key.is_active ? 'Active' : 'Inactive';
  }

  async function renderKeys() {
    page('API keys', 'Scripts call keygate with a key in the x-api-key header or the x-api-key query parameter. A key has your rights, or only the one flow it is bound to.');
    const error = errorBox();
    const createButton = h('button', { type: 'button', text: 'Create key', 'aria-expanded': 'false', 'aria-controls': 'create-key' });
    const revokeSelected = h('button.danger', { type: 'button', disabled: true, text: 'Revoke selected' });
    const toolbar = h('div.toolbar', {}, createButton, revokeSelected);
    const createArea = h('div', { id: 'create-key' });
    const oneTime = h('div', { id: 'one-time' });
    const listArea = h('div', { id: 'key-list' });
    main.append(toolbar, error, oneTime, createArea, listArea);

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

    function drawTable() {
      if (!keys.length) {
        listArea.replaceChildren(h('p.empty', { text: 'No API keys yet. Create one to call keygate from a script.' }));
        return;
      }
      const rows = keys.map((key) => {
        const label = key.name || 'unnamed key';
        const box = h('input', { type: 'checkbox', 'aria-label': `Select ${label}`, checked: selected.has(key.id) });
        box.addEventListener('change', () => {
          if (box.checked) selected.add(key.id); else selected.delete(key.id);
          updateSelection();
        });
        const toggle = h('button.secondary.small', {
          type: 'button',
          text: key.is_active ? 'Deactivate' : 'Activate',
          'aria-label': `${key.is_active ? 'Deactivate' : 'Activate'} ${label}`,
        });
        toggle.addEventListener('click', async () => {
          try {
            await api('PATCH', `/api_key/${key.id}`, { is_active: !key.is_active });
            notice(`${label} is now ${key.is_active ? 'inactive' : 'active'}.`);
            await refresh();
          } catch (e) { showError(error, e.message); }
        });
        const revoke = h('button.danger.small', { type: 'button', text: 'Revoke', 'aria-label': `Revoke ${label}` });
        revoke.addEventListener('click', () => revokeKeys([key]));
        const status = keyStatus(key);
        return h('tr', { 'data-key-id': key.id },
          h('td', { 'data-label': 'Select' }, box),
          h('td', { 'data-label': 'Name' }, key.name ? key.name : h('span.muted', { text: 'unnamed' })),
          h('td', { 'data-label': 'Key' }, h('code.masked', { text: key.api_key })),
          h('td', { 'data-label': 'Created' }, timeCell(key.created_at)),
          h('td', { 'data-label': 'Last used' }, timeCell(key.last_used_at, 'never')),
          h('td.num', { 'data-label': 'Uses' }, String(key.total_uses)),
          h('td', { 'data-label': 'Status' }, h(`span.badge.${status.toLowerCase()}`, { text: status })),
          h('td', { 'data-label': 'Expires' }, timeCell(key.expires_at, 'never')),
          h('td', { 'data-label': 'Flow' }, key.flow_id ? flowName(key.flow_id) : h('span.muted', { text: 'all my flows' })),
          h('td.actions-cell', { 'data-label': 'Actions' }, h('div.btns', {}, toggle, revoke)));
      });
      const table = h('table.data', {},
        h('caption.visually-hidden', { text: 'Your API keys' }),
        h('thead', {}, h('tr', {}, ['', 'Name', 'Key', 'Created', 'Last used', 'Uses', 'Status', 'Expires', 'Flow', 'Actions']
          .map((name) => h('th', { scope: 'col' }, name || h('span.visually-hidden', { text: 'Select' }))))),
        h('tbody', {}, rows));
      listArea.replaceChildren(h('div.table-wrap', {}, table));
    }

    async function revokeKeys(chosen) {
      const names = chosen.map((k) => k.name || 'unnamed key');
      const ok = await confirmDialog(
        chosen.length === 1 ? `Revoke ${names[0]}?` : `Revoke ${chosen.length} keys?`,
        [
          chosen.length === 1 ? null : h('p', { text: names.join(', ') }),
          h('p', { text: 'Scripts using it get 401 at once. This cannot be undone.' }),
        ],
        chosen.length === 1 ? 'Revoke key' : `Revoke ${chosen.length} keys`,
      );
      if (!ok) return;
      showError(error, '');
      const failed = [];
      for (const key of chosen) {
        try {
          await api('DELETE', `/api_key/${key.id}`);
          selected.delete(key.id);
        } catch (e) {
          failed.push(`${key.name || 'unnamed key'}: ${e.message}`);
        }
      }
      if (failed.length) showError(error, `Not revoked: ${failed.join('; ')}`);
      else notice(chosen.length === 1 ? `${names[0]} was revoked.` : `${chosen.length} keys were revoked.`);
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

    function showOneTime(created) {
      const input = h('input.secret', { id: 'new-key', readonly: true, value: created.api_key, spellcheck: 'false', autocomplete: 'off' });
      const status = h('span.copy-status', { role: 'status', 'aria-live': 'polite' });
      const copy = h('button', { type: 'button', text: 'Copy key' });
      copy.addEventListener('click', () => copyText(input.value, input, status));
      const done = h('button.secondary', { type: 'button', text: 'I have copied it' });
      done.addEventListener('click', () => {
        input.value = '';
        oneTime.replaceChildren();
        createButton.focus();
      });
      const box = h('section.card.one-time', { 'aria-labelledby': 'one-time-title' },
        h('h2', { id: 'one-time-title', tabindex: '-1', text: `Your new key${created.name ? `: ${created.name}` : ''}` }),
        h('p.warning', { text: 'Copy it now: this is the only time keygate shows the full key. Only its hash is stored, so it cannot be shown again. If you lose it, revoke it and create another.' }),
        field('New API key', input),
        h('div.actions', {}, copy, done, status));
      oneTime.replaceChildren(box);
      box.querySelector('h2').focus();
    }

    createButton.addEventListener('click', () => {
      if (createArea.firstChild) { closeCreate(); return; }
      createButton.setAttribute('aria-expanded', 'true');
      const name = h('input', { name: 'name', maxlength: '255', autocomplete: 'off' });
      const tomorrow = new Date(Date.now() + 86400000).toISOString().slice(0, 10);
      const expires = h('input', { name: 'expires', type: 'date', min: tomorrow });
      const flow = h('select', { name: 'flow' },
        h('option', { value: '', text: 'Not bound: all my flows and the API' }),
        flows.map((f) => h('option', { value: f.id, text: f.name })));
      const formError = errorBox();
      const submit = h('button', { type: 'submit', text: 'Create API key' });
      const cancel = h('button.secondary', { type: 'button', text: 'Cancel', onclick: closeCreate });
      const form = h('form.card', { 'aria-labelledby': 'create-title', id: 'create-key-form' },
        h('h2', { id: 'create-title', text: 'Create an API key' }),
        field('Name', name, 'So you can tell your keys apart, e.g. "nightly report script".'),
        field('Expires on (optional)', expires, 'The key stops working at 00:00 UTC on this day. Leave empty for no expiry.'),
        field('Bound to flow (optional)', flow, 'A bound key can only run that one flow.'),
        formError,
        h('div.actions', {}, submit, cancel));
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        showError(formError, '');
        submit.disabled = true;
        const body = { name: name.value.trim() || null };
        if (expires.value) body.expires_at = `${expires.value}T00:00:00Z`;
        if (flow.value) body.flow_id = flow.value;
        try {
          const created = await api('POST', '/api_key/', body);
          closeCreate();
          showOneTime(created);
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
        if (opener && opener.isConnected) opener.focus();
        resolve(dialog.returnValue === 'ok');
      }, { once: true });
      dialog.showModal();
    });
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
    const card = h('section.card.credential', { 'aria-labelledby': titleId, 'data-provider': provider.id });
    const status = h('div.saved', { 'aria-live': 'polite' });
    const error = errorBox();
    const inputs = {};
    const form = h('form', {});
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
      form.append(field(`${provider.title} ${spec.label}`, input,
        spec.secret && saved ? 'Stored. Type a new one to replace it.' : null));
    }
    const save = h('button', { type: 'submit', text: saved ? 'Save changes' : 'Save' });
    const remove = h('button.danger.secondary', { type: 'button', text: 'Delete', hidden: !saved });
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
            : h('span.error-text', { text: view.project_error || 'unknown' })]);
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
        fill(view);
        remove.hidden = false;
        notice(`${provider.title} credential saved.`);
      } catch (e) {
        showError(error, e.message);
      } finally {
        save.disabled = false;
        save.textContent = 'Save changes';
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
        fill(null);
        remove.hidden = true;
        notice(`${provider.title} credential deleted.`);
      } catch (e) { showError(error, e.message); }
    });

    card.append(h('h2', { id: titleId, text: provider.title }), h('p.hint', { text: provider.about }), status, form);
    fill(saved);
    if (saved && provider.id === 'langfuse') {
      api('GET', `/providers/${provider.id}`).then(fill).catch((e) => showError(error, e.message));
    }
    return card;
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

  async function renderFlows() {
    page('Flows', 'A flow forwards runs to its upstream with your stored credential injected. Scripts run it with one of your API keys.');
    const error = errorBox();
    const newButton = h('button', { type: 'button', text: 'New flow', 'aria-expanded': 'false' });
    const formArea = h('div', { id: 'flow-form-area' });
    const list = h('div', { id: 'flow-list' });
    main.append(h('div.toolbar', {}, newButton), error, formArea, list);

    async function refresh() {
      let flows;
      try {
        flows = await loadFlows();
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
          notice(`Flow ${flow.name} was deleted.`);
          await refresh();
        } catch (e) { showError(error, e.message); }
      });
      const command = (label, text) => {
        const status = h('span.copy-status', { role: 'status' });
        const pre = h('pre.command', { tabindex: '0', 'aria-label': label }, h('code', { text }));
        const copy = h('button.secondary.small', { type: 'button', text: 'Copy', 'aria-label': `Copy: ${label}` });
        copy.addEventListener('click', () => copyText(text, null, status));
        return h('div.command-block', {}, h('div.command-head', {}, h('span', { text: label }), copy, status), pre);
      };
      const upstream = flow.upstream;
      return h('article.card.flow', { 'aria-labelledby': titleId, 'data-flow-id': flow.id },
        h('div.card-head', {}, h('h2', { id: titleId, text: flow.name }), h('div.actions', {}, edit, del)),
        h('dl.facts', {},
          h('dt', { text: 'Endpoint name' }), h('dd', {}, flow.endpoint_name ? h('code', { text: flow.endpoint_name }) : h('span.muted', { text: 'none (run by id)' })),
          h('dt', { text: 'Flow id' }), h('dd', {}, h('code', { text: flow.id })),
          h('dt', { text: 'Upstream' }), h('dd', {}, upstream ? describeUpstream(upstream) : h('span.muted', { text: 'not set' })),
          h('dt', { text: 'Credential' }), h('dd', { text: describeCredential(upstream) })),
        h('h3', { text: 'Run it' }),
        h('p.hint', {}, 'Set ', h('code', { text: 'KEYGATE_API_KEY' }), ' to one of your keys (see API keys).'),
        command('With the x-api-key header', cmds.header),
        command('With the x-api-key query parameter', cmds.query));
    }

    function openForm(flow) {
      newButton.setAttribute('aria-expanded', 'true');
      const up = (flow && flow.upstream) || {};
      const cred = up.credential || {};
      const name = h('input', { name: 'name', required: true, maxlength: '255', value: flow ? flow.name : '' });
      const endpoint = h('input', { name: 'endpoint_name', maxlength: '128', pattern: '[A-Za-z0-9_\\-]+', value: (flow && flow.endpoint_name) || '', spellcheck: 'false' });
      const url = h('input', { name: 'upstream_url', type: 'url', value: up.url || '', placeholder: 'https://langflow.internal/api/v1/run/…', spellcheck: 'false' });
      const method = h('select', { name: 'method' }, ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'].map((m) => h('option', { value: m, text: m })));
      method.value = up.method || 'POST';
      const source = h('select', { name: 'credential' },
        h('option', { value: '', text: 'None' }),
        h('option', { value: 'provider:langfuse', text: 'Langfuse credential' }),
        h('option', { value: 'provider:openai', text: 'OpenAI-compatible credential' }),
        h('option', { value: 'provider:generic', text: 'Generic credential' }),
        h('option', { value: 'variable', text: 'A Credential variable' }));
      source.value = cred.provider ? `provider:${cred.provider}` : (cred.variable ? 'variable' : '');
      const variable = h('input', { name: 'variable', value: cred.variable || '' });
      const inject = h('select', { name: 'as' },
        h('option', { value: 'bearer', text: 'Authorization: Bearer <secret>' }),
        h('option', { value: 'basic', text: 'Basic auth (public key and secret)' }),
        h('option', { value: 'header', text: 'A header of its own' }));
      inject.value = cred.as || 'bearer';
      const header = h('input', { name: 'header', value: cred.header || '', placeholder: 'x-api-key', spellcheck: 'false' });
      const variableField = field('Variable name', variable);
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
          if (flow) await api('PATCH', `/flows/${flow.id}`, body);
          else await api('POST', '/flows/', body);
          close();
          notice(flow ? `Flow ${body.name} was saved.` : `Flow ${body.name} was created.`);
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
        notice(message);
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
      toggleActive.addEventListener('click', () => change(user, { is_active: !user.is_active }, `${name} is now ${user.is_active ? 'inactive' : 'active'}.`));
      const toggleSuper = h('button.secondary.small', {
        type: 'button', text: user.is_superuser ? 'Remove superuser' : 'Make superuser',
        'aria-label': `${user.is_superuser ? 'Remove superuser from' : 'Make superuser:'} ${name}`, disabled: self,
      });
      toggleSuper.addEventListener('click', () => change(user, { is_superuser: !user.is_superuser }, `${name} is ${user.is_superuser ? 'no longer' : 'now'} a superuser.`));
      const reset = h('button.secondary.small', { type: 'button', text: 'Reset password', 'aria-label': `Reset password of ${name}` });
      reset.addEventListener('click', async () => {
        const input = h('input', { type: 'password', name: 'new_password', required: true, minlength: '8', autocomplete: 'new-password' });
        // Your own password takes the current one as well.
        const current = self ? h('input', { type: 'password', name: 'current_password', required: true, autocomplete: 'current-password' }) : null;
        const fields = [field('New password', input, self ? 'At least 8 characters. Your other sessions end.' : 'At least 8 characters. Their other sessions end.')];
        if (current) fields.unshift(field('Current password', current));
        const ok = await confirmDialog(`New password for ${name}`, fields, 'Set password', { safe: true });
        if (!ok) return;
        showError(error, '');
        const body = { password: input.value };
        if (current) body.current_password = current.value;
        try {
          await api('PATCH', `/users/${user.id}/reset-password`, body);
          notice(`The password of ${name} was changed.`);
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
          notice(`${name} was deleted.`);
        } catch (e) { showError(error, e.message); }
        await refresh();
      });
      return h('tr', { 'data-user': name },
        h('td', { 'data-label': 'Username' }, name, self ? h('span.muted', { text: ' (you)' }) : null),
        h('td', { 'data-label': 'Active' }, h(`span.badge.${user.is_active ? 'active' : 'inactive'}`, { text: user.is_active ? 'Active' : 'Inactive' })),
        h('td', { 'data-label': 'Superuser' }, user.is_superuser ? 'Yes' : 'No'),
        h('td', { 'data-label': 'Created' }, timeCell(user.created_at)),
        h('td', { 'data-label': 'Last sign-in' }, timeCell(user.last_login_at, 'never')),
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
        notice(`${username.value.trim()} was added.`);
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

  async function start() {
    document.getElementById('signout').addEventListener('click', signOut);
    window.addEventListener('hashchange', async () => {
      await route();
      focusHeading();
    });
    try {
      await loadSession();
    } catch (_) {
      try {
        await api('GET', '/auto_login', undefined, { quiet401: true });
        await loadSession();
        state.autoLogin = true;
      } catch (_) {
        state.me = null;
      }
    }
    showChrome();
    await route();
  }

  start();
}());
