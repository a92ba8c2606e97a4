package discovery

import "google.golang.org/grpc/resolver"

// Observer is told what the resolver's watchers see: the gateway's stats
// turn it into metrics, the admin page and readiness. Methods are called
// from the watcher goroutines, one watcher per target, and must not block.
type Observer interface {
	// Instances reports the passing instances of service after each change,
	// the first answer included. An empty list is a real answer.
	Instances(service string, instances []Instance)
	// WatchOK reports that Consul answered a query about service, whether
	// or not anything changed.
	WatchOK(service string)
	// WatchError reports a failed query about service. The resolver keeps
	// the last known instances and retries.
	WatchError(service string, err error)
}

// Instance is one passing instance of a Consul service.
type Instance struct {
	// ID is the Consul service ID.
	ID string
	// Addr is the host:port that calls go to.
	Addr string
}

// WithObserver adds an observer to every watcher the Builder starts. Only
// the resolver reports to observers; WatchHealthy and WatchPrefix, which
// take the same options, ignore them.
func WithObserver(o Observer) Option {
	return func(opts *options) { opts.observers = append(opts.observers, o) }
}

func (o options) watchOK(service string) {
	for _, ob := range o.observers {
		ob.WatchOK(service)
	}
}

func (o options) watchError(service string, err error) {
	for _, ob := range o.observers {
		ob.WatchError(service, err)
	}
}

func (o options) instances(service string, eps []resolver.Endpoint) {
	if len(o.observers) == 0 {
		return
	}
	list := make([]Instance, 0, len(eps))
	for _, ep := range eps {
		if len(ep.Addresses) > 0 {
			list = append(list, Instance{ID: InstanceID(ep), Addr: ep.Addresses[0].Addr})
		}
	}
	for _, ob := range o.observers {
		ob.Instances(service, list)
	}
}
