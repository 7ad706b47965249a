"""Unit tests of routing.py (plain Python, no component needed)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import routing  # noqa: E402


class RoutingTest(unittest.TestCase):
    def test_settings(self):
        self.assertEqual(routing.parse_currencies(" usd,USDT ,,"), frozenset({"USD", "USDT"}))
        with self.assertRaisesRegex(routing.SettingError, "is required"):
            routing.parse_currencies(None)
        with self.assertRaisesRegex(routing.SettingError, "no currency"):
            routing.parse_currencies(" , ")

    def test_currency_keys(self):
        self.assertEqual(routing.find_currency('{"coin": "usdt", "Amount": "1"}'), "USDT")
        self.assertEqual(routing.find_currency('{"Currency": "NGN"}'), "NGN")
        self.assertEqual(routing.find_currency('{"Asset": "btc"}'), "BTC")
        self.assertEqual(
            routing.find_currency('{"sourceCurrency": "usdc", "destinationCurrency": "gbp"}'),
            "USDC",
        )
        # "currency" wins over "coin" whatever the order in the object.
        self.assertEqual(routing.find_currency('{"coin": "BTC", "currency": "USD"}'), "USD")
        self.assertIsNone(routing.find_currency('{"amount": "1"}'))
        self.assertIsNone(routing.find_currency("not json{"))
        self.assertIsNone(routing.find_currency("[1]"))

    def test_decide(self):
        routed = frozenset({"USD", "USDT"})
        self.assertEqual(routing.decide(routed, '{"coin":"usdt"}'), routing.Decision(currency="USDT"))
        self.assertEqual(
            routing.decide(routed, '{"currency":"NGN"}').drop_reason,
            "currency NGN not routed here",
        )
        self.assertIn("no currency", routing.decide(routed, "{}").drop_reason)


if __name__ == "__main__":
    unittest.main()
