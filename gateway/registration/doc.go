// Package registration puts the gateway itself into Consul: one entry per
// replica, with an HTTP check on the admin listener's /readyz, so replicas
// can count each other (rate_limit.mode: cluster) and load balancers can
// find them. The entry's ID is chosen when it is built, so policies can
// recognise their own replica before it is registered.
package registration
