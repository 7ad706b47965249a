// One function per console page: each reads the admin API and builds its elements with
// dom.js (text only). Action buttons exist only for operators (the API refuses viewers anyway).

import { h, link, table, when, seconds, pretty, hexdump, printable, chart } from './dom.js';
import { api, session, isOperator, navigate, refreshEvery } from './app.js';
import { confirmFlow, actionButton } from './actions.js';

const main = () => document.getElementById('main');
const params = () => new URLSearchParams(location.search);

export function signIn() {
  const input = h('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'current-password' });
  const message = h('p', { className: 'muted' }, 'Sign in with an admin token.');
  const form = h('form', { className: 'signin', id: 'sign-in' },
    h('h1', {}, 'Gateway console'), message,
    h('label', { htmlFor: 'token' }, 'Admin token'), input,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      session.current = await api('/session', { method: 'POST', body: { token: input.value } });
      input.value = '';
      const next = params().get('next');
      navigate(next && next.startsWith('/console/') && !next.startsWith('/console/sign-in') ? next : '/console/');
    } catch (err) {
      message.className = 'notice error';
      message.textContent = `Sign-in failed: ${err.message}`;
    }
  });
  main().append(form);
}

export async function overview() {
  const o = await api('/overview');
  const m = main();
  const q = o.queue || {};
  const card = (label, value, cls) => h('div', { className: 'card' },
    h('div', { className: 'muted' }, label), h('div', { className: `value ${cls || ''}` }, value));
  const failedReload = o.config.last_reload && !o.config.last_reload.ok;
  m.append(h('h1', {}, 'Overview'),
    h('p', { className: 'muted' }, `Refreshes every 5 s · ${when(o.generated_at)}`),
    h('div', { className: 'cards' },
      card('Queue depth', q.depth ?? '–'),
      card('Oldest waiting', seconds(q.oldest_age_seconds)),
      card('Dead letters', q.dead_letters ?? '–', q.dead_letters ? 'bad' : 'ok'),
      card('Config generation', o.config.generation),
      card('Last reload', o.config.last_reload ? (o.config.last_reload.ok ? 'ok' : 'failed') : 'none since start',
        failedReload ? 'bad' : '')));
  m.append(charts(o.history || []));
  if (failedReload) {
    m.append(h('pre', { className: 'notice error', id: 'reload-problems' }, o.config.last_reload.problems.join('\n')));
  }
  const rate = (x) => (x && x.per_second !== null && x.per_second !== undefined ? `${x.per_second.toFixed(2)}/s` : '–');
  m.append(h('h2', {}, 'Requests per source'), table(['source', 'outcome', 'per second', 'total', 'ack p99 (since start)'],
    o.sources.flatMap((s) => Object.entries(s.outcomes || {}).filter(([, v]) => v.total > 0)
      .map(([outcome, v]) => [s.source, outcome, rate(v), v.total, seconds(s.ack_p99_seconds)]))));
  m.append(h('h2', {}, 'Deliveries per destination'), table(['destination', 'ok', 'retry', 'dead', 'per second (ok)', 'p99 (since start)'],
    o.destinations.map((d) => {
      const r = d.results || {};
      return [link(`/console/dead-letters`, d.destination), r.ok?.total ?? 0, r.retry?.total ?? 0,
        h('span', { className: r.dead?.total ? 'bad' : '' }, r.dead?.total ?? 0), rate(r.ok), seconds(d.p99_seconds)];
    })));
  m.append(h('h2', {}, 'Routing'), table(['result', 'events'], Object.entries(o.routed).map(([k, v]) => [k, v])));
  m.append(h('h2', {}, 'Plugins'), pluginTable(o.plugins));
  refreshEvery(5000, async () => { if (location.pathname.replace(/\/$/, '') === '/console') navigate(location.pathname, true); });
}

