package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/keybrake/keybrake/client"
)

// printGrants lists what each allowed endpoint of a key grants: the
// catalogue operations, with their method, path and price model.
func printGrants(w *tabwriter.Writer, k *client.Key) {
	for _, g := range k.AllowedOperations {
		for _, op := range g.Operations {
			fmt.Fprintf(w, "grants\t%s → %s (%s %s, %s)\n", g.Rule, op.Operation, op.Method, op.Path, op.PriceModel)
		}
	}
}
