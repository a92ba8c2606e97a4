// Command portico-certs writes a throwaway set of certificates for trying
// Portico's TLS locally (`make certs`): a CA, a server certificate for the
// gateway's listeners and a client certificate with a SPIFFE ID, each
// valid for a day, and prints how to use them. Never for production: the
// CA's key is not kept, so nothing more can be signed with it.
//
//	portico-certs [-out build/certs] [-hosts localhost,127.0.0.1] [-client-uri spiffe://example.org/shop]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/portico-gw/portico/internal/certs"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "portico-certs:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("portico-certs", flag.ContinueOnError)
	out := fs.String("out", "build/certs", "directory to write the files to")
	hosts := fs.String("hosts", "localhost,127.0.0.1", "comma-separated names and IPs of the server certificate")
	clientURI := fs.String("client-uri", "spiffe://example.org/shop", "the client certificate's URI SAN")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	names := strings.Split(*hosts, ",")
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	dir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}

	ca, err := certs.NewCA("Portico local CA")
	if err != nil {
		return err
	}
	server, err := ca.Server("portico", names...)
	if err != nil {
		return err
	}
	client, err := ca.Client("shop", *clientURI)
	if err != nil {
		return err
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		return err
	}
	serverCert, serverKey, err := server.WriteFiles(dir, "server")
	if err != nil {
		return err
	}
	clientCert, clientKey, err := client.WriteFiles(dir, "client")
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, `Wrote throwaway certificates, valid for 24 hours, to %[1]s:
  ca.crt                   the CA that signed the other two
  server.crt, server.key   the gateway's listeners: %[2]s
  client.crt, client.key   a client: %[3]s

Serve the REST and gRPC listeners over TLS (add to your portico.yaml):

  tls:
    cert_file: %[4]s
    key_file: %[5]s
    client_ca_file: %[6]s   # optional: clients need a certificate the CA signed (mTLS)

and the admin listener (admin_tls takes the same keys):

  admin_tls:
    cert_file: %[4]s
    key_file: %[5]s

Then:

  curl --cacert %[6]s https://localhost:8080/v1/products
  curl --cacert %[6]s --cert %[7]s --key %[8]s https://localhost:8080/v1/products   # with client_ca_file
  bin/grpcurl -cacert %[6]s localhost:9090 list
  bin/grpcurl -cacert %[6]s -cert %[7]s -key %[8]s localhost:9090 list   # with client_ca_file

Run this again for a new set: a running gateway loads the new files within
seconds, without a restart. More in docs/tls.md.
`, dir, strings.Join(names, ", "), *clientURI, serverCert, serverKey, caFile, clientCert, clientKey)
	return nil
}
