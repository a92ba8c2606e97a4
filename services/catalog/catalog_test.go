package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
)

// fakeClock returns a time one second later on every call.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("error = %v, want code %v", err, code)
	}
	if !strings.Contains(st.Message(), msgPart) {
		t.Fatalf("error message %q does not contain %q", st.Message(), msgPart)
	}
}

func product(sku string) *catalogv1.Product {
	return &catalogv1.Product{
		Sku:         sku,
		Name:        "Thing " + sku,
		Description: "A thing.",
		Price:       1250,
		Currency:    "EUR",
		Stock:       3,
		Category:    "things",
	}
}

func mustCreate(t *testing.T, s *Server, p *catalogv1.Product) *catalogv1.Product {
	t.Helper()
	resp, err := s.CreateProduct(context.Background(), &catalogv1.CreateProductRequest{Product: p})
	if err != nil {
		t.Fatalf("CreateProduct(%s): %v", p.GetSku(), err)
	}
	return resp.GetProduct()
}

func TestSeed(t *testing.T) {
	s := NewServer()
	resp, err := s.ListProducts(context.Background(), &catalogv1.ListProductsRequest{})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	if got := len(resp.GetProducts()); got != 6 {
		t.Fatalf("seeded %d products, want 6", got)
	}
	categories := map[string]bool{}
	for i, p := range resp.GetProducts() {
		if want := fmt.Sprintf("prd-%06d", i+1); p.GetId() != want {
			t.Errorf("product %d id = %q, want %q", i, p.GetId(), want)
		}
		if p.GetCurrency() != "EUR" || p.GetStock() <= 0 || p.GetPrice() <= 0 || p.GetName() == "" {
			t.Errorf("seed product %v is not realistic", p)
		}
		if p.GetCreateTime() == nil || p.GetUpdateTime() == nil {
			t.Errorf("seed product %s has no timestamps", p.GetId())
		}
		categories[p.GetCategory()] = true
	}
	if !categories["books"] || !categories["kitchen"] {
		t.Errorf("seed categories = %v, want books and kitchen among them", categories)
	}
	if resp.GetNextPageToken() != "" {
		t.Errorf("next_page_token = %q, want none for 6 products", resp.GetNextPageToken())
	}
}

func TestWithoutSeed(t *testing.T) {
	s := NewServer(WithoutSeed())
	resp, err := s.ListProducts(context.Background(), &catalogv1.ListProductsRequest{})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	if len(resp.GetProducts()) != 0 {
		t.Fatalf("got %d products, want none", len(resp.GetProducts()))
	}
	if p := mustCreate(t, s, product("A-001")); p.GetId() != "prd-000001" {
		t.Fatalf("first id = %q, want prd-000001", p.GetId())
	}
}

