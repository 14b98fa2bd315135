// The operator console: every action is an admin API call with the key from the sign-in
// form (kept in sessionStorage, sent as x-api-key). Polls /v1/console/channels and
// /v1/console/audit every second.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const state = { key: sessionStorage.getItem('shopcue.key') || '', cards: new Map(), crops: new Map() };
window.consoleState = state;

function showError(msg) {
  const e = $('#error');
  e.textContent = msg || '';
  e.hidden = !msg;
}

async function api(method, path, body) {
  const opts = { method, headers: { 'x-api-key': state.key } };
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!r.ok) {
    const why = (json && json.error) || `${r.status} ${r.statusText}`;
    throw new Error(`${method} ${path}: ${why}`);
  }
  return json;
}

async function act(method, path, body) {
  try {
    const out = await api(method, path, body);
    showError('');
    await refresh();
    return out;
  } catch (e) {
    showError(e.message);
    return null;
  }
}

function chip(text, label, onRemove) {
  const c = document.createElement('span');
  c.className = 'chip';
  c.textContent = text;
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = '×';
  b.setAttribute('aria-label', label);
  b.addEventListener('click', onRemove);
  c.append(b);
  return c;
}

async function cropUrl(channel, cueId) {
  if (state.crops.has(cueId)) return state.crops.get(cueId);
  const r = await fetch(`/v1/channels/${channel}/cues/${cueId}/crop`, { headers: { 'x-api-key': state.key } });
  if (!r.ok) return null;
  const url = URL.createObjectURL(await r.blob());
  state.crops.set(cueId, url);
  return url;
}

function cueItem(ch, cue, hasCrop, hasEvidence) {
  const li = document.createElement('li');
  li.className = 'cue';
  li.dataset.cue = cue.id;
  li.dataset.product = cue.product_id;
  li.dataset.source = cue.source || 'auto';
  if (hasCrop) {
    const img = document.createElement('img');
    img.alt = `what the channel saw for ${cue.product_id}`;
    cropUrl(ch, cue.id).then((u) => { if (u) img.src = u; });
    li.append(img);
  }
  const meta = document.createElement('div');
  meta.className = 'meta';
  const when = new Date(cue.start).toLocaleTimeString();
  meta.textContent = `${cue.product_id} · score ${cue.score.toFixed(2)} · ${when}${cue.end ? ' · ended' : ' · on screen'}${cue.source === 'operator' ? ' · pinned' : ''}`;
  li.append(meta);
  if (hasEvidence) {
    const row = document.createElement('div');
    const verdict = async (body) => {
      const out = await act('POST', `/v1/channels/${ch}/cues/${cue.id}/feedback`, body);
      if (out) {
        const done = document.createElement('span');
        done.className = 'done';
        done.dataset.role = 'feedback-done';
        done.textContent = `${body.verdict}: ${out.stored.map((s) => `${s.product_id} ${s.kind} +${s.stored}`).join(', ')}`;
        li.append(done);
      }
    };
    for (const [label, body] of [['confirm', { verdict: 'confirm' }], ['reject', { verdict: 'reject' }]]) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = label;
      b.dataset.action = label;
      b.setAttribute('aria-label', `${label} ${cue.product_id}`);
      b.addEventListener('click', () => verdict(body));
      row.append(b);
    }
    const rel = document.createElement('button');
    rel.type = 'button';
    rel.textContent = 'relabel…';
    rel.dataset.action = 'relabel';
    rel.addEventListener('click', () => {
      const p = prompt(`What does the crop show instead of ${cue.product_id}? (product id)`);
      if (p) verdict({ verdict: 'relabel', product_id: p.trim() });
    });
    row.append(rel);
    li.append(row);
  }
  return li;
}

