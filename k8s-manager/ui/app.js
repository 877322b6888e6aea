// The settings page: reads and changes the daemon's settings through its
// control API (mounted under /api/v1), follows its event stream for the
// status, and polls the cluster's objects. Plain JavaScript, no build step.
'use strict';

const TOKEN_KEY = 'k8s-manager-token';
const TOKEN_HEADER = 'X-K8s-Manager-Token';
const $ = (id) => document.getElementById(id);

// The token comes in the address's fragment (never sent to a server); it is
// kept for this tab only, and taken out of the address bar.
function takeToken() {
  const found = /(?:^#|&)token=([0-9a-f]+)/.exec(location.hash);
  if (found) {
    sessionStorage.setItem(TOKEN_KEY, found[1]);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}
const token = takeToken();

const view = {
  settings: null,
  status: null,
  phases: [],
  versions: [],
  // The error of the last failed operation seen on the event stream: it
  // carries the component's log lines.
  failure: null,
  busy: false,
};

// One request to the daemon; the answer's JSON, with `ok` and `status`.
async function call(method, path, body) {
  const init = { method, headers: { [TOKEN_HEADER]: token || '' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    $('daemon-lost').hidden = false;
    return { ok: false, status: 0, data: { error: { message: 'the manager does not answer' } } };
  }
  $('daemon-lost').hidden = true;
  if (response.status === 401) $('token-missing').hidden = false;
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  return { ok: response.ok, status: response.status, data };
}

// A DOM element: el('td', {class: 'num'}, 'text', child, ...).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function replaceRows(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(...(rows.length ? rows
    : [el('tr', {}, el('td', { colspan: columns, class: 'empty' }, emptyText))]));
}

// ---- status -------------------------------------------------------------

function phaseIndex(name) {
  return view.phases.findIndex((p) => p.name === name);
}

function describePhase(name) {
  const phase = view.phases.find((p) => p.name === name);
  return (phase && phase.description) || name;
}

// The words of the live status for a cluster state.
function statusText(state) {
  switch (state.state) {
    case 'running': return 'Running';
    case 'stopped': return 'Stopped';
    case 'stopping': return 'Stopping';
    case 'starting': return `Starting — ${describePhase(state.phase)}`;
    case 'error': {
      // The message may repeat the phase (`error execution phase etcd: ...`).
      const message = state.message.replace(`error execution phase ${state.phase}: `, '');
      return `Error — ${state.phase}: ${message}`;
    }
    default: return state.state;
  }
}

function renderStatus() {
  const status = view.status;
  if (!status) return;
  const state = status.state;
  const line = $('status');
  line.dataset.state = state.state;
  // A frozen cluster says so, and what wakes it (`Paused (idle since …)`).
  const text = status.paused && state.state === 'running' ? status.summary : statusText(state);
  if ($('status-text').textContent !== text) $('status-text').textContent = text;
  const progress = $('progress');
  if (state.state === 'starting') {
    const i = phaseIndex(state.phase);
    progress.max = Math.max(view.phases.length, 1);
    progress.value = Math.max(i, 0);
    progress.setAttribute('aria-valuetext', `step ${i + 1} of ${view.phases.length}: ${describePhase(state.phase)}`);
    progress.hidden = false;
  } else {
    progress.hidden = true;
  }
  $('error-details').hidden = state.state !== 'error';
  if (state.state !== 'error') {
    $('logs').hidden = true;
    $('show-logs').setAttribute('aria-expanded', 'false');
  }
  renderCluster();
}

async function refreshStatus() {
  const answer = await call('GET', '/api/v1/status');
  if (answer.ok) {
    view.status = answer.data;
    renderStatus();
  }
}

