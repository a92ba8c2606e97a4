package orders

import "time"

// Option configures a Server.
type Option func(*options)

type options struct {
	step  time.Duration
	clock func() time.Time
}

func defaultOptions() options {
	return options{step: 5 * time.Second, clock: time.Now}
}

// WithStatusStep sets how long an order stays in each status before it moves
// on: PENDING to CONFIRMED, then CONFIRMED to SHIPPED. Zero or less turns
// automatic progression off, so orders stay PENDING until cancelled. The
// default is 5s, slow enough to watch and to cancel by hand.
func WithStatusStep(d time.Duration) Option {
	return func(o *options) { o.step = d }
}

// WithClock sets where create_time and update_time come from. It does not
// drive progression, which always runs on real timers.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.clock = now }
}
