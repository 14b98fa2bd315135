// The shopcue demo: plays a channel through the sidecar's HLS proxy with hls.js and shows
// the product cues of the WebSocket feed as cards and hotspots, aligned with the picture
// (the SDK's `cueshow`/`cuehide` follow hls.playingDate).
import { ShopcueClient } from '/sdk/shopcue.js';

const params = new URLSearchParams(location.search);
const channel = params.get('channel') || 'demo';
const src = params.get('src') || 'master.m3u8';
const token = params.get('token') || undefined;
const streamUrl = /^https?:\/\//.test(src) ? src : `/hls/${encodeURIComponent(channel)}/${src}`;

const video = document.getElementById('video');
const stage = document.getElementById('stage');
const hotspotLayer = document.getElementById('hotspots');
const cardList = document.getElementById('cards');
const emptyNote = document.getElementById('empty');
const statusLine = document.getElementById('status');

/** What the page did, for people debugging it and for the headless tests. */
const demo = { shows: [], hides: [], errors: [], client: null, hls: null, video };
window.shopcueDemo = demo;

// ---- products ----

const products = new Map(); // product id -> Promise<object|null>
const resolved = new Map(); // product id -> catalog details, once they arrived

/** Display details of a product: the catalog API when it answers, else null. */
function product(id) {
  if (!products.has(id)) {
    products.set(
      id,
      fetch(`/v1/products/${encodeURIComponent(id)}`)
        .then((r) => (r.ok ? r.json() : null))
        .then((p) => {
          if (p) resolved.set(id, p);
          return p;
        })
        .catch(() => null),
    );
  }
  return products.get(id);
}

function imageOf(p) {
  const img = p && (p.image || (Array.isArray(p.images) ? p.images[0] : null));
  // Catalog images may be file paths on the server: only web URLs are shown.
  return typeof img === 'string' && /^(https?:\/\/|data:image\/)/.test(img) ? img : null;
}

function priceOf(p) {
  if (!p || p.price === undefined || p.price === null) return '';
  const price = typeof p.price === 'number' ? p.price.toFixed(2) : String(p.price);
  return p.currency ? `${price} ${p.currency}` : price;
}

function text(tag, cls, value) {
  const el = document.createElement(tag);
  el.className = cls;
  el.textContent = value;
  return el;
}

function renderCard(li, cue, details) {
  const p = { ...(cue.product || {}), ...(details || {}) };
  li.replaceChildren();
  const img = imageOf(p);
  if (img) {
    const el = document.createElement('img');
    el.src = img;
    el.alt = '';
    li.append(el);
  }
  const body = document.createElement('div');
  body.append(text('div', 'title', p.title || cue.product_id));
  const price = priceOf(p);
  if (price) body.append(text('div', 'price', price));
  body.append(text('div', 'meta', `${cue.product_id} · score ${Number(cue.score).toFixed(2)}`));
  li.append(body);
}

function showCard(cue) {
  let li = cardList.querySelector(`[data-cue-id="${CSS.escape(cue.id)}"]`);
  if (!li) {
    li = document.createElement('li');
    li.className = 'card';
    li.dataset.cueId = cue.id;
    li.dataset.productId = cue.product_id;
    cardList.append(li);
  }
  renderCard(li, cue, null);
  product(cue.product_id).then((details) => {
    if (li.isConnected && details) renderCard(li, cue, details);
  });
  emptyNote.hidden = true;
}

function hideCard(cue) {
  const li = cardList.querySelector(`[data-cue-id="${CSS.escape(cue.id)}"]`);
  if (li) li.remove();
  emptyNote.hidden = cardList.children.length > 0;
}

// ---- hotspots ----

/** The rectangle the picture occupies inside the <video> element (letterboxing aside). */
function pictureRect() {
  const w = video.clientWidth;
  const h = video.clientHeight;
  const vw = video.videoWidth || w;
  const vh = video.videoHeight || h;
  const scale = Math.min(w / vw, h / vh);
  const pw = vw * scale;
  const ph = vh * scale;
  return { left: (w - pw) / 2, top: (h - ph) / 2, width: pw, height: ph };
}

function drawHotspots() {
  const r = pictureRect();
  const seen = new Set();
  for (const { cue, box } of demo.client.hotspots()) {
    if (!box) continue;
    seen.add(cue.id);
    let el = hotspotLayer.querySelector(`[data-cue-id="${CSS.escape(cue.id)}"]`);
    if (!el) {
      el = document.createElement('div');
      el.className = 'hotspot';
      el.dataset.cueId = cue.id;
      el.append(text('span', '', ''));
      hotspotLayer.append(el);
    }
    const label = resolved.get(cue.product_id)?.title || cue.product?.title || cue.product_id;
    if (el.firstChild.textContent !== label) el.firstChild.textContent = label;
    el.style.left = `${r.left + box.x * r.width}px`;
    el.style.top = `${r.top + box.y * r.height}px`;
    el.style.width = `${box.w * r.width}px`;
    el.style.height = `${box.h * r.height}px`;
  }
  for (const el of [...hotspotLayer.children]) {
    if (!seen.has(el.dataset.cueId)) el.remove();
  }
}

// ---- status ----

function drawStatus() {
  const c = demo.client;
  const date = c.playingDate();
  statusLine.textContent = [
    `feed ${c.state}`,
    `offset ${c.offset ?? '-'}`,
    `playing ${date ? date.toISOString() : '-'}`,
    `visible ${c.visibleCues().length}`,
  ].join(' · ');
}

function frame() {
  drawHotspots();
  drawStatus();
  requestAnimationFrame(frame);
}

// ---- wiring ----

function start() {
  const client = new ShopcueClient({ channel, token });
  demo.client = client;
  client.addEventListener('cueshow', (e) => {
    const { cue, playingDate } = e.detail;
    demo.shows.push({ id: cue.id, start: cue.start, playingDate: playingDate.toISOString() });
    showCard(cue);
  });
  client.addEventListener('cuehide', (e) => {
    const { cue, playingDate, reason } = e.detail;
    demo.hides.push({ id: cue.id, end: cue.end ?? null, playingDate: playingDate ? playingDate.toISOString() : null, reason });
    hideCard(cue);
  });
  client.addEventListener('protocolerror', (e) => demo.errors.push(e.detail.message));
  client.connect();

  if (!window.Hls || !Hls.isSupported()) {
    statusLine.textContent = 'this browser cannot play HLS with hls.js (no MediaSource)';
    return;
  }
  const hls = new Hls({ enableDateRangeMetadataCues: true, enableID3MetadataCues: true });
  demo.hls = hls;
  hls.on(Hls.Events.ERROR, (_, data) => {
    if (data.fatal) demo.errors.push(`hls.js fatal: ${data.details}`);
  });
  hls.loadSource(streamUrl);
  hls.attachMedia(video);
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    video.play().catch((e) => demo.errors.push(`play: ${e.message}`));
  });
  client.attachHls(hls, video);
  window.addEventListener('resize', drawHotspots);
  stage.dataset.channel = channel;
  requestAnimationFrame(frame);
}

start();
