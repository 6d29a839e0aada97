package sqlstore

import (
	"github.com/keybrake/keybrake"
)

// keySearch is the WHERE terms of the dashboard's key filters: a label
// substring, case-insensitive (ASCII letters on both engines; others as
// the engine's lower() folds them), and keys that spent or reserved on the
// given UTC day.
func keySearch(f keybrake.KeyFilter, day, strpos string, arg func(any) string) []string {
	var where []string
	if f.LabelContains != "" {
		where = append(where, strpos+"(lower(agent_run_label), lower("+arg(f.LabelContains)+")) > 0")
	}
	if f.SpendingToday {
		where = append(where, "EXISTS (SELECT 1 FROM key_days d WHERE d.key_id = keys.id AND d.day = "+arg(day)+
			" AND (d.spent > 0 OR d.reserved > 0))")
	}
	return where
}
