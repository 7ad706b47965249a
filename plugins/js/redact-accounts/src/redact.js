// Masks account numbers, IBANs and card numbers in a JSON text, leaving every other byte of
// the text as it was (numbers such as 10.50 keep their spelling: no parse/re-serialize).
// Pure JavaScript with no component imports, so `node --test` runs it directly.

/** Key endings (after dropping case, spaces, `_`, `-`) whose values are masked. */
export const SENSITIVE_KEY_ENDINGS = [
  'accountnumber',
  'accountnum',
  'accountno',
  'acctnumber',
  'acctnum',
  'acctno',
  'iban',
  'cardnumber',
  'cardnum',
  'cardno',
];

/** Keys masked only when they are exactly this (after normalizing). */
export const SENSITIVE_KEYS = ['pan'];

/** "Sender account-Number" -> "senderaccountnumber". */
export function normalizeKey(key) {
  return key.replace(/[\s_-]/g, '').toLowerCase();
}

/** Whether the value under `key` is masked; `extra` holds normalized extra key names. */
export function isSensitiveKey(key, extra = []) {
  const k = normalizeKey(key);
  return (
    SENSITIVE_KEYS.includes(k) ||
    extra.includes(k) ||
    SENSITIVE_KEY_ENDINGS.some((ending) => k.endsWith(ending))
  );
}

/** "GB82 WEST 1234 5698 7654 32" -> "****5432"; 4 characters or fewer -> "****". */
export function mask(value) {
  const chars = String(value).replace(/[^0-9A-Za-z]/g, '');
  return chars.length > 4 ? `****${chars.slice(-4)}` : '****';
}

/**
 * Masks every string or number under a sensitive key (at any depth; a sensitive key holding an
 * object or array has all its strings and numbers masked). Returns the new text and how many
 * values were masked. Throws a SyntaxError if `text` is not JSON.
 *
 * @param {string} text JSON text
 * @param {{extraKeys?: string[]}} [options] extra key names to mask (any spelling)
 * @returns {{text: string, count: number}}
 */
export function redactJson(text, options = {}) {
  JSON.parse(text); // validates; the walk below may then assume well-formed JSON
  const extra = (options.extraKeys ?? []).map(normalizeKey).filter((k) => k !== '');
  let pos = 0;
  let count = 0;
  const out = [];

  const skipWs = () => {
    while (pos < text.length && ' \t\n\r'.includes(text[pos])) out.push(text[pos++]);
  };
  // Returns the raw token text of a string starting at `pos` (quotes included).
  const stringToken = () => {
    const start = pos++;
    while (text[pos] !== '"') pos += text[pos] === '\\' ? 2 : 1;
    pos++;
    return text.slice(start, pos);
  };
  const scalarToken = () => {
    const start = pos;
    while (pos < text.length && !',]} \t\n\r'.includes(text[pos])) pos++;
    return text.slice(start, pos);
  };

  // Copies (or, when `sensitive`, masks) one value starting at `pos`.
  const value = (sensitive) => {
    skipWs();
    const c = text[pos];
    if (c === '{') {
      out.push(text[pos++]);
      skipWs();
      if (text[pos] === '}') {
        out.push(text[pos++]);
        return;
      }
      for (;;) {
        skipWs();
        const keyToken = stringToken();
        out.push(keyToken);
        skipWs();
        out.push(text[pos++]); // ':'
        value(sensitive || isSensitiveKey(JSON.parse(keyToken), extra));
        skipWs();
        const sep = text[pos++];
        out.push(sep);
        if (sep === '}') return;
      }
    } else if (c === '[') {
      out.push(text[pos++]);
      skipWs();
      if (text[pos] === ']') {
        out.push(text[pos++]);
        return;
      }
      for (;;) {
        value(sensitive);
        skipWs();
        const sep = text[pos++];
        out.push(sep);
        if (sep === ']') return;
      }
    } else if (c === '"') {
      const token = stringToken();
      if (sensitive) {
        out.push(JSON.stringify(mask(JSON.parse(token))));
        count++;
      } else {
        out.push(token);
      }
    } else {
      const token = scalarToken(); // number, true, false, null
      if (sensitive && /^-?[0-9]/.test(token)) {
        // The token's own digits: a long number is never rounded through a double.
        out.push(JSON.stringify(mask(token.replace(/[.eE+-].*$/, ''))));
        count++;
      } else {
        out.push(token);
      }
    }
  };

  value(false);
  out.push(text.slice(pos));
  return { text: out.join(''), count };
}
