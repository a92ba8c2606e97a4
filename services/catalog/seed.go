package catalog

import catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"

// seedProducts are the products a new Server starts with. They span several
// categories so that the category filter has something to show.
func seedProducts() []*catalogv1.Product {
	return []*catalogv1.Product{
		{
			Sku:         "BK-GOPL-0134190440",
			Name:        "The Go Programming Language",
			Description: "Donovan and Kernighan's introduction to Go, paperback.",
			Price:       3990,
			Currency:    "EUR",
			Stock:       25,
			Category:    "books",
		},
		{
			Sku:         "BK-DDIA-1449373320",
			Name:        "Designing Data-Intensive Applications",
			Description: "Martin Kleppmann on reliable, scalable and maintainable systems, paperback.",
			Price:       4590,
			Currency:    "EUR",
			Stock:       12,
			Category:    "books",
		},
		{
			Sku:         "KT-CHEF-KNIFE-20",
			Name:        "Chef's Knife 20 cm",
			Description: "Forged stainless steel blade with a riveted beech handle.",
			Price:       7900,
			Currency:    "EUR",
			Stock:       8,
			Category:    "kitchen",
		},
		{
			Sku:         "KT-FRENCH-PRESS-1L",
			Name:        "French Press 1 l",
			Description: "Borosilicate glass carafe with a double steel mesh filter.",
			Price:       3450,
			Currency:    "EUR",
			Stock:       30,
			Category:    "kitchen",
		},
		{
			Sku:         "OF-DESK-LAMP-LED",
			Name:        "LED Desk Lamp",
			Description: "Dimmable desk lamp with adjustable colour temperature and USB-C charging port.",
			Price:       4999,
			Currency:    "EUR",
			Stock:       15,
			Category:    "office",
		},
		{
			Sku:         "SP-YOGA-MAT-6MM",
			Name:        "Yoga Mat 6 mm",
			Description: "Non-slip natural rubber mat, 183 x 61 cm.",
			Price:       2999,
			Currency:    "EUR",
			Stock:       40,
			Category:    "sports",
		},
	}
}
