package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/internal/kbtest"
)

// keybrake serve runs the collector at GOGC=400 under a memory limit unless
// the environment sets either, and says so in its "keybrake listening" line.
func TestServeTunesTheCollectorUnlessTold(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      []string
		percent  float64
		limitMiB float64
	}{
		{"defaults", nil, serveGCPercent, float64(memoryLimit(cgroupMemoryMax()) >> 20)},
		{"the environment's", []string{"GOGC", "150", "GOMEMLIMIT", "300MiB"}, 150, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"KEYBRAKE_DB", filepath.Join(t.TempDir(), "k.db"), "KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken}, tc.env...)
			p := kbtest.Serve(t, kbtest.EnvVars(env...), "--sandbox")
			var line map[string]any
			for _, l := range strings.Split(p.Logs(), "\n") {
				if strings.Contains(l, `"keybrake listening"`) {
					if err := json.Unmarshal([]byte(l), &line); err != nil {
						t.Fatalf("listening line %q: %v", l, err)
					}
				}
			}
			if line == nil {
				t.Fatalf("no listening line in:\n%s", p.Logs())
			}
			if line["gogc"] != tc.percent || line["gomemlimit_mib"] != tc.limitMiB {
				t.Fatalf("listening line says gogc=%v gomemlimit_mib=%v, want %v and %v", line["gogc"], line["gomemlimit_mib"], tc.percent, tc.limitMiB)
			}
		})
	}
}

func TestMemoryLimitFollowsASmallerContainer(t *testing.T) {
	for _, tc := range []struct{ cgroup, want int64 }{
		{0, defaultMemoryLimit},
		{512 << 20, 384 << 20},
		{8 << 30, defaultMemoryLimit},
	} {
		if got := memoryLimit(tc.cgroup); got != tc.want {
			t.Errorf("memoryLimit(%d) = %d, want %d", tc.cgroup, got, tc.want)
		}
	}
}
