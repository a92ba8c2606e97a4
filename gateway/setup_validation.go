package gateway

import (
	"github.com/portico-gw/portico/gateway/validate"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ValidationConfig configures request validation.
type ValidationConfig struct {
	// Disabled turns validation off (it is on by default: the rules are
	// part of each method's contract).
	Disabled bool `yaml:"disabled"`
}

// setupValidation builds the protovalidate policy once, with every routed
// request type compiled up front.
func (g *Gateway) setupValidation() error {
	if g.cfg.Validation.Disabled {
		return nil
	}
	var mds []protoreflect.MessageDescriptor
	for _, r := range g.routes {
		mds = append(mds, r.input.Descriptor())
	}
	p, err := validate.New(validate.WithMessages(mds...))
	if err != nil {
		return err
	}
	g.policies.validate = p
	return nil
}
