// Package orders is the example orders backend: an in-memory
// ordersv1.OrderService that checks prices and stock against the catalog.
//
// It is the gateway's second demo backend and the one with a server stream:
// orders move from PENDING to CONFIRMED to SHIPPED on their own, one step
// every WithStatusStep, so WatchOrder through the gateway has something to
// show. CreateOrder calls the catalog with the caller's context, so the
// deadline a client gives the gateway bounds the whole chain.
//
// Run it with services/host; cmd/orders is the binary, which finds the
// catalog through Consul.
package orders
