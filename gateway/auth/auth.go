package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
)

// PolicyName names this policy in rejections and metrics.
const PolicyName = "auth"

// Reasons in the google.rpc.ErrorInfo of a rejection.
const (
	ReasonMissing           = "MISSING_CREDENTIALS"
	ReasonMalformed         = "MALFORMED_CREDENTIALS"
	ReasonInvalidToken      = "INVALID_TOKEN"
	ReasonExpired           = "TOKEN_EXPIRED"
	ReasonWrongAudience     = "WRONG_AUDIENCE"
	ReasonUnknownKey        = "UNKNOWN_SIGNING_KEY"
	ReasonInvalidAPIKey     = "INVALID_API_KEY"
	ReasonInsufficientScope = "INSUFFICIENT_SCOPE"
	// ReasonTooManyFailures: the client's address has spent its budget of
	// failed authentications (auth.failure_limit); RESOURCE_EXHAUSTED.
	ReasonTooManyFailures = "TOO_MANY_FAILED_AUTHENTICATIONS"
)

const (
	authorizationKey = "authorization"
	challengeKey     = "www-authenticate"
	realm            = `Bearer realm="portico"`
	retryAfterKey    = "retry-after" // seconds, on ReasonTooManyFailures
)

// failure is why credentials were refused: an ErrorInfo reason and a
// description that helps the client fix it.
type failure struct {
	reason, desc string
	// uncharged marks a failure of the gateway's, not the caller's (the
	// issuer's keys are not loaded yet): it costs no failure budget, or a
	// JWKS outage would throttle every good client too.
	uncharged bool
}

// Option configures the policy.
type Option func(*options)

type options struct {
	consul *api.Client
	logger *slog.Logger
	watch  []discovery.Option
}

// WithConsul gives the policy a Consul client for API keys in KV.
func WithConsul(c *api.Client) Option { return func(o *options) { o.consul = c } }

// WithLogger sets where key reloads, JWKS trouble and failed
// authentications (at most a line per client address per failure_limit
// period) are logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithWatchOptions tunes the Consul KV watch (backoff, wait time).
func WithWatchOptions(opts ...discovery.Option) Option {
	return func(o *options) { o.watch = append(o.watch, opts...) }
}

// Policy authenticates callers and checks scopes. Build it with New, start
// its background work with Start, stop it with Close.
type Policy struct {
	cfg     Config
	opts    options
	issuers map[string]*issuer
	keys    *apiKeys
	certs   *clientCerts // nil when no certificate is a credential
	// failures is each client address's budget of failed authentications;
	// nil when auth.failure_limit is off.
	failures *failureBudget
	// parser checks structure and signature; claims are each issuer's
	// validator's job, once the issuer is known.
	parser *jwt.Parser

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New checks the config and builds the policy. It reads local key files but
// does no network I/O.
func New(cfg Config, opts ...Option) (*Policy, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.APIKeysConsulPrefix != "" && o.consul == nil {
		return nil, fmt.Errorf("auth: api_keys_consul_prefix needs a Consul client")
	}
	if pre := cfg.APIKeysConsulPrefix; pre != "" {
		// "portico/apikeys" must not also match "portico/apikeys-old/...".
		cfg.APIKeysConsulPrefix = strings.TrimSuffix(pre, "/") + "/"
	}
	p := &Policy{cfg: cfg, opts: o, issuers: map[string]*issuer{}, keys: newAPIKeys(cfg.APIKeys),
		certs: newClientCerts(cfg.ClientCertificates), parser: jwt.NewParser(jwt.WithoutClaimsValidation())}
	p.failures = newFailureBudget(*cfg.FailureLimit, maxFailureAddrs, o.logger)
	for _, ic := range cfg.JWT {
		is, err := newIssuer(ic, cfg.Leeway)
		if err != nil {
			return nil, err
		}
		p.issuers[ic.Issuer] = is
	}
	return p, nil
}

// Start fetches JWKS URLs and starts watching Consul for API keys.
func (p *Policy) Start(ctx context.Context) error {
	ctx, p.cancel = context.WithCancel(ctx)
	var errs []error
	for _, is := range p.issuers {
		errs = append(errs, is.start(ctx, p.opts.logger))
	}
	if prefix := p.cfg.APIKeysConsulPrefix; prefix != "" {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// On errors the watcher logs and retries, and the last loaded
			// keys stay: a Consul blip must not lock every consumer out.
			discovery.WatchPrefix(ctx, p.opts.consul, prefix,
				func(pairs api.KVPairs) { p.keys.loadKV(prefix, pairs, p.opts.logger) },
				append([]discovery.Option{discovery.WithLogger(p.opts.logger)}, p.opts.watch...)...)
		}()
	}
	return errors.Join(errs...)
}

