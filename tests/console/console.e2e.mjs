// End-to-end test of the web console: the real tellonce binary, a fake partner endpoint this
// script controls, and Debian's chromium driven by playwright-core. While records flow it checks
// that the dashboard loads and its counts rise, that search finds a record sent during the
// test and its timeline opens, that a dead letter is replayed and seen delivered, that two more
// are replayed by filter (a dry run counts them first), and that a destination is paused and
// resumed from the console, once by keyboard alone. Screenshots go to --out.
//
//   node console.e2e.mjs --tellonce BIN --source REPO --out DIR [--chromium /usr/bin/chromium]
// Exit 0: passed; 1: failed (the reason on stderr); 77: skipped (chromium missing).
// Uses loopback only and downloads nothing (playwright-core is installed by `npm ci`).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const chromiumPath = args.chromium || '/usr/bin/chromium';
const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(chromiumPath)) {
  console.log(`SKIP: no chromium at ${chromiumPath} (Debian package "chromium"; scripts/install-deps.sh installs it)`);
  process.exit(77);
}
let chromium;
try {
  ({ chromium } = await import(path.join(here, 'node_modules', 'playwright-core', 'index.mjs')));
} catch (e) {
  console.error(`playwright-core is not installed in ${here}/node_modules: run \`npm ci\` there (scripts/test.sh does)`);
  process.exit(1);
}
for (const key of ['tellonce', 'source', 'out'])
  if (!args[key]) { console.error(`usage: node console.e2e.mjs --tellonce BIN --source REPO --out DIR`); process.exit(2); }

const out = path.resolve(args.out);
fs.mkdirSync(out, { recursive: true });
for (const f of fs.readdirSync(out)) if (f.endsWith('.png')) fs.rmSync(path.join(out, f));  // no stale pictures
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tellonce-console-e2e-'));
const patient = JSON.parse(fs.readFileSync(path.join(args.source, 'config/examples/patient-a81001.json'), 'utf8'));
const cleanups = [];
const log = (...a) => console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...a);

function fail(message) { throw new Error(message); }

// Polls `probe` until it returns a truthy value; fails with `what` after `ms`.
async function until(what, probe, ms = 20000, every = 200) {
  const end = Date.now() + ms;
  let lastError;
  while (Date.now() < end) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) { lastError = e; }
    await new Promise((r) => setTimeout(r, every));
  }
  fail(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ''}`);
}

// ---- the partner endpoint: accepts everything except records carrying the "refuse" marker ----
const partner = { received: 0, refuseMarked: true, marker: `console-e2e-refuse-${process.pid}` };
const partnerServer = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    if (partner.refuseMarked && body.includes(partner.marker)) {
      res.writeHead(422, { 'Content-Type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'business-rule', details: { text: 'test partner refuses this record' } }] }));
      return;
    }
    partner.received++;
    res.writeHead(201, { 'Content-Type': 'application/fhir+json' });
    res.end('{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}');
  });
});
await new Promise((r) => partnerServer.listen(0, '127.0.0.1', r));
cleanups.push(() => new Promise((r) => { partnerServer.close(r); partnerServer.closeAllConnections(); }));
const partnerPort = partnerServer.address().port;

// ---- the broker ----
fs.writeFileSync(path.join(work, 'tellonce.yaml'), `
api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
delivery:
  concurrency_per_destination: 2
  retry: { keep_trying_for: 1h, initial_backoff: 100ms, max_backoff: 400ms, multiplier: 2, jitter: 0.1 }
partners:
  - id: rtx
    name: Royal Example NHS Trust
    kind: trust
    ods: RTX
  - id: gp-a81001
    name: Example Surgery
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:${partnerPort}/fhir", timeout: 5s, connect_timeout: 1s }
inbound:
  - id: fhir-http
    type: fhir-rest
    listen: 127.0.0.1:0
    base_path: /fhir
    allow_partner_header: true
routes:
  - id: patients-to-gp
    match: { resource_type: Patient }
    to: [gp-a81001]
operators:
  - { name: e2e-operator, role: operator, token_hashes: ["sha256:eb1d9072e1995ab78edd02338d96b939d8a5b73fad55e126a99b1a1d4fe375c9"] }
  - { name: e2e-viewer, role: viewer, token_hashes: ["sha256:34a4ef9da5c4aa9bf130aa492550a5db7f91d6886895e5e2c63433a488f5f20c"] }
