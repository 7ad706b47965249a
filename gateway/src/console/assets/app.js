// The console's entry: the session, the admin API client and the router. Every page has its
// own URL under /console/; this script renders it from the admin API's JSON.

import { h, link, clear } from './dom.js';
import * as pages from './pages.js';

export const session = { current: null };
let refreshTimer = null;

/** An admin API call; resolves to the JSON answer, rejects with its error text. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && session.current && session.current.csrf) {
    headers['X-CSRF-Token'] = session.current.csrf;
  }
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`/admin${path}`, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (res.status === 401 && !path.startsWith('/session')) {
    session.current = null;
    navigate(`/console/sign-in?next=${encodeURIComponent(location.pathname + location.search)}`, true);
  }
  if (!res.ok) {
    const err = new Error((data && data.error) || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

export function isOperator() {
  return !!session.current && session.current.role === 'operator';
}

/** Runs `fn` again in `ms` while the page stays open. */
export function refreshEvery(ms, fn) {
  refreshTimer = setTimeout(async () => { await fn(); }, ms);
}

const NAV = [
  ['/console/', 'Overview'], ['/console/events', 'Events'], ['/console/dead-letters', 'Dead letters'],
  ['/console/replay', 'Replay'], ['/console/quarantine', 'Quarantine'], ['/console/rejected', 'Rejected'],
  ['/console/routes', 'Routes'], ['/console/plugins', 'Plugins'], ['/console/audit', 'Audit'],
];

const ROUTES = [
  [/^\/console\/sign-in$/, () => pages.signIn()],
  [/^\/console\/?$/, () => pages.overview()],
  [/^\/console\/events$/, () => pages.events()],
  [/^\/console\/events\/(\d+)$/, (m) => pages.event(m[1])],
  [/^\/console\/dead-letters$/, () => pages.deadLetters()],
  [/^\/console\/replay$/, () => pages.replay()],
  [/^\/console\/quarantine$/, () => pages.quarantine()],
  [/^\/console\/quarantine\/(\d+)$/, (m) => pages.quarantined(m[1])],
  [/^\/console\/rejected$/, () => pages.rejected()],
  [/^\/console\/routes$/, () => pages.routes()],
  [/^\/console\/plugins$/, () => pages.plugins()],
  [/^\/console\/audit$/, () => pages.audit()],
];

function header() {
  const top = clear(document.getElementById('top'));
  if (!session.current) return;
  const here = location.pathname.replace(/\/$/, '') || '/console';
  for (const [path, label] of NAV) {
    const a = link(path, label);
    const base = path.replace(/\/$/, '');
    if (here === base || (base !== '/console' && here.startsWith(`${base}/`))) a.className = 'current';
    top.append(a);
  }
  top.append(h('span', { className: 'who', 'data-role': session.current.role },
    `${session.current.name} (${session.current.role})`));
  top.append(h('button', { className: 'secondary', type: 'button', id: 'sign-out', onclick: signOut }, 'Sign out'));
}

async function signOut() {
  try { await api('/session/end', { method: 'POST' }); } catch { /* signed out anyway */ }
  session.current = null;
  navigate('/console/sign-in', true);
}

export function navigate(path, replace = false) {
  if (replace) history.replaceState(null, '', path); else history.pushState(null, '', path);
  render();
}

export async function render() {
  clearTimeout(refreshTimer);
  const main = document.getElementById('main');
  const path = location.pathname;
  if (!session.current && path !== '/console/sign-in') {
    try {
      session.current = await api('/session');
    } catch {
      navigate(`/console/sign-in?next=${encodeURIComponent(path + location.search)}`, true);
      return;
    }
  }
  header();
  const route = ROUTES.find(([re]) => re.test(path));
  clear(main);
  if (!route) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'No such page. '), link('/console/', 'Overview'));
    return;
  }
  try {
    await route[1](path.match(route[0]));
  } catch (e) {
    main.append(h('p', { className: 'notice error' }, `Could not load this page: ${e.message}`));
  }
}

document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[data-nav]');
  if (a && e.button === 0 && !e.metaKey && !e.ctrlKey && !e.shiftKey) {
    e.preventDefault();
    navigate(a.getAttribute('href'));
  }
});
window.addEventListener('popstate', render);
render();