/** The last hour: per-interval counts (differences of counters) and levels of gauges. */
function charts(history) {
  const delta = (key) => history.slice(1).map((p, i) => Math.max(0, p[key] - history[i][key]));
  const level = (key) => history.map((p) => p[key]);
  const box = h('div', { className: 'charts', id: 'charts' });
  if (history.length < 2) {
    box.append(h('p', { className: 'muted' }, 'Charts of the last hour appear once the gateway has run for a moment (a point every 10 s).'));
    return box;
  }
  box.append(
    chart('Requests per 10 s', [['accepted', 'good', delta('accepted')], ['refused', 'badline', delta('refused')]]),
    chart('Deliveries per 10 s', [['ok', 'good', delta('delivered')], ['dead', 'badline', delta('dead')]]),
    chart('Queue depth', [['waiting', 'level', level('queue_depth')]]),
    chart('Dead letters', [['dead letters', 'badline', level('dead_letters')]]));
  return box;
}

function pluginTable(plugins) {
  return table(['plugin', 'health', 'consecutive failures', 'unhealthy since', 'last failure'],
    plugins.map((p) => [p.name, h('span', { className: p.healthy ? 'ok' : 'bad' }, p.healthy ? 'healthy' : 'unhealthy'),
      `${p.consecutive_failures} / ${p.unhealthy_after}`, when(p.unhealthy_since), p.last_failure ?? '–']));
}

const FILTER_KEYS = ['source', 'type', 'id', 'subject', 'status', 'since', 'until'];
const PLACEHOLDERS = { type: 'payment.* or exact', id: 'provider event id', subject: 'object the event is about', since: '2026-12-05T10:00:00Z', until: '2026-12-05T10:00:00Z' };
const STATUSES = ['', 'pending', 'routed', 'unrouted', 'dropped', 'retrying', 'failed', 'replay'];

function filterForm(id, onSubmit, extra) {
  const p = params();
  const fields = FILTER_KEYS.map((k) => {
    const input = k === 'status'
      ? h('select', { name: k }, STATUSES.map((s) => h('option', { value: s }, s || 'any')))
      : h('input', { name: k, value: p.get(k) || '', placeholder: PLACEHOLDERS[k] || '' });
    if (k === 'status') input.value = p.get(k) || '';
    return h('label', {}, k, input);
  });
  const form = h('form', { className: 'filters', id }, fields, extra || [], h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const k of FILTER_KEYS) { const v = form.elements[k].value.trim(); if (v) q.set(k, v); }
    onSubmit(q);
  });
  return form;
}

function filterQuery() {
  const q = new URLSearchParams();
  for (const k of FILTER_KEYS) { const v = params().get(k); if (v) q.set(k, v); }
  return q;
}

