package route

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/portico-gw/portico/gateway/policy"
)

// PrintOption adds to the printed table.
type PrintOption func(*printOptions)

type printOptions struct {
	credentials bool
	kinds       []string
}

// WithCredentialKinds adds the CREDENTIALS column: the kinds of credentials
// the gateway accepts (jwt, api_key, client_certificate; the auth policy's
// CredentialKinds), which every authenticated route takes.
func WithCredentialKinds(kinds []string) PrintOption {
	return func(o *printOptions) { o.credentials, o.kinds = true, kinds }
}

// Credentials is what a route with policy p accepts as credentials, given
// the kinds the gateway is configured for, as the route table and the
// admin page say it: "none needed" for a public route, else the kinds, or
// "none configured" (every call is refused).
func Credentials(p *policy.Policy, kinds []string) string {
	switch {
	case p.Access == policy.Public:
		return "none needed"
	case len(kinds) == 0:
		return "none configured"
	}
	return strings.Join(kinds, ",")
}

// Print writes the route table as aligned text: the first thing an
// operator asks a gateway for.
func Print(w io.Writer, routes []*Route, opts ...PrintOption) error {
	var o printOptions
	for _, opt := range opts {
		opt(&o)
	}
	creds := o.credentials
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "REST\tgRPC METHOD\tBACKEND\tKIND\tTIMEOUT\tAUTH"
	if creds {
		head += "\tCREDENTIALS"
	}
	fmt.Fprintln(tw, head+"\tSCOPES\tRATE LIMIT\tRETRIES")
	for _, r := range routes {
		timeout := "none"
		if r.Timeout > 0 {
			timeout = r.Timeout.String()
		}
		backend := r.Backend
		if r.Compose != nil {
			backend = "(composite)"
		}
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
		auth := r.Policy.Access.String()
		if creds {
			auth += "\t" + Credentials(r.Policy, o.kinds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strings.Join(r.HTTP, ", "), r.FullMethod, backend, r.Kind(), timeout,
			auth, scopes, r.Policy.RateLimit, Retries(r))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printSteps(w, routes); err != nil {
		return err
	}
	return printBackends(w, routes)
}

// Retries says how a route's calls are retried, as the route table and
// the admin page show it.
func Retries(r *Route) string {
	switch {
	case r.Compose != nil:
		return "per step"
	case r.Retry == nil:
		return "transparent only"
	}
	return r.Retry.String()
}

// printBackends lists each backend connection's resilience settings under
// the table.
func printBackends(w io.Writer, routes []*Route) error {
	seen := map[string]bool{}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range routes {
		if r.Compose != nil || seen[r.Target()] {
			continue
		}
		if len(seen) == 0 {
			fmt.Fprintf(tw, "\nBACKEND\tBALANCING\tOUTLIER DETECTION\tMAX CONCURRENT\tRETRY THROTTLING\tHEALTH CHECK\n")
		}
		seen[r.Target()] = true
		fmt.Fprintln(tw, r.Resilience.Row(r.Backend))
	}
	return tw.Flush()
}

// printSteps lists the steps of each composite route under the table.
func printSteps(w io.Writer, routes []*Route) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range routes {
		if r.Compose == nil {
			continue
		}
		fmt.Fprintf(tw, "\n%s is composite, served by the gateway:\n", r.FullMethod[1:])
		for _, s := range r.Steps {
			var notes []string
			if s.ForEach != "" {
				notes = append(notes, "for_each "+s.ForEach)
			}
			if s.Optional {
				notes = append(notes, "optional")
			}
			line := "  step " + s.Name + "\t" + s.Method
			if len(notes) > 0 {
				line += "\t" + strings.Join(notes, ", ")
			}
			fmt.Fprintln(tw, line)
		}
	}
	return tw.Flush()
}
