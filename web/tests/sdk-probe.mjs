// Page-side half of the SDK tests (tests/web.rs): starts a ShopcueClient and records
// everything it emits into window.probe for the Rust test to read.
import { ShopcueClient } from '/sdk/shopcue.js';

export function start(options) {
  const rec = { events: [], snapshots: [], statuses: [], errors: [] };
  const client = new ShopcueClient(options);
  client.addEventListener('cue', (e) => {
    const { type, cue, offset } = e.detail;
    rec.events.push({ type, id: cue.id, offset, score: cue.score });
  });
  client.addEventListener('snapshot', (e) => {
    rec.snapshots.push({ offset: e.detail.offset, ids: e.detail.cues.map((c) => c.id) });
  });
  client.addEventListener('status', (e) => {
    const d = e.detail;
    rec.statuses.push({ state: d.state, resumed: d.resumed ?? null, reason: d.reason ?? null });
  });
  client.addEventListener('protocolerror', (e) => rec.errors.push(e.detail.message));
  window.probe = {
    client,
    rec,
    summary: () => ({
      ...rec,
      stats: { ...client.stats },
      offset: client.offset,
      state: client.state,
      open: client.openCues().map((c) => c.id),
      known: [...client.cues.keys()],
    }),
  };
  client.connect();
  return true;
}
