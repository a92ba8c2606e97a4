package discovery

import (
	"math/rand/v2"
	"time"
)

// backoff is a capped exponential backoff with full jitter: the n-th retry
// waits a random time in [base*2^n/2, base*2^n), never more than max.
type backoff struct {
	base, max time.Duration
}

func (b backoff) delay(retries int) time.Duration {
	d := b.base
	for i := 0; i < retries && d < b.max; i++ {
		d *= 2
	}
	if d > b.max {
		d = b.max
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
