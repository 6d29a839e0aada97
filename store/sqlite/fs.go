package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// checkPath tells, before anything is created, why a database path cannot
// work (a directory; a parent that does not exist or is not a directory),
// naming the path, and whether the file is still to be created.
func checkPath(path string) (created bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return false, fmt.Errorf("sqlite: database path %s is a directory: give a file path such as %s", path, filepath.Join(path, "keybrake.db"))
	case err == nil:
		return false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("sqlite: database path %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("sqlite: database path %s: the directory %s does not exist (create it first)", path, dir)
	case err != nil:
		return false, fmt.Errorf("sqlite: database path %s: %w", path, err)
	case !di.IsDir():
		return false, fmt.Errorf("sqlite: database path %s: %s is not a directory", path, dir)
	}
	return true, nil
}

// removeNew removes a database Open created and could not finish, with
// its WAL, shared-memory and lock files.
func removeNew(path string) {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal", ".lock"} {
		os.Remove(path + suffix) //nolint:errcheck // best effort: it may not exist
	}
}
