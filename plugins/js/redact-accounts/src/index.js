// redact-accounts: the component's entry point (the `plugin` world of wit/plugin.wit).
//
// Masks account numbers, IBANs and card numbers anywhere in the event's data (see redact.js),
// passes the event on and adds the extension ("redacted", "<number of masked values>").
// Setting `extra_keys` (optional): comma-separated further key names to mask, e.g.
// "routing number, sort code". Data that is not JSON passes unchanged with ("redacted", "0").
import { log, setting } from 'webhook-gateway:plugin/host@0.1.0';
import { redactJson } from './redact.js';

// Settings cannot change during an instance's life (a config reload makes new instances), so
// a warm instance asks the host once instead of on every event.
let extraKeys;

export function handle(event) {
  extraKeys ??= (setting('extra_keys') ?? '').split(',');
  let text = event.data;
  let count = 0;
  try {
    ({ text, count } = redactJson(event.data, { extraKeys }));
  } catch (e) {
    log('warn', `data is not JSON (${e.message}); nothing redacted`);
  }
  if (count > 0) {
    log('debug', `masked ${count} account/card number(s)`);
  }
  const extensions = event.extensions.filter(([name]) => name !== 'redacted');
  extensions.push(['redacted', String(count)]);
  // The event object is this call's own: changed in place instead of copied.
  event.data = text;
  event.extensions = extensions;
  return { tag: 'pass', val: event };
}
