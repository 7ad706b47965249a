// The console in a real browser (Debian's chromium, driven by playwright-core), against a
// running gateway that tests/e2e/console.rs started and filled. Every scenario asserts what a
// person would see; any failure exits non-zero with the reason. Screenshots of every page go
// to $SCREENSHOTS.
//
// Environment: CONSOLE (the admin listener's base URL), OPERATOR_TOKEN, VIEWER_TOKEN,
// FIND_SEQ and FIND_ID (an event to find), HOSTILE_SEQ, DEAD_DELIVERY (a dead delivery id),
// REPLAY_SOURCE and REPLAY_COUNT, DRY_RUN_SEQ (a Ledig deposit), SCREENSHOTS.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const env = process.env;
const base = env.CONSOLE;
const shots = env.SCREENSHOTS;
fs.mkdirSync(shots, { recursive: true });
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-chromium-'));
const started = Date.now();

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const dialogs = [];
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(10000);
page.on('dialog', async (d) => { dialogs.push(d.message()); await d.dismiss(); });
const consoleErrors = [];
page.on('pageerror', (e) => { consoleErrors.push(String(e)); console.log(`page error: ${e}`); });
page.on('console', (m) => { if (m.type() === 'error') console.log(`console: ${m.text()}`); });

const step = (name) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${name}`);
const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

async function signIn(token) {
  await page.goto(`${base}/console/sign-in`);
  await page.fill('#token', token);
  await page.click('#sign-in button[type=submit]');
  await page.waitForSelector('#sign-out');
}

/** Nothing from event data became markup: no dialog, no element it could have made. */
async function assertNothingInjected(where) {
  const injected = await page.evaluate(() => ({
    pwned: window.__pwned === 1,
    images: document.querySelectorAll('main img').length,
    scripts: document.querySelectorAll('main script, main iframe, main object, main embed').length,
    jsLinks: [...document.querySelectorAll('a')].filter((a) => /^\s*javascript:/i.test(a.getAttribute('href') || '')).length,
    overflow: document.documentElement.scrollWidth - window.innerWidth,
  }));
  assert.deepEqual(dialogs, [], `${where}: a dialog fired`);
  assert.equal(injected.pwned, false, `${where}: an injected handler ran`);
  assert.equal(injected.images, 0, `${where}: an <img> was injected`);
  assert.equal(injected.scripts, 0, `${where}: a script element was injected`);
  assert.equal(injected.jsLinks, 0, `${where}: a javascript: link exists`);
  assert.ok(injected.overflow <= 1, `${where}: the page is ${injected.overflow}px wider than the window`);
}

// 1. Sign in as the operator; a wrong token is refused on the page.
step('sign-in');
await page.goto(`${base}/console/`);
await page.waitForSelector('#sign-in');
await shot('sign-in');
await page.fill('#token', 'not-a-token');
await page.click('#sign-in button[type=submit]');
await page.waitForSelector('#sign-in .notice.error');
await signIn(env.OPERATOR_TOKEN);
await page.waitForSelector('text=Queue depth');
await page.waitForSelector('#charts svg.chart polyline', { state: 'attached' });
// Requests per source and outcome: the source first, then what became of its requests.
const rows = await page.$$eval('main table tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
// (found, screened, hostile, and the two that dead-letter)
assert.ok(rows.some((r) => r[0] === 'ledger' && r[1] === 'accepted' && r[3] === '5'), JSON.stringify(rows));
assert.match(await page.textContent('header .who'), /ops \(operator\)/);
await shot('overview');

// 2. Find an event by its number and open its timeline (a permalink).
step('find an event');
await page.click('header a[href="/console/events"]');
await page.waitForSelector('#find-event');
await page.waitForSelector(`text=${env.FIND_ID}`);
// The amount and currency of the payload, where it has them.
await page.waitForSelector('text=12.50 USDT');
await shot('events');
// By the provider's event id, through the filter form: exactly that event.
await page.fill('#event-filters input[name=id]', env.FIND_ID);
await page.click('#event-filters button[type=submit]');
await page.waitForURL(`${base}/console/events?id=${env.FIND_ID}`);
await page.waitForSelector(`main table tr >> text=${env.FIND_ID}`);
assert.equal(await page.locator('main table tr').count(), 2, 'the header and the one event with this id');
// By subject (the object the event is about: the Ledger transaction's id), exactly.
await page.fill('#event-filters input[name=id]', '');
await page.fill('#event-filters input[name=subject]', 'txn_console_find');
await page.click('#event-filters button[type=submit]');
await page.waitForURL(`${base}/console/events?subject=txn_console_find`);
await page.waitForSelector(`main table tr >> text=${env.FIND_ID}`);
assert.equal(await page.locator('main table tr').count(), 2, 'the header and the one event about it');
await page.fill('#find-seq', env.FIND_SEQ);
await page.click('#find-event button');
await page.waitForURL(`${base}/console/events/${env.FIND_SEQ}`);
await page.waitForSelector('#timeline');
const timeline = await page.textContent('#timeline');
assert.match(timeline, /received and stored/);
assert.match(timeline, /delivered/, `timeline: ${timeline}`);
assert.match(await page.textContent('#envelope'), new RegExp(env.FIND_ID));
await shot('event');
// The same URL opened directly shows the same event.
await page.goto(`${base}/console/events/${env.FIND_SEQ}`);
await page.waitForSelector('#timeline');

// 3. Hostile fields are text: nothing runs, nothing is injected, the layout holds.
step('hostile event');
await page.goto(`${base}/console/events/${env.HOSTILE_SEQ}`);
await page.waitForSelector('#envelope');
const envelope = await page.textContent('#envelope');
assert.ok(envelope.includes('<script>window.__pwned=1</script>'), 'the <script> field is shown as text');
assert.ok(envelope.includes('"><img src=x onerror=window.__pwned=1>'.replace(/"/g, '\\"')), 'the img field is shown as text');
assert.ok(envelope.includes('javascript:window.__pwned=1'), 'the javascript: field is shown as text');
await assertNothingInjected('hostile event');
await shot('event-hostile');
await page.goto(`${base}/console/events?source=ledger`);
await page.waitForSelector('table');
await assertNothingInjected('events list');

// 4. A dead letter shows under dead letters; a redrive from the page gets it delivered.
step('dead letters');
await page.click('header a[href="/console/dead-letters"]');
await page.waitForSelector(`#redrive-${env.DEAD_DELIVERY}`);
await shot('dead-letters');
// Grouped by destination and reason, with the exact sum stuck there.
assert.match(await page.textContent('main table'), /sink[\s\S]*HTTP 500[\s\S]*2[\s\S]*99\.10 EUR/);
await page.click(`#redrive-${env.DEAD_DELIVERY}`);
await page.waitForSelector('text=Redriven: 1.');
await shot('dead-letters-redriven');
// The rest by filter: the group's destination and reason, counted, confirmed, with progress.
await page.goto(`${base}/console/dead-letters`);
await page.click('#redrive-group-0');
assert.equal(await page.inputValue('#redrive-filter input[name=destination]'), 'sink');
await page.click('#redrive-all-count');
await page.waitForSelector('#redrive-all-confirm');
assert.equal(await page.textContent('#redrive-all-status'), '1 dead letter(s) would get a fresh set of attempts.');
await page.click('#redrive-all-confirm');
await page.waitForSelector('text=Redriven: 1 of 1.');
// Dead plugin stages by a filter (they have no destination): a route, counted, confirmed.
await page.goto(`${base}/console/dead-letters?stage=plugin`);
assert.equal(await page.inputValue('#redrive-filter select[name=stage]'), 'plugin');
await page.fill('#redrive-filter input[name=route]', 'screened');
await page.click('#redrive-all-count');
await page.waitForSelector('#redrive-all-confirm');
assert.equal(await page.textContent('#redrive-all-status'), '1 dead letter(s) would get a fresh set of attempts.');
await shot('dead-letters-plugin-stages');
await page.click('#redrive-all-confirm');
await page.waitForSelector('text=Redriven: 1 of 1.');

