package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…"; without
// it the module version from the build information is used.
var version = ""

// buildInfo is what `keybrake version` reports, read from the binary's
// embedded build information (debug.ReadBuildInfo): the module version
// (v1.2.3 for `go install …@v1.2.3`, "(devel)" for a build from a clone),
// the VCS commit and its time for a build from a clone, and the Go version.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	CommitAt  string `json:"commit_time,omitempty"`
	Modified  bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

func readBuildInfo() buildInfo { return fromBuildInfo(debug.ReadBuildInfo()) }

func fromBuildInfo(info *debug.BuildInfo, ok bool) buildInfo {
	b := buildInfo{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok {
		if b.Version == "" {
			b.Version = "unknown"
		}
		return b
	}
	if b.Version == "" {
		b.Version = info.Main.Version
	}
	if info.GoVersion != "" {
		b.GoVersion = info.GoVersion
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.CommitAt = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is the one-line form: keybrake v1.2.3 (commit abc1234, 2024-06-01T12:00:00Z) go1.26 linux/amd64
func (b buildInfo) String() string {
	s := "keybrake " + b.Version
	if b.Commit != "" {
		c := b.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		if b.Modified {
			c += "+modified"
		}
		s += " (commit " + c
		if b.CommitAt != "" {
			s += ", " + b.CommitAt
		}
		s += ")"
	}
	return s + " " + b.GoVersion + " " + b.Platform
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version (--json for scripts)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b := readBuildInfo()
			if g.json {
				return g.printJSON(b)
			}
			fmt.Fprintln(g.stdout, b.String())
			return nil
		},
	}
}