// The log lines of an error: those the failed operation carried, else the
// log of the component the phase is named after (or the first one that is
// not running).
async function showLogs() {
  const button = $('show-logs');
  const open = button.getAttribute('aria-expanded') !== 'true';
  button.setAttribute('aria-expanded', String(open));
  $('logs').hidden = !open;
  if (!open) return;
  const phase = view.status && view.status.state.phase;
  const failure = view.failure && view.failure.phase === phase ? view.failure : null;
  if (failure && (failure.logs || []).length) {
    $('logs-source').textContent = `The last lines the ${phase} phase logged:`;
    $('logs-text').textContent = failure.logs.join('\n');
    return;
  }
  if (failure && (failure.problems || []).length) {
    $('logs-source').textContent = `What the ${phase} phase found:`;
    $('logs-text').textContent = failure.problems.join('\n');
    return;
  }
  const units = (view.status && view.status.components) || [];
  const candidates = [phase, `kube-${phase}`,
    ...units.filter((u) => u.state !== 'running').map((u) => u.name)];
  for (const name of candidates) {
    if (!name) continue;
    const answer = await call('GET', `/api/ui/logs?component=${encodeURIComponent(name)}`);
    if (answer.ok) {
      $('logs-source').textContent = `The last lines of ${answer.data.file}:`;
      $('logs-text').textContent = answer.data.lines.join('\n') || '(empty)';
      return;
    }
  }
  $('logs-source').textContent = 'No component log goes with this error.';
  $('logs-text').textContent = (view.failure && view.failure.message) || '';
}

// ---- the event stream -----------------------------------------------------

function onEvent(event) {
  switch (event.event) {
    case 'state':
      if (view.status) {
        view.status.state = event.state;
        renderStatus();
      }
      refreshSoon();
      break;
    case 'phase': {
      const known = view.phases.find((p) => p.name === event.phase);
      if (known) known.description = event.description;
      break;
    }
    case 'done':
      if (!event.ok && event.error && event.error.code !== 'Cancelled') view.failure = event.error;
      if (event.ok) view.failure = null;
      refreshSoon();
      refreshSettings(false);
      break;
    default:
      break;
  }
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshStatus, 150);
}

