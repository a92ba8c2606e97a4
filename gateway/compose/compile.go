package compose

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	optionsv1 "github.com/portico-gw/portico/gen/portico/options/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Bounds of a for_each step's fan-out.
const (
	// DefaultMaxConcurrency is how many calls of a for_each step are in
	// flight at once unless the step sets max_concurrency.
	DefaultMaxConcurrency = 10
	// MaxConcurrencyLimit is the most max_concurrency may ask for: one
	// caller's composite call holds that many goroutines and backend calls.
	MaxConcurrencyLimit = 64
	// DefaultMaxItems is the longest list a for_each step calls its method
	// for unless the step sets max_items: the list comes from answers the
	// plan does not control.
	DefaultMaxItems = 100
)

// plan is a composite method, compiled: its steps in an order where every
// step comes after the steps it needs.
type plan struct {
	route    *route.Route
	where    string // "file: method", for messages
	steps    []*step
	all      []int // 0..len(steps)-1: the response reads every step
	response cel.Program
	adapter  types.Adapter // makes the steps' answers CEL values
}

// step is one compiled step.
type step struct {
	name        string
	route       *route.Route // the method it calls
	request     cel.Program
	forEach     cel.Program // nil: one call
	optional    bool
	concurrency int
	maxItems    int
	needs       []int // indices in plan.steps of the steps it reads
	mark        *policy.Step
}

