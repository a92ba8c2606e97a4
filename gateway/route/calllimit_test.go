package route

import (
	"context"
	"testing"
	"time"
)

func TestCallLimit(t *testing.T) {
	within := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}
	for _, c := range []struct {
		name         string
		timeout, max time.Duration
		ctx          context.Context
		want         time.Duration
	}{
		{"no deadline: the timeout", 5 * time.Second, time.Minute, context.Background(), 5 * time.Second},
		{"no deadline, no timeout: the maximum", 0, time.Minute, context.Background(), time.Minute},
		{"no deadline, neither: none", 0, 0, context.Background(), 0},
		{"a deadline over the maximum: the maximum", 5 * time.Second, time.Minute, within(time.Hour), time.Minute},
		{"a deadline within the maximum stands", 5 * time.Second, time.Minute, within(30 * time.Second), 0},
		{"a deadline and no maximum stands", 5 * time.Second, 0, within(time.Hour), 0},
	} {
		r := &Route{Timeout: c.timeout, MaxTimeout: c.max}
		if got := r.CallLimit(c.ctx); got != c.want {
			t.Errorf("%s: CallLimit = %v, want %v", c.name, got, c.want)
		}
	}
}