func TestCRUD(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	s := NewServer(WithoutSeed(), WithClock(clock.Now))

	in := product("KT-PAN-24")
	created := mustCreate(t, s, in)
	if created.GetId() != "prd-000001" {
		t.Errorf("id = %q, want prd-000001", created.GetId())
	}
	wantTime := time.Date(2025, 3, 1, 12, 0, 1, 0, time.UTC)
	if got := created.GetCreateTime().AsTime(); !got.Equal(wantTime) {
		t.Errorf("create_time = %v, want %v", got, wantTime)
	}
	if !proto.Equal(created.GetCreateTime(), created.GetUpdateTime()) {
		t.Errorf("update_time %v != create_time %v on create", created.GetUpdateTime(), created.GetCreateTime())
	}
	in.Id, in.CreateTime, in.UpdateTime = created.GetId(), created.GetCreateTime(), created.GetUpdateTime()
	if !proto.Equal(in, created) {
		t.Errorf("created = %v, want %v", created, in)
	}

	got, err := s.GetProduct(ctx, &catalogv1.GetProductRequest{Id: created.GetId()})
	if err != nil {
		t.Fatalf("GetProduct: %v", err)
	}
	if !proto.Equal(got.GetProduct(), created) {
		t.Errorf("GetProduct = %v, want %v", got.GetProduct(), created)
	}

	upd, err := s.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{
		Product:    &catalogv1.Product{Id: created.GetId(), Price: 1999},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"price"}},
	})
	if err != nil {
		t.Fatalf("UpdateProduct: %v", err)
	}
	if upd.GetProduct().GetPrice() != 1999 || upd.GetProduct().GetName() != created.GetName() {
		t.Errorf("updated = %v, want price 1999 and everything else kept", upd.GetProduct())
	}
	if !upd.GetProduct().GetUpdateTime().AsTime().After(created.GetUpdateTime().AsTime()) {
		t.Errorf("update_time did not advance: %v", upd.GetProduct().GetUpdateTime())
	}
	if !proto.Equal(upd.GetProduct().GetCreateTime(), created.GetCreateTime()) {
		t.Errorf("create_time changed on update")
	}

	if _, err := s.DeleteProduct(ctx, &catalogv1.DeleteProductRequest{Id: created.GetId()}); err != nil {
		t.Fatalf("DeleteProduct: %v", err)
	}
	_, err = s.GetProduct(ctx, &catalogv1.GetProductRequest{Id: created.GetId()})
	wantCode(t, err, codes.NotFound, `product "prd-000001" not found`)
	_, err = s.DeleteProduct(ctx, &catalogv1.DeleteProductRequest{Id: created.GetId()})
	wantCode(t, err, codes.NotFound, `product "prd-000001" not found`)

	// The sku is free again, and ids are never reused.
	if again := mustCreate(t, s, product("KT-PAN-24")); again.GetId() != "prd-000002" {
		t.Errorf("id after delete = %q, want prd-000002", again.GetId())
	}
}

func TestCreateRejects(t *testing.T) {
	s := NewServer(WithoutSeed())
	mustCreate(t, s, product("DUP-1"))

	withID := product("NEW-1")
	withID.Id = "prd-000777"
	noName := product("NEW-2")
	noName.Name = ""
	negative := product("NEW-3")
	negative.Price = -1

	tests := []struct {
		name string
		in   *catalogv1.Product
		code codes.Code
		msg  string
	}{
		{"no product", nil, codes.InvalidArgument, "product is required"},
		{"id set", withID, codes.InvalidArgument, "product.id must be empty"},
		{"no name", noName, codes.InvalidArgument, "product.name is required"},
		{"negative price", negative, codes.InvalidArgument, "product.price"},
		{"duplicate sku", product("DUP-1"), codes.AlreadyExists, `sku "DUP-1" already exists`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateProduct(context.Background(), &catalogv1.CreateProductRequest{Product: tt.in})
			wantCode(t, err, tt.code, tt.msg)
		})
	}
	resp, _ := s.ListProducts(context.Background(), &catalogv1.ListProductsRequest{})
	if len(resp.GetProducts()) != 1 {
		t.Errorf("rejected creates stored products: have %d, want 1", len(resp.GetProducts()))
	}
}

func TestGetRequiresID(t *testing.T) {
	_, err := NewServer().GetProduct(context.Background(), &catalogv1.GetProductRequest{})
	wantCode(t, err, codes.InvalidArgument, "id is required")
}

