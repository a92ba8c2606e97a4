package catalog

import "time"

// Option configures a Server.
type Option func(*options)

type options struct {
	seed  bool
	clock func() time.Time
}

func defaultOptions() options {
	return options{seed: true, clock: time.Now}
}

// WithoutSeed starts the catalog empty instead of with example products.
func WithoutSeed() Option {
	return func(o *options) { o.seed = false }
}

// WithClock sets where create_time and update_time come from, so that tests
// can assert exact timestamps.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.clock = now }
}
