package discovery

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"
)

// blockingQuery runs query as a Consul blocking query until ctx ends. Each
// call carries ctx, the wait time and the last index seen; errors are passed
// to failed and retried with capped, jittered backoff, which a send on nudge
// cuts short. Consul's index may go backwards (snapshot restore, leader
// change): the loop then starts over at 0 rather than block forever on a
// future index. query acts on its answer itself and returns Consul's
// QueryMeta; the resolver and the watchers below share this loop.
func blockingQuery(ctx context.Context, o options, nudge <-chan struct{},
	query func(q *api.QueryOptions) (*api.QueryMeta, error), failed func(err error, failures int)) {
	var index uint64
	failures := 0
	for {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: o.waitTime}).WithContext(ctx)
		meta, err := query(q)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			failed(err, failures)
			if !sleep(ctx, nudge, o.backoff.delay(failures-1)) {
				return
			}
			continue
		}
		failures = 0
		if meta.LastIndex < index || meta.LastIndex == 0 {
			index = 0
		} else {
			index = meta.LastIndex
		}
	}
}

// sleep waits d, or less if nudge fires; it reports false when ctx ends.
func sleep(ctx context.Context, nudge <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-nudge:
	}
	return true
}

// WatchHealthy calls fn with the IDs (sorted) of the passing instances of a
// Consul service whenever that list changes, until ctx ends. It blocks. When
// Consul cannot be reached it logs, retries with capped, jittered backoff and
// says nothing to fn, so the last list stays in force.
func WatchHealthy(ctx context.Context, client *api.Client, service string, fn func(ids []string), opts ...Option) {
	o := buildOptions(opts)
	var last []string
	first := true
	blockingQuery(ctx, o, nil, func(q *api.QueryOptions) (*api.QueryMeta, error) {
		entries, meta, err := client.Health().Service(service, "", true, q)
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(entries))
		for _, e := range entries {
			if e.Service != nil {
				ids = append(ids, e.Service.ID)
			}
		}
		slices.Sort(ids)
		if first || !slices.Equal(ids, last) {
			first, last = false, ids
			fn(ids)
		}
		return meta, nil
	}, watchFailed(o, "service", service))
}

// WatchPrefix calls fn with every key under a Consul KV prefix whenever one
// of them changes (and once at the start, possibly with none), until ctx
// ends. It blocks. Errors are logged and retried as in WatchHealthy; fn is
// not called for them.
func WatchPrefix(ctx context.Context, client *api.Client, prefix string, fn func(api.KVPairs), opts ...Option) {
	o := buildOptions(opts)
	var lastIndex uint64
	first := true
	blockingQuery(ctx, o, nil, func(q *api.QueryOptions) (*api.QueryMeta, error) {
		pairs, meta, err := client.KV().List(prefix, q)
		if err != nil {
			return nil, err
		}
		if first || meta.LastIndex != lastIndex {
			first, lastIndex = false, meta.LastIndex
			fn(pairs)
		}
		return meta, nil
	}, watchFailed(o, "prefix", prefix))
}

func watchFailed(o options, kind, name string) func(error, int) {
	return func(err error, failures int) {
		o.logger.Warn("consul watch failed", kind, name, "error", fmt.Errorf("consul: watching %s %q: %w", kind, name, err), "failures", failures)
	}
}
