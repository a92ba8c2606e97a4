package report

import (
	"fmt"
	"io"
)

// TLSSummary writes what TLS costs: for each TLS mode and workload,
// Portico (with its chain) and its TLS peer, each over TLS against itself
// in plaintext, and Portico against the peer over TLS and in plaintext,
// all from this run. Nothing when the run has no TLS mode.
func (r *Run) TLSSummary(w io.Writer) {
	var rows [][2]string
	for _, g := range r.groups() {
		if IsTLS(g[0]) && r.Find(g[0], g[1], Portico) != nil {
			rows = append(rows, g)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\nTLS (%s): each path over TLS against itself in plaintext, and Portico against its peer, in this run. %s is gRPC on one connection (plaintext: %s); %s is REST over HTTP/1.1 keep-alive and %s REST over h2 chosen by ALPN on one connection (plaintext for both: %s, HTTP/1.1). The peer is nginx terminating TLS (`listen ssl http2`, grpc_pass to the backend in plaintext) for gRPC, and for REST bare grpc-gateway behind net/http and Go's crypto/tls, the TLS stack Portico uses, so that the ratio compares the gateways rather than TLS libraries.\n\n",
		r.Settings["tls"], GRPCTLS, GRPC, RESTTLS, RESTH2TLS, REST)
	header(w, 4, "mode", "workload", "plaintext", "peer", "Portico TLS calls/s", "TLS cost: Portico TLS / plaintext", "TLS cost: peer TLS / plaintext", "Portico TLS / peer TLS", "Portico / peer, plaintext", "CPU us/call, Portico: TLS, plaintext", "CPU us/call, peer: TLS, plaintext", "p99 ms at the common rate, Portico: TLS, plaintext", "p99 ms at the common rate, peer: TLS, plaintext")
	for _, g := range rows {
		mode, wl := g[0], g[1]
		plain, peer := Plain(mode), TLSPeer(mode)
		on, onPlain := r.Find(mode, wl, Portico), r.Find(plain, wl, Portico)
		pt, ptPlain := r.Find(mode, wl, peer), r.Find(plain, wl, peer)
		cpu := func(p *Phase) string { return cost(p, func(p *Phase) float64 { return p.CPUMicrosPerCall }) }
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s, %s | %s, %s | %s | %s |\n",
			mode, wl, plain, peer, on.PerSecond,
			ratioOf(on, onPlain), ratioOf(pt, ptPlain), ratioOf(on, pt), ratioOf(onPlain, ptPlain),
			cpu(on), cpu(onPlain), cpu(pt), cpu(ptPlain), commonP99s(on, onPlain), commonP99s(pt, ptPlain))
	}
}

// ratioOf is ratio with either side possibly missing.
func ratioOf(p, of *Phase) string {
	if p == nil {
		return "n/a"
	}
	return ratio(p, of)
}

// commonP99s is the p99 over TLS and in plaintext at the common rate,
// with the rates when they differ (a TLS path was too slow for the
// plaintext mode's common rate).
func commonP99s(tls, plain *Phase) string {
	if tls == nil || plain == nil || tls.Common == nil || plain.Common == nil {
		return "n/a"
	}
	if tls.Common.Rate != plain.Common.Rate {
		return fmt.Sprintf("%.1f at %.0f/s, %.1f at %.0f/s", tls.Common.P99/1e3, tls.Common.Rate, plain.Common.P99/1e3, plain.Common.Rate)
	}
	return fmt.Sprintf("%s, %s", commonP99(tls), commonP99(plain))
}