// Follows GET /api/v1/events (one JSON object a line) for as long as the
// page is open; comes back after the daemon restarts.
async function followEvents() {
  for (;;) {
    try {
      const response = await fetch('/api/v1/events', { headers: { [TOKEN_HEADER]: token || '' } });
      if (response.status === 401) {
        $('token-missing').hidden = false;
        return;
      }
      if (response.ok && response.body) {
        refreshStatus();
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let pending = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          pending += decoder.decode(value, { stream: true });
          let end;
          while ((end = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, end).trim();
            pending = pending.slice(end + 1);
            if (line) onEvent(JSON.parse(line));
          }
        }
      }
    } catch (err) {
      // The daemon went away: try again below.
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---- the switch and reset -------------------------------------------------

function renderSwitch() {
  const on = Boolean(view.settings && view.settings.kubernetes.enabled);
  const button = $('enable');
  button.setAttribute('aria-checked', String(on));
  button.disabled = view.busy || !view.settings;
}

async function toggle() {
  if (!view.settings) return;
  const want = !view.settings.kubernetes.enabled;
  view.busy = true;
  renderSwitch();
  $('switch-error').hidden = true;
  const answer = await call('PUT', '/api/v1/settings', { kubernetes: { enabled: want } });
  view.busy = false;
  if (answer.ok) {
    view.settings = answer.data.settings;
  } else {
    showError($('switch-error'), answer);
  }
  renderSwitch();
  refreshSoon();
}

function showError(node, answer) {
  const error = (answer.data && answer.data.error) || {};
  node.textContent = error.message || `the manager refused (${answer.status})`;
  node.hidden = false;
}

async function reset() {
  $('reset-dialog').close();
  view.failure = null;
  // The answer streams the reset's events until it ends; the status follows
  // them on the event stream already: only a refusal is shown from here.
  const answer = await call('POST', '/api/v1/reset');
  if (!answer.ok) showError($('switch-error'), answer);
}

// ---- settings ---------------------------------------------------------------

const FIELDS = {
  'kubernetes.version': {
    read: (s) => s.kubernetes.version || '',
    write: (v) => ({ kubernetes: { version: v || null } }),
  },
  'kubernetes.contextName': {
    read: (s) => s.kubernetes.contextName,
    write: (v) => ({ kubernetes: { contextName: v } }),
  },
  'kubernetes.apiPort': {
    read: (s) => String(s.kubernetes.apiPort),
    write: (v) => ({ kubernetes: { apiPort: asNumber(v) } }),
  },
  'network.loadBalancerAddress': {
    read: (s) => s.network.loadBalancerAddress,
    write: (v) => ({ network: { loadBalancerAddress: v } }),
  },
  'proxy.http': {
    read: (s) => s.proxy.http || '',
    write: (v) => ({ proxy: { http: v || null } }),
  },
  'proxy.https': {
    read: (s) => s.proxy.https || '',
    write: (v) => ({ proxy: { https: v || null } }),
  },
  'proxy.noProxy': {
    read: (s) => (s.proxy.noProxy || []).join(', '),
    write: (v) => ({ proxy: { noProxy: v.split(',').map((x) => x.trim()).filter(Boolean) } }),
  },
  'ui.port': {
    read: (s) => String(s.ui.port),
    write: (v) => ({ ui: { port: asNumber(v) } }),
  },
  'idle.freezeAfter': {
    read: (s) => String(s.idle.freezeAfter),
    write: (v) => ({ idle: { freezeAfter: asNumber(v) } }),
  },
  'idle.freezeWorkloads': {
    read: (s) => String(s.idle.freezeWorkloads),
    write: (v) => ({ idle: { freezeWorkloads: v === 'true' } }),
  },
};

// The idle freeze in a line: when it freezes, or what keeps it awake, and
// the last wake.
function idleText(status) {
  const idle = status.idle;
  if (!idle) return '—';
  let text;
  if (status.paused) text = status.summary;
  else if (idle.keptAwakeBy) text = `Stays awake: ${idle.keptAwakeBy}`;
  else if (!idle.freezeAfter) text = 'Never freezes (idle.freezeAfter is 0)';
  else text = `Freezes after ${idle.freezeAfter} s unused` + (idle.idleSince ? ` (unused since ${idle.idleSince})` : ' (in use now)');
  const wake = idle.lastWake;
  if (wake) text += `; last wake: ${wake.cause} at ${wake.at}, the API server ran again after ${wake.latencyMs} ms`;
  return text;
}

// The components, by their processes' names: each has its flags and its
// environment (`components.<name>.extraArgs`, `.env`), one a line.
const COMPONENTS = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy'];

function overridesOf(s, name) {
  return (s.components && s.components[name]) || {};
}

function lines(text) {
  return text.split('\n').map((line) => line.trim()).filter(Boolean);
}

for (const name of COMPONENTS) {
  FIELDS[`components.${name}.extraArgs`] = {
    label: `${name} flags`,
    placeholder: '--v=2',
    read: (s) => (overridesOf(s, name).extraArgs || []).join('\n'),
    write: (v) => ({ components: { [name]: { extraArgs: lines(v) } } }),
  };
  FIELDS[`components.${name}.env`] = {
    label: `${name} environment`,
    placeholder: 'NAME=value',
    read: (s) => Object.entries(overridesOf(s, name).env || {}).map(([k, v]) => `${k}=${v}`).join('\n'),
    // The whole environment as written: a variable no longer there is
    // taken out (null, in a merge patch).
    write: (v) => {
      const env = {};
      for (const variable of Object.keys(overridesOf(view.settings, name).env || {})) env[variable] = null;
      for (const line of lines(v)) {
        const at = line.indexOf('=');
        if (at < 0) env[line] = '';
        else env[line.slice(0, at).trim()] = line.slice(at + 1);
      }
      return { components: { [name]: { env } } };
    },
  };
}

// The fields of the overrides, made from FIELDS (labelled for a screen
// reader, each with its place for a refusal).
function makeOverrideFields() {
  const fields = Object.entries(FIELDS).filter(([key]) => key.startsWith('components.'));
  $('override-fields').replaceChildren(...fields.map(([key, field]) => {
    const id = `f-${key.replace(/\./g, '-')}`;
    return el('div', { class: 'field' },
      el('label', { for: id }, field.label),
      el('textarea', {
        id, 'data-key': key, rows: 2, placeholder: field.placeholder, autocomplete: 'off',
        spellcheck: 'false', 'aria-describedby': `e-${key} overrides-hint`,
      }),
      el('p', { class: 'field-error', id: `e-${key}`, hidden: '' }));
  }));
}

// A number when the field holds one; else the text, for the daemon to refuse
// with its own words.
function asNumber(text) {
  return /^\s*\d+\s*$/.test(text) ? Number(text) : text;
}

function inputOf(key) {
  return document.querySelector(`[data-key="${key}"]`);
}

function fillVersions() {
  const select = inputOf('kubernetes.version');
  const current = view.settings ? view.settings.kubernetes.version : null;
  const versions = [...view.versions];
  if (current && !versions.includes(current)) versions.push(current);
  const newest = view.versions.length ? ` (${view.versions[view.versions.length - 1]})` : '';
  select.replaceChildren(
    el('option', { value: '' }, `Newest in the cache${newest}`),
    ...versions.map((v) => el('option', { value: v }, v)),
  );
}

let formDirty = false;

// A URL whose password the daemon hides: `http://me:********@proxy:3128`.
const HAS_PASSWORD = /^[a-z0-9+.-]+:\/\/[^/@]*:\*{8}@/i;

function fillForm() {
  if (!view.settings) return;
  fillVersions();
  for (const [key, field] of Object.entries(FIELDS)) inputOf(key).value = field.read(view.settings);
  // A proxy password is write-only: the daemon shows it as its marker, and
  // the field, left as it is, is not sent (nor is the marker, sent back).
  for (const key of ['proxy.http', 'proxy.https']) {
    $(`h-${key}`).hidden = !HAS_PASSWORD.test(FIELDS[key].read(view.settings));
  }
  formDirty = false;
}

async function refreshSettings(force) {
  const answer = await call('GET', '/api/v1/settings');
  if (!answer.ok) return;
  view.settings = answer.data;
  renderSwitch();
  // Someone else's change (the CLI) shows, unless the user is editing.
  if (force || !formDirty) fillForm();
  renderCluster();
}

function mergePatch(target, patch) {
  for (const [key, value] of Object.entries(patch)) {
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      target[key] = mergePatch(target[key] || {}, value);
    } else {
      target[key] = value;
    }
  }
  return target;
}

// The fields that differ from the saved settings, as one merge patch.
function formPatch() {
  const patch = {};
  for (const [key, field] of Object.entries(FIELDS)) {
    const value = inputOf(key).value;
    if (value.trim() !== field.read(view.settings).trim()) mergePatch(patch, field.write(value.trim()));
  }
  return patch;
}

function clearFieldErrors() {
  for (const key of Object.keys(FIELDS)) {
    $(`e-${key}`).hidden = true;
    inputOf(key).removeAttribute('aria-invalid');
  }
}

// A refusal shown next to its field (`proxy.noProxy[2]` is the noProxy
// field's); one without a field, under the Apply button.
function showRefusal(answer) {
  const error = (answer.data && answer.data.error) || {};
  let key = (error.field || '').replace(/\[\d+\]$/, '');
  // A variable's refusal (`components.kubelet.env.NAME`) is its environment
  // field's, and names the variable.
  let variable = '';
  const env = /^(components\.[^.]+\.env)\.(.+)$/.exec(key);
  if (!FIELDS[key] && env) [, key, variable] = env;
  if (FIELDS[key]) {
    const details = inputOf(key).closest('details');
    if (details) details.open = true;
    const node = $(`e-${key}`);
    const message = error.message || '';
    const why = message.startsWith(`${error.field}: `) ? message.slice(error.field.length + 2) : message;
    node.textContent = variable ? `${variable}: ${why}` : why;
    node.hidden = false;
    inputOf(key).setAttribute('aria-invalid', 'true');
    inputOf(key).focus();
    $('apply-status').textContent = 'Not applied: see the field marked.';
  } else {
    $('apply-status').textContent = `Not applied: ${error.message || `the manager refused (${answer.status})`}`;
  }
}

const EFFECT_WORDS = {
  none: 'nothing has to restart',
  restart: "the cluster's components restart; workloads and data are kept",
  reset: 'the cluster is deleted and made again: workloads and data are lost',
};

function worstEffect(changes) {
  const order = ['none', 'restart-component', 'restart', 'reset'];
  return changes.reduce((worst, c) => (order.indexOf(c.effect) > order.indexOf(worst) ? c.effect : worst), 'none');
}

// What the changes cost, in words: a component's restart names the component.
function effectText(changes) {
  const effect = worstEffect(changes);
  if (effect !== 'restart-component') return EFFECT_WORDS[effect];
  const names = [...new Set(changes.filter((c) => c.effect === effect).map((c) => c.component))];
  return `${names.join(', ')} ${names.length > 1 ? 'restart' : 'restarts'}; the other components, workloads and data are kept`;
}

let pendingPatch = null;

async function apply(event) {
  event.preventDefault();
  clearFieldErrors();
  const patch = formPatch();
  if (!Object.keys(patch).length) {
    $('apply-status').textContent = 'Nothing changed.';
    return;
  }
  $('apply').disabled = true;
  const proposed = await call('PUT', '/api/v1/settings/propose', patch);
  if (!proposed.ok) {
    $('apply').disabled = false;
    showRefusal(proposed);
    return;
  }
  const changes = proposed.data.changes || [];
  const effect = worstEffect(changes);
  $('apply-status').textContent = `Applying: ${effectText(changes)}.`;
  if (effect === 'reset') {
    pendingPatch = patch;
    const keys = changes.filter((c) => c.effect === 'reset').map((c) => c.key).join(', ');
    $('apply-text').textContent = `Changing ${keys} deletes the cluster and makes a new one: its workloads, Services, volumes and their data are lost.`;
    $('apply-dialog').showModal();
    return;
  }
  await save(patch, false);
}

async function save(patch, confirmReset) {
  const query = `?revision=${view.settings.revision}${confirmReset ? '&confirm=reset' : ''}`;
  const answer = await call('PUT', `/api/v1/settings${query}`, patch);
  $('apply').disabled = false;
  if (!answer.ok) {
    showRefusal(answer);
    return;
  }
  const before = view.settings;
  view.settings = answer.data.settings;
  $('apply-status').textContent = `Applied: ${effectText(answer.data.changes || [])}.`;
  fillForm();
  renderSwitch();
  if (before.ui.port !== view.settings.ui.port) {
    // The page moved: follow it, with the token.
    location.assign(`http://${location.hostname}:${view.settings.ui.port}/#token=${token}`);
  }
}

// ---- the cluster ------------------------------------------------------------

function renderCluster() {
  const status = view.status;
  const settings = view.settings;
  if (status) {
    const versions = Object.entries(status.versions || {}).map(([k, v]) => `${k} ${v}`).join(', ');
    $('c-versions').textContent = versions || '—';
    const reach = status.paused ? 'frozen: the first call wakes it' : status.apiReachable ? 'reachable' : 'not reachable';
    $('c-server').textContent = status.serverUrl ? `${status.serverUrl} (${reach})` : '—';
    $('c-idle').textContent = idleText(status);
    const cert = status.earliestCertificate;
    const certs = cert
      ? `earliest expiry: ${cert.name} on ${cert.notAfter.slice(0, 10)} (${cert.daysLeft} days)` : '—';
    // A CA rotation cut short is said until `certs rotate-ca` resumes it.
    $('c-certs').textContent = status.caRotation ? `${certs}; ${status.caRotation.message}` : certs;
    const rows = (status.components || []).map((c) => el('tr', {},
      el('td', {}, c.name, c.detail ? el('span', { class: 'detail' }, c.detail) : null),
      el('td', {}, c.kind || 'process'),
      el('td', {}, el('span', { class: `pill ${c.state === 'running' ? 'ok' : 'warn'}` }, c.state)),
      el('td', { class: 'num' }, c.restarts),
      el('td', { class: 'num' }, c.cpuMillis == null ? '—' : `${(c.cpuMillis / 1000).toFixed(1)} s`),
      el('td', { class: 'num' }, c.memoryBytes == null ? '—' : `${Math.round(c.memoryBytes / 1048576)} MiB`)));
    replaceRows($('components'), rows, 6, 'None running');
  }
  if (settings) $('c-context').textContent = settings.kubernetes.contextName;
}

function podClass(status) {
  if (status === 'Running' || status === 'Completed') return 'ok';
  if (/Err|BackOff|Fail|Unknown/.test(status)) return 'bad';
  return 'warn';
}

async function refreshObjects() {
  const answer = await call('GET', '/api/ui/cluster');
  if (!answer.ok) return;
  const data = answer.data;
  const files = data.kubeconfigs || [];
  $('c-kubeconfigs').replaceChildren(files.length
    ? el('ul', {}, files.map((f) => el('li', {}, el('code', {}, f)))) : '—');

  const services = (data.loadBalancers || []).map((s) => el('tr', {},
    el('td', {}, `${s.namespace}/${s.name}`),
    el('td', {}, s.ports.map((p, i) => [i ? ', ' : '',
      p.url ? el('a', { href: p.url, target: '_blank', rel: 'noopener noreferrer' }, p.url)
        : `${p.port}/${p.protocol}`])),
    el('td', {}, s.ingress.length ? s.ingress.join(', ') : 'pending')));
  replaceRows($('services'), services, 3, 'None');

  const running = view.status && view.status.state.state === 'running';
  $('workloads-note').textContent = data.problem && running ? `Cannot read the cluster: ${data.problem}` : '';
  const namespaces = (data.namespaces || []).map((ns) => {
    const heading = `ns-${ns.namespace}`;
    return el('div', { class: 'ns' },
      el('h3', { id: heading }, ns.namespace),
      el('table', { 'aria-labelledby': heading },
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col' }, 'Pod'), el('th', { scope: 'col' }, 'Ready'),
          el('th', { scope: 'col' }, 'Status'), el('th', { scope: 'col', class: 'num' }, 'Restarts'))),
        el('tbody', {}, ns.pods.map((p) => el('tr', {},
          el('td', {}, p.name), el('td', {}, p.ready),
          el('td', {}, el('span', { class: `pill ${podClass(p.status)}` }, p.status)),
          el('td', { class: 'num' }, p.restarts))))));
  });
  $('workloads').replaceChildren(...(namespaces.length ? namespaces
    : [el('p', { class: 'hint' }, running ? 'No pods.' : 'The cluster is not running.')]));
}

