package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/keybrake/keybrake/admin"
)

// addScopeFlags registers the scope fields of a key (or the ceilings of an
// issuer token's keys), each repeatable.
func addScopeFlags(fl *pflag.FlagSet, f *admin.ScopeFields, what string) {
	fl.StringArrayVar(&f.StripeAccounts, "stripe-account", nil, "a connected account (acct_…) "+what+" may act on with Stripe-Account; repeatable (without it: the platform account only)")
	fl.StringArrayVar(&f.StripeCustomers, "stripe-customer", nil, "a customer (cus_…) "+what+" may act on; repeatable")
	fl.StringArrayVar(&f.TwilioFrom, "twilio-from", nil, "a sender (+1555…, MG…) "+what+" may send from; repeatable")
	fl.StringArrayVar(&f.ResendFromDomains, "resend-from-domain", nil, "a domain "+what+" may send email from; repeatable")
}

// addPolicyFlags registers a key's scope, rate limit and idempotency scope.
func addPolicyFlags(fl *pflag.FlagSet, p *admin.KeyPolicy) {
	addScopeFlags(fl, &p.ScopeFields, "the key")
	fl.IntVar(&p.MaxCallsPerMinute, "max-calls-per-minute", 0, "calls the key may send in any 60 seconds (429 rate_limited past it; default no limit)")
	fl.StringVar(&p.IdempotencyScope, "idempotency-scope", "", "share vendor Idempotency-Keys with the other keys this issuer gives the same scope (an SQS message id)")
}

// printScope prints the scope fields that are set.
func printScope(w *tabwriter.Writer, f admin.ScopeFields) {
	for _, row := range []struct {
		name string
		vals []string
	}{{"stripe_accounts", f.StripeAccounts}, {"stripe_customers", f.StripeCustomers}, {"twilio_from", f.TwilioFrom}, {"resend_from_domains", f.ResendFromDomains}} {
		if row.vals != nil {
			fmt.Fprintf(w, "%s\t%s\n", row.name, strings.Join(row.vals, ", "))
		}
	}
}

// printPolicy prints a key's scope, rate limit and idempotency scope.
func printPolicy(w *tabwriter.Writer, p admin.KeyPolicy) {
	printScope(w, p.ScopeFields)
	if p.MaxCallsPerMinute > 0 {
		fmt.Fprintf(w, "max_calls_per_minute\t%d\n", p.MaxCallsPerMinute)
	}
	if p.IdempotencyScope != "" {
		fmt.Fprintf(w, "idempotency_scope\t%s\n", p.IdempotencyScope)
	}
}
