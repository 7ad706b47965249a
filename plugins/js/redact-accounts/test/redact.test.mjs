// Unit tests of the redaction (plain Node: `npm test`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mask, isSensitiveKey, redactJson } from '../src/redact.js';

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
