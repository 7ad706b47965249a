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

// Matches a normalized key that ends in one of SENSITIVE_KEY_ENDINGS (one regular expression
// test instead of a call per ending: the component's JavaScript runs interpreted).
const ENDINGS = new RegExp(`(?:${SENSITIVE_KEY_ENDINGS.join('|')})$`);

// Every sensitive key, once normalized, contains one of these words: "acc" (account..., acct...),
// "card", "iban", "pan". In the raw text such a key still spells the word in order, in any
// case, with only separators (what normalizeKey drops) between its letters, unless an escape
// (`\u0061`) spells a letter. A text that contains neither such a spelling nor a backslash has
// no sensitive key, so it is returned without the token-by-token scan: one native regular
// expression test instead of interpreted JavaScript per token, and most events carry no
// account or card number. (Values are searched too; a match there only means the full scan.)
const SEPARATORS = String.raw`[\s_-]*`;
export const KEY_WORDS = ['acc', 'card', 'iban', 'pan'];
const MAY_BE_SENSITIVE = new RegExp(
  KEY_WORDS.map((word) => word.split('').join(SEPARATORS)).join('|'),
  'i',
);

// Key -> [normalized key, whether it is sensitive without extra keys]. Events of one source
// repeat the same keys, and a warm instance keeps this between events. Bounded: cleared when
// full, so keys never seen again cannot pile up.
const KEY_CACHE = new Map();
const KEY_CACHE_MAX = 4096;

/** Whether the value under `key` is masked; `extra` holds normalized extra key names. */
export function isSensitiveKey(key, extra = []) {
  let entry = KEY_CACHE.get(key);
  if (entry === undefined) {
    const k = normalizeKey(key);
    entry = [k, SENSITIVE_KEYS.includes(k) || ENDINGS.test(k)];
    if (KEY_CACHE.size >= KEY_CACHE_MAX) KEY_CACHE.clear();
    KEY_CACHE.set(key, entry);
  }
  return entry[1] || (extra.length > 0 && extra.includes(entry[0]));
}

/** "GB82 WEST 1234 5698 7654 32" -> "****5432"; 4 characters or fewer -> "****". */
export function mask(value) {
  const chars = String(value).replace(/[^0-9A-Za-z]/g, '');
  return chars.length > 4 ? `****${chars.slice(-4)}` : '****';
}

// One JSON token: a string (with its quotes), a structural character, or a scalar (number,
// true, false, null). Whitespace between tokens is skipped by the search and copied with the
// unchanged text around masked values.
const TOKEN = /"(?:[^"\\]|\\.)*"|[{}[\]:,]|[^"{}[\]:,\s]+/g;

const NO_KEYS = [];
// The last extra-key list and its normalized form: a warm instance passes the same list (its
// setting) on every call, so it is normalized once, not per event.
let lastExtraKeys = NO_KEYS;
let lastNormalized = NO_KEYS;

function normalizedExtraKeys(keys) {
  if (keys !== lastExtraKeys) {
    lastNormalized = keys.map(normalizeKey).filter((k) => k !== '');
    lastExtraKeys = keys;
  }
  return lastNormalized;
}

/**
 * Masks every string or number under a sensitive key (at any depth; a sensitive key holding an
 * object or array has all its strings and numbers masked). Returns the new text and how many
 * values were masked. Throws a SyntaxError if `text` is not JSON.
 *
 * Works token by token (the regular expression engine finds them) rather than character by
 * character: in the component the JavaScript runs interpreted, and a loop per character cost
 * more than everything else in a call.
 *
 * @param {string} text JSON text
 * @param {{extraKeys?: string[], fullScan?: boolean}} [options] extra key names to mask (any
 *   spelling); `fullScan` skips the shortcut for texts without sensitive keys (for tests)
 * @returns {{text: string, count: number}}
 */
export function redactJson(text, options = {}) {
  JSON.parse(text); // validates; the scan below may then assume well-formed JSON
  const extra = normalizedExtraKeys(options.extraKeys ?? NO_KEYS);
  if (!options.fullScan && extra.length === 0 && !text.includes('\\') &&
    !MAY_BE_SENSITIVE.test(text)) {
    return { text, count: 0 };
  }
  const out = [];
  let copied = 0; // text before this index is in `out` or replaced there
  let count = 0;
  // Open containers, innermost last: whether each is an object, and whether it is sensitive
  // (under a sensitive key, or inside a container that is).
  const isObject = [];
  const sensitive = [];
  let expectKey = false; // the next string in the innermost object is a key
  let keySensitive = false; // the value after the current key is masked

  const replace = (start, end, masked) => {
    out.push(text.slice(copied, start), JSON.stringify(masked));
    copied = end;
    count++;
  };
  // Whether the value starting now is masked.
  const valueSensitive = () => {
    const depth = isObject.length;
    if (depth === 0) return false;
    return isObject[depth - 1] ? keySensitive : sensitive[depth - 1];
  };

  TOKEN.lastIndex = 0;
  for (let m; (m = TOKEN.exec(text)) !== null; ) {
    const token = m[0];
    const c = token[0];
    if (c === '{' || c === '[') {
      sensitive.push(valueSensitive());
      isObject.push(c === '{');
      expectKey = c === '{';
    } else if (c === '}' || c === ']') {
      sensitive.pop();
      isObject.pop();
      expectKey = false;
    } else if (c === ',') {
      expectKey = isObject.length > 0 && isObject[isObject.length - 1];
    } else if (c === ':') {
      // the key was already seen
    } else if (c === '"') {
      if (expectKey) {
        keySensitive = sensitive[sensitive.length - 1] || isSensitiveKey(JSON.parse(token), extra);
        expectKey = false;
      } else if (valueSensitive()) {
        replace(m.index, TOKEN.lastIndex, mask(JSON.parse(token)));
      }
    } else if (valueSensitive() && /^-?[0-9]/.test(token)) {
      // A number: its own digits, so a long number is never rounded through a double.
      replace(m.index, TOKEN.lastIndex, mask(token.replace(/[.eE+-].*$/, '')));
    }
  }
  if (count === 0) return { text, count };
  out.push(text.slice(copied));
  return { text: out.join(''), count };
}