// 5. Replay by filter: the dry-run count, then exactly that many replayed.
step('replay by filter');
await page.goto(`${base}/console/replay?source=${env.REPLAY_SOURCE}`);
await page.click('#replay-filtered-count');
await page.waitForSelector('#replay-filtered-confirm');
assert.equal(await page.textContent('#replay-filtered-status'), `${env.REPLAY_COUNT} event(s) would be replayed.`);
await shot('replay-dry-run');
await page.click('#replay-filtered-confirm');
await page.waitForSelector(`text=Replayed: ${env.REPLAY_COUNT}.`);
await shot('replay-done');

// 6. A POST with the session cookie but without the CSRF header is refused.
step('csrf');
const noCsrf = await page.evaluate(async () => {
  const r = await fetch('/admin/dead-letters/redrive?dry_run=true', { method: 'POST', credentials: 'same-origin' });
  return { status: r.status, body: await r.json() };
});
assert.equal(noCsrf.status, 403, JSON.stringify(noCsrf));
assert.match(noCsrf.body.error, /CSRF/);

// A plugin's dry run on a stored event: its verdict and changes, nothing delivered.
step('plugin dry run');
await page.goto(`${base}/console/plugins`);
await page.waitForSelector('#dry-run');
await page.selectOption('#dry-run-plugin', 'unify');
await page.fill('#dry-run-seq', env.DRY_RUN_SEQ);
await page.click('#dry-run button');
await page.waitForSelector('#dry-run-verdict');
assert.match(await page.textContent('#dry-run-verdict'), /^unify on #\d+: emit/);
assert.match(await page.textContent('#dry-run-result pre'), /payment\.received/);
assert.match(await page.textContent('#dry-run-result table'), /events\[0\]\.type/);
await shot('plugins-dry-run');

// The remaining pages, for the record and for errors.
for (const [name, url, marker] of [['quarantine', '/console/quarantine', 'h1'], ['rejected', '/console/rejected', 'table'],
  ['routes', '/console/routes', 'table'], ['audit', '/console/audit', 'text=redrive']]) {
  step(name);
  await page.goto(`${base}${url}`);
  await page.waitForSelector(marker);
  await shot(name);
}
assert.match(await page.textContent('main'), /ops\s*replay/);

// 7. A viewer sees no action buttons and its POSTs are refused 403.
step('viewer');
await page.click('#sign-out');
await page.waitForSelector('#sign-in');
await signIn(env.VIEWER_TOKEN);
for (const url of [`/console/events/${env.FIND_SEQ}`, '/console/dead-letters', `/console/replay?source=${env.REPLAY_SOURCE}`, '/console/plugins']) {
  await page.goto(`${base}${url}`);
  await page.waitForSelector('h1');
  await page.waitForLoadState('networkidle');
  assert.equal(await page.locator('[data-action]').count(), 0, `${url}: a viewer sees an action button`);
}
await shot('viewer-dead-letters');
const viewerPost = await page.evaluate(async () => {
  const s = await (await fetch('/admin/session')).json();
  const r = await fetch('/admin/dead-letters/redrive', { method: 'POST', headers: { 'X-CSRF-Token': s.csrf } });
  return { role: s.role, status: r.status, body: await r.json() };
});
assert.equal(viewerPost.role, 'viewer');
assert.equal(viewerPost.status, 403, JSON.stringify(viewerPost));
assert.match(viewerPost.body.error, /viewer/);

assert.deepEqual(dialogs, [], 'no dialog fired during the run');
assert.deepEqual(consoleErrors, [], 'no script error on any page');
await context.close();
fs.rmSync(userDataDir, { recursive: true, force: true });
step('all scenarios passed');