function card(ch) {
  let c = state.cards.get(ch);
  if (c) return c;
  c = $('#channel').content.firstElementChild.cloneNode(true);
  c.dataset.channel = ch;
  $('[data-role=id]', c).textContent = ch;
  const product = () => $('[data-role=product]', c).value.trim();
  $('[data-role=pin-form]', c).addEventListener('submit', (e) => {
    e.preventDefault();
    act('POST', `/v1/channels/${ch}/pins`, { product_id: product() });
  });
  $('[data-action=suppress]', c).addEventListener('click', () => {
    const p = product();
    if (!p) { showError('name a product to suppress'); return; }
    const s = $('[data-role=seconds]', c).value;
    const body = { product_id: p };
    if (s) body.seconds = Number(s);
    act('POST', `/v1/channels/${ch}/suppressions`, body);
  });
  $('[data-role=threshold-form]', c).addEventListener('submit', (e) => {
    e.preventDefault();
    act('PUT', `/v1/channels/${ch}/threshold`, { min_similarity: Number($('[data-role=threshold]', c).value) });
  });
  $('[data-action=threshold-reset]', c).addEventListener('click', () =>
    act('PUT', `/v1/channels/${ch}/threshold`, { min_similarity: null }));
  $('#channels').append(c);
  state.cards.set(ch, c);
  return c;
}

function render(channels) {
  for (const view of channels) {
    const c = card(view.channel);
    const pins = $('[data-role=pins]', c);
    pins.replaceChildren(...view.pins.map((p) => chip(p.product_id, `end the pin of ${p.product_id}`,
      () => act('DELETE', `/v1/channels/${view.channel}/pins/${encodeURIComponent(p.product_id)}`))));
    const sup = $('[data-role=suppressed]', c);
    sup.replaceChildren(...view.suppressed.map((s) => chip(
      `${s.product_id}${s.until ? ` until ${new Date(s.until).toLocaleTimeString()}` : ''}`,
      `lift the suppression of ${s.product_id}`,
      () => act('DELETE', `/v1/channels/${view.channel}/suppressions/${encodeURIComponent(s.product_id)}`))));
    $('[data-role=held]', c).textContent = view.suppressed_events ? `(${view.suppressed_events} events held)` : '';
    $('[data-role=threshold-now]', c).textContent =
      view.min_similarity == null ? 'configured threshold' : `now ${view.min_similarity}`;
    const crops = new Set(view.crops);
    const evidence = new Set(view.evidence);
    const list = $('[data-role=cues]', c);
    const shown = [...list.children].map((li) => `${li.dataset.cue}:${li.querySelector('.meta').textContent}`).join('|');
    const items = view.recent.map((cue) => cueItem(view.channel, cue, crops.has(cue.id), evidence.has(cue.id)));
    const next = items.map((li) => `${li.dataset.cue}:${li.querySelector('.meta').textContent}`).join('|');
    if (shown !== next) list.replaceChildren(...items);
  }
}

function renderAudit(entries) {
  const body = $('#audit tbody');
  body.replaceChildren(...entries.map((e) => {
    const tr = document.createElement('tr');
    for (const v of [new Date(e.at).toLocaleTimeString(), e.key_id, e.channel || '', e.action, e.detail]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
}

async function refresh() {
  if (!state.key) return;
  try {
    const [channels, audit] = await Promise.all([api('GET', '/v1/console/channels'), api('GET', '/v1/console/audit')]);
    render(channels);
    renderAudit(audit);
    const conn = $('#conn');
    conn.textContent = 'signed in';
    conn.dataset.conn = 'live';
    conn.className = 'conn conn-live';
    state.ready = true;
  } catch (e) {
    showError(e.message);
    state.ready = false;
    const conn = $('#conn');
    conn.textContent = 'not signed in';
    conn.dataset.conn = 'disconnected';
    conn.className = 'conn conn-disconnected';
  }
}

$('#signin').addEventListener('submit', (e) => {
  e.preventDefault();
  state.key = $('#key').value;
  sessionStorage.setItem('shopcue.key', state.key);
  refresh();
});
if (state.key) $('#key').value = state.key;
refresh();
setInterval(refresh, 1000);
