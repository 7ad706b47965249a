// Unit tests of the redaction (plain Node: `npm test`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  KEY_WORDS, SENSITIVE_KEY_ENDINGS, SENSITIVE_KEYS, mask, isSensitiveKey, redactJson,
} from '../src/redact.js';

test('mask keeps the last four characters', () => {
  assert.equal(mask('0123456789'), '****6789');
  assert.equal(mask('GB82 WEST 1234 5698 7654 32'), '****5432');
  assert.equal(mask('4111-1111-1111-1234'), '****1234');
  assert.equal(mask('123'), '****');
});

test('key spellings', () => {
  for (const k of ['Account Number', 'account_number', 'accountNumber', 'Sender account number',
    'IBAN', 'beneficiary-iban', 'card_number', 'CardNo', 'pan', 'acct_no']) {
    assert.ok(isSensitiveKey(k), k);
  }
  for (const k of ['Account Name', 'amount', 'panel', 'account', 'accountNumberType']) {
    assert.ok(!isSensitiveKey(k), k);
  }
});

test('ledig virtual_account_credited', () => {
  const data = JSON.stringify({
    id: 'vac_3321', currency: 'NGN', Amount: '50000.00',
    'Sender account name': 'John Doe', 'Sender account number': '0987654321',
  });
  const { text, count } = redactJson(data);
  assert.equal(count, 1);
  assert.deepEqual(JSON.parse(text)['Sender account number'], '****4321');
  assert.equal(JSON.parse(text)['Sender account name'], 'John Doe');
});

test('nested, arrays, numbers, and everything else byte-identical', () => {
  const data = '{"amount": 10.50, "big": 123456789012345678901234567890,\n' +
    ' "payer": {"iban": "DE89 3704 0044 0532 0130 00", "cards": [{"card_number": 4111111111111111234}]},\n' +
    ' "account_number": ["11112222", "33334444"], "note": "acct \\"x\\"", "e": [], "o": {}}';
  const { text, count } = redactJson(data);
  assert.equal(count, 4);
  assert.equal(text,
    '{"amount": 10.50, "big": 123456789012345678901234567890,\n' +
    ' "payer": {"iban": "****3000", "cards": [{"card_number": "****1234"}]},\n' +
    ' "account_number": ["****2222", "****4444"], "note": "acct \\"x\\"", "e": [], "o": {}}');
});

test('extra keys, escaped keys, nothing to do', () => {
  const { text, count } = redactJson('{"Sort\\u0020Code": "12-34-56", "n": null}', {
    extraKeys: ['sort code'],
  });
  assert.equal(count, 1);
  assert.equal(text, '{"Sort\\u0020Code": "****3456", "n": null}');
  assert.deepEqual(redactJson('[1, "x", true]'), { text: '[1, "x", true]', count: 0 });
  assert.throws(() => redactJson('not json{'), SyntaxError);
});

test('every sensitive key contains a word the shortcut looks for', () => {
  for (const k of [...SENSITIVE_KEY_ENDINGS, ...SENSITIVE_KEYS]) {
    assert.ok(KEY_WORDS.some((w) => k.includes(w)), k);
  }
});

test('the shortcut for texts without sensitive keys changes no result', () => {
  // Keys and values from pieces that spell (or almost spell) sensitive keys in odd ways.
  const pieces = ['Acc', 'ount', ' ', '_', '-', '\u00a0', 'Num', 'ber', 'No', 'I', 'b', 'AN',
    'Card', 'c a r d', 'P', 'a', 'n', 'amount', 'id', 'name', 'x', '\\u0061', 'é', '9', 'Account Number', 'i-b-a-n', 'CardNo',
    'acct_no', 'pan'];
  let seed = 42; // mulberry32: the same documents on every run
  const next = (n) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
  const word = () => Array.from({ length: 1 + next(4) }, () => pieces[next(pieces.length)]).join('');
  const value = (depth) => {
    switch (next(depth > 2 ? 3 : 5)) {
      case 0: return `"${word()}"`;
      case 1: return String(next(1e9));
      case 2: return 'null';
      case 3: return `[${Array.from({ length: next(3) }, () => value(depth + 1)).join(', ')}]`;
      default: return `{${Array.from({ length: next(4) },
        () => `"${word()}": ${value(depth + 1)}`).join(', ')}}`;
    }
  };
  let unmasked = 0;
  for (let i = 0; i < 20000; i++) {
    const text = `{"${word()}": ${value(0)}, "${word()}": ${value(0)}}`;
    const fast = redactJson(text);
    assert.deepEqual(fast, redactJson(text, { fullScan: true }), text);
    if (fast.count === 0) unmasked++;
  }
  // Both kinds occur often: the comparison covers masking and the shortcut.
  assert.ok(unmasked > 2000 && unmasked < 18000, `${unmasked} of 20000 without a mask`);
});