func TestListPaging(t *testing.T) {
	ctx := context.Background()
	s := NewServer(WithoutSeed())
	for i := range 45 {
		mustCreate(t, s, product(fmt.Sprintf("SKU-%03d", i)))
	}

	var (
		ids   []string
		token string
		sizes []int
	)
	for range 10 { // 3 pages expected
		resp, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageToken: token})
		if err != nil {
			t.Fatalf("ListProducts(token %q): %v", token, err)
		}
		sizes = append(sizes, len(resp.GetProducts()))
		for _, p := range resp.GetProducts() {
			ids = append(ids, p.GetId())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if want := []int{20, 20, 5}; !slices.Equal(sizes, want) {
		t.Errorf("page sizes = %v, want %v", sizes, want)
	}
	if len(ids) != 45 || !slices.IsSorted(ids) || ids[0] != "prd-000001" || ids[44] != "prd-000045" {
		t.Errorf("ids = %v, want prd-000001..prd-000045 in order", ids)
	}

	big, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 1000})
	if err != nil || len(big.GetProducts()) != 45 {
		t.Errorf("page_size 1000: %d products, err %v; want all 45", len(big.GetProducts()), err)
	}
	small, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 7})
	if err != nil || len(small.GetProducts()) != 7 || small.GetNextPageToken() == "" {
		t.Errorf("page_size 7: %d products, next %q, err %v", len(small.GetProducts()), small.GetNextPageToken(), err)
	}

	_, err = s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageToken: "not a token!"})
	wantCode(t, err, codes.InvalidArgument, `invalid page_token "not a token!"`)
	_, err = s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageToken: "b3JkLTAwMDAwMQ"}) // "ord-000001"
	wantCode(t, err, codes.InvalidArgument, "invalid page_token")
	_, err = s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: -1})
	wantCode(t, err, codes.InvalidArgument, "page_size")
}

func TestListPagingSurvivesDelete(t *testing.T) {
	ctx := context.Background()
	s := NewServer(WithoutSeed())
	for i := range 4 {
		mustCreate(t, s, product(fmt.Sprintf("SKU-%03d", i)))
	}
	first, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 2})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	// Delete the product the token points at; the next page must still start
	// right after it.
	if _, err := s.DeleteProduct(ctx, &catalogv1.DeleteProductRequest{Id: "prd-000002"}); err != nil {
		t.Fatalf("DeleteProduct: %v", err)
	}
	second, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 2, PageToken: first.GetNextPageToken()})
	if err != nil {
		t.Fatalf("ListProducts(next): %v", err)
	}
	var got []string
	for _, p := range second.GetProducts() {
		got = append(got, p.GetId())
	}
	if want := []string{"prd-000003", "prd-000004"}; !slices.Equal(got, want) || second.GetNextPageToken() != "" {
		t.Errorf("second page = %v next %q, want %v and no next", got, second.GetNextPageToken(), want)
	}
}

func TestListCategory(t *testing.T) {
	ctx := context.Background()
	s := NewServer() // seeded: 2 books, 2 kitchen, ...
	resp, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{Category: "kitchen", PageSize: 1})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	if len(resp.GetProducts()) != 1 || resp.GetProducts()[0].GetCategory() != "kitchen" || resp.GetNextPageToken() == "" {
		t.Fatalf("first kitchen page = %v, next %q", resp.GetProducts(), resp.GetNextPageToken())
	}
	resp2, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{Category: "kitchen", PageSize: 1, PageToken: resp.GetNextPageToken()})
	if err != nil {
		t.Fatalf("ListProducts(next): %v", err)
	}
	if len(resp2.GetProducts()) != 1 || resp2.GetProducts()[0].GetCategory() != "kitchen" || resp2.GetNextPageToken() != "" {
		t.Fatalf("second kitchen page = %v, next %q; want the last kitchen product", resp2.GetProducts(), resp2.GetNextPageToken())
	}
	if resp.GetProducts()[0].GetId() == resp2.GetProducts()[0].GetId() {
		t.Fatalf("both pages returned %s", resp.GetProducts()[0].GetId())
	}

	none, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{Category: "garden"})
	if err != nil || len(none.GetProducts()) != 0 || none.GetNextPageToken() != "" {
		t.Fatalf("garden = %v, %v; want empty page", none, err)
	}
}

