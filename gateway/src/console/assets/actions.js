// Buttons that change state: one click for a single object, a dry-run count and an explicit
// confirmation for anything that selects many. Progress and results are shown as text.

import { h } from './dom.js';

/** A button running `act` (which returns the result text) once, showing progress. */
export function actionButton(id, label, act) {
  const out = h('span', { className: 'muted' });
  const button = h('button', { type: 'button', id, 'data-action': '1' }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    out.textContent = ' working…';
    try {
      out.textContent = ` ${await act()}`;
      out.className = 'ok';
    } catch (e) {
      out.textContent = ` refused: ${e.message}`;
      out.className = 'bad';
      button.disabled = false;
    }
  });
  return h('span', {}, button, out);
}

/**
 * Count first (`count` returns {count, text}), then a confirm button that runs `act`, which
 * may report progress through the function it is given and returns the result text.
 */
export function confirmFlow(id, label, count, confirmLabel, act) {
  const box = h('div', { className: 'notice', id });
  const status = h('p', { id: `${id}-status` });
  const start = h('button', { type: 'button', id: `${id}-count`, 'data-action': '1' }, label);
  start.addEventListener('click', async () => {
    start.disabled = true;
    status.textContent = 'counting…';
    try {
      const r = await count();
      status.textContent = r.text;
      if (r.count > 0) {
        const confirm = h('button', { type: 'button', className: 'danger', id: `${id}-confirm`, 'data-action': '1' }, confirmLabel(r.count));
        const cancel = h('button', { type: 'button', className: 'secondary' }, 'Cancel');
        cancel.addEventListener('click', () => { confirm.remove(); cancel.remove(); start.disabled = false; status.textContent = ''; });
        confirm.addEventListener('click', async () => {
          confirm.disabled = true; cancel.remove();
          status.textContent = 'working…';
          try { status.textContent = await act((text) => { status.textContent = text; }); } catch (e) { status.textContent = `refused: ${e.message}`; }
        });
        box.append(confirm, cancel);
      } else {
        start.disabled = false;
      }
    } catch (e) {
      status.textContent = `refused: ${e.message}`;
      start.disabled = false;
    }
  });
  box.append(start, status);
  return box;
}
