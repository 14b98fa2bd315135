// The shopcue demo: plays a channel through the sidecar's HLS proxy with hls.js and shows
// the product cues of the WebSocket feed as cards and hotspots, aligned with the picture
// (the SDK's `cueshow`/`cuehide` follow hls.playingDate); a "shop the show" rail keeps
// every product this viewer was shown; a click or tap on a card, hotspot or rail item
// opens the product's details beside the video, which keeps playing. The SDK's
// `impression` and `click` events are forwarded to `window.shopcueDemo.analytics` (where
// a site would send them to its analytics).
import { ShopcueClient } from '/sdk/shopcue.js';

const params = new URLSearchParams(location.search);
const channel = params.get('channel') || 'demo';
const src = params.get('src') || 'master.m3u8';
const token = params.get('token') || undefined;
// `src` is an entry under /hls/<channel>/ (`master.m3u8`), an absolute path
// (`/hls/grocery/master.m3u8`, as `shopcue demo` prints it) or a full URL: each resolves
// against the channel's folder the way a link would.
const channelBase = new URL(`/hls/${encodeURIComponent(channel)}/`, location.href);
const streamUrl = new URL(src, channelBase).href;

const video = document.getElementById('video');
const stage = document.getElementById('stage');
const hotspotLayer = document.getElementById('hotspots');
const cardList = document.getElementById('cards');
const emptyNote = document.getElementById('empty');
const statusLine = document.getElementById('status');
const railList = document.getElementById('rail');
const railCount = document.getElementById('rail-count');
const detail = document.getElementById('detail');

/** What the page did, for people debugging it and for the headless tests. */
const demo = { shows: [], hides: [], errors: [], analytics: [], client: null, hls: null, video };
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
        // The sidecar answers {product, source, stale}; a plain product object works too.
        .then((a) => (a && a.product && typeof a.product === 'object' ? { ...a.product, stale: a.stale } : a))
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
  if (typeof img !== 'string') return null;
  if (/^(https?:\/\/|data:image\/)/.test(img)) return img;
  // A file path in the catalog: the sidecar serves it.
  return p.id ? `/v1/products/${encodeURIComponent(p.id)}/image` : null;
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

/** The words a screen reader says for a product. */
function labelOf(p, id) {
  const price = priceOf(p);
  return `${p.title || id}${price ? `, ${price}` : ''}: show details`;
}

function renderCard(li, cue, details) {
  const p = { ...(cue.product || {}), ...(details || {}) };
  li.replaceChildren();
  li.setAttribute('aria-label', labelOf(p, cue.product_id));
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
    li = document.createElement('button');
    li.type = 'button';
    li.className = 'card';
    li.dataset.cueId = cue.id;
    li.dataset.productId = cue.product_id;
    li.addEventListener('click', () => openProduct(cue.product_id, cue, 'card'));
    const item = document.createElement('li');
    item.append(li);
    cardList.append(item);
  }
  renderCard(li, cue, null);
  product(cue.product_id).then((details) => {
    if (li.isConnected && details) renderCard(li, cue, details);
  });
  emptyNote.hidden = true;
}

function hideCard(cue) {
  const li = cardList.querySelector(`[data-cue-id="${CSS.escape(cue.id)}"]`);
  if (li) li.parentElement.remove();
  emptyNote.hidden = cardList.children.length > 0;
}

// ---- the rail: every product shown to this viewer, newest first ----

function drawRail() {
  const seen = demo.client.seenProducts();
  railCount.textContent = String(seen.length);
  railCount.setAttribute('aria-label', `${seen.length} products shown so far`);
  seen.forEach(({ productId, cue }, i) => {
    let li = railList.querySelector(`[data-product-id="${CSS.escape(productId)}"]`);
    if (!li) {
      li = document.createElement('li');
      li.dataset.productId = productId;
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'rail-item';
      button.addEventListener('click', () => openProduct(productId, cue, 'rail'));
      li.append(button);
    }
    const button = li.firstChild;
    const p = { ...(cue.product || {}), ...(resolved.get(productId) || {}) };
    const title = p.title || productId;
    const img = imageOf(p);
    const key = `${title}\n${img ?? ''}`;
    if (button.dataset.key !== key) {
      button.dataset.key = key;
      button.replaceChildren();
      if (img) {
        const el = document.createElement('img');
        el.src = img;
        el.alt = '';
        button.append(el);
      }
      button.append(text('span', 'title', title));
    }
    button.setAttribute('aria-label', labelOf(p, productId));
    if (railList.children[i] !== li) railList.insertBefore(li, railList.children[i] || null);
  });
}

// ---- product details (the video keeps playing) ----

let detailFor = null;

async function openProduct(productId, cue, source) {
  demo.client.click(cue || productId, source);
  detailFor = productId;
  detail.hidden = false;
  detail.replaceChildren(text('p', 'loading', 'Loading…'));
  const p = { ...(cue?.product || {}), ...((await product(productId)) || {}) };
  if (detailFor !== productId) return;
  const close = text('button', 'close', '×');
  close.type = 'button';
  close.setAttribute('aria-label', 'Close product details');
  close.addEventListener('click', closeProduct);
  const parts = [close];
  const img = imageOf(p);
  if (img) {
    const el = document.createElement('img');
    el.src = img;
    el.alt = p.title || productId;
    parts.push(el);
  }
  const title = text('h3', 'title', p.title || productId);
  title.id = 'detail-title';
  parts.push(title);
  if (p.brand) parts.push(text('p', 'brand', p.brand));
  const price = priceOf(p);
  if (price) parts.push(text('p', 'price', price));
  parts.push(text('p', 'availability', p.availability ? p.availability.replaceAll('_', ' ') : 'availability unknown'));
  if (typeof p.url === 'string' && /^https?:\/\//.test(p.url)) {
    const a = text('a', 'shop', 'View in shop');
    a.href = p.url;
    a.target = '_blank';
    a.rel = 'noopener';
    parts.push(a);
  }
  detail.replaceChildren(...parts);
  detail.dataset.productId = productId;
  close.focus({ preventScroll: true });
}

function closeProduct() {
  detailFor = null;
  detail.hidden = true;
  detail.replaceChildren();
}

document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !detail.hidden) closeProduct();
});

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
      el = document.createElement('button');
      el.type = 'button';
      el.className = 'hotspot';
      el.dataset.cueId = cue.id;
      el.dataset.productId = cue.product_id;
      el.append(text('span', '', ''));
      el.addEventListener('click', () => openProduct(cue.product_id, cue, 'hotspot'));
      hotspotLayer.append(el);
    }
    const label = resolved.get(cue.product_id)?.title || cue.product?.title || cue.product_id;
    if (el.firstChild.textContent !== label) {
      el.firstChild.textContent = label;
      el.setAttribute('aria-label', `${label}: show details`);
    }
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
  drawRail();
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
  for (const type of ['impression', 'click']) {
    client.addEventListener(type, (e) => {
      const { productId, source, playingDate } = e.detail;
      demo.analytics.push({ type, productId, cueId: e.detail.cue?.id ?? null, source: source ?? null, at: playingDate ? playingDate.toISOString() : null });
    });
  }
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