func TestUpdateMask(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		in    *catalogv1.Product // Id is filled in
		paths []string
		want  func(p *catalogv1.Product) // edits the original into the expected result
		code  codes.Code
		msg   string
	}{
		{
			name:  "named fields only",
			in:    &catalogv1.Product{Name: "New name", Price: 999, Stock: 1},
			paths: []string{"name", "price"},
			want:  func(p *catalogv1.Product) { p.Name, p.Price = "New name", 999 },
		},
		{
			name:  "named zero value clears",
			in:    &catalogv1.Product{},
			paths: []string{"description", "stock", "category"},
			want:  func(p *catalogv1.Product) { p.Description, p.Stock, p.Category = "", 0, "" },
		},
		{
			name: "empty mask writes every set field",
			in:   &catalogv1.Product{Sku: "NEW-SKU", Currency: "USD", Stock: 9},
			want: func(p *catalogv1.Product) { p.Sku, p.Currency, p.Stock = "NEW-SKU", "USD", 9 },
		},
		{
			name: "empty mask ignores output-only fields",
			in:   &catalogv1.Product{Name: "Renamed", CreateTime: timestamppb.New(time.Unix(1, 0)), UpdateTime: timestamppb.New(time.Unix(1, 0))},
			want: func(p *catalogv1.Product) { p.Name = "Renamed" },
		},
		{name: "unknown path", in: &catalogv1.Product{}, paths: []string{"price", "colour"}, code: codes.InvalidArgument, msg: `unknown field "colour"`},
		{name: "nested path", in: &catalogv1.Product{}, paths: []string{"price.units"}, code: codes.InvalidArgument, msg: `unknown field "price.units"`},
		{name: "id is output only", in: &catalogv1.Product{}, paths: []string{"id"}, code: codes.InvalidArgument, msg: `field "id" is output only`},
		{name: "create_time is output only", in: &catalogv1.Product{}, paths: []string{"create_time"}, code: codes.InvalidArgument, msg: `field "create_time" is output only`},
		{name: "update_time is output only", in: &catalogv1.Product{}, paths: []string{"update_time"}, code: codes.InvalidArgument, msg: `field "update_time" is output only`},
		{name: "cannot clear required", in: &catalogv1.Product{}, paths: []string{"name"}, code: codes.InvalidArgument, msg: "product.name is required"},
		{name: "duplicate sku", in: &catalogv1.Product{Sku: "OTHER-1"}, paths: []string{"sku"}, code: codes.AlreadyExists, msg: `sku "OTHER-1" already exists`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer(WithoutSeed(), WithClock(newFakeClock().Now))
			orig := mustCreate(t, s, product("ORIG-1"))
			mustCreate(t, s, product("OTHER-1"))
			tt.in.Id = orig.GetId()
			req := &catalogv1.UpdateProductRequest{Product: tt.in}
			if tt.paths != nil {
				req.UpdateMask = &fieldmaskpb.FieldMask{Paths: tt.paths}
			}
			resp, err := s.UpdateProduct(ctx, req)
			stored, getErr := s.GetProduct(ctx, &catalogv1.GetProductRequest{Id: orig.GetId()})
			if getErr != nil {
				t.Fatalf("GetProduct: %v", getErr)
			}
			if tt.code != codes.OK {
				wantCode(t, err, tt.code, tt.msg)
				if !proto.Equal(stored.GetProduct(), orig) {
					t.Fatalf("failed update changed the product: %v", stored.GetProduct())
				}
				return
			}
			if err != nil {
				t.Fatalf("UpdateProduct: %v", err)
			}
			want := clone(orig)
			tt.want(want)
			want.UpdateTime = resp.GetProduct().GetUpdateTime()
			if !proto.Equal(resp.GetProduct(), want) {
				t.Fatalf("updated = %v\nwant      %v", resp.GetProduct(), want)
			}
			if !proto.Equal(stored.GetProduct(), want) {
				t.Fatalf("stored = %v\nwant     %v", stored.GetProduct(), want)
			}
			if !resp.GetProduct().GetUpdateTime().AsTime().After(orig.GetUpdateTime().AsTime()) {
				t.Fatalf("update_time %v did not advance past %v", resp.GetProduct().GetUpdateTime().AsTime(), orig.GetUpdateTime().AsTime())
			}
		})
	}
}

func TestUpdateSkuMovesUniqueness(t *testing.T) {
	ctx := context.Background()
	s := NewServer(WithoutSeed())
	p := mustCreate(t, s, product("OLD-1"))
	if _, err := s.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{Product: &catalogv1.Product{Id: p.GetId(), Sku: "NEW-1"}}); err != nil {
		t.Fatalf("UpdateProduct: %v", err)
	}
	mustCreate(t, s, product("OLD-1")) // the old sku is free
	_, err := s.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: product("NEW-1")})
	wantCode(t, err, codes.AlreadyExists, `"NEW-1"`)
}

