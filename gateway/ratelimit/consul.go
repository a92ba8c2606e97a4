package ratelimit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
)

// DefaultSettingsPrefix is the Consul KV prefix the gateway watches for
// limit changes: one key per service or method under it.
const DefaultSettingsPrefix = "portico/settings/ratelimit"

// WithCluster turns on cluster mode: the limiter watches the passing
// instances of the Consul service that the gateway replicas register as,
// and enforces 1/n of each limit where n counts them, self included (self
// is this replica's Consul service ID, counted even before its own check
// passes). When Consul cannot be reached, the last count stays.
func WithCluster(client *api.Client, service, self string, watch ...discovery.Option) Option {
	return func(o *options) {
		o.watchers = append(o.watchers, func(ctx context.Context, l *Limiter) {
			discovery.WatchHealthy(ctx, client, service, func(ids []string) {
				n := len(ids)
				if _, found := slices.BinarySearch(ids, self); !found {
					n++
				}
				l.SetReplicas(n)
			}, append([]discovery.Option{discovery.WithLogger(l.opts.logger)}, watch...)...)
		})
	}
}

// WithSettings makes the limiter follow limit overrides kept in Consul KV
// under prefix, with blocking queries, so limits change without a restart.
// Keys are <prefix>/<service> (every method of the service) and
// <prefix>/<service>/<method>; values are JSON limits (ParseLimit). A bad
// value is logged and ignored: the key's last good value stays in force.
func WithSettings(client *api.Client, prefix string, watch ...discovery.Option) Option {
	prefix = strings.TrimSuffix(prefix, "/") + "/"
	return func(o *options) {
		o.watchers = append(o.watchers, func(ctx context.Context, l *Limiter) {
			discovery.WatchPrefix(ctx, client, prefix, func(pairs api.KVPairs) {
				l.applySettings(prefix, pairs)
			}, append([]discovery.Option{discovery.WithLogger(l.opts.logger)}, watch...)...)
		})
	}
}

// applySettings turns the KV pairs under prefix into overrides.
func (l *Limiter) applySettings(prefix string, pairs api.KVPairs) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := map[string]policy.RateLimit{}
	for _, p := range pairs {
		name := strings.Trim(strings.TrimPrefix(p.Key, prefix), "/")
		if name == "" || (strings.HasSuffix(p.Key, "/") && len(p.Value) == 0) {
			continue // a folder
		}
		lim, err := l.parseSetting(name, p.Value)
		if err != nil {
			last, had := l.kvGood[name]
			l.opts.logger.Warn("ignoring bad rate limit in consul kv", "key", p.Key, "error", err, "keeping", keeping(last, had))
			if had {
				next[name] = last
			}
			continue
		}
		next[name] = lim
	}
	if maps.Equal(next, l.overrides) {
		return
	}
	l.kvGood = next
	l.overrides = next
	l.relimit()
	l.opts.logger.Info("rate limits from consul kv applied", "prefix", prefix, "overrides", len(next))
}

func keeping(last policy.RateLimit, had bool) string {
	if !had {
		return "declared limit"
	}
	return last.String()
}

func (l *Limiter) parseSetting(name string, value []byte) (policy.RateLimit, error) {
	service, method, _ := strings.Cut(name, "/")
	if strings.Contains(method, "/") {
		return policy.RateLimit{}, errors.New("want <service> or <service>/<method> under the prefix")
	}
	if l.opts.known != nil && !l.opts.known(service, method) {
		if method == "" {
			return policy.RateLimit{}, fmt.Errorf("no service %q is served by this gateway", service)
		}
		return policy.RateLimit{}, fmt.Errorf("service %q has no method %q", service, method)
	}
	return ParseLimit(value)
}

// ParseLimit reads a limit as kept in Consul KV:
//
//	{"requests": 100, "period": "1m", "burst": 20}
//
// period is a Go duration; burst defaults to requests; {"requests": 0}
// lifts the limit. Unknown fields are errors.
func ParseLimit(value []byte) (policy.RateLimit, error) {
	var v struct {
		Requests *uint32 `json:"requests"`
		Period   string  `json:"period"`
		Burst    uint32  `json:"burst"`
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return policy.RateLimit{}, fmt.Errorf(`want JSON like {"requests": 100, "period": "1m", "burst": 20}: %w`, err)
	}
	if dec.More() {
		return policy.RateLimit{}, errors.New("more than one JSON value")
	}
	if v.Requests == nil {
		return policy.RateLimit{}, errors.New(`"requests" is required (0 lifts the limit)`)
	}
	if *v.Requests == 0 {
		return policy.RateLimit{}, nil
	}
	period, err := time.ParseDuration(v.Period)
	if err != nil || period <= 0 {
		return policy.RateLimit{}, fmt.Errorf(`"period" %q: want a positive duration such as "1s" or "1m"`, v.Period)
	}
	lim := policy.RateLimit{Requests: *v.Requests, Period: period, Burst: v.Burst}
	if lim.Burst == 0 {
		lim.Burst = lim.Requests
	}
	return lim, nil
}
