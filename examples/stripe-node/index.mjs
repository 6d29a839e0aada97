// stripe-node through Keybrake: the vault key as the API key, and
// host/port/protocol set to Keybrake. Install with `npm install stripe`.
//
//   KEYBRAKE_HOST=127.0.0.1 KEYBRAKE_PORT=8080 KEYBRAKE_PROTOCOL=http \
//   KEYBRAKE_VAULT_KEY=kbvk… node examples/stripe-node/index.mjs
import Stripe from 'stripe';

const stripe = new Stripe(process.env.KEYBRAKE_VAULT_KEY, {
  host: process.env.KEYBRAKE_HOST,
  port: Number(process.env.KEYBRAKE_PORT || 443),
  protocol: process.env.KEYBRAKE_PROTOCOL || 'https',
});

try {
  const pi = await stripe.paymentIntents.create({ amount: 500, currency: 'usd' });
  console.log('created', pi.id, 'spent so far $' + pi.lastResponse.headers['keybrake-spent-usd']);
} catch (err) {
  if (err.code === 'cap_exhausted') {
    // err.statusCode === 429; err.raw holds Keybrake's cap figures.
    console.error('the run budget is spent:', err.message);
    process.exit(1);
  }
  throw err;
}
