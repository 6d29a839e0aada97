package kbtest

import "testing"

func TestContractLoads(t *testing.T) {
	if _, err := LoadContract(AdminToken); err != nil {
		t.Fatal(err)
	}
}
