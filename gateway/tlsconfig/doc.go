// Package tlsconfig loads the gateway's certificates and keeps them
// current: a Source reads a certificate, its key and optionally a CA from
// files, and reloads them when the files change, so certificates rotate
// without a restart and without dropping open connections (a handshake
// picks the certificate in force when it starts). A file that does not
// load keeps the previous certificate and is logged.
//
// The same Source serves a listener (ServerConfig: the certificate, and
// client certificates verified against the CA for mTLS) and a backend
// connection (ClientConfig: the CA that verifies the backend, and the
// gateway's own certificate for mTLS).
package tlsconfig
