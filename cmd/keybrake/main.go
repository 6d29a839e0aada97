// Command keybrake runs the Keybrake proxy and talks to its admin API.
//
//	keybrake serve                 run the proxy and the admin API
//	keybrake demo                  play the Step Functions fan-out scenario locally
//	keybrake key issue|list|show|revoke
//	keybrake calls                 read the audit log
//	keybrake report LABEL          per-run spend summary
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
