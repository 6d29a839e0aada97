// Package sdktest runs the vendors' official SDKs, unmodified, against a
// live in-process Keybrake: stripe-go (against the sandbox and against
// stripe-mock), twilio-go, resend-go, and stripe-node through `node --test`.
// Each SDK is configured only with the vault key and Keybrake's address, as
// an agent team would configure it. The package holds tests only.
package sdktest
