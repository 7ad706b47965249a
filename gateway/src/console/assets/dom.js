// DOM helpers: every value becomes a text node or a property, never markup. Links go only to
// the console's own pages.

const PROPS = new Set(['className', 'type', 'name', 'value', 'placeholder', 'id', 'title',
  'disabled', 'autocomplete', 'htmlFor']);

/** An element with properties from `props` (a fixed set) and children (strings become text). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k.startsWith('data-')) {
      el.setAttribute(k, String(v));
    } else if (PROPS.has(k)) {
      el[k] = v;
    } else {
      throw new Error(`h: property ${k} is not allowed`);
    }
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A link to a console page (`/console/...` only), followed without reloading. */
export function link(path, ...children) {
  const a = h('a', {}, ...children);
  const safe = typeof path === 'string' && path.startsWith('/console/') ? path : '/console/';
  a.setAttribute('href', safe);
  a.setAttribute('data-nav', '1');
  return a;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Unix ms as local ISO-like text. */
export function when(ms) {
  if (ms === null || ms === undefined) return '–';
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString().replace('T', ' ').replace('Z', ' UTC');
}

export function table(headings, rows) {
  return h('table', {},
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', {}, t)))),
    h('tbody', {}, rows.length
      ? rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c))))
      : h('tr', {}, h('td', { className: 'muted' }, 'nothing'))));
}

export function seconds(s) {
  if (s === null || s === undefined) return '–';
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(1)} s`;
}

/** Pretty JSON when `v` is a value, text otherwise. */
export function pretty(v) {
  return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
}

/** Bytes (base64) as hex, 16 per line. */
export function hexdump(b64) {
  const bin = atob(b64);
  const lines = [];
  for (let i = 0; i < bin.length; i += 16) {
    const chunk = Array.from(bin.slice(i, i + 16), (c) => c.charCodeAt(0).toString(16).padStart(2, '0'));
    lines.push(`${i.toString(16).padStart(6, '0')}  ${chunk.join(' ')}`);
  }
  return lines.join('\n');
}

/** Whether text is printable (no control characters but tab and newlines). */
export function printable(text) {
  return typeof text === 'string' && !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text);
}

const SVG = 'http://www.w3.org/2000/svg';

/**
 * A small line chart of the last hour: `series` is [[label, className, values]], values one
 * per point (numbers only; nothing from event data reaches a chart).
 */
export function chart(title, series) {
  const width = 320;
  const height = 70;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  // One value is drawn as a flat line across the chart.
  series = series.map(([label, cls, v]) => [label, cls, v.length === 1 ? [v[0], v[0]] : v]);
  const n = Math.max(...series.map(([, , v]) => v.length), 2);
  const max = Math.max(1, ...series.flatMap(([, , v]) => v.filter(Number.isFinite)));
  for (const [, cls, values] of series) {
    const line = document.createElementNS(SVG, 'polyline');
    const points = values.map((v, i) => `${((i / (n - 1)) * width).toFixed(1)},${(height - 2 - ((Number.isFinite(v) ? v : 0) / max) * (height - 4)).toFixed(1)}`);
    line.setAttribute('points', points.join(' '));
    line.setAttribute('class', cls);
    svg.append(line);
  }
  const legend = series.map(([label, cls, values]) => h('span', { className: `legend ${cls}` }, `${label} ${values.length ? values[values.length - 1] : '–'}`));
  return h('div', { className: 'card' }, h('div', { className: 'muted' }, title, ` (max ${max})`), svg, h('div', {}, legend));
}
