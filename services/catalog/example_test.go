package catalog_test

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/services/catalog"
)

func ExampleNewServer() {
	ctx := context.Background()
	s := catalog.NewServer(catalog.WithoutSeed())

	created, err := s.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: &catalogv1.Product{
		Sku:      "BK-SICP-2ND",
		Name:     "Structure and Interpretation of Computer Programs",
		Price:    5500,
		Currency: "EUR",
		Stock:    4,
		Category: "books",
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Only the fields named in the mask change.
	updated, err := s.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{
		Product:    &catalogv1.Product{Id: created.GetProduct().GetId(), Price: 4900, Stock: 99},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"price"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	p := updated.GetProduct()
	fmt.Println(p.GetId(), p.GetPrice(), p.GetStock())
	// Output: prd-000001 4900 4
}
