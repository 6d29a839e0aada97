package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Every duration Keybrake reads — a flag, an environment variable, the API's
// expires_in — follows one rule: a Go duration ("90s", "5m", "1h30m") or a
// bare whole number of seconds ("60"). Negative durations are refused.

// parseDuration reads a duration by that rule.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > int64(time.Duration(1<<63-1)/time.Second) {
			return 0, fmt.Errorf("%q: want a duration such as 30s, 5m or 24h, or whole seconds", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a duration such as 30s, 5m or 24h, or whole seconds", s)
	}
	return d, nil
}

// durationValue is a pflag.Value that parses with parseDuration, so
// --upstream-timeout 60 means what --expires-in 60 does: 60 seconds.
type durationValue time.Duration

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

func (d *durationValue) Type() string { return "duration" }

func (d *durationValue) String() string { return time.Duration(*d).String() }

// durationVar defines a duration flag read by parseDuration.
func durationVar(fl *pflag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fl.Var((*durationValue)(p), name, usage)
}
