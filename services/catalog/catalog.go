package catalog

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/services/internal/page"
)

// idPrefix starts every product id; the rest is a zero-padded sequence number.
const idPrefix = "prd-"

// Server is an in-memory catalogv1.CatalogServiceServer. It is safe for
// concurrent use. Every product it returns is a copy, so callers may keep or
// change what they get without touching the stored state.
type Server struct {
	catalogv1.UnimplementedCatalogServiceServer

	clock func() time.Time

	mu       sync.RWMutex
	seq      int                           // last id number handed out
	products map[string]*catalogv1.Product // by id
	ids      []string                      // sorted by page.Compare
	skus     map[string]string             // sku -> id, to keep skus unique
}

var _ catalogv1.CatalogServiceServer = (*Server)(nil)

// NewServer returns a catalog holding the example products, or nothing with
// WithoutSeed. It does no I/O and starts no goroutines.
func NewServer(opts ...Option) *Server {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{
		clock:    o.clock,
		products: make(map[string]*catalogv1.Product),
		skus:     make(map[string]string),
	}
	if o.seed {
		for _, p := range seedProducts() {
			if _, err := s.create(p); err != nil {
				panic(fmt.Sprintf("catalog: seed product %q: %v", p.GetSku(), err))
			}
		}
	}
	return s
}

// ListProducts returns products in id order, one page at a time.
func (s *Server) ListProducts(_ context.Context, req *catalogv1.ListProductsRequest) (*catalogv1.ListProductsResponse, error) {
	r, err := page.Parse(req.GetPageSize(), req.GetPageToken(), idPrefix)
	if err != nil {
		return nil, err
	}
	category := req.GetCategory()

	s.mu.RLock()
	defer s.mu.RUnlock()
	var keep func(string) bool
	if category != "" {
		keep = func(id string) bool { return s.products[id].GetCategory() == category }
	}
	ids, next := page.Slice(s.ids, func(id string) string { return id }, keep, r)
	resp := &catalogv1.ListProductsResponse{
		Products:      make([]*catalogv1.Product, 0, len(ids)),
		NextPageToken: next,
	}
	for _, id := range ids {
		resp.Products = append(resp.Products, clone(s.products[id]))
	}
	return resp, nil
}

// GetProduct returns one product.
func (s *Server) GetProduct(_ context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id is required")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.products[req.GetId()]
	if !ok {
		return nil, notFound(req.GetId())
	}
	return &catalogv1.GetProductResponse{Product: clone(p)}, nil
}

// CreateProduct stores a new product under a server-assigned id.
func (s *Server) CreateProduct(_ context.Context, req *catalogv1.CreateProductRequest) (*catalogv1.CreateProductResponse, error) {
	in := req.GetProduct()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "product is required")
	}
	if in.GetId() != "" {
		return nil, status.Errorf(codes.InvalidArgument, "product.id must be empty: the server assigns ids, got %q", in.GetId())
	}
	p, err := s.create(in)
	if err != nil {
		return nil, err
	}
	return &catalogv1.CreateProductResponse{Product: p}, nil
}

// create stores a copy of in and returns another copy of what it stored.
func (s *Server) create(in *catalogv1.Product) (*catalogv1.Product, error) {
	p := clone(in)
	if err := validate(p); err != nil {
		return nil, err
	}
	now := timestamppb.New(s.clock())
	p.CreateTime, p.UpdateTime = now, now

	s.mu.Lock()
	defer s.mu.Unlock()
	if other, ok := s.skus[p.GetSku()]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "product with sku %q already exists: %s", p.GetSku(), other)
	}
	s.seq++
	p.Id = fmt.Sprintf("%s%06d", idPrefix, s.seq)
	s.products[p.Id] = p
	// Sequence numbers only grow, so appending keeps ids sorted.
	s.ids = append(s.ids, p.Id)
	s.skus[p.Sku] = p.Id
	return clone(p), nil
}

// UpdateProduct changes the fields named in update_mask, or every writable
// field that is set when the mask is empty.
func (s *Server) UpdateProduct(_ context.Context, req *catalogv1.UpdateProductRequest) (*catalogv1.UpdateProductResponse, error) {
	in := req.GetProduct()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "product is required")
	}
	if in.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "product.id is required")
	}
	paths, err := updatePaths(req.GetUpdateMask(), in)
	if err != nil {
		return nil, err
	}
	now := timestamppb.New(s.clock())

	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.products[in.GetId()]
	if !ok {
		return nil, notFound(in.GetId())
	}
	next := clone(cur)
	applyPaths(next, in, paths)
	if err := validate(next); err != nil {
		return nil, err
	}
	if proto.Equal(next, cur) {
		// Nothing changed, so update_time ("when the product last changed")
		// must not move either.
		return &catalogv1.UpdateProductResponse{Product: clone(cur)}, nil
	}
	if next.GetSku() != cur.GetSku() {
		if other, ok := s.skus[next.GetSku()]; ok {
			return nil, status.Errorf(codes.AlreadyExists, "product with sku %q already exists: %s", next.GetSku(), other)
		}
		delete(s.skus, cur.GetSku())
		s.skus[next.GetSku()] = next.GetId()
	}
	next.UpdateTime = now
	s.products[next.GetId()] = next
	return &catalogv1.UpdateProductResponse{Product: clone(next)}, nil
}

// DeleteProduct removes a product. Orders that already refer to it keep
// their copy of its price.
func (s *Server) DeleteProduct(_ context.Context, req *catalogv1.DeleteProductRequest) (*catalogv1.DeleteProductResponse, error) {
	id := req.GetId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "id is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.products[id]
	if !ok {
		return nil, notFound(id)
	}
	delete(s.products, id)
	delete(s.skus, p.GetSku())
	i := sort.Search(len(s.ids), func(i int) bool { return page.Compare(s.ids[i], id) >= 0 })
	s.ids = slices.Delete(s.ids, i, i+1)
	return &catalogv1.DeleteProductResponse{}, nil
}

// validate checks what the catalog itself relies on: products that orders
// can be placed against. Format rules (sku and currency patterns, lengths)
// are in the proto's buf.validate annotations and are enforced at the gateway.
func validate(p *catalogv1.Product) error {
	switch {
	case p.GetSku() == "":
		return status.Error(codes.InvalidArgument, "product.sku is required")
	case p.GetName() == "":
		return status.Error(codes.InvalidArgument, "product.name is required")
	case p.GetCurrency() == "":
		return status.Error(codes.InvalidArgument, "product.currency is required")
	case p.GetPrice() < 0:
		return status.Errorf(codes.InvalidArgument, "product.price must not be negative, got %d", p.GetPrice())
	case p.GetStock() < 0:
		return status.Errorf(codes.InvalidArgument, "product.stock must not be negative, got %d", p.GetStock())
	}
	return nil
}

func notFound(id string) error {
	return status.Errorf(codes.NotFound, "product %q not found", id)
}

func clone(p *catalogv1.Product) *catalogv1.Product {
	return proto.Clone(p).(*catalogv1.Product)
}