export async function events() {
  const m = main();
  const go = h('input', { name: 'seq', placeholder: 'event number', id: 'find-seq' });
  const find = h('form', { className: 'filters', id: 'find-event' }, h('label', {}, 'open event #', go), h('button', { type: 'submit' }, 'Open'));
  find.addEventListener('submit', (e) => { e.preventDefault(); const n = go.value.trim().replace(/^#/, ''); if (/^\d+$/.test(n)) navigate(`/console/events/${n}`); });
  m.append(h('h1', {}, 'Events'), find,
    filterForm('event-filters', (q) => navigate(`/console/events?${q}`)));
  const q = filterQuery();
  const before = params().get('before');
  if (before) q.set('before', before);
  q.set('limit', '50');
  const page = await api(`/events?${q}`);
  m.append(table(['#', 'id', 'source', 'type', 'status', 'amount', 'received'],
    page.events.map((e) => [link(`/console/events/${e.seq}`, `#${e.seq}`), e.id, e.source, e.type,
      h('span', { className: e.status === 'routed' ? 'ok' : (e.status === 'failed' ? 'bad' : '') }, e.status),
      e.amount !== undefined ? `${e.amount} ${e.currency ?? ''}` : '–', when(e.received_at)])));
  const pager = h('div', { className: 'pager' });
  if (before) { const first = filterQuery(); pager.append(link(`/console/events?${first}`, 'Newest')); }
  if (page.next_before) { const next = filterQuery(); next.set('before', page.next_before); pager.append(link(`/console/events?${next}`, 'Older')); }
  m.append(pager);
}

export async function event(seq) {
  const e = await api(`/events/${seq}`);
  const m = main();
  m.append(h('h1', {}, `Event #${e.seq}`),
    table(['id', 'source', 'type', 'status', 'received', 'amount'], [[e.id, e.source, e.type, e.status, when(e.received_at),
      e.amount !== undefined ? `${e.amount} ${e.currency ?? ''}` : '–']]));
  if (isOperator()) {
    m.append(actionButton('replay-event', 'Replay this event', async () => {
      const r = await api(`/events/${e.seq}/replay`, { method: 'POST' });
      return `Marked ${r.replayed} event for replay.`;
    }));
  }
  const steps = [h('li', {}, h('div', { className: 'when' }, when(e.received_at)), 'received and stored')];
  for (const p of e.plugin_results) {
    steps.push(h('li', {}, h('div', { className: 'when' }, `${p.micros} µs`),
      `plugin ${p.plugin} (route ${p.route}): ${p.result}`, p.reason ? ` — ${p.reason}` : ''));
  }
  for (const r of e.route_runs) {
    steps.push(h('li', {}, h('div', { className: 'when' }, when(r.updated_at)),
      `route ${r.route}: ${r.status} after ${r.attempts} attempt(s) — ${r.reason}`));
  }
  for (const d of e.deliveries) {
    for (const a of d.history) {
      steps.push(h('li', {}, h('div', { className: 'when' }, `${when(a.at)} · ${a.duration_ms} ms`),
        `delivery ${d.id} to ${d.destination}: `, a.status ? `HTTP ${a.status}` : 'no answer', a.error ? ` — ${a.error}` : ''));
    }
    steps.push(h('li', { 'data-delivery': d.id }, h('div', { className: 'when' }, when(d.updated_at)),
      h('span', { className: d.status === 'dead' ? 'bad' : (d.status === 'delivered' ? 'ok' : 'warn') },
        `delivery ${d.id} to ${d.destination}: ${d.status}`), d.status === 'dead' ? ' (dead letter)' : ''));
  }
  m.append(h('h2', {}, 'Timeline'), h('ol', { className: 'timeline', id: 'timeline' }, steps));
  m.append(h('h2', {}, 'Envelope'), h('pre', { id: 'envelope' }, pretty(e.envelope)));
  m.append(h('h2', {}, 'Kept headers'), h('pre', {}, pretty(e.headers)));
}

const REDRIVE_KEYS = ['stage', 'destination', 'route', 'reason', 'source', 'type', 'since', 'until'];
/** What a filtered redrive selects: dead deliveries, or dead plugin stages (no destination). */
const STAGES = [['delivery', 'deliveries'], ['plugin', 'plugin stages']];

/** The sums stuck in a group: `12.30 EUR, 5 USD` (exact decimal text from the server). */
function stuck(g) {
  const sums = g.amounts.map((a) => `${a.sum} ${a.currency || '(no currency)'}`);
  if (g.unsummed) sums.push(`${g.unsummed} not summed`);
  return sums.join(', ') || '–';
}

export async function deadLetters() {
  const [d, g] = await Promise.all([api('/dead-letters?limit=200'), api('/dead-letters/groups')]);
  const m = main();
  const op = isOperator();
  m.append(h('h1', {}, 'Dead letters'));
  const form = h('form', { className: 'filters', id: 'redrive-filter' },
    REDRIVE_KEYS.map((k) => h('label', {}, k, k === 'stage'
      ? h('select', { name: k }, STAGES.map(([v, text]) => h('option', { value: v }, text)))
      : h('input', { name: k, value: params().get(k) || '', placeholder: PLACEHOLDERS[k] || '' }))));
  form.elements.stage.value = params().get('stage') === 'plugin' ? 'plugin' : 'delivery';
  form.addEventListener('submit', (e) => e.preventDefault());
  m.append(h('h2', {}, 'By destination and reason'), table(['destination', 'reason', 'count', 'oldest', 'stuck', ''],
    g.groups.map((x, i) => [x.destination, x.reason ?? '–', x.count, when(x.oldest_at), h('span', { className: 'money' }, stuck(x)),
      op ? h('button', { type: 'button', id: `redrive-group-${i}`, className: 'secondary', onclick: () => {
        for (const k of REDRIVE_KEYS) form.elements[k].value = '';
        form.elements.stage.value = 'delivery';
        form.elements.destination.value = x.destination;
        form.elements.reason.value = x.reason ?? '';
      } }, 'Select') : ''])));
  if (op) {    const query = () => {
      const q = new URLSearchParams();
      for (const k of REDRIVE_KEYS) { const v = form.elements[k].value.trim(); if (v && !(k === 'stage' && v === 'delivery')) q.set(k, v); }
      return q;
    };
    let counted = null;
    m.append(h('h2', {}, 'Redrive by filter'),
      h('p', { className: 'muted' }, 'Dead deliveries (or dead plugin stages, which have no destination) matching every field set (type: exact or a glob such as payment.*; since/until: when they died). Count first; the redrive then sends back exactly the ones counted.'),
      form, confirmFlow('redrive-all', 'Count matching dead letters', async () => {
        const q = query();
        q.set('dry_run', 'true');
        const r = await api(`/dead-letters/redrive?${q}`, { method: 'POST' });
        counted = { query: query(), through: r.through, total: r.would_redrive };
        return { count: r.would_redrive, text: `${r.would_redrive} dead letter(s) would get a fresh set of attempts.` };
      }, (n) => `Redrive ${n}`, async (progress) => {
        const { query: q, through, total } = counted;
        let after = 0;
        let done = 0;
        for (;;) {
          q.set('through', through);
          q.set('after', after);
          const r = await api(`/dead-letters/redrive?${q}`, { method: 'POST' });
          done += r.redriven;
          if (r.resume_after === null || r.resume_after === undefined) break;
          after = r.resume_after;
          progress(`Redriven ${done} of ${total}…`);
        }
        return `Redriven: ${done} of ${total}.`;
      }));
  }
  m.append(h('h2', {}, 'Deliveries'), table(['id', 'event', 'destination', 'route', 'attempts', 'last error', 'since', ''],
    d.deliveries.map((x) => [x.id, link(`/console/events/${x.event_seq}`, `#${x.event_seq}`), x.destination, x.route,
      x.attempts, x.last_error ?? '–', when(x.updated_at),
      op ? actionButton(`redrive-${x.id}`, 'Redrive', async () => {
        const r = await api(`/deliveries/${x.id}/redrive`, { method: 'POST' });
        return `Redriven: ${r.redriven}.`;
      }) : ''])));
  m.append(h('h2', {}, 'Plugin stages'), table(['id', 'event', 'route', 'attempts', 'reason', ''],
    d.route_runs.map((x) => [x.id, link(`/console/events/${x.event_seq}`, `#${x.event_seq}`), x.route, x.attempts, x.reason,
      op ? actionButton(`redrive-run-${x.id}`, 'Redrive', async () => {
        const r = await api(`/route-runs/${x.id}/redrive`, { method: 'POST' });
        return `Redriven: ${r.redriven}.`;
      }) : ''])));
}

export async function replay() {
  const m = main();
  m.append(h('h1', {}, 'Replay by filter'),
    h('p', { className: 'muted' }, 'Events matching the filter go through the current routes again (new deliveries follow). Count first, then confirm.'),
    filterForm('replay-filters', (q) => navigate(`/console/replay?${q}`)));
  const q = filterQuery();
  if (![...q.keys()].length) { m.append(h('p', { className: 'muted' }, 'Set a filter to count the events it selects.')); return; }
  if (!isOperator()) { m.append(h('p', { className: 'muted' }, 'Replays need an operator token.')); return; }
  m.append(confirmFlow('replay-filtered', 'Count matching events', async () => {
    const r = await api(`/replay?${q}&dry_run=true`, { method: 'POST' });
    return { count: r.would_replay, text: `${r.would_replay} event(s) would be replayed.` };
  }, (n) => `Replay ${n} event(s)`, async () => {
    const r = await api(`/replay?${q}`, { method: 'POST' });
    return `Replayed: ${r.replayed}.`;
  }));
}

export async function quarantine() {
  const d = await api('/quarantine?limit=100');
  main().append(h('h1', {}, 'Quarantine'), table(['id', 'source', 'reason', 'size', 'repeats', 'received'],
    d.quarantine.map((x) => [link(`/console/quarantine/${x.id}`, `#${x.id}`), x.source, x.reason, `${x.size} B`, x.repeats, when(x.received_at)])));
}

export async function quarantined(id) {
  const x = await api(`/quarantine/${id}`);
  const text = printable(x.body_text);
  main().append(h('h1', {}, `Quarantined body #${x.id}`),
    table(['source', 'reason', 'size', 'received', 'last seen'], [[x.source, x.reason, `${x.size} B`, when(x.received_at), when(x.last_seen_at)]]),
    h('h2', {}, text ? 'Body (text)' : 'Body (hex: not printable text)'),
    h('pre', { id: 'quarantine-body' }, text ? x.body_text : hexdump(x.body_base64)),
    h('h2', {}, 'Kept headers'), h('pre', {}, pretty(x.headers)));
}

export async function rejected() {
  const d = await api('/rejected');
  main().append(h('h1', {}, 'Rejected requests'),
    h('p', { className: 'muted' }, `The last ${d.kept} refusals, newest first (this replica, in memory only).`),
    table(['time', 'source', 'client', 'reason'], d.rejected.map((r) => [when(r.at), r.source, r.client, r.reason])));
}

export async function routes() {
  const d = await api('/routes');
  main().append(h('h1', {}, 'Routes'),
    h('h2', {}, 'Sources'), table(['name', 'provider', 'path'], d.sources.map((s) => [s.name, s.provider, s.path])),
    h('h2', {}, 'Routes'), table(['route', 'sources', 'types', 'plugins', 'destinations'],
      d.routes.map((r) => [r.name, r.sources.join(', ') || 'any', r.types.join(', ') || 'any', r.plugins.join(' → ') || '–', r.destinations.join(', ')])),
    h('h2', {}, 'Destinations'), table(['name', 'kind', 'target', 'max attempts'],
      d.destinations.map((x) => [x.name, x.kind, x.target, x.max_attempts])));
}

export async function plugins() {
  const [d, o] = await Promise.all([api('/plugins'), api('/overview')]);
  const m = main();
  m.append(h('h1', {}, 'Plugins'), pluginTable(d.plugins));
  m.append(h('h2', {}, 'Calls since the start'), table(['plugin', 'calls by verdict', 'p99'],
    o.plugin_calls.map((p) => [p.plugin,
      Object.entries(p.calls || {}).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ') || 'none',
      seconds(p.p99_seconds)])));
  if (!isOperator() || !d.plugins.length) return;
  const select = h('select', { name: 'plugin', id: 'dry-run-plugin' }, d.plugins.map((p) => h('option', { value: p.name }, p.name)));
  const seq = h('input', { name: 'seq', id: 'dry-run-seq', placeholder: 'event number', value: params().get('seq') || '' });
  const out = h('div', { id: 'dry-run-result' });
  const form = h('form', { className: 'filters', id: 'dry-run' }, h('label', {}, 'plugin', select), h('label', {}, 'on event #', seq),
    h('button', { type: 'submit', 'data-action': '1' }, 'Dry run'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    out.replaceChildren(h('p', { className: 'muted' }, 'running…'));
    try {
      const r = await api(`/plugins/${encodeURIComponent(select.value)}/dry-run?seq=${encodeURIComponent(seq.value.trim())}`, { method: 'POST' });
      out.replaceChildren(
        h('p', { id: 'dry-run-verdict' }, `${r.plugin} on #${r.seq}: ${r.result.verdict}${r.result.reason ? ` — ${r.result.reason}` : ''} (${r.elapsed_us} µs; nothing was delivered)`),
        r.changes.length ? table(['changed field', 'before', 'after'], r.changes.map((c) => [c.field, pretty(c.before ?? '–'), pretty(c.after ?? '–')])) : '',
        h('pre', {}, pretty(r.result)));
    } catch (err) {
      out.replaceChildren(h('p', { className: 'notice error' }, `refused: ${err.message}`));
    }
  });
  m.append(h('h2', {}, 'Dry run'), h('p', { className: 'muted' }, 'Runs the plugin on a stored event and shows its verdict and changes; nothing is stored or delivered.'), form, out);
}

export async function audit() {
  const d = await api('/audit?limit=200');
  main().append(h('h1', {}, 'Audit'), table(['time', 'who', 'action', 'selection', 'count'],
    d.records.map((r) => [when(r.at), r.actor, r.action, r.selection, r.count])));
}
