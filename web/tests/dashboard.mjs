// Drives the ops dashboard of a running sidecar in headless Chromium (playwright-core,
// from web/node_modules) and checks what an operator would look at. Run by
// tests/dashboard.rs, which starts the sidecar; by hand:
//
//   node web/tests/dashboard.mjs http://127.0.0.1:8080 <up-channel> <broken-channel> [shot.png]
//
// Exits non-zero with one line saying what was wrong; on success prints a JSON summary.
import { chromium } from 'playwright-core';

const [base, good, bad, screenshot] = process.argv.slice(2);
if (!base || !good || !bad) {
  console.error('usage: dashboard.mjs BASE_URL UP_CHANNEL BROKEN_CHANNEL [SCREENSHOT.png]');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value or `ms` pass; then fail naming `what`. */
async function until(what, ms, fn) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) throw new Error(`${what} (after ${ms} ms; last seen: ${JSON.stringify(last)})`);
    await sleep(250);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Root in a container: Chromium's sandbox needs user namespaces it may not have.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const summary = {};
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  const resp = await page.goto(`${base}/dashboard`);
  if (!resp || resp.status() !== 200) throw new Error(`GET /dashboard: ${resp && resp.status()}`);

  const card = (id) => `section.card[data-channel="${id}"]`;
  const text = (sel) => page.locator(sel).first().textContent({ timeout: 2000 });

  // 1. The good channel's badge says "up".
  await until(`${good} badge shows "up"`, 60000, async () => (await text(`${card(good)} [data-role=badge]`)) === 'up');
  summary.badge = 'up';

  // 2. Its figures are numbers.
  const keys = ['lag_s', 'decode_fps', 'realtime_factor', 'cues_per_s', 'subscribers', 'samples_dropped'];
  summary.figures = await until(`${good} figures are all numbers`, 30000, async () => {
    const out = {};
    for (const k of keys) {
      const t = (await text(`${card(good)} [data-figure=${k}]`)).trim();
      if (!/^-?\d+(\.\d+)?$/.test(t)) return false;
      out[k] = Number(t);
    }
    return out;
  });

  // 3. The charts have drawn and grow: uPlot canvases of non-zero size, and more points
  //    a few seconds later without any reload.
  const canvases = await page.locator(`${card(good)} .chart canvas`).evaluateAll((cs) =>
    cs.map((c) => [c.width, c.height]),
  );
  if (canvases.length < 5 || canvases.some(([w, h]) => !(w > 0 && h > 0))) {
    throw new Error(`chart canvases missing or empty: ${JSON.stringify(canvases)}`);
  }
  summary.canvases = canvases.length;
  const lengths = (id) => page.evaluate((id) => window.shopcueDashboard.seriesLengths(id), id);
  const first = await until(`${good} charts hold points`, 20000, async () => {
    const l = await lengths(good);
    return l.length === 5 && l.every((n) => n >= 2) && l;
  });
  await sleep(3500);
  const second = await lengths(good);
  if (!(second.every((n, i) => n > first[i]))) {
    throw new Error(`charts did not grow: ${first} then ${second}`);
  }
  summary.series = { first, second };

  // 4. The broken channel: not up, and its error is on its card.
  const badState = await until(`${bad} shows down/degraded/stalled`, 30000, async () => {
    const s = await text(`${card(bad)} [data-role=badge]`);
    return ['down', 'degraded', 'stalled'].includes(s) && s;
  });
  const badError = await until(`${bad} shows its last error`, 30000, async () => {
    const t = await text(`${card(bad)} [data-role=error-message]`);
    return t && t.trim().length > 0 && t.trim();
  });
  summary.broken = { state: badState, error: badError };

  // 5. The header: bus health, execution providers, catalog.
  summary.header = {};
  for (const k of ['ready', 'bus', 'clients', 'providers', 'catalog']) {
    summary.header[k] = (await text(`[data-fact=${k}]`)).trim();
    if (!summary.header[k] || summary.header[k] === '–') throw new Error(`header ${k} is empty`);
  }
  summary.conn = await page.locator('#conn').getAttribute('data-conn');
  if (summary.conn !== 'live') throw new Error(`connection indicator says ${summary.conn} while polls succeed`);

  // Latency rows, for the record (which stages have data depends on the catalog).
  summary.latency = await page.locator(`${card(good)} .lat-row`).evaluateAll((rs) =>
    Object.fromEntries(rs.map((r) => [r.dataset.stage, r.querySelector('.lat-val').textContent])),
  );

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  // 6. Polls failing: the page says so instead of showing old figures as current.
  await page.route('**/v1/status**', (route) => route.abort());
  summary.when_polls_fail = await until('indicator leaves "live" when polls fail', 10000, async () => {
    const c = await page.locator('#conn').getAttribute('data-conn');
    return c !== 'live' && c;
  });
  await until('indicator says "disconnected" after a while', 20000, async () =>
    (await page.locator('#conn').getAttribute('data-conn')) === 'disconnected',
  );
  await page.unroute('**/v1/status**');
  await until('indicator back to "live" when polls succeed again', 10000, async () =>
    (await page.locator('#conn').getAttribute('data-conn')) === 'live',
  );
  if (consoleErrors.some((e) => !/Failed to load resource|net::ERR_FAILED/.test(e))) {
    throw new Error(`page errors: ${consoleErrors.join(' | ')}`);
  }
  console.log(JSON.stringify(summary));
} catch (e) {
  console.error(`dashboard check failed: ${e.message}`);
  console.error(`so far: ${JSON.stringify(summary)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
