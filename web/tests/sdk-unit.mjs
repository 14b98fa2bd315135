// Unit tests of the SDK's rules in plain Node (no browser, no network): box interpolation,
// the visibility rule at its boundaries, offsets, duplicates, snapshots keeping ended cues,
// and cueshow/cuehide against a fake player. Run by tests/web.rs (`node web/tests/sdk-unit.mjs`);
// prints one JSON line {"passed": n} or exits non-zero with the failure.
import assert from 'node:assert/strict';
import { ShopcueClient, boxAt, compareOffsets, isVisibleAt, parseOffset } from '../sdk/shopcue.js';

const T0 = Date.parse('2026-11-21T10:00:00.000Z');
const iso = (ms) => new Date(ms).toISOString();
let passed = 0;
function test(name, f) {
  try {
    f();
    passed++;
  } catch (e) {
    console.error(`FAILED ${name}: ${e.stack || e}`);
    process.exit(1);
  }
}

function cue(n, startMs, endMs = null, boxes = []) {
  return {
    id: `cue-${n}`, channel: 'ch', product_id: `sku-${n}`, start: iso(startMs),
    end: endMs === null ? null : iso(endMs), pts: 0, score: 0.5, shot: n,
    boxes: boxes.map(([t, x]) => ({ t: iso(t), x, y: 0.2, w: 0.3, h: 0.4 })),
  };
}

/** A client fed by hand (no socket) and a fake hls.js whose playingDate the test sets. */
function rig() {
  const client = new ShopcueClient({ channel: 'ch' });
  const log = [];
  for (const ev of ['cue', 'cueshow', 'cuehide', 'snapshot', 'protocolerror']) {
    client.addEventListener(ev, (e) => log.push([ev, e.detail.cue?.id ?? null, e.detail.reason ?? null]));
  }
  const hls = { playingDate: null };
  const video = new EventTarget();
  const feed = (m) => client._onText(JSON.stringify(m));
  const at = (ms) => {
    hls.playingDate = new Date(ms);
    client.tick();
  };
  return { client, log, hls, video, feed, at };
}

test('offsets parse and compare as (ms, seq)', () => {
  assert.deepEqual(parseOffset('1795000003000-12'), [1795000003000, 12]);
  for (const bad of ['', '1-', '-1', '1-2-3', 'a-1', 12, null]) assert.equal(parseOffset(bad), null);
  assert.equal(compareOffsets([1, 9], [2, 0]), -1);
  assert.equal(compareOffsets([2, 10], [2, 9]), 1);
  assert.equal(compareOffsets([2, 3], [2, 3]), 0);
});

test('boxAt interpolates and holds at the ends', () => {
  const c = rig();
  c.feed({ type: 'snapshot', offset: '1-0', cues: [cue(1, T0, null, [[T0 + 1000, 0.5], [T0, 0.1], [T0 + 2000, 0.9]])] });
  const k = c.client.cues.get('cue-1');
  assert.equal(k.boxes[0].x, 0.1, 'boxes sorted by time');
  assert.equal(boxAt(k, T0 - 5000).x, 0.1);
  assert.ok(Math.abs(boxAt(k, new Date(T0 + 500)).x - 0.3) < 1e-9);
  assert.ok(Math.abs(boxAt(k, T0 + 1500).x - 0.7) < 1e-9);
  assert.equal(boxAt(k, T0 + 9000).x, 0.9);
  assert.equal(boxAt({ boxes: [] }, T0), null);
});

test('visible iff start <= date <= end (open: no end)', () => {
  const k = { startMs: T0, endMs: T0 + 1000 };
  assert.equal(isVisibleAt(k, T0 - 1), false);
  assert.equal(isVisibleAt(k, T0), true);
  assert.equal(isVisibleAt(k, T0 + 1000), true);
  assert.equal(isVisibleAt(k, T0 + 1001), false);
  assert.equal(isVisibleAt({ startMs: T0, endMs: null }, T0 + 1e9), true);
});

