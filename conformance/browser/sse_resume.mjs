// sse_resume.mjs opens one EventSource in a real Chromium and reports what
// the page receives. The Go conformance test drives it over stdin/stdout
// with one JSON object per line:
//
//   usage: node sse_resume.mjs SSE_URL
//
//   out: {"ready":true,"counts":{...}}  once the page saw its first attached event
//   in:  {"wait":N,"timeoutMs":T}       wait until the page recorded N messages;
//   out: {"wait":N,"timedOut":bool,"counts":{...},"records":[...]}
//   in:  {"waitErrors":N,"timeoutMs":T} wait until the EventSource fired N
//   out: {"waitErrors":N,"timedOut":bool,"counts":{...}}   connection errors
//   in:  {"screenshot":"file.png"}      save a PNG of the page
//   out: {"screenshot":"file.png"}
//   in:  {"quit":true}                  (or end of input) close and exit
//   out: {"quit":true}
//
// A failure prints {"error":"..."} and exits with status 1. Diagnostics,
// including the page's console, go to stderr.
//
// The page does nothing to reconnect: the browser's own EventSource
// reconnection (with Last-Event-ID) is what is under test.
import http from 'node:http';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const sseURL = process.argv[2];
if (!sseURL) {
  process.stderr.write('usage: node sse_resume.mjs SSE_URL\n');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function log(...args) {
  process.stderr.write(`[sse_resume ${new Date().toISOString()}] ${args.join(' ')}\n`);
}

// The page is served from its own origin, so the stream is a cross-origin
// request as it is for a web application talking to the gateway.
function pageHTML(url) {
  return `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>switchboard: EventSource resume</title>
<style>
  body { font: 13px/1.35 monospace; margin: 12px; color: #222; }
  h1 { font-size: 16px; margin: 0 0 6px; }
  h2 { font-size: 14px; margin: 10px 0 4px; }
  #counts { margin: 4px 0 8px; padding: 4px 6px; background: #eef; }
  #channels { display: flex; gap: 16px; align-items: flex-start; }
  #channels section { border: 1px solid #ccc; padding: 4px 8px; min-width: 150px; }
  ol { margin: 0; padding-left: 28px; }
  .attached { color: #060; }
  .conn-error { color: #a60; }
  .continuity, .server-error, .bad { color: #c00; font-weight: bold; }
</style>
</head>
<body>
<h1>One EventSource, several channels</h1>
<div id="counts"></div>
<div id="channels"></div>
<h2>Stream events</h2>
<ol id="events"></ol>
<script>
(() => {
  const url = ${JSON.stringify(url)};
  const channels = new URL(url).searchParams.get('channels').split(',');
  const records = [];
  const counts = { open: 0, error: 0, messages: 0, attached: 0, continuity: 0, serverErrors: 0, bad: 0 };
  window.sseRecords = records;
  window.sseCounts = counts;

  const lists = {};
  const columns = document.getElementById('channels');
  for (const ch of channels) {
    const section = document.createElement('section');
    const title = document.createElement('h2');
    title.textContent = ch;
    const list = document.createElement('ol');
    section.append(title, list);
    columns.append(section);
    lists[ch] = list;
  }
  const events = document.getElementById('events');
  const countsLine = document.getElementById('counts');
  const show = () => {
    countsLine.textContent = Object.entries(counts).map(([k, v]) => k + '=' + v).join('  ');
  };
  const item = (list, cls, text) => {
    const li = document.createElement('li');
    if (cls) li.className = cls;
    li.textContent = text;
    list.append(li);
  };
  const parse = (e) => {
    try {
      return JSON.parse(e.data);
    } catch (err) {
      counts.bad++;
      records.push({ type: 'bad', event: e.type, raw: String(e.data), id: e.lastEventId });
      item(events, 'bad', 'unparsable ' + e.type + ' event: ' + e.data);
      show();
      return null;
    }
  };

  const es = new EventSource(url);
  es.addEventListener('open', () => {
    counts.open++;
    records.push({ type: 'open' });
    item(events, '', 'open #' + counts.open);
    show();
  });
  es.addEventListener('message', (e) => {
    const m = parse(e);
    if (!m) return;
    counts.messages++;
    records.push({ type: 'message', channel: m.channel, data: m.data, msgId: m.id, serial: m.serial, id: e.lastEventId });
    item(lists[m.channel] || events, '', m.data);
    show();
  });
  es.addEventListener('attached', (e) => {
    const m = parse(e);
    if (!m) return;
    counts.attached++;
    records.push({ type: 'attached', id: e.lastEventId, payload: m });
    const resumed = (m.channels || []).filter((c) => c.resumed).length;
    item(events, 'attached', 'attached #' + counts.attached + ' (' + resumed + '/' + channels.length + ' resumed, after ' + counts.messages + ' messages)');
    show();
  });
  es.addEventListener('continuity', (e) => {
    const m = parse(e);
    if (!m) return;
    counts.continuity++;
    records.push({ type: 'continuity', id: e.lastEventId, payload: m });
    item(events, 'continuity', 'continuity: ' + e.data);
    show();
  });
  // A server "event: error" arrives as a MessageEvent named error; the
  // EventSource's own connection errors are plain Events.
  es.addEventListener('error', (e) => {
    if (e instanceof MessageEvent) {
      const m = parse(e);
      if (!m) return;
      counts.serverErrors++;
      records.push({ type: 'server-error', id: e.lastEventId, payload: m });
      item(events, 'server-error', 'server error: ' + e.data);
    } else {
      counts.error++;
      records.push({ type: 'connection-error', readyState: es.readyState });
      item(events, 'conn-error', 'connection error #' + counts.error + ' (readyState ' + es.readyState + ')');
    }
    show();
  });
  show();
})();
</script>
</body>
</html>
`;
}

let browser;
let server;

async function shutdown(code) {
  try {
    if (browser) await browser.close();
  } catch (err) {
    log('closing the browser:', err.message);
  }
  if (server) server.close();
  process.exit(code);
}

function fail(err) {
  log(err && err.stack ? err.stack : String(err));
  send({ error: String(err && err.message ? err.message : err) });
  return shutdown(1);
}

async function counts(page) {
  return page.evaluate(() => window.sseCounts);
}

// waitCount waits until counts[key] >= n or the timeout passes.
async function waitCount(page, key, n, timeoutMs) {
  try {
    await page.waitForFunction(([k, v]) => window.sseCounts[k] >= v, [key, n], { timeout: timeoutMs, polling: 50 });
    return false;
  } catch (err) {
    if (err && err.name === 'TimeoutError') return true;
    throw err;
  }
}

async function main() {
  const html = pageHTML(sseURL);
  server = http.createServer((req, res) => {
    if (req.url === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (req.url !== '/' && !req.url.startsWith('/?')) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(html);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const pageURL = `http://127.0.0.1:${server.address().port}/`;

  browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 30000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  log('chromium', browser.version());
  const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  page.on('console', (m) => log('console.' + m.type() + ':', m.text()));
  page.on('pageerror', (err) => log('page error:', err.message));
  await page.goto(pageURL, { timeout: 15000 });

  if (await waitCount(page, 'attached', 1, 20000)) {
    throw new Error('the page saw no attached event within 20s: ' + JSON.stringify(await counts(page)));
  }
  send({ ready: true, counts: await counts(page) });

  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch {
      throw new Error('bad command: ' + line);
    }
    const timeoutMs = cmd.timeoutMs ?? 10000;
    if (cmd.wait !== undefined) {
      const timedOut = await waitCount(page, 'messages', cmd.wait, timeoutMs);
      const state = await page.evaluate(() => ({ counts: window.sseCounts, records: window.sseRecords }));
      send({ wait: cmd.wait, timedOut, ...state });
    } else if (cmd.waitErrors !== undefined) {
      const timedOut = await waitCount(page, 'error', cmd.waitErrors, timeoutMs);
      send({ waitErrors: cmd.waitErrors, timedOut, counts: await counts(page) });
    } else if (cmd.screenshot !== undefined) {
      await page.screenshot({ path: cmd.screenshot, fullPage: true });
      send({ screenshot: cmd.screenshot });
    } else if (cmd.quit) {
      send({ quit: true });
      break;
    } else {
      throw new Error('unknown command: ' + line);
    }
  }
  await shutdown(0);
}

main().catch(fail);
