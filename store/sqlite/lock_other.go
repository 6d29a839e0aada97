//go:build !unix

package sqlite

// lockFile is a no-op where flock is unavailable; run one process per file.
func lockFile(string) (func() error, error) { return nil, nil }
