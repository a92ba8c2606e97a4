package page

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("x-%06d", i+1)
	}
	return out
}

func identity(s string) string { return s }

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		size   int32
		token  string
		want   Request
		errMsg bool
	}{
		{name: "defaults", want: Request{Size: DefaultSize}},
		{name: "explicit size", size: 7, want: Request{Size: 7}},
		{name: "capped size", size: 1000, want: Request{Size: MaxSize}},
		{name: "negative size", size: -1, errMsg: true},
		{name: "token", token: Token("x-000042"), want: Request{Size: DefaultSize, After: "x-000042"}},
		{name: "not base64", token: "!!!", errMsg: true},
		{name: "wrong prefix", token: Token("y-000042"), errMsg: true},
		{name: "not a number", token: Token("x-42a"), errMsg: true},
		{name: "prefix only", token: Token("x-"), errMsg: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.size, tt.token, "x-")
			if tt.errMsg {
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("Parse error = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	got := []string{"x-1000000", "x-000010", "x-000002", "x-999999"}
	slices.SortFunc(got, Compare)
	want := []string{"x-000002", "x-000010", "x-999999", "x-1000000"}
	if !slices.Equal(got, want) {
		t.Fatalf("sorted = %v, want %v", got, want)
	}
}

func TestSliceWalksAllPages(t *testing.T) {
	all := ids(45)
	var seen []string
	r := Request{Size: 20}
	for range 10 { // at most 10 pages, far more than the 3 expected
		page, next := Slice(all, identity, nil, r)
		seen = append(seen, page...)
		if next == "" {
			break
		}
		var err error
		if r, err = Parse(20, next, "x-"); err != nil {
			t.Fatalf("Parse(next): %v", err)
		}
	}
	if !slices.Equal(seen, all) {
		t.Fatalf("pages returned %d ids, want all %d in order", len(seen), len(all))
	}
}

func TestSliceExactMultipleHasNoEmptyLastPage(t *testing.T) {
	all := ids(4)
	page, next := Slice(all, identity, nil, Request{Size: 2})
	if len(page) != 2 || next == "" {
		t.Fatalf("first page = %v, next %q", page, next)
	}
	page, next = Slice(all, identity, nil, Request{Size: 2, After: page[1]})
	if !slices.Equal(page, all[2:]) || next != "" {
		t.Fatalf("second page = %v, next %q; want %v and no next", page, next, all[2:])
	}
}

func TestSliceAfterDeletedID(t *testing.T) {
	all := []string{"x-000001", "x-000003", "x-000004"}
	page, _ := Slice(all, identity, nil, Request{Size: 10, After: "x-000002"})
	if !slices.Equal(page, all[1:]) {
		t.Fatalf("page = %v, want %v", page, all[1:])
	}
}

func TestSliceFilter(t *testing.T) {
	all := ids(10)
	even := func(s string) bool { return (s[len(s)-1]-'0')%2 == 0 }
	page, next := Slice(all, identity, even, Request{Size: 2})
	if want := []string{"x-000002", "x-000004"}; !slices.Equal(page, want) || next != Token("x-000004") {
		t.Fatalf("page = %v next %q, want %v", page, next, want)
	}
}
