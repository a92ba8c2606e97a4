package web

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
)

// OpenAPIConfig is the config file's openapi block: the OpenAPI 3 document
// of the routed services and a docs page that renders it, on the REST port.
type OpenAPIConfig struct {
	// Enabled serves both; default true.
	Enabled *bool `yaml:"enabled"`
	// Path of the document. Default /openapi.json.
	Path string `yaml:"path"`
	// DocsPath of the docs page. Default /docs.
	DocsPath string `yaml:"docs_path"`
}

// MethodExtension names the gRPC method of an operation in the document
// (gen/openapi), so the gateway can serve only the routed ones.
const MethodExtension = "x-portico-method"

// ScopesExtension lists the scopes an operation needs, and SchemeJWT and
// SchemeAPIKey name the document's security schemes.
const (
	ScopesExtension = "x-portico-scopes"
	SchemeJWT       = "bearerAuth"
	SchemeAPIKey    = "apiKey"
)

// scopesNote is how the generator words an operation's scopes in its
// description; the gateway rewrites it from the route's policy.
const scopesNote = "Needs the scopes: "

// redoc is Redoc's standalone bundle, from the npm package pinned in
// redoc/package-lock.json (make redoc).
//
//go:embed redoc/redoc.standalone.js
var redoc []byte

var docsPage = template.Must(template.New("docs").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Portico API</title>
</head>
<body>
<redoc spec-url="{{.Spec}}" hide-download-button="false"></redoc>
<script src="{{.Script}}"></script>
</body>
</html>
`))

// document is the OpenAPI document as served, with its docs page.
type document struct {
	cfg  OpenAPIConfig
	body []byte
	page []byte
}

// newDocument keeps the operations of the routed methods, with the
// security their routes' policies give them; nil when the document is off
// or there is none.
func newDocument(cfg OpenAPIConfig, doc []byte, routes []*route.Route) (*document, error) {
	if (cfg.Enabled != nil && !*cfg.Enabled) || len(doc) == 0 {
		return nil, nil
	}
	if cfg.Path == "" {
		cfg.Path = "/openapi.json"
	}
	if cfg.DocsPath == "" {
		cfg.DocsPath = "/docs"
	}
	for _, p := range []string{cfg.Path, cfg.DocsPath} {
		// A clean path without a trailing slash: one the mux matches
		// exactly, and under which the docs' script path is clean too.
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " {}") || p == "/" || path.Clean(p) != p {
			return nil, fmt.Errorf("openapi: path %q must be a plain, clean path starting with / and not ending in one", p)
		}
	}
	var d map[string]any
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("openapi: the document does not parse: %w", err)
	}
	routed := map[string]*route.Route{}
	for _, r := range routes {
		routed[r.FullMethod] = r
	}
	paths, _ := d["paths"].(map[string]any)
	for p, item := range paths {
		ops, _ := item.(map[string]any)
		for verb, op := range ops {
			op, _ := op.(map[string]any)
			m, _ := op[MethodExtension].(string)
			switch r := routed[m]; {
			case m == "":
			case r == nil:
				delete(ops, verb)
			default:
				secure(op, r.Policy)
			}
		}
		if len(ops) == 0 {
			delete(paths, p)
		}
	}
	body, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	var page strings.Builder
	if err := docsPage.Execute(&page, map[string]string{"Spec": cfg.Path, "Script": cfg.DocsPath + "/redoc.standalone.js"}); err != nil {
		return nil, err
	}
	return &document{cfg: cfg, body: body, page: []byte(page.String())}, nil
}

// secure sets an operation's security from the route's policy as served:
// the generator knew only the protos' declarations, and the config file
// may change access and scopes.
func secure(op map[string]any, p *policy.Policy) {
	if p == nil {
		p = &policy.Policy{}
	}
	desc, _ := op["description"].(string)
	if i := strings.Index(desc, scopesNote); i >= 0 {
		desc = strings.TrimSpace(desc[:i])
	}
	delete(op, ScopesExtension)
	if p.Access == policy.Public {
		op["security"] = []any{}
	} else {
		op["security"] = []any{map[string]any{SchemeJWT: []any{}}, map[string]any{SchemeAPIKey: []any{}}}
		if len(p.Scopes) > 0 {
			op[ScopesExtension] = slices.Clone(p.Scopes)
			desc = strings.TrimSpace(desc + "\n\n" + scopesNote + strings.Join(p.Scopes, ", ") + ".")
		}
	}
	if desc == "" {
		delete(op, "description")
	} else {
		op["description"] = desc
	}
}

func (d *document) handler(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	paths := map[string]bool{}
	serve := func(p, contentType string, body []byte) {
		paths[p] = true
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			_, _ = w.Write(body)
		})
	}
	serve(d.cfg.Path, "application/json", d.body)
	serve(d.cfg.DocsPath, "text/html; charset=utf-8", d.page)
	serve(d.cfg.DocsPath+"/redoc.standalone.js", "text/javascript; charset=utf-8", redoc)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The mux answers the three paths, and redirects a path that
		// cleans to one of them; it takes 9 allocations to find that a
		// GET is none of them, so a clean path without escapes that is
		// not one of them, every REST GET, goes on without asking it.
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			(paths[r.URL.Path] || r.URL.RawPath != "" || !isClean(r.URL.Path)) {
			if h, pattern := mux.Handler(r); pattern != "" {
				h.ServeHTTP(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// isClean reports whether http.ServeMux would serve p as it is, not
// redirect it to a cleaner path (its cleanPath).
func isClean(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	np := path.Clean(p)
	return np == p || p[len(p)-1] == '/' && len(p) == len(np)+1 && strings.HasPrefix(p, np)
}
