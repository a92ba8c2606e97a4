// Package catalog is the example catalog backend: an in-memory
// catalogv1.CatalogService.
//
// It exists so that the gateway has something real to route to in demos and
// end-to-end tests, and so that the orders service has prices and stock to
// check against. Everything lives in memory and is lost when the process
// exits. A new Server starts with a handful of products, so that the first
// GET through the gateway already shows data; WithoutSeed starts it empty.
//
// Run it with services/host, which adds health checking, reflection and
// Consul registration; cmd/catalog is the binary.
package catalog
