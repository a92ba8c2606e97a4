package host

import (
	"flag"

	"github.com/portico-gw/portico/discovery"
)

// ConsulFlags defines -consul-addr, -consul-token and -consul-dc on fs and
// returns the config they fill in when fs is parsed. Their defaults are
// empty, which discovery.NewConsulClient reads as "follow Consul's own
// conventions": CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN, then the local agent
// and its datacenter. The environment is not copied into the defaults so that
// -help never prints a token.
func ConsulFlags(fs *flag.FlagSet) *discovery.ConsulConfig {
	var c discovery.ConsulConfig
	fs.StringVar(&c.Address, "consul-addr", "", "Consul HTTP address (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	fs.StringVar(&c.Token, "consul-token", "", "Consul ACL token (default $CONSUL_HTTP_TOKEN)")
	fs.StringVar(&c.Datacenter, "consul-dc", "", "Consul datacenter (default: the agent's)")
	return &c
}

// TLSFlags defines -tls-cert, -tls-key and -tls-client-ca on fs and returns
// the TLS they fill in when fs is parsed. Without them the service serves
// plaintext.
func TLSFlags(fs *flag.FlagSet) *TLS {
	var t TLS
	fs.StringVar(&t.CertFile, "tls-cert", "", "serve TLS with this certificate (PEM; reloaded when it changes)")
	fs.StringVar(&t.KeyFile, "tls-key", "", "the key of -tls-cert (PEM)")
	fs.StringVar(&t.ClientCAFile, "tls-client-ca", "", "accept only clients with a certificate this CA signed, such as the gateway's (health excepted)")
	return &t
}