// CredentialKinds lists the kinds of credentials the policy is configured
// to accept, in a fixed order: "jwt" with token issuers, "api_key" with API
// keys in the config or a Consul prefix, "client_certificate" with
// client_certificates entries (which count only on listeners that verify
// client certificates). An authenticated method accepts these; a public
// one needs none.
func (p *Policy) CredentialKinds() []string {
	var out []string
	if len(p.cfg.JWT) > 0 {
		out = append(out, KindJWT)
	}
	if len(p.cfg.APIKeys) > 0 || p.cfg.APIKeysConsulPrefix != "" {
		out = append(out, KindAPIKey)
	}
	if p.certs != nil {
		out = append(out, KindClientCertificate)
	}
	return out
}

// Close stops the background work.
func (p *Policy) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	return nil
}

// Authorize authenticates the call in ctx and checks its scopes. On success
// it stores the identity in the call. setHeader sends response headers
// (the WWW-Authenticate challenge, Retry-After); nil means grpc.SetHeader on
// ctx.
//
// Credentials from a client address that has spent its failure budget are
// refused before they are looked at, valid ones included: checking them
// would cost the verification the budget exists to save, and telling a
// valid key from an invalid one would let a guesser go on at full speed
// with the answer to each guess. A call without credentials is no attack
// on the verifier, so it neither spends budget nor is refused for want of
// it: it gets its usual answer (a public method, or 401). Nor is a call
// whose only credential is a client certificate: the handshake verified
// it, and nobody guesses a certificate.
func (p *Policy) Authorize(ctx context.Context, setHeader func(metadata.MD) error) error {
	call, ok := policy.FromContext(ctx)
	if !ok {
		return policy.NoCall(PolicyName)
	}
	if setHeader == nil {
		setHeader = func(md metadata.MD) error { return grpc.SetHeader(ctx, md) }
	}
	creds := credentialsOf(ctx, call)
	creds.cert = call.ClientCert
	if creds.present() {
		if wait := p.failures.wait(call.ClientIP); wait > 0 {
			p.failures.refused(call.ClientIP, ReasonTooManyFailures)
			return tooManyFailures(setHeader, wait)
		}
	}
	id, f := p.authenticate(ctx, creds)
	switch {
	case f != nil:
		if !f.uncharged {
			p.failures.fail(call.ClientIP, f.reason)
		}
		kind := "invalid_token"
		if f.reason == ReasonMalformed {
			kind = "invalid_request" // RFC 6750 3.1
		}
		return p.reject(setHeader, codes.Unauthenticated, f,
			realm+`, error="`+kind+`", error_description="`+strings.ReplaceAll(f.desc, `"`, `'`)+`"`)
	case id == nil && call.Policy.Access == policy.Public:
		return nil
	case id == nil:
		return p.reject(setHeader, codes.Unauthenticated, &failure{reason: ReasonMissing, desc: p.missing(call.ClientCert)}, realm)
	}
	var missing []string
	for _, s := range call.Policy.Scopes {
		if !id.HasScope(s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		f := &failure{reason: ReasonInsufficientScope, desc: fmt.Sprintf("missing scope %q", strings.Join(missing, " "))}
		return p.reject(setHeader, codes.PermissionDenied, f,
			realm+`, error="insufficient_scope", scope="`+strings.Join(call.Policy.Scopes, " ")+`"`)
	}
	call.Identity = id
	return nil
}

// tooManyFailures refuses a call from an address without failure budget:
// RESOURCE_EXHAUSTED (429 over REST) with a RetryInfo and Retry-After in
// whole seconds, rounded up.
func tooManyFailures(setHeader func(metadata.MD) error, wait time.Duration) error {
	secs := int64((wait + time.Second - 1) / time.Second)
	_ = setHeader(metadata.Pairs(retryAfterKey, strconv.FormatInt(secs, 10)))
	return policy.Reject(codes.ResourceExhausted, PolicyName, ReasonTooManyFailures,
		fmt.Sprintf("too many failed authentications from this address: credentials are not checked for %ds", secs),
		nil, &errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
}

func (p *Policy) reject(setHeader func(metadata.MD) error, code codes.Code, f *failure, challenge string) error {
	_ = setHeader(metadata.Pairs(challengeKey, challenge))
	return policy.Reject(code, PolicyName, f.reason, f.desc, nil)
}

// missing says what to send when a call brings no credentials. With
// client certificates configured it names them too, and says so when the
// call's certificate verified but no entry names it: the caller then knows
// the certificate got through and the mapping is what is missing.
func (p *Policy) missing(cert *x509.Certificate) string {
	const send = "send Authorization: Bearer <token> or " + APIKeyHeader + ": <key>"
	switch {
	case p.certs == nil:
		return "credentials required: " + send
	case cert != nil:
		return "credentials required: the client certificate is not mapped to a consumer; " + send
	}
	return "credentials required: " + send + ", or connect with a client certificate"
}

// credentials are what a call presents: its authorization and x-api-key
// values, and the leaf of its verified client certificate chain.
type credentials struct {
	authz, apiKeys []string
	cert           *x509.Certificate
}

// credentialsOf reads the two keys it needs, not a copy of all the call's
// metadata. The values may be the door's own: only read them.
func credentialsOf(ctx context.Context, call *policy.Call) credentials {
	return credentials{
		authz:   call.IncomingValue(ctx, authorizationKey),
		apiKeys: call.IncomingValue(ctx, APIKeyHeader),
	}
}

// present reports whether the call sends credentials that could be
// guessed: a token or an API key, not a verified certificate.
func (c credentials) present() bool { return len(c.authz) > 0 || len(c.apiKeys) > 0 }

// authenticate returns the caller's identity, nil without credentials, or
// why the credentials were refused. A bearer token wins over an API key,
// and either over a client certificate: a certificate names the
// connection, which a caller may share with others (a backend-for-frontend
// or a sidecar holds one certificate and sends each user's token), while a
// token or key is sent with each call. A token or key that fails fails the
// call; the certificate never stands in for it. A certificate that no
// entry names is no credential: the call is anonymous.
func (p *Policy) authenticate(ctx context.Context, c credentials) (*policy.Identity, *failure) {
	if authz := c.authz; len(authz) > 0 {
		raw, f := ParseBearer(authz)
		if f != nil {
			return nil, f
		}
		return p.verifyToken(ctx, raw)
	}
	if keys := c.apiKeys; len(keys) > 0 {
		if len(keys) > 1 || keys[0] == "" {
			return nil, &failure{reason: ReasonMalformed, desc: "send exactly one " + APIKeyHeader}
		}
		id, ok := p.keys.lookup(keys[0])
		if !ok {
			return nil, &failure{reason: ReasonInvalidAPIKey, desc: "API key is not valid (unknown or revoked)"}
		}
		return id, nil
	}
	return p.certs.lookup(c.cert), nil
}

// ParseBearer extracts the token of an Authorization value
// "Bearer <token>". The failure never contains the value.
func ParseBearer(values []string) (string, *failure) {
	bad := &failure{reason: ReasonMalformed, desc: `authorization must be "Bearer <token>"`}
	if len(values) != 1 {
		return "", &failure{reason: ReasonMalformed, desc: "send exactly one authorization header"}
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", bad
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || len(token) > 16<<10 {
		return "", bad
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/=", c) >= 0) {
			return "", bad
		}
	}
	return token, nil
}

// verifyToken verifies a token in one parse: the keyfunc refuses critical
// header extensions, picks the issuer named in the token and refuses
// algorithms that issuer does not use, so each token is checked with its
// own issuer's keys only; the issuer's validator then checks the claims,
// and the issuer its lifetime cap.
func (p *Policy) verifyToken(ctx context.Context, raw string) (*policy.Identity, *failure) {
	claims := jwt.MapClaims{}
	var is *issuer
	_, err := p.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if err := refuseCrit(t.Header); err != nil {
			return nil, err
		}
		iss, _ := claims["iss"].(string)
		var ok bool
		if is, ok = p.issuers[iss]; !ok {
			return nil, refuse(ReasonInvalidToken, "token issuer is not trusted")
		}
		if alg := t.Method.Alg(); !slices.Contains(is.cfg.Algorithms, alg) {
			return nil, refuse(ReasonInvalidToken, fmt.Sprintf("token algorithm %q is not accepted for this issuer", printable(alg, 16)))
		}
		return is.key(ctx, t)
	})
	if err == nil {
		err = is.validator.Validate(claims)
	}
	if err != nil {
		return nil, tokenFailure(err, is != nil, claims)
	}
	if f := is.checkLifetime(claims, time.Now()); f != nil {
		return nil, f
	}
	return is.identity(claims)
}

// UnaryServerInterceptor authorizes unary calls: go-grpc-middleware's auth
// interceptor around Authorize.
func (p *Policy) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return grpcauth.UnaryServerInterceptor(p.authFunc)
}

// StreamServerInterceptor authorizes streams when they open.
func (p *Policy) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return grpcauth.StreamServerInterceptor(p.authFunc)
}

// authFunc is Authorize as go-grpc-middleware's AuthFunc. The identity goes
// into the call's policy.Call, so the context stays the same.
func (p *Policy) authFunc(ctx context.Context) (context.Context, error) {
	return ctx, p.Authorize(ctx, nil)
}
