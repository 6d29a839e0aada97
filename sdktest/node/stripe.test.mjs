// stripe-node, unmodified, through a live Keybrake. sdktest.TestStripeNode
// (Go) starts Keybrake in front of the Stripe sandbox, issues a vault key
// with a $10 daily cap allowing only POST /v1/payment_intents, and runs
// this file with the address and the key in the environment. The Go side
// then checks that the vendor received only the call within the cap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Stripe from 'stripe';

const { KEYBRAKE_HOST, KEYBRAKE_PORT, KEYBRAKE_PROTOCOL, KEYBRAKE_VAULT_KEY } = process.env;
if (!KEYBRAKE_HOST || !KEYBRAKE_VAULT_KEY) {
  throw new Error('run through `go test ./sdktest -run TestStripeNode`: KEYBRAKE_HOST and KEYBRAKE_VAULT_KEY are not set');
}

// The only Keybrake-specific lines: the vault key, and host/port/protocol.
const stripe = new Stripe(KEYBRAKE_VAULT_KEY, {
  host: KEYBRAKE_HOST,
  port: Number(KEYBRAKE_PORT),
  protocol: KEYBRAKE_PROTOCOL || 'https',
  maxNetworkRetries: 0,
  telemetry: false,
});

test('a payment intent within the cap returns the typed object', async () => {
  const pi = await stripe.paymentIntents.create({ amount: 600, currency: 'usd' });
  assert.match(pi.id, /^pi_/);
  assert.equal(pi.amount, 600);
  assert.equal(pi.currency, 'usd');
  assert.equal(pi.lastResponse.headers['keybrake-spent-usd'], '6.00');
});

test('past the cap: StripeRateLimitError, HTTP 429, code cap_exhausted', async () => {
  await assert.rejects(
    stripe.paymentIntents.create({ amount: 500, currency: 'usd' }),
    (err) => {
      assert.equal(err.type, 'StripeRateLimitError');
      assert.equal(err.statusCode, 429);
      assert.equal(err.code, 'cap_exhausted');
      // Keybrake's own fields ride along in the raw body.
      assert.equal(err.raw.code, 'cap_exhausted');
      return true;
    },
  );
});

test('outside the allow-list: HTTP 403, code endpoint_not_allowed', async () => {
  await assert.rejects(
    stripe.customers.create({ email: 'a@example.com' }),
    (err) => {
      assert.equal(err.type, 'StripePermissionError');
      assert.equal(err.statusCode, 403);
      assert.equal(err.code, 'endpoint_not_allowed');
      return true;
    },
  );
});