// Docker images and whether the cluster has them (GET /api/v1/images: the
// image sync's view). Without a Docker engine the daemon says why.
function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`;
}

async function refreshImages() {
  const answer = await call('GET', '/api/v1/images');
  const list = $('images');
  if (!answer.ok) {
    const why = answer.data && answer.data.error ? answer.data.error.message : 'not available';
    list.replaceChildren(el('li', { class: 'empty' }, `Not available: ${why}`));
    return;
  }
  const images = (answer.data && answer.data.images) || [];
  list.replaceChildren(...(images.length ? images.map((i) => el('li', {},
    el('code', {}, i.dockerRef), ' ',
    el('span', { class: `pill ${i.synced ? 'ok' : 'warn'}` }, i.synced ? 'in the cluster' : (i.why || 'not synced')),
    ' ', el('span', { class: 'hint' }, megabytes(i.size))))
    : [el('li', { class: 'empty' }, 'No tagged Docker images')]));
}

// ---- start ------------------------------------------------------------------

async function start() {
  makeOverrideFields();
  $('enable').addEventListener('click', toggle);
  $('reset').addEventListener('click', () => $('reset-dialog').showModal());
  $('reset-cancel').addEventListener('click', () => $('reset-dialog').close());
  $('reset-confirm').addEventListener('click', reset);
  $('show-logs').addEventListener('click', showLogs);
  $('settings').addEventListener('submit', apply);
  $('settings').addEventListener('input', () => { formDirty = true; });
  $('apply-cancel').addEventListener('click', () => {
    $('apply-dialog').close();
    $('apply').disabled = false;
    $('apply-status').textContent = 'Not applied.';
  });
  $('apply-confirm').addEventListener('click', () => {
    $('apply-dialog').close();
    save(pendingPatch, true);
  });
  if (!token) {
    $('token-missing').hidden = false;
    return;
  }
  const meta = await call('GET', '/api/ui/meta');
  if (meta.ok) {
    view.phases = meta.data.phases;
    view.versions = meta.data.versions;
  }
  await Promise.all([refreshSettings(true), refreshStatus()]);
  followEvents();
  refreshObjects();
  refreshImages();
  setInterval(refreshStatus, 3000);
  setInterval(refreshObjects, 2000);
  setInterval(refreshImages, 5000);
  setInterval(() => refreshSettings(false), 5000);
}

start();