`);
const OPERATOR_TOKEN = 'e2e-operator-token-7d3a9c1f5e0b2a4c';
const VIEWER_TOKEN = 'e2e-viewer-token-2b8e4f6a0c1d3e5f';
const broker = spawn(args.tellonce, ['serve', '--config', path.join(work, 'tellonce.yaml')], { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
const brokerLog = fs.createWriteStream(path.join(out, 'broker.log'));
broker.stderr.pipe(brokerLog);
cleanups.push(async () => {
  if (broker.exitCode === null) {
    broker.kill('SIGTERM');
    await new Promise((r) => broker.once('exit', r));
  }
});
const port = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('the broker did not start within 30 s (see broker.log)')), 30000);
  broker.once('exit', (code) => reject(new Error(`the broker exited (${code}) before listening (see broker.log)`)));
  readline.createInterface({ input: broker.stdout }).on('line', (line) => {
    brokerLog.write(`${line}\n`);
    const m = /^ {2}listening \S+:(\d+)$/.exec(line);
    if (m) { clearTimeout(timer); resolve(Number(m[1])); }
  });
});
const base = `http://127.0.0.1:${port}`;
log(`broker on ${base}, partner on ${partnerPort}, artefacts in ${out}`);

let sent = 0;
async function send({ refused = false } = {}) {
  const record = structuredClone(patient);
  record.id = refused ? partner.marker : `e2e-${process.pid}-${++sent}`;
  const res = await fetch(`${base}/fhir/Patient`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/fhir+json', 'X-Tellonce-Partner': 'rtx' },
    body: JSON.stringify(record),
  });
  if (res.status !== 202) fail(`sending a record: HTTP ${res.status} ${await res.text()}`);
  return res.headers.get('x-tellonce-message-id');
}
async function apiGet(p) {
  const res = await fetch(`${base}${p}`, { headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` } });
  if (!res.ok) fail(`GET ${p}: HTTP ${res.status}`);
  return res.json();
}

// Steady traffic while the browser watches, as the demo has.
let flowing = true;
const traffic = (async () => {
  while (flowing) {
    await send();
    await new Promise((r) => setTimeout(r, 250));
  }
})();
cleanups.push(async () => { flowing = false; await traffic.catch(() => {}); });

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tellonce-console-chromium-'));
cleanups.push(() => fs.rmSync(profile, { recursive: true, force: true }));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: chromiumPath,
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
});
cleanups.push(() => context.close());
context.setDefaultTimeout(10000);  // a probe inside until() gives up quickly and is retried
const page = context.pages()[0] || await context.newPage();
const consoleProblems = [];
page.on('pageerror', (e) => consoleProblems.push(`page error: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error') consoleProblems.push(`console error: ${m.text()}`); });
const actors = new Set();
page.on('request', (r) => { if (r.url().includes('/api/')) actors.add(r.headers()['x-tellonce-actor']); });
const shot = (name) => page.screenshot({ path: path.join(out, `${name}.png`), fullPage: false });

let failed = false;
try {
  // 1. The dashboard loads and its counts rise.
  await page.goto(`${base}/console/`);
  // 0. Signing in: the console asks for a token first (a wrong one is refused).
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  await page.getByLabel('Operator token').fill('not-a-token-of-anyone');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await until('a wrong token to be refused', async () => !(await page.locator('#signin-error').isHidden()));
  consoleProblems.splice(0);  // the browser logs that refusal (401) as a failed resource: expected here
  await page.getByLabel('Operator token').fill(OPERATOR_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor();
  if (!(await page.locator('#signed-in-as').textContent()).includes('e2e-operator (operator)')) fail('the header does not say who is signed in');
  const received = async () => Number(await page.locator('#flow-total-in').getAttribute('data-value') || 'NaN');
  const first = await until('the dashboard to show received records', async () => {
    const n = await received();
    return Number.isFinite(n) && n > 0 ? n : 0;
  });
  await until(`the received count to rise above ${first}`, async () => (await received()) > first, 20000);
  await until('the destination to be listed as OK',
    () => page.locator('#destinations-table tr[data-destination="gp-a81001"] .health').textContent().then((t) => t.trim() === 'OK'));
  const delivered = Number(await page.locator('#flow-total-out').getAttribute('data-value'));
  if (!(delivered > 0)) fail(`the dashboard shows ${delivered} delivered while the partner has ${partner.received}`);
  await shot('dashboard');
  log(`dashboard: received rose above ${first}, ${delivered} delivered`);

  // 2. Search finds a record sent during the test; its timeline opens.
  const wanted = await send();
  await page.getByRole('link', { name: 'Messages' }).click();
  await page.getByLabel('Source partner').fill('rtx');
  await page.getByRole('button', { name: 'Search' }).click();
  const link = page.locator(`#results-table a[href="#/messages/${wanted}"]`);
  await until(`search to list ${wanted}`, () => link.count(), 10000);
  await shot('messages');
  await link.click();
  await page.getByRole('heading', { level: 1, name: `Message ${wanted}` }).waitFor();
  await until('the timeline to show the record received and delivered', async () => {
    const text = await page.locator('#timeline').textContent();
    return text.includes('Received') && text.includes('Delivered');
  });
  await shot('message');
  log(`search found ${wanted}; timeline shown`);

  // 3. A dead letter is replayed from the console and seen delivered.
  const dead = await send({ refused: true });
  await until(`${dead} to be dead-lettered`, async () => (await apiGet(`/api/messages/${dead}`)).state === 'failed');
  partner.refuseMarked = false;  // the partner fixed its side
  await page.goto(`${base}/console/#/messages/${dead}`);
  const replay = page.getByRole('button', { name: /^Replay to / });
  await replay.waitFor();
  await page.getByLabel('Reason for your actions').fill('e2e ticket 17');  // why, with the action
  await replay.click();
  await until('the replayed message to show Delivered', async () =>
    (await page.locator('#message-state').textContent()) === 'Delivered', 20000);
  if ((await apiGet(`/api/messages/${dead}`)).state !== 'delivered') fail(`${dead} shows delivered but the API disagrees`);
  const timeline = await page.locator('#timeline').textContent();
  if (!/Replayed\s*by e2e-operator via console/.test(timeline)) fail(`the timeline does not say the console replayed it: ${timeline}`);
  await shot('replayed');
  const audited = fs.readFileSync(path.join(work, 'data/audit.ndjson'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
    .find((e) => e.kind === 'replayed' && e.message === dead);
  if (!audited || audited.actor !== 'e2e-operator via console' || audited.reason !== 'e2e ticket 17')
    fail(`the replay is not in the audit log with who and why: ${JSON.stringify(audited)}`);
  log(`dead letter ${dead} replayed and delivered; audited with who and why`);

  // 3b. Viewing the record asks why first; the view goes on the trail with who and why.
  await page.getByRole('button', { name: 'View record…' }).click();
  await page.locator('#reason-input').fill('e2e check of the record view');
  await page.locator('#reason-ok').click();
  await until('the record to be shown', async () => (await page.locator('#record-body').textContent()).includes('"resourceType"'));
  const trail = (await apiGet(`/api/messages/${dead}`)).events.find((e) => e.kind === 'viewed');
  if (!trail || trail.actor !== 'e2e-operator via console' || trail.reason !== 'e2e check of the record view')
    fail(`the body view is not on the trail with who and why: ${JSON.stringify(trail)}`);
  log('record viewed with a reason, on the trail');

  // 3c. Two more dead letters, replayed together by filter from the Messages view: a dry run says
  // how many (and replays nothing), the operator confirms, and both are delivered.
  partner.refuseMarked = true;
  const twoDead = [await send({ refused: true }), await send({ refused: true })];
  for (const id of twoDead)
    await until(`${id} to be dead-lettered`, async () => (await apiGet(`/api/messages/${id}`)).state === 'failed');
  partner.refuseMarked = false;
  await page.getByRole('link', { name: 'Messages' }).click();
  await page.getByRole('heading', { level: 1, name: 'Messages' }).waitFor();
  await page.getByLabel('Source partner').fill('rtx');
  await page.getByRole('button', { name: 'Replay dead letters matching…' }).click();
  const dryRun = page.locator('#replay-confirm-text');
  await until('the dry run to say how many match', async () => (await dryRun.textContent()).includes('dead-letter'));
  const dryText = await dryRun.textContent();
  if (!dryText.includes('2 dead-lettered deliveries match (source rtx)')) fail(`the dry run does not name 2 matching: ${dryText}`);
  for (const id of twoDead)
    if ((await apiGet(`/api/messages/${id}`)).state !== 'failed') fail(`the dry run replayed ${id}`);
  await shot('replay-by-filter');
  await page.getByRole('button', { name: 'Replay 2', exact: true }).click();
  await until('the console to say both were replayed', async () =>
    (await page.locator('#messages-notice').count()) > 0 &&
    (await page.locator('#messages-notice').textContent()).includes('Replayed 2 of 2 matching deliveries'));
  for (const id of twoDead)
    await until(`${id}, replayed by filter, to be delivered`, async () => (await apiGet(`/api/messages/${id}`)).state === 'delivered');
  const byFilter = fs.readFileSync(path.join(work, 'data/audit.ndjson'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
    .find((e) => e.kind === 'replay-requested');
  if (!byFilter || byFilter.actor !== 'e2e-operator via console' || !byFilter.detail?.includes('source=rtx: matched 2, replayed 2'))
    fail(`the replay by filter is not in the audit log with who and what: ${JSON.stringify(byFilter)}`);
  log(`replay by filter: dry run counted 2, both replayed and delivered (${twoDead.join(', ')})`);

  // 3d. By keyboard only: from the Messages view (focus is back on the replay button), Shift+Tab
  // to the Dashboard link and Enter; Tab from the dashboard's heading to gp-a81001's Pause button,
  // Enter pauses; the focus stays on the row, now its Resume button, and Space resumes.
  const focused = () => page.evaluate(() => {
    const e = document.activeElement;
    return e ? (e.getAttribute('aria-label') || e.id || e.textContent.trim()) : '';
  });
  for (let i = 0; (await focused()) !== 'Dashboard'; i++) {
    if (i === 40) fail(`Shift+Tab never reached the Dashboard link (focus on "${await focused()}")`);
    await page.keyboard.press('Shift+Tab');
  }
  await page.keyboard.press('Enter');
  await until('the dashboard to open with focus on its heading', async () => (await focused()) === 'dashboard-title', 5000);
  await page.locator('#destinations-table button[data-destination="gp-a81001"]').waitFor();  // its first refresh
  for (let i = 0; (await focused()) !== 'Pause delivery to gp-a81001'; i++) {
    if (i === 40) fail(`Tab never reached the Pause button (focus on "${await focused()}")`);
    await page.keyboard.press('Tab');
  }
  await page.keyboard.press('Enter');
  const gpA = async () => (await apiGet('/api/destinations')).find((d) => d.name === 'gp-a81001');
  await until('Enter to pause gp-a81001 (API)', async () => {
    const d = await gpA();
    return d?.status === 'paused' && d.changedBy === 'e2e-operator via console';
  });
  await until('the focus to stay on the row, on its Resume button', async () => (await focused()) === 'Resume delivery to gp-a81001');
  await page.keyboard.press('Space');
  await until('Space to resume gp-a81001 (API)', async () => (await gpA())?.paused === false);
  log('keyboard only: reached the dashboard, paused and resumed gp-a81001');

  // 4. The destination is paused and resumed from the dashboard.
  await page.getByRole('link', { name: 'Dashboard' }).click();
  const row = page.locator('#destinations-table tr[data-destination="gp-a81001"]');
  await row.getByRole('button', { name: 'Pause delivery to gp-a81001' }).click();
  await until('the destination to show Paused', async () => (await row.locator('.health').textContent()).trim() === 'Paused');
  const paused = (await apiGet('/api/destinations')).find((d) => d.name === 'gp-a81001');
  if (paused?.status !== 'paused') fail(`the API says gp-a81001 is ${paused?.status} after Pause`);
  await until('records to wait while paused', async () => Number((await apiGet('/api/destinations')).find((d) => d.name === 'gp-a81001')?.depth) > 0);
  await until('the dashboard to show records waiting', async () =>
    Number((await row.locator('td[data-label="Waiting"]').textContent()).replace(/\D/g, '')) > 0);
  await shot('paused');
  const atPause = partner.received;
  await row.getByRole('button', { name: 'Resume delivery to gp-a81001' }).click();
  await until('the destination to show OK again', async () => (await row.locator('.health').textContent()).trim() !== 'Paused');
  await until('the partner to receive the records that waited', async () => partner.received > atPause);
  log('destination paused and resumed');

  // 5. A narrow window: the dashboard still fits.
  await page.setViewportSize({ width: 400, height: 800 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  if (overflow > 0) fail(`at 400 px the page scrolls sideways by ${overflow} px`);
  await shot('dashboard-narrow');

  // 6. A viewer sees but may not act: the buttons are disabled with the reason, and the API says 403.
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  await page.getByLabel('Operator token').fill(VIEWER_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor();
  partner.refuseMarked = true;
  const refused = await send({ refused: true });
  await page.goto(`${base}/console/#/messages/${refused}`);
  await page.getByRole('heading', { level: 1, name: `Message ${refused}` }).waitFor();
  // The heading shows before the page has applied the role (CI once checked in between).
  await until('the viewer\'s View record button to be disabled',
    async () => page.getByRole('button', { name: 'View record…' }).isDisabled(), 5000);
  if (!(await page.locator('#role-note').textContent()).includes('operator role')) fail('no explanation for the disabled buttons');
  const viewerReplay = await fetch(`${base}/api/messages/${refused}/replay`, { method: 'POST', headers: { Authorization: `Bearer ${VIEWER_TOKEN}` } });
  if (viewerReplay.status !== 403) fail(`a viewer's replay was answered ${viewerReplay.status}, not 403`);
  await shot('viewer');
  log('viewer: buttons disabled, replay refused 403');

  if (![...actors].every((a) => a === 'console')) fail(`API calls without X-Tellonce-Actor: console (${[...actors].join(', ')})`);
  if (consoleProblems.length) fail(`the page reported errors:\n  ${consoleProblems.join('\n  ')}`);
  log('PASS');
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.message}`);
  await page.screenshot({ path: path.join(out, 'failure.png') }).catch(() => {});
  if (consoleProblems.length) console.error(`page errors:\n  ${consoleProblems.join('\n  ')}`);
} finally {
  for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => {});  // last made, first undone
  fs.rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
