// shopcue player SDK: the live product cues of one channel, from the WebSocket feed
// (docs/websocket-protocol.md), aligned with what the viewer sees (docs/player-sdk.md).
// A plain ES module: no build step, no dependencies. Works with any hls.js 1.x instance.

/** Offsets are "<ms>-<seq>"; this parses one into [ms, seq] (null if malformed). */
function parseOffset(s) {
  if (typeof s !== 'string') return null;
  const m = /^(\d{1,20})-(\d{1,20})$/.exec(s);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** -1, 0, 1 comparing two parsed offsets. */
function compareOffsets(a, b) {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  if (a[1] !== b[1]) return a[1] < b[1] ? -1 : 1;
  return 0;
}

/** Milliseconds since the epoch of an RFC 3339 string, or NaN. */
function timeMs(s) {
  return typeof s === 'string' ? Date.parse(s) : NaN;
}

/**
 * A cue as the SDK keeps it: the server's fields plus parsed times.
 * @typedef {object} Cue
 * @property {string} id stable cue id (the same in every event of the cue)
 * @property {string} channel
 * @property {string} product_id catalog product id
 * @property {string} start RFC 3339 wall clock of the first frame showing the product
 * @property {string|null} end wall clock of the last frame; null while the cue is open
 * @property {number} score match confidence, 0-1
 * @property {number} shot
 * @property {{t: string, x: number, y: number, w: number, h: number}[]} boxes box track
 * @property {object} [product] display details (title, price, image...) when the server knows them
 * @property {number} startMs parsed `start` (added by the SDK)
 * @property {number|null} endMs parsed `end` (added by the SDK)
 */

/** Validate and normalise a cue from the wire; null when it is unusable. */
function normaliseCue(raw) {
  if (!raw || typeof raw !== 'object' || typeof raw.id !== 'string' || raw.id === '') return null;
  const startMs = timeMs(raw.start);
  if (!Number.isFinite(startMs)) return null;
  let endMs = null;
  if (raw.end !== null && raw.end !== undefined) {
    endMs = timeMs(raw.end);
    if (!Number.isFinite(endMs)) return null;
  }
  const boxes = Array.isArray(raw.boxes)
    ? raw.boxes
        .map((b) => (b && typeof b === 'object' ? { ...b, tMs: timeMs(b.t) } : null))
        .filter(
          (b) =>
            b &&
            Number.isFinite(b.tMs) &&
            [b.x, b.y, b.w, b.h].every((v) => typeof v === 'number' && Number.isFinite(v)),
        )
        .sort((a, b) => a.tMs - b.tMs)
    : [];
  return { ...raw, boxes, startMs, endMs };
}

/**
 * The hotspot box of `cue` at wall clock `dateMs`, interpolated linearly between the two
 * samples of its box track around it (held at the first/last sample outside the track).
 * @param {Cue} cue
 * @param {Date|number} date playing date (a Date or ms since the epoch)
 * @returns {{x: number, y: number, w: number, h: number}|null} normalised to 0-1, or null without boxes
 */
export function boxAt(cue, date) {
  const boxes = cue && cue.boxes;
  if (!boxes || boxes.length === 0) return null;
  const t = date instanceof Date ? date.getTime() : Number(date);
  const pick = (b) => ({ x: b.x, y: b.y, w: b.w, h: b.h });
  if (!Number.isFinite(t) || t <= boxes[0].tMs) return pick(boxes[0]);
  const last = boxes[boxes.length - 1];
  if (t >= last.tMs) return pick(last);
  let i = 1;
  while (boxes[i].tMs < t) i++;
  const a = boxes[i - 1];
  const b = boxes[i];
  const k = b.tMs === a.tMs ? 0 : (t - a.tMs) / (b.tMs - a.tMs);
  const lerp = (p, q) => p + (q - p) * k;
  return { x: lerp(a.x, b.x), y: lerp(a.y, b.y), w: lerp(a.w, b.w), h: lerp(a.h, b.h) };
}

/**
 * Whether a cue is on screen at `dateMs`: start <= date, and date <= end (an open cue
 * has no end yet).
 * @param {Cue} cue
 * @param {number} dateMs
 */
export function isVisibleAt(cue, dateMs) {
  return dateMs >= cue.startMs && (cue.endMs === null || dateMs <= cue.endMs);
}

const DEFAULTS = {
  backoffInitialMs: 500,
  backoffMaxMs: 15000,
  /** Ended cues kept (for playback that is behind the live edge); oldest dropped beyond. */
  maxEndedCues: 1000,
  /** Ended cues are forgotten once the playing date is this far past their end. */
  endedKeepMs: 30000,
};

/**
 * The client of one channel's cue feed.
 *
 * Events (all `CustomEvent`s; read `event.detail`):
 * - `status` `{state, offset, attempt, resumed, reason}`: `state` is `connecting`,
 *   `open` (hello received), `closed` (will reconnect after a back-off) or `stopped`;
 * - `snapshot` `{offset, cues}`: the server replaced the open cues;
 * - `cue` `{type, cue, offset}`: one feed event applied (`type` `start|update|end`);
 * - `cueshow` `{cue, playingDate}` / `cuehide` `{cue, playingDate, reason}`: the cue became
 *   visible / stopped being visible on the attached player (see {@link ShopcueClient#attachHls});
 * - `protocolerror` `{message, data}`: a server message the SDK ignored (malformed);
 * - `impression` `{cue, productId, playingDate}`: a product was first shown to this viewer
 *   (once per cue), for analytics;
 * - `click` `{cue, productId, source, playingDate}`: the page reported a click or tap on a
 *   product with {@link ShopcueClient#click}, for analytics.
 *
 * @example
 * const client = new ShopcueClient({ channel: 'news' });
 * client.addEventListener('cueshow', (e) => console.log(e.detail.cue.product_id));
 * client.connect();
 * client.attachHls(hls, video);
 */
export class ShopcueClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.channel channel id
   * @param {string} [options.baseUrl] server base, `http(s)://host[:port]` or `ws(s)://…`
   *   (default: the page's origin)
   * @param {string|(() => string)} [options.token] feed token (`?token=`) when the server
   *   requires one; a function is called at every (re)connection, so it can hand out a fresh
   *   token after the server closed an expired one (1008)
   * @param {string} [options.since] an offset to resume after (e.g. one kept from a previous page)
   * @param {number} [options.backoffInitialMs=500] first reconnect delay
   * @param {number} [options.backoffMaxMs=15000] longest reconnect delay
   * @param {typeof WebSocket} [options.WebSocket] WebSocket implementation (default: global)
   */
  constructor(options) {
    super();
    if (!options || typeof options.channel !== 'string' || options.channel === '') {
      throw new TypeError('ShopcueClient: options.channel is required');
    }
    this.options = { ...DEFAULTS, ...options };
    /** @type {Map<string, Cue>} known cues: open ones and ended ones not yet played past */
    this.cues = new Map();
    /** @type {string|null} offset of the last message applied */
    this.offset = options.since && parseOffset(options.since) ? options.since : null;
    /** @type {string} `idle`, `connecting`, `open`, `closed` or `stopped` */
    this.state = 'idle';
    /** Counters, for status lines and tests. */
    this.stats = { connects: 0, resumed: 0, snapshots: 0, events: 0, duplicates: 0, ignored: 0 };
    this._ws = null;
    this._attempt = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._lastHeard = 0;
    this._pingIntervalMs = 30000;
    this._visible = new Set();
    this._player = null;
    /** @type {Set<string>} cue ids already counted as an impression */
    this._impressions = new Set();
    /** @type {Map<string, {productId: string, cue: Cue, firstShownMs: number, lastShownMs: number, shows: number}>} */
    this._seen = new Map();
  }

  /**
   * Every product shown to this viewer so far (a "shop the show" rail), newest first:
   * one entry per product, kept after its cues end.
   * @returns {{productId: string, cue: Cue, firstShownMs: number, lastShownMs: number, shows: number}[]}
   */
  seenProducts() {
    return [...this._seen.values()].sort((a, b) => b.lastShownMs - a.lastShownMs);
  }

  /**
   * Report a click or tap on a product (a card, a hotspot…): emits `click` for analytics.
   * @param {Cue|string} cueOrProduct the cue clicked, or a product id (e.g. from the rail)
   * @param {string} source where it was clicked (`hotspot`, `card`, `rail`…)
   */
  click(cueOrProduct, source) {
    const cue = typeof cueOrProduct === 'string' ? this._seen.get(cueOrProduct)?.cue : cueOrProduct;
    const productId = typeof cueOrProduct === 'string' ? cueOrProduct : cueOrProduct?.product_id;
    if (!productId) return;
    this._emit('click', { cue: cue || null, productId, source: String(source || ''), playingDate: this.playingDate() });
  }

  _noteShown(cue, date) {
    const t = date.getTime();
    const seen = this._seen.get(cue.product_id);
    if (seen) {
      seen.cue = cue;
      seen.lastShownMs = t;
      seen.shows++;
    } else {
      this._seen.set(cue.product_id, { productId: cue.product_id, cue, firstShownMs: t, lastShownMs: t, shows: 1 });
    }
    if (!this._impressions.has(cue.id)) {
      this._impressions.add(cue.id);
      if (this._impressions.size > this.options.maxEndedCues) {
        this._impressions.delete(this._impressions.values().next().value);
      }
      this._emit('impression', { cue, productId: cue.product_id, playingDate: date });
    }
  }

  /** The feed URL for the next connection (with `since` once an offset is known). */
  url() {
    const o = this.options;
    let base = o.baseUrl || (typeof location !== 'undefined' ? location.origin : '');
    base = base.replace(/^http(s?):/, 'ws$1:').replace(/\/+$/, '');
    const q = new URLSearchParams();
    if (this.offset) q.set('since', this.offset);
    const token = typeof o.token === 'function' ? o.token() : o.token;
    if (token) q.set('token', token);
    const qs = q.toString();
    return `${base}/v1/channels/${encodeURIComponent(o.channel)}/cues${qs ? `?${qs}` : ''}`;
  }

  /** Open the feed (and keep it open, reconnecting with back-off, until {@link close}). */
  connect() {
    if (this.state === 'connecting' || this.state === 'open') return;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const WS = this.options.WebSocket || globalThis.WebSocket;
    this._setState('connecting');
    let ws;
    try {
      ws = new WS(this.url());
    } catch (e) {
      this._scheduleReconnect(String(e && e.message ? e.message : e));
      return;
    }
    this._ws = ws;
    this.stats.connects++;
    ws.onmessage = (e) => {
      if (ws !== this._ws) return;
      this._lastHeard = Date.now();
      this._onText(e.data);
    };
    ws.onclose = (e) => {
      if (ws !== this._ws) return;
      this._ws = null;
      clearInterval(this._pingTimer);
      if (this.state !== 'stopped') {
        this._scheduleReconnect(`closed ${e.code}${e.reason ? `: ${e.reason}` : ''}`);
      }
    };
    ws.onerror = () => {
      // A close event always follows; reconnecting happens there.
    };
  }

  /** Close the feed for good (no reconnect) and detach from the player. */
  close() {
    this._setState('stopped');
    clearTimeout(this._retryTimer);
    clearInterval(this._pingTimer);
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, 'client closed');
    this.detach();
  }

  /** Open cues right now, as the feed says (regardless of playback), ordered by start. */
  openCues() {
    return [...this.cues.values()].filter((c) => c.endMs === null).sort((a, b) => a.startMs - b.startMs);
  }

  /** Cues visible at `date` (Date or ms), ordered by start. */
  cuesAt(date) {
    const t = date instanceof Date ? date.getTime() : Number(date);
    return [...this.cues.values()].filter((c) => isVisibleAt(c, t)).sort((a, b) => a.startMs - b.startMs);
  }

  /** The cues shown right now on the attached player (after the last alignment tick). */
  visibleCues() {
    return [...this._visible].map((id) => this.cues.get(id)).filter(Boolean);
  }

  /**
   * Hotspots for the attached player's current frame: each visible cue with its
   * interpolated box (null when the cue has no boxes).
   * @returns {{cue: Cue, box: {x: number, y: number, w: number, h: number}|null}[]}
   */
  hotspots() {
    const date = this.playingDate();
    if (!date) return [];
    return this.visibleCues().map((cue) => ({ cue, box: boxAt(cue, date) }));
  }

  /** The attached player's playing date (program date time of the frame on screen), or null. */
  playingDate() {
    const p = this._player;
    if (!p) return null;
    const d = p.hls.playingDate;
    return d instanceof Date && Number.isFinite(d.getTime()) ? d : null;
  }

  /**
   * Align cues with playback: a cue becomes visible (`cueshow`) when
   * `hls.playingDate >= cue.start`, and is hidden (`cuehide`) when
   * `hls.playingDate > cue.end` (an open cue stays until its `end` arrives and is passed).
   * Checked on every animation frame and on the video's `timeupdate`/`seeked`.
   * @param {object} hls an hls.js instance (uses `hls.playingDate`)
   * @param {HTMLVideoElement} video the element hls.js is attached to
   * @returns {() => void} detach function
   */
  attachHls(hls, video) {
    this.detach();
    const tick = () => this.tick();
    const player = { hls, video, raf: 0, timer: 0 };
    const loop = () => {
      tick();
      player.raf = requestAnimationFrame(loop);
    };
    const hasRaf = typeof requestAnimationFrame === 'function';
    if (hasRaf) player.raf = requestAnimationFrame(loop);
    // Animation frames stop in background tabs; this keeps events flowing there.
    player.timer = setInterval(tick, 250);
    for (const ev of ['timeupdate', 'seeked', 'playing', 'pause']) video.addEventListener(ev, tick);
    player.off = () => {
      if (hasRaf) cancelAnimationFrame(player.raf);
      clearInterval(player.timer);
      for (const ev of ['timeupdate', 'seeked', 'playing', 'pause']) video.removeEventListener(ev, tick);
    };
    this._player = player;
    return () => this.detach();
  }

  /** Stop aligning with the player attached by {@link attachHls}; hides visible cues. */
  detach() {
    const p = this._player;
    if (!p) return;
    p.off();
    this._player = null;
    for (const id of [...this._visible]) this._hide(id, null, 'detached');
  }

  /** Re-evaluate which cues are visible at the current playing date (called automatically). */
  tick() {
    const date = this.playingDate();
    if (!date) return;
    const t = date.getTime();
    for (const cue of this.cues.values()) {
      const visible = isVisibleAt(cue, t);
      if (visible && !this._visible.has(cue.id)) {
        this._visible.add(cue.id);
        this._noteShown(cue, date);
        this._emit('cueshow', { cue, playingDate: date });
      } else if (!visible && this._visible.has(cue.id)) {
        this._hide(cue.id, date, t > (cue.endMs ?? Infinity) ? 'ended' : 'seek');
      }
    }
    this._prune(t);
  }

  // ---- internals ----

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit('status', { state, offset: this.offset, attempt: this._attempt, ...extra });
  }

  _hide(id, date, reason) {
    if (!this._visible.delete(id)) return;
    const cue = this.cues.get(id) || { id };
    this._emit('cuehide', { cue, playingDate: date, reason });
  }

  _scheduleReconnect(reason) {
    this._attempt++;
    const o = this.options;
    const base = Math.min(o.backoffMaxMs, o.backoffInitialMs * 2 ** Math.min(this._attempt - 1, 16));
    const delay = base / 2 + Math.random() * (base / 2);
    this._setState('closed', { reason, retryInMs: Math.round(delay) });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this.state !== 'stopped') {
        this.state = 'idle';
        this.connect();
      }
    }, delay);
  }

  _protocolError(message, data) {
    this.stats.ignored++;
    this._emit('protocolerror', { message, data: typeof data === 'string' ? data.slice(0, 200) : data });
  }

  _onText(data) {
    if (typeof data !== 'string') return this._protocolError('binary message', null);
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return this._protocolError('not JSON', data);
    }
    if (!m || typeof m !== 'object' || typeof m.type !== 'string') {
      return this._protocolError('no type', data);
    }
    switch (m.type) {
      case 'hello':
        return this._onHello(m, data);
      case 'snapshot':
        return this._onSnapshot(m, data);
      case 'start':
      case 'update':
      case 'end':
        return this._onEvent(m, data);
      case 'pong':
        return undefined;
      case 'error':
        return this._protocolError(`server: ${m.code}: ${m.message}`, m);
      default:
        return this._protocolError(`unknown type ${m.type}`, data);
    }
  }

  _onHello(m, data) {
    if (!parseOffset(m.offset)) return this._protocolError('hello without a valid offset', data);
    this._attempt = 0;
    if (m.resumed === true) this.stats.resumed++;
    const interval = Number(m.ping_interval_ms);
    this._pingIntervalMs = Number.isFinite(interval) && interval >= 100 ? interval : 30000;
    clearInterval(this._pingTimer);
    // Browsers answer WebSocket pings themselves; an application ping lets us notice a
    // dead connection (nothing heard for two intervals) that TCP would not report.
    this._pingTimer = setInterval(() => this._keepalive(), this._pingIntervalMs);
    if (m.resumed === true) this.offset = m.offset;
    this._setState('open', { resumed: m.resumed === true, resumeError: m.resume_error || null });
  }

  _keepalive() {
    const ws = this._ws;
    if (!ws) return;
    if (Date.now() - this._lastHeard > 2 * this._pingIntervalMs + 1000) {
      ws.close(4000, 'keepalive timeout');
      return;
    }
    try {
      ws.send('{"type":"ping"}');
    } catch {
      // closing: onclose reconnects
    }
  }

  _onSnapshot(m, data) {
    if (!parseOffset(m.offset) || !Array.isArray(m.cues)) {
      return this._protocolError('snapshot without offset or cues', data);
    }
    const open = new Map();
    for (const raw of m.cues) {
      const cue = normaliseCue(raw);
      if (cue) open.set(cue.id, cue);
      else this._protocolError('snapshot cue ignored', raw);
    }
    // The snapshot replaces the open cues. Cues we know to have ended stay until the
    // player has passed their end (the player is behind the live edge).
    for (const [id, cue] of this.cues) {
      if (cue.endMs === null && !open.has(id)) {
        this.cues.delete(id);
        this._hide(id, this.playingDate(), 'removed');
      }
    }
    for (const [id, cue] of open) this.cues.set(id, cue);
    this.offset = m.offset;
    this.stats.snapshots++;
    this._emit('snapshot', { offset: m.offset, cues: [...open.values()] });
    this.tick();
  }

  _onEvent(m, data) {
    const off = parseOffset(m.offset);
    if (!off) return this._protocolError(`${m.type} without a valid offset`, data);
    const cue = normaliseCue(m.cue);
    if (!cue) return this._protocolError(`${m.type} with an invalid cue`, data);
    const last = this.offset ? parseOffset(this.offset) : null;
    if (last && compareOffsets(off, last) <= 0) {
      this.stats.duplicates++;
      return undefined;
    }
    this.offset = m.offset;
    this.stats.events++;
    if (m.type === 'end' && cue.endMs === null) cue.endMs = cue.startMs;
    this.cues.set(cue.id, cue);
    this._emit('cue', { type: m.type, cue, offset: m.offset });
    if (!this._player && m.type === 'end') {
      // Without a player there is no playback to wait for.
      this.cues.delete(cue.id);
    }
    this.tick();
    return undefined;
  }

  _prune(playingMs) {
    const o = this.options;
    let ended = 0;
    for (const [id, cue] of this.cues) {
      if (cue.endMs === null) continue;
      if (playingMs - cue.endMs > o.endedKeepMs && !this._visible.has(id)) this.cues.delete(id);
      else ended++;
    }
    if (ended > o.maxEndedCues) {
      const olds = [...this.cues.values()].filter((c) => c.endMs !== null).sort((a, b) => a.endMs - b.endMs);
      for (const c of olds.slice(0, ended - o.maxEndedCues)) {
        this.cues.delete(c.id);
        this._hide(c.id, null, 'evicted');
      }
    }
  }
}

export { parseOffset, compareOffsets };