// identifier is what a step's name must look like: a CEL identifier.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reserved are the names a step may not take: the expressions' own
// variables and CEL's reserved words.
var reserved = []string{"request", "item", "true", "false", "null", "in", "as", "break", "const", "continue",
	"else", "for", "function", "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}

// compile checks and compiles the plan of a composite route against the
// route table: every method known and unary, every name unique, every
// expression type-checked against the descriptors, no cycle.
func compile(r *route.Route, routes *route.Table, file string) (*plan, error) {
	p := &plan{route: r, where: file + ": " + r.FullMethod[1:]}
	c := r.Compose
	fail := func(step, format string, args ...any) error {
		if step == "" {
			return fmt.Errorf("%s: %s", p.where, fmt.Sprintf(format, args...))
		}
		return fmt.Errorf("%s: step %q: %s", p.where, step, fmt.Sprintf(format, args...))
	}
	if len(c.GetSteps()) == 0 {
		return nil, fail("", "a composite method needs at least one step")
	}
	// The messages the expressions see: the composite's own and each
	// step method's input and output.
	msgs := []any{r.Input.Zero().Interface(), r.Output.Zero().Interface()}
	declared := map[string]*optionsv1.ComposeStep{}
	byName := map[string]*route.Route{}
	for _, s := range c.GetSteps() {
		name := s.GetName()
		switch {
		case !identifier.MatchString(name):
			return nil, fail(name, "a step's name must be an identifier (letters, digits, _)")
		case slices.Contains(reserved, name):
			return nil, fail(name, "%q is reserved: name the step otherwise", name)
		case declared[name] != nil:
			return nil, fail(name, "two steps have this name")
		}
		declared[name] = s
		sr, err := stepRoute(s.GetMethod(), routes)
		if err != nil {
			return nil, fail(name, "%v", err)
		}
		byName[name] = sr
		msgs = append(msgs, sr.Input.Zero().Interface(), sr.Output.Zero().Interface())
	}
	if strings.TrimSpace(c.GetResponse()) == "" {
		return nil, fail("", "response is empty: write the CEL expression that builds a %s", r.Output.Descriptor().FullName())
	}

	opts := []cel.EnvOption{cel.Types(msgs...), cel.Container(string(r.Input.Descriptor().ParentFile().Package())),
		cel.Variable("request", cel.ObjectType(string(r.Input.Descriptor().FullName())))}
	for _, s := range c.GetSteps() {
		opts = append(opts, cel.Variable(s.GetName(), resultType(byName[s.GetName()], s.GetForEach() != "")))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fail("", "expressions: %v", err)
	}
	p.adapter = env.CELTypeAdapter()

	// Each expression, checked; the steps it reads are its needs.
	needs := map[string][]string{}
	steps := map[string]*step{}
	for _, s := range c.GetSteps() {
		name, sr := s.GetName(), byName[s.GetName()]
		st := &step{name: name, route: sr, optional: s.GetOptional(), concurrency: DefaultMaxConcurrency,
			maxItems: DefaultMaxItems, mark: &policy.Step{Composite: r.FullMethod, Name: name}}
		if n := s.GetMaxConcurrency(); n > MaxConcurrencyLimit {
			return nil, fail(name, "max_concurrency %d is over the limit of %d", n, MaxConcurrencyLimit)
		} else if n > 0 {
			st.concurrency = int(n)
		}
		if n := s.GetMaxItems(); n > 0 {
			st.maxItems = int(n)
		}
		reqEnv := env
		if fe := s.GetForEach(); fe != "" {
			ast, refs, err := check(env, fe, nil, declared)
			if err != nil {
				return nil, fail(name, "for_each: %v", err)
			}
			t := ast.OutputType()
			if t.Kind() != cel.ListKind || len(t.Parameters()) != 1 {
				return nil, fail(name, "for_each has type %s, want a list", t)
			}
			if reqEnv, err = env.Extend(cel.Variable("item", t.Parameters()[0])); err != nil {
				return nil, fail(name, "for_each: %v", err)
			}
			if st.forEach, err = env.Program(ast); err != nil {
				return nil, fail(name, "for_each: %v", err)
			}
			needs[name] = refs
		}
		if strings.TrimSpace(s.GetRequest()) == "" {
			return nil, fail(name, "request is empty: write the CEL expression that builds a %s", sr.Input.Descriptor().FullName())
		}
		ast, refs, err := check(reqEnv, s.GetRequest(), sr.Input.Descriptor(), declared)
		if err != nil {
			return nil, fail(name, "request: %v", err)
		}
		if st.request, err = reqEnv.Program(ast); err != nil {
			return nil, fail(name, "request: %v", err)
		}
		needs[name] = append(needs[name], refs...)
		steps[name] = st
	}
	ast, _, err := check(env, c.GetResponse(), r.Output.Descriptor(), declared)
	if err != nil {
		return nil, fail("", "response: %v", err)
	}
	if p.response, err = env.Program(ast); err != nil {
		return nil, fail("", "response: %v", err)
	}

	names := make([]string, len(c.GetSteps()))
	for i, s := range c.GetSteps() {
		names[i] = s.GetName()
	}
	sorted, cycle := order(names, func(name string) []string { return needs[name] })
	if cycle != nil {
		return nil, fail("", "steps form a cycle: %s", strings.Join(cycle, " -> "))
	}
	index := map[string]int{}
	for i, name := range sorted {
		index[name] = i
		p.steps = append(p.steps, steps[name])
		p.all = append(p.all, i)
	}
	for _, st := range p.steps {
		for _, n := range needs[st.name] {
			if !slices.Contains(st.needs, index[n]) {
				st.needs = append(st.needs, index[n])
			}
		}
	}
	return p, nil
}

// stepRoute finds the routed unary method a step calls, named
// package.Service/Method.
func stepRoute(method string, routes *route.Table) (*route.Route, error) {
	full := "/" + strings.TrimPrefix(method, "/")
	if method == "" || strings.Count(full, "/") != 2 {
		return nil, fmt.Errorf("method %q: want package.Service/Method, for example orders.v1.OrderService/GetOrder", method)
	}
	sr, ok := routes.Lookup(full)
	if !ok {
		return nil, fmt.Errorf("unknown method %s: no routed service of this gateway has it", method)
	}
	if sr.Streams() {
		return nil, fmt.Errorf("method %s is a %s: a step calls unary methods only", method, sr.Kind())
	}
	return sr, nil
}

// resultType is the type of a step's answer in the expressions: the
// method's output, or a list of them for a for_each step.
func resultType(r *route.Route, list bool) *cel.Type {
	t := cel.ObjectType(string(r.Output.Descriptor().FullName()))
	if list {
		return cel.ListType(t)
	}
	return t
}

// check parses and type-checks expr, which must be a want message (nil:
// any type), and returns the steps it reads.
func check(env *cel.Env, expr string, want protoreflect.MessageDescriptor, steps map[string]*optionsv1.ComposeStep) (*cel.Ast, []string, error) {
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, nil, fmt.Errorf("%s", strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if want != nil {
		if wt := cel.ObjectType(string(want.FullName())); !ast.OutputType().IsExactType(wt) {
			return nil, nil, fmt.Errorf("%q has type %s, want %s", expr, ast.OutputType(), want.FullName())
		}
	}
	var refs []string
	for _, ref := range ast.NativeRep().ReferenceMap() {
		if steps[ref.Name] != nil && !slices.Contains(refs, ref.Name) {
			refs = append(refs, ref.Name)
		}
	}
	slices.Sort(refs)
	return ast, refs, nil
}

// order sorts the nodes reachable from roots so that each comes after the
// nodes next gives for it, in the order of roots and of next where free. A
// cycle is returned instead, as the path that closes it (its first node
// repeated at the end).
func order[K comparable](roots []K, next func(K) []K) (sorted, cycle []K) {
	const (
		unseen = iota
		visiting
		done
	)
	state := map[K]int{}
	var path []K
	var visit func(n K) bool
	visit = func(n K) bool {
		switch state[n] {
		case done:
			return true
		case visiting:
			cycle = append(slices.Clone(path[slices.Index(path, n):]), n)
			return false
		}
		state[n] = visiting
		path = append(path, n)
		for _, m := range next(n) {
			if !visit(m) {
				return false
			}
		}
		path = path[:len(path)-1]
		state[n] = done
		sorted = append(sorted, n)
		return true
	}
	for _, n := range roots {
		if !visit(n) {
			return nil, cycle
		}
	}
	return sorted, nil
}
