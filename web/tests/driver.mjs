// A headless Chromium remote for the Rust tests (tests/web.rs): one page, driven by JSON
// commands on stdin, one JSON answer per line on stdout.
//
//   {"op":"goto","url":"http://127.0.0.1:PORT/demo/?channel=ch","timeout_ms":15000}
//   {"op":"eval","js":"1 + 1"}                       -> {"ok":true,"value":2}
//   {"op":"wait","js":"window.x && window.x.done","timeout_ms":20000}
//   {"op":"logs"}                                    -> console lines and page errors so far
//   {"op":"screenshot","path":"/tmp/x.png"}
//   {"op":"viewport","width":390,"height":844}       resize the page (a phone)
//   {"op":"focus","selector":".card"} / {"op":"press","key":"Enter"}
//   {"op":"failures"}                                -> requests that failed or got >= 400 so far
//
// Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM); playwright-core never downloads
// a browser. The process exits when stdin closes (the browser with it), or after
// $DRIVER_MAX_S seconds whatever happens.
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const maxSeconds = Number(process.env.DRIVER_MAX_S || 240);
setTimeout(() => {
  out({ ok: false, error: `driver: gave up after ${maxSeconds} s` });
  process.exit(3);
}, maxSeconds * 1000).unref();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--autoplay-policy=no-user-gesture-required', '--mute-audio'],
});
const page = await browser.newPage();
const logs = [];
page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
const failures = [];
page.on('requestfailed', (r) =>
  failures.push({ url: r.url(), error: r.failure()?.errorText ?? 'failed' }),
);
page.on('response', (r) => {
  if (r.status() >= 400) failures.push({ url: r.url(), status: r.status() });
});
out({ ready: true, version: browser.version() });

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    out({ ok: false, error: 'driver: command is not JSON' });
    continue;
  }
  const timeout = cmd.timeout_ms ?? 15000;
  try {
    let value = null;
    if (cmd.op === 'goto') {
      await page.goto(cmd.url, { timeout });
    } else if (cmd.op === 'eval') {
      value = await page.evaluate(cmd.js);
    } else if (cmd.op === 'wait') {
      const handle = await page.waitForFunction(cmd.js, null, { timeout, polling: 50 });
      value = await handle.jsonValue();
    } else if (cmd.op === 'screenshot') {
      await page.screenshot({ path: cmd.path, timeout });
    } else if (cmd.op === 'viewport') {
      await page.setViewportSize({ width: cmd.width, height: cmd.height });
    } else if (cmd.op === 'focus') {
      await page.focus(cmd.selector, { timeout });
    } else if (cmd.op === 'press') {
      await page.keyboard.press(cmd.key);
    } else if (cmd.op === 'failures') {
      value = failures.slice();
    } else if (cmd.op === 'logs') {
      value = logs.splice(0);
    } else {
      throw new Error(`unknown op ${cmd.op}`);
    }
    out({ ok: true, value });
  } catch (e) {
    out({ ok: false, error: String(e && e.message ? e.message : e), logs: logs.slice(-40) });
  }
}
await browser.close();
