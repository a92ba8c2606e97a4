package route

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Print writes the route table as aligned text: the first thing an
// operator asks a gateway for.
func Print(w io.Writer, routes []*Route) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REST\tgRPC METHOD\tBACKEND\tKIND\tTIMEOUT\tAUTH\tSCOPES\tRATE LIMIT")
	for _, r := range routes {
		timeout := "none"
		if r.Timeout > 0 {
			timeout = r.Timeout.String()
		}
		backend := r.Backend
		if r.Tag != "" {
			backend += " tag=" + r.Tag
		}
		if r.Datacenter != "" {
			backend += " dc=" + r.Datacenter
		}
		scopes := strings.Join(r.Policy.Scopes, ",")
		if scopes == "" {
			scopes = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strings.Join(r.HTTP, ", "), r.FullMethod, backend, r.Kind(), timeout,
			r.Policy.Access, scopes, r.Policy.RateLimit)
	}
	return tw.Flush()
}