func TestUpdateWithoutChangeKeepsUpdateTime(t *testing.T) {
	s := NewServer(WithoutSeed(), WithClock(newFakeClock().Now))
	orig := mustCreate(t, s, product("SAME-1"))
	resp, err := s.UpdateProduct(context.Background(), &catalogv1.UpdateProductRequest{
		Product:    &catalogv1.Product{Id: orig.GetId(), Price: orig.GetPrice()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"price"}},
	})
	if err != nil {
		t.Fatalf("UpdateProduct: %v", err)
	}
	if !proto.Equal(resp.GetProduct(), orig) {
		t.Fatalf("no-op update changed the product: %v, want %v", resp.GetProduct(), orig)
	}
}

func TestUpdateRejects(t *testing.T) {
	s := NewServer()
	ctx := context.Background()
	_, err := s.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{})
	wantCode(t, err, codes.InvalidArgument, "product is required")
	_, err = s.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{Product: &catalogv1.Product{Name: "x"}})
	wantCode(t, err, codes.InvalidArgument, "product.id is required")
	_, err = s.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{Product: &catalogv1.Product{Id: "prd-999999", Name: "x"}})
	wantCode(t, err, codes.NotFound, `product "prd-999999" not found`)
}

func TestReturnsCopies(t *testing.T) {
	ctx := context.Background()
	s := NewServer()
	got, err := s.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
	if err != nil {
		t.Fatalf("GetProduct: %v", err)
	}
	want := clone(got.GetProduct())
	got.GetProduct().Name = "changed by caller"
	got.GetProduct().GetCreateTime().Seconds = 1

	list, _ := s.ListProducts(ctx, &catalogv1.ListProductsRequest{})
	list.GetProducts()[0].Stock = -5

	again, _ := s.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
	if !proto.Equal(again.GetProduct(), want) {
		t.Fatalf("stored product changed through a returned copy: %v", again.GetProduct())
	}

	in := product("MINE-1")
	created := mustCreate(t, s, in)
	in.Name = "changed after create"
	if stored, _ := s.GetProduct(ctx, &catalogv1.GetProductRequest{Id: created.GetId()}); stored.GetProduct().GetName() != created.GetName() {
		t.Fatalf("stored product aliases the request: name %q", stored.GetProduct().GetName())
	}
}

func TestConcurrentCreates(t *testing.T) {
	const (
		writers = 16
		each    = 50
	)
	ctx := context.Background()
	s := NewServer(WithoutSeed())

	var wg sync.WaitGroup
	errs := make(chan error, writers*each+writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: product(fmt.Sprintf("W%02d-%03d", w, i))}); err != nil {
					errs <- err
				}
			}
		})
		// Readers and updaters run alongside the writers to give the race
		// detector something to find.
		wg.Go(func() {
			for range each {
				if _, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 10}); err != nil {
					errs <- err
				}
				_, err := s.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{Product: &catalogv1.Product{Id: "prd-000001", Stock: int32(w + 1)}})
				if err != nil && status.Code(err) != codes.NotFound {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent call: %v", err)
	}

	resp, err := s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 100})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	seen := map[string]bool{}
	token := ""
	for range writers*each/100 + 2 {
		for _, p := range resp.GetProducts() {
			if seen[p.GetId()] {
				t.Fatalf("id %s listed twice", p.GetId())
			}
			seen[p.GetId()] = true
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
		if resp, err = s.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 100, PageToken: token}); err != nil {
			t.Fatalf("ListProducts: %v", err)
		}
	}
	if len(seen) != writers*each {
		t.Fatalf("listed %d products, want %d", len(seen), writers*each)
	}
	for i := 1; i <= writers*each; i++ {
		if id := fmt.Sprintf("prd-%06d", i); !seen[id] {
			t.Fatalf("id %s missing: ids must be sequential", id)
		}
	}
}
