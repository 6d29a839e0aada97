package stepfunctions_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var definitions = []string{"billing.asl.json", "billing-retry.asl.json"}

// TestDefinitionsValidate runs asl-validator (npm) on the definitions, and
// checks that it does reject a broken one.
func TestDefinitionsValidate(t *testing.T) {
	dir := nodeDir(t)
	validator := filepath.Join(dir, "node_modules", ".bin", "asl-validator")
	args := []string{}
	for _, d := range definitions {
		p, _ := filepath.Abs(filepath.Join("statemachine", d))
		args = append(args, "--json-path", p)
	}
	out, err := exec.Command(validator, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("asl-validator: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "is valid"); n != len(definitions) {
		t.Fatalf("asl-validator validated %d definitions, want %d:\n%s", n, len(definitions), out)
	}

	// A catch-all pointing at a state that does not exist must be refused.
	broken := readDefinition(t, "billing.asl.json")
	broken["States"].(map[string]any)["ChargeCustomers"].(map[string]any)["Catch"].([]any)[0].(map[string]any)["Next"] = "NoSuchState"
	b, _ := json.Marshal(broken)
	out, err = exec.Command(validator, "--json-definition", string(b)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "NoSuchState") {
		t.Fatalf("asl-validator accepted a definition with a missing Catch target (err %v):\n%s", err, out)
	}
}

func readDefinition(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("statemachine", name))
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// seedStates is the seed's definition, verbatim where it matters: the
// Parameters of IssueVaultKey, the Map's ItemSelector, concurrency and the
// CapExhausted catch. Our definitions may add to it, never change it.
const seedStates = `{
  "IssueVaultKey": {
    "Type": "Task",
    "Resource": "arn:aws:lambda:us-east-1:123456789:function:issue-vault-key",
    "Parameters": {
      "vendor": "stripe",
      "daily_usd_cap.$": "$.budget_usd",
      "allowed_endpoints": ["POST /v1/payment_intents"],
      "expires_in": "2h",
      "agent_run_label.$": "$$.Execution.Id"
    },
    "ResultPath": "$.vault",
    "Next": "FetchCustomers"
  },
  "FetchCustomers": {
    "Type": "Task",
    "Resource": "arn:aws:lambda:us-east-1:123456789:function:fetch-customers",
    "Parameters": { "plan_id.$": "$.plan_id" },
    "ResultPath": "$.customers",
    "Next": "ChargeCustomers"
  },
  "ChargeCustomers": {
    "Type": "Map",
    "ItemsPath": "$.customers",
    "MaxConcurrency": 0,
    "ItemSelector": {
      "customer.$": "$$.Map.Item.Value",
      "item_index.$": "$$.Map.Item.Index",
      "vault_key.$": "$.vault.vault_key",
      "execution_id.$": "$$.Execution.Id"
    },
    "Iterator": {
      "StartAt": "ChargeOne",
      "States": {
        "ChargeOne": {
          "Type": "Task",
          "Resource": "arn:aws:lambda:us-east-1:123456789:function:charge-customer",
          "Catch": [{ "ErrorEquals": ["CapExhausted"], "Next": "CapHitEnd" }],
          "End": true
        },
        "CapHitEnd": { "Type": "Succeed" }
      }
    }
  }
}`

// TestDefinitionsKeepTheSeed: every field of the seed's states is present
// with the seed's value (ChargeCustomers' End becomes a Next to the revoke).
func TestDefinitionsKeepTheSeed(t *testing.T) {
	var seed map[string]any
	if err := json.Unmarshal([]byte(seedStates), &seed); err != nil {
		t.Fatal(err)
	}
	for _, name := range definitions {
		d := readDefinition(t, name)
		if d["StartAt"] != "IssueVaultKey" {
			t.Errorf("%s: StartAt %v", name, d["StartAt"])
		}
		states := d["States"].(map[string]any)
		for sname, sv := range seed {
			got, ok := states[sname].(map[string]any)
			if !ok {
				t.Errorf("%s: state %s missing", name, sname)
				continue
			}
			assertContains(t, name+": "+sname, sv, got)
		}
	}
}

// assertContains checks that every key of want is in got with an equal
// value (recursively for objects), except fields a definition may extend.
func assertContains(t *testing.T, where string, want, got any) {
	t.Helper()
	wm, ok := want.(map[string]any)
	if !ok {
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s: %v, want the seed's %v", where, got, want)
		}
		return
	}
	gm, ok := got.(map[string]any)
	if !ok {
		t.Errorf("%s: %v is not an object", where, got)
		return
	}
	for k, wv := range wm {
		if k == "End" && gm["Next"] == "RevokeVaultKey" {
			continue // the revoke state follows the Map
		}
		if k == "Catch" || k == "Retry" {
			// Added catchers and retriers come after the seed's.
			wl, gl := wv.([]any), asList(gm[k])
			if len(gl) < len(wl) {
				t.Errorf("%s.%s: %v lacks the seed's %v", where, k, gl, wl)
				continue
			}
			assertContains(t, where+"."+k, wl, gl[:len(wl)])
			continue
		}
		assertContains(t, where+"."+k, wv, gm[k])
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// TestDefinitionsRevokeOnEveryPath: each top-level state after IssueVaultKey
// either is a revoke state or catches States.ALL into one, and the only
// successful end is RevokeVaultKey: no execution ends with its key alive.
func TestDefinitionsRevokeOnEveryPath(t *testing.T) {
	for _, name := range definitions {
		states := readDefinition(t, name)["States"].(map[string]any)
		isRevoke := func(s string) bool {
			st, _ := states[s].(map[string]any)
			res, _ := st["Resource"].(string)
			return strings.HasSuffix(res, ":function:revoke-vault-key")
		}
		for sname, sv := range states {
			st := sv.(map[string]any)
			typ := st["Type"].(string)
			if isRevoke(sname) || typ == "Fail" {
				continue
			}
			if end, _ := st["End"].(bool); end {
				t.Errorf("%s: %s ends the execution without revoking the key", name, sname)
			}
			if next, _ := st["Next"].(string); next != "" && states[next] == nil {
				t.Errorf("%s: %s goes to missing %s", name, sname, next)
			}
			caught := false
			for _, c := range asList(st["Catch"]) {
				cm := c.(map[string]any)
				for _, e := range asList(cm["ErrorEquals"]) {
					if e == "States.ALL" && isRevoke(cm["Next"].(string)) {
						caught = true
					}
				}
			}
			if !caught {
				t.Errorf("%s: a failure in %s would end the execution without revoking its key (no States.ALL catch into a revoke state)", name, sname)
			}
		}
		rv := states["RevokeVaultKey"].(map[string]any)
		if rv["End"] != true {
			t.Errorf("%s: RevokeVaultKey is not the last state", name)
		}
	}
}

// TestRetryVariantRetriesOnlyTransientErrors: ChargeOne's Retry must never
// match CapExhausted. Step Functions evaluates Retry before Catch, and
// States.ALL / States.TaskFailed match every error a Lambda reports.
func TestRetryVariantRetriesOnlyTransientErrors(t *testing.T) {
	d := readDefinition(t, "billing-retry.asl.json")
	charge := d["States"].(map[string]any)["ChargeCustomers"].(map[string]any)["Iterator"].(map[string]any)["States"].(map[string]any)["ChargeOne"].(map[string]any)
	retry := asList(charge["Retry"])
	if len(retry) == 0 {
		t.Fatal("ChargeOne has no Retry in billing-retry.asl.json")
	}
	sawTransient := false
	for _, r := range retry {
		for _, e := range asList(r.(map[string]any)["ErrorEquals"]) {
			switch e {
			case "States.ALL", "States.TaskFailed", "CapExhausted", "KeybrakeRefused", "VendorRejected", "InvalidInput":
				t.Errorf("ChargeOne retries %s", e)
			case "KeybrakeTransient":
				sawTransient = true
			}
		}
	}
	if !sawTransient {
		t.Error("ChargeOne does not retry KeybrakeTransient")
	}
	base := readDefinition(t, "billing.asl.json")
	if r := base["States"].(map[string]any)["ChargeCustomers"].(map[string]any)["Iterator"].(map[string]any)["States"].(map[string]any)["ChargeOne"].(map[string]any)["Retry"]; r != nil {
		t.Errorf("billing.asl.json's ChargeOne has a Retry (%v); the seed's has none", r)
	}
}