test('cueshow/cuehide follow the playing date, not the feed', () => {
  const c = rig();
  c.client.attachHls(c.hls, c.video);
  c.feed({ type: 'hello', channel: 'ch', server_time: iso(T0), offset: '1-0', resumed: false, ping_interval_ms: 30000 });
  c.feed({ type: 'snapshot', offset: '1-0', cues: [] });
  c.at(T0 - 3000);
  c.feed({ type: 'start', offset: '2-0', cue: cue(1, T0) });
  c.feed({ type: 'end', offset: '3-0', cue: cue(1, T0, T0 + 2000) });
  c.at(T0 - 1);
  assert.deepEqual(c.client.visibleCues(), [], 'announced but not on screen yet');
  assert.ok(c.client.cues.has('cue-1'), 'an ended cue is kept until played');
  c.at(T0);
  assert.deepEqual(c.client.visibleCues().map((k) => k.id), ['cue-1']);
  c.at(T0 + 2000);
  assert.equal(c.client.visibleCues().length, 1, 'still visible at its end');
  c.at(T0 + 2001);
  assert.equal(c.client.visibleCues().length, 0);
  const shows = c.log.filter((l) => l[0] === 'cueshow').length;
  const hides = c.log.filter((l) => l[0] === 'cuehide');
  assert.equal(shows, 1);
  assert.deepEqual(hides, [['cuehide', 'cue-1', 'ended']]);
  // Seeking back before the start shows it again; then before it hides it ('seek').
  c.at(T0 + 500);
  c.at(T0 - 500);
  assert.deepEqual(c.log.filter((l) => l[0] === 'cuehide').pop(), ['cuehide', 'cue-1', 'seek']);
  // Long after its end it is forgotten.
  c.at(T0 + 2000 + 31000);
  assert.equal(c.client.cues.has('cue-1'), false);
  c.client.close();
});

test('duplicates and stale offsets are dropped; malformed input ignored', () => {
  const c = rig();
  c.feed({ type: 'snapshot', offset: '5-0', cues: [] });
  c.feed({ type: 'start', offset: '5-0', cue: cue(1, T0) });
  c.feed({ type: 'start', offset: '4-9', cue: cue(1, T0) });
  c.feed({ type: 'start', offset: '5-1', cue: cue(1, T0) });
  c.client._onText('{');
  c.client._onText('null');
  c.feed({ type: 'update', offset: '6-0', cue: { id: 'x', start: 'never' } });
  c.feed({ type: 'update', offset: '6-0', cue: { ...cue(2, T0), end: 'not a date' } });
  assert.equal(c.client.stats.duplicates, 2);
  assert.equal(c.client.stats.events, 1);
  assert.equal(c.client.offset, '5-1');
  assert.equal(c.client.stats.ignored, 4);
});

test('a snapshot replaces open cues but keeps ended ones not yet played', () => {
  const c = rig();
  c.client.attachHls(c.hls, c.video);
  c.at(T0 - 10000);
  c.feed({ type: 'snapshot', offset: '1-0', cues: [cue(1, T0), cue(2, T0)] });
  c.feed({ type: 'end', offset: '2-0', cue: cue(1, T0, T0 + 1000) });
  c.feed({ type: 'snapshot', offset: '3-0', cues: [cue(3, T0)] });
  assert.deepEqual([...c.client.cues.keys()].sort(), ['cue-1', 'cue-3']);
  assert.deepEqual(c.client.openCues().map((k) => k.id), ['cue-3']);
  c.client.close();
});

test('the feed URL carries since and a fresh token', () => {
  let n = 0;
  const client = new ShopcueClient({ channel: 'a b', baseUrl: 'https://x.example/', token: () => `t${++n}`, since: '7-1' });
  assert.equal(client.url(), 'wss://x.example/v1/channels/a%20b/cues?since=7-1&token=t1');
  assert.equal(client.url(), 'wss://x.example/v1/channels/a%20b/cues?since=7-1&token=t2');
  assert.throws(() => new ShopcueClient({}), TypeError);
});

console.log(JSON.stringify({ passed }));
