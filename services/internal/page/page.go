package page

import (
	"cmp"
	"encoding/base64"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// DefaultSize is the page size used when a request asks for 0.
	DefaultSize = 20
	// MaxSize is the largest page served; larger requests are capped to it
	// rather than rejected, as AIP-158 suggests.
	MaxSize = 100
)

// Request is a validated page request.
type Request struct {
	// Size is the number of records to return, 1 to MaxSize.
	Size int
	// After is the id the page continues after; empty for the first page.
	After string
}

// Parse validates a request's page_size and page_token. Tokens must have come
// from a list of ids that start with prefix, so a token from another
// collection is rejected instead of silently returning a wrong page.
func Parse(size int32, token, prefix string) (Request, error) {
	if size < 0 {
		return Request{}, status.Errorf(codes.InvalidArgument, "page_size must not be negative, got %d", size)
	}
	r := Request{Size: int(size)}
	switch {
	case r.Size == 0:
		r.Size = DefaultSize
	case r.Size > MaxSize:
		r.Size = MaxSize
	}
	if token == "" {
		return r, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !validID(string(raw), prefix) {
		return Request{}, status.Errorf(codes.InvalidArgument,
			"invalid page_token %q: use the next_page_token of a previous response", token)
	}
	r.After = string(raw)
	return r, nil
}

// Token returns the page token that continues after lastID.
func Token(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastID))
}

// Compare orders ids of the form prefix + zero-padded decimal number by their
// number: a longer id has outgrown the padding, so it is the larger one.
func Compare(a, b string) int {
	if c := cmp.Compare(len(a), len(b)); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// Slice returns the page of items that r selects and the token for the next
// page, empty when there is none. items must be sorted by id under Compare;
// keep decides which items count, for example those of one category.
func Slice[T any](items []T, id func(T) string, keep func(T) bool, r Request) (page []T, next string) {
	start := 0
	if r.After != "" {
		start = sort.Search(len(items), func(i int) bool { return Compare(id(items[i]), r.After) > 0 })
	}
	for _, it := range items[start:] {
		if keep != nil && !keep(it) {
			continue
		}
		if len(page) == r.Size {
			// There is at least one more: only now is a next page promised,
			// so the last page never ends with an empty one.
			return page, Token(id(page[len(page)-1]))
		}
		page = append(page, it)
	}
	return page, ""
}

func validID(id, prefix string) bool {
	digits, ok := strings.CutPrefix(id, prefix)
	if !ok || digits == "" {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
