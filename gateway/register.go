package gateway

import "github.com/portico-gw/portico/gateway/registration"

// RegisterConfig puts the gateway itself into Consul (package registration).
type RegisterConfig = registration.Config

// DefaultRegisterService is the Consul name gateway replicas register as.
const DefaultRegisterService = registration.DefaultService
