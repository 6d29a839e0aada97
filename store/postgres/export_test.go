package postgres

import "time"

// WithTimings shortens the instance-name protocol's periods (beat, lease,
// watch) so tests of it run in a second.
func WithTimings(o Options, beat, lease, watch time.Duration) Options {
	o.timings = timings{beat: beat, lease: lease, watch: watch}
	return o
}
