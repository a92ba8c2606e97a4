// Package page implements the list paging that the example services share.
//
// Both services keep their records in id order and hand out opaque page
// tokens that name the last id of the previous page. Continuing after an id,
// rather than at an offset, keeps paging stable while records are created and
// deleted between two calls: nothing is skipped and nothing is repeated.
package page
