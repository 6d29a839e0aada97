package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/sqlite"
	"github.com/keybrake/keybrake/store/storetest"
)

// TestConformance runs the one store suite against SQLite, always.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "keybrake.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestOneProcessPerFile: a second open of the same file is refused, which is
// what makes recovering every pending call at start safe on SQLite.
func TestOneProcessPerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keybrake.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := sqlite.Open(t.Context(), path, sqlite.Options{}); err == nil {
		s2.Close()
		t.Fatal("a second Open of the same SQLite file succeeded")
	}
}

// TestConformanceUnbatched runs the suite with group commit off (one
// transaction per Decide and Settle): the baseline the benchmarks compare
// against must be just as correct.
func TestConformanceUnbatched(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "keybrake.db"), sqlite.Options{BatchSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
