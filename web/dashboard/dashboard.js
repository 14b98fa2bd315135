// The shopcue ops dashboard. Polls GET /v1/status every second (cards, header) and
// GET /v1/status/history?since=<newest t> (charts: only the new points each time).
// No framework and no build step: the sidecar serves this file as it is.
'use strict';

(() => {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 2500;
  // After this long without a good poll the page says "disconnected", before that "stale".
  const DISCONNECTED_AFTER_MS = 8000;
  // The sidecar keeps ten minutes of history; so do the charts.
  const KEEP_MS = 600 * 1000;
  // Cue rate and decode fps shown on the card: the mean of the last points (both come in
  // bursts).
  const RATE_WINDOW = 10;

  // Latency rows: label, p50 key, p95 key (null where the sidecar has no p95).
  const STAGES = [
    ['fetch', 'fetch_p50', 'fetch_p95'],
    ['decode', 'decode_p50', 'decode_p95'],
    ['detect', 'detect_p50', null],
    ['embed', 'embed_p50', null],
    ['search', 'search_p50', null],
    ['analysis', 'analysis_p50', 'analysis_p95'],
    ['glass → cue', 'glass_to_cue_p50', 'glass_to_cue_p95'],
  ];

  // Charts: title, unit, the history field, stroke colour.
  const CHARTS = [
    ['lag', 's', 'lag_s', '#2563eb'],
    ['decode', 'fps', 'decode_fps', '#0d9488'],
    ['analysis per sample', 'ms', 'analysis_ms', '#9333ea'],
    ['glass → cue', 'ms', 'glass_to_cue_ms', '#db2777'],
    ['cue events', '/s', 'cues_per_s', '#ea580c'],
  ];

  const $ = (id) => document.getElementById(id);
  const channels = new Map(); // id → {card, charts: [{u, key}], data: {t: [], field: []…}, last}
  let since = null; // newest history t (ms) seen
  let lastOk = 0;
  let everOk = false;
  let lastError = '';

  function num(v, digits) {
    return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–';
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return `${s} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  }

  function duration(s) {
    if (typeof s !== 'number') return '–';
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s % 60} s` : `${s} s`;
  }

  async function getJSON(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const key = sessionStorage.getItem('shopcue.key');
      const headers = key ? { 'x-api-key': key } : {};
      const r = await fetch(url, { signal: ctl.signal, cache: 'no-store', headers });
      // server.protect_ops: status needs the admin key; ask for it.
      $('signin').hidden = r.status !== 401 && r.status !== 403;
      if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
      return await r.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- header ------------------------------------------------------------------------

  function setFact(id, text, cls) {
    const el = $(id);
    el.textContent = text;
    el.className = cls || '';
  }

  function renderHeader(st) {
    $('version').textContent = st.version ? `v${st.version}` : '';
    const reasons = Array.isArray(st.ready) ? st.ready : [];
    setFact('ready', reasons.length ? `not ready (${reasons.length})` : 'ready', reasons.length ? 'bad' : 'good');
    const nr = $('not-ready');
    nr.hidden = reasons.length === 0;
    nr.textContent = reasons.length ? `Not ready: ${reasons.join(' · ')}` : '';

    const bus = st.bus || {};
    const kind = st.bus_kind || 'bus';
    const extras = [];
    if (bus.buffered) extras.push(`${bus.buffered} buffered`);
    if (bus.dropped) extras.push(`${bus.dropped} dropped`);
    if (bus.reconnects) extras.push(`${bus.reconnects} reconnects`);
    setFact(
      'bus',
      `${kind} · ${bus.healthy ? 'healthy' : 'UNREACHABLE'}${extras.length ? ' · ' + extras.join(', ') : ''}`,
      bus.healthy ? 'good' : 'bad',
    );
    const feed = st.feed || {};
    setFact('clients', `${feed.clients ?? '–'} · ${feed.events_sent ?? 0} events sent`);
    const providers = Array.isArray(st.providers) ? st.providers : [];
    setFact('providers', providers.length ? providers.map((p) => `${p.model}: ${p.provider}`).join(', ') : 'none (no models loaded)');
    const c = st.catalog;
    setFact('catalog', c ? `${c.products} products · ${c.vectors} vectors` : 'none (shots only, no cues)', c ? '' : 'warn');
    setFact('uptime', duration(st.uptime_s));
  }

  function renderConnection() {
    const el = $('conn');
    const now = Date.now();
    let state;
    let text;
    if (everOk && now - lastOk < 2.5 * POLL_MS) {
      state = 'live';
      text = 'live';
    } else if (everOk && now - lastOk < DISCONNECTED_AFTER_MS) {
      state = 'stale';
      text = `stale · last update ${ago(now - lastOk)}`;
    } else {
      state = 'disconnected';
      text = everOk ? `disconnected · last update ${ago(now - lastOk)}` : 'disconnected';
    }
    if (state !== 'live' && lastError) el.title = lastError;
    el.textContent = text;
    el.dataset.conn = state;
    el.className = `conn conn-${state}`;
    document.body.classList.toggle('is-stale', state !== 'live');
  }

  // ---- channel cards -----------------------------------------------------------------

  function makeChannel(id) {
    const card = $('card').content.firstElementChild.cloneNode(true);
    card.dataset.channel = id;
    card.querySelector('[data-role=id]').textContent = id;
    $('channels').appendChild(card);
    const data = { t: [] };
    for (const [, , key] of CHARTS) data[key] = [];
    const ch = { card, charts: [], data, last: null, points: [] };
    const holder = card.querySelector('[data-role=charts]');
    for (const [title, unit, key, colour] of CHARTS) {
      const box = document.createElement('div');
      box.className = 'chart';
      box.dataset.chart = key;
      holder.appendChild(box);
      const u = new uPlot(chartOptions(title, unit, colour, box), [data.t, data[key]], box);
      ch.charts.push({ u, key, box });
    }
    new ResizeObserver(() => {
      for (const c of ch.charts) c.u.setSize({ width: chartWidth(c.box), height: 130 });
    }).observe(holder);
    channels.set(id, ch);
    return ch;
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    const p = (n) => String(n).padStart(2, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function chartWidth(box) {
    return Math.max(200, Math.floor(box.clientWidth || 300));
  }

  function chartOptions(title, unit, colour, box) {
    const digits = unit === 'ms' ? 0 : unit === 'fps' ? 1 : 2;
    return {
      title: `${title} (${unit})`,
      width: chartWidth(box),
      height: 130,
      cursor: { drag: { x: false, y: false } },
      legend: { show: false },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max ?? 0, unit === '/s' ? 0.5 : 1) * 1.1] } },
      axes: [
        { stroke: '#555', grid: { stroke: '#eee' }, ticks: { stroke: '#ddd' }, space: 70,
          values: (u, vals) => vals.map((v) => clock(v)) },
        { stroke: '#555', grid: { stroke: '#eee' }, ticks: { stroke: '#ddd' }, size: 48,
          values: (u, vals) => vals.map((v) => +v.toPrecision(3)) },
      ],
      series: [
        {},
        { label: title, stroke: colour, width: 1.5, fill: `${colour}22`, spanGaps: false, points: { show: false },
          value: (u, v) => (v == null ? '–' : `${v.toFixed(digits)} ${unit}`) },
      ],
    };
  }

  function renderChannel(c, now) {
    const ch = channels.get(c.id) || makeChannel(c.id);
    const card = ch.card;
    card.querySelector('[data-role=url]').textContent = c.url || '';
    const state = c.state || 'unknown';
    const badge = card.querySelector('[data-role=badge]');
    const sup = c.supervisor || {};
    const next = Date.parse(sup.next_attempt);
    // A channel waiting to restart says when it tries again.
    badge.textContent = state === 'retrying' && Number.isFinite(next)
      ? `retrying in ${Math.max(0, Math.ceil((next - now) / 1000))} s`
      : state;
    badge.dataset.state = state;
    card.dataset.state = state;

    const err = card.querySelector('[data-role=error]');
    const le = c.last_error;
    if (le && le.message) {
      const at = Date.parse(le.at);
      err.textContent = '';
      const when = document.createElement('span');
      when.className = 'when';
      when.textContent = Number.isFinite(at)
        ? `last error ${new Date(at).toLocaleTimeString()} (${ago(now - at)}): `
        : 'last error: ';
      const msg = document.createElement('span');
      msg.dataset.role = 'error-message';
      msg.textContent = le.message;
      err.append(when, msg);
      err.className = `error ${state === 'up' ? 'error-old' : 'error-now'}`;
    } else {
      err.textContent = 'no errors';
      err.className = 'error error-none';
    }

    const pipe = c.pipeline || {};
    const recent = ch.points.slice(-RATE_WINDOW);
    const mean = (key) => (recent.length ? recent.reduce((s, p) => s + (p[key] || 0), 0) / recent.length : null);
    const cueRate = mean('cues_per_s');
    const last = ch.points[ch.points.length - 1];
    const fig = (key, text) => {
      card.querySelector(`[data-figure=${key}]`).textContent = text;
    };
    fig('lag_s', num(c.lag_s, 1));
    // Segments decode in bursts: one second says 0 fps, the next 50; the mean reads true.
    fig('decode_fps', num(recent.length ? mean('decode_fps') : c.decode_fps, 1));
    fig('realtime_factor', num(c.realtime_factor, 2));
    fig('cues_per_s', num(cueRate, 2));
    fig('subscribers', num(last ? last.subscribers : null, 0));
    fig('samples_dropped', num(pipe.samples_dropped ?? (c.pipeline ? 0 : null), 0));
    card.querySelector('[data-role=dropped-rate]').textContent =
      last && last.dropped_per_s > 0 ? ` (${last.dropped_per_s.toFixed(1)}/s)` : '';
    const seg = c.segments || {};
    const counters = [
      `segments ${seg.fetched ?? 0} fetched, ${seg.bad ?? 0} bad, ${seg.lost ?? 0} lost, ${seg.skipped ?? 0} skipped`,
      `restarts ${c.restarts ?? 0}`,
      `frames ${pipe.frames ?? 0}`,
      `shots ${pipe.shots ?? 0}`,
      `samples ${pipe.samples ?? 0} (${pipe.analysed ?? 0} analysed, ${pipe.inference_errors ?? 0} failed)`,
      `cue events ${pipe.cue_events ?? 0}`,
    ];
    if (typeof c.holdback_delay_ms === 'number') counters.push(`HLS holdback ${c.holdback_delay_ms} ms`);
    card.querySelector('[data-role=counters]').textContent = counters.join(' · ');
    renderLatency(card.querySelector('[data-role=latency]'), c.latency_ms || {});
  }

  function renderLatency(el, lat) {
    const values = STAGES.flatMap(([, a, b]) => [lat[a], b ? lat[b] : null]).filter((v) => typeof v === 'number');
    const top = Math.log10(1 + Math.max(10, ...values));
    const w = (v) => (typeof v === 'number' ? `${Math.max(0.5, (100 * Math.log10(1 + v)) / top).toFixed(1)}%` : '0');
    if (!el.firstChild) {
      for (const [label, p50] of STAGES) {
        const row = document.createElement('div');
        row.className = 'lat-row';
        row.dataset.stage = p50.replace(/_p50$/, '');
        row.innerHTML =
          '<span class="lat-label"></span><span class="lat-track"><span class="lat-p95"></span>' +
          '<span class="lat-p50"></span></span><span class="lat-val"></span>';
        row.querySelector('.lat-label').textContent = label;
        el.appendChild(row);
      }
    }
    STAGES.forEach(([, a, b], i) => {
      const row = el.children[i];
      const p50 = lat[a];
      const p95 = b ? lat[b] : null;
      row.querySelector('.lat-p50').style.width = w(p50);
      row.querySelector('.lat-p95').style.width = w(p95);
      row.querySelector('.lat-val').textContent =
        typeof p50 === 'number' ? `${num(p50, p50 < 10 ? 1 : 0)}${b ? ' / ' + num(p95, p95 < 10 ? 1 : 0) : ''}` : 'no data';
      row.classList.toggle('lat-empty', typeof p50 !== 'number');
    });
  }

  // ---- history -----------------------------------------------------------------------

  function mergeHistory(hist) {
    for (const [id, points] of Object.entries(hist || {})) {
      const ch = channels.get(id);
      if (!ch || !Array.isArray(points)) continue;
      const lastT = ch.points.length ? ch.points[ch.points.length - 1].t : -Infinity;
      for (const p of points) {
        if (typeof p.t !== 'number' || p.t <= lastT) continue;
        ch.points.push(p);
        since = since === null ? p.t : Math.max(since, p.t);
      }
      const newest = ch.points.length ? ch.points[ch.points.length - 1].t : 0;
      const cut = ch.points.findIndex((p) => p.t >= newest - KEEP_MS);
      if (cut > 0) ch.points.splice(0, cut);
      ch.data.t = ch.points.map((p) => p.t / 1000);
      for (const [, , key] of CHARTS) ch.data[key] = ch.points.map((p) => (typeof p[key] === 'number' ? p[key] : null));
      for (const c of ch.charts) c.u.setData([ch.data.t, ch.data[c.key]]);
    }
  }

  // ---- the loop ----------------------------------------------------------------------

  async function poll() {
    const started = Date.now();
    try {
      const st = await getJSON('/v1/status');
      const now = Date.now();
      renderHeader(st);
      const ids = new Set();
      for (const c of st.channels || []) {
        ids.add(c.id);
        renderChannel(c, now);
      }
      for (const [id, ch] of channels) {
        if (!ids.has(id)) {
          ch.card.remove();
          channels.delete(id);
        }
      }
      const hist = await getJSON(`/v1/status/history${since === null ? '' : `?since=${since}`}`);
      mergeHistory(hist);
      lastOk = Date.now();
      everOk = true;
      lastError = '';
    } catch (e) {
      lastError = String(e && e.message ? e.message : e);
    }
    renderConnection();
    setTimeout(poll, Math.max(100, POLL_MS - (Date.now() - started)));
  }

  // Tests and curious operators: what the charts hold.
  window.shopcueDashboard = {
    channels: () => [...channels.keys()],
    seriesLengths: (id) => (channels.get(id)?.charts || []).map((c) => c.u.data[0].length),
  };

  $('signin').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem('shopcue.key', $('key').value);
    $('signin').hidden = true;
  });

  setInterval(renderConnection, 1000);
  poll();
})();
