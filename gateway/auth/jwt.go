package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/portico-gw/portico/gateway/policy"
	"golang.org/x/time/rate"
)

// issuer verifies the tokens of one trusted issuer.
type issuer struct {
	cfg       IssuerConfig
	leeway    time.Duration
	validator *jwt.Validator // iss, aud, exp, nbf, iat, with the leeway
	// keys resolves a token's verification key. For a JWKS URL it is set by
	// start, since fetching is I/O; until then tokens fail as unverifiable.
	keys atomic.Pointer[keyfunc.Keyfunc]
	// cached reads the keys already loaded, without I/O; nil for HS256.
	cached atomic.Pointer[jwkset.Storage]
	// refetch is the budget of refetches caused by unknown kids. The
	// issuer keeps it rather than jwkset, which bounds the wait for its
	// budget and the refetch with one deadline: a wait capped at a
	// millisecond would cap the fetch at a millisecond too.
	refetch *rate.Limiter
}

func newIssuer(cfg IssuerConfig, leeway time.Duration) (*issuer, error) {
	is := &issuer{
		cfg:    cfg,
		leeway: leeway,
		validator: jwt.NewValidator(
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audiences...),
			jwt.WithLeeway(leeway),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
		),
		refetch: rate.NewLimiter(rate.Every(cfg.UnknownKIDInterval), 1),
	}
	switch {
	case cfg.JWKSFile != "":
		raw, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth: issuer %s: %w", cfg.Issuer, err)
		}
		kf, err := keyfunc.NewJWKSetJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("auth: issuer %s: jwks_file %s: %w", cfg.Issuer, cfg.JWKSFile, err)
		}
		is.keys.Store(&kf)
		store := kf.Storage()
		is.cached.Store(&store)
	case cfg.HS256Secret != "":
		secret := []byte(cfg.HS256Secret)
		var kf keyfunc.Keyfunc = hmacKey(secret)
		is.keys.Store(&kf)
	}
	return is, nil
}

// start begins fetching a JWKS URL; the refresh goroutine ends with ctx.
func (is *issuer) start(ctx context.Context, log *slog.Logger) error {
	if is.cfg.JWKSURL == "" {
		return nil
	}
	// A JWKS that is down at start must not stop the gateway: tokens fail
	// as unverifiable until a refresh succeeds.
	store, err := jwkset.NewStorageFromHTTP(is.cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:                    &http.Client{Timeout: 5 * time.Second},
		Ctx:                       ctx,
		HTTPTimeout:               5 * time.Second,
		NoErrorReturnFirstHTTPReq: true,
		RefreshInterval:           is.cfg.RefreshInterval,
		RefreshErrorHandler: func(_ context.Context, err error) {
			log.Warn("JWKS refresh failed", "issuer", is.cfg.Issuer, "url", is.cfg.JWKSURL, "error", err)
		},
	})
	if err != nil {
		return fmt.Errorf("auth: issuer %s: jwks_url: %w", is.cfg.Issuer, err)
	}
	// The client refetches on every unknown kid it is asked for; key asks
	// only when is.refetch allows, so the refetch gets the HTTP timeout.
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{is.cfg.JWKSURL: store},
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		return fmt.Errorf("auth: issuer %s: jwks_url: %w", is.cfg.Issuer, err)
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: client})
	if err != nil {
		return fmt.Errorf("auth: issuer %s: jwks_url: %w", is.cfg.Issuer, err)
	}
	is.cached.Store(&store)
	is.keys.Store(&kf)
	return nil
}

// refusal is why the keyfunc refused a token before any signature check:
// an untrusted issuer, an algorithm the issuer does not use, a key it does
// not have (even after the rate-capped refetch).
type refusal struct{ f *failure }

func (r *refusal) Error() string { return r.f.desc }

func refuse(reason, desc string) error { return &refusal{&failure{reason: reason, desc: desc}} }

// key returns the key that verifies t. The kid is looked up first, so that
// "no such key" (including "no refetch allowed right now") is told apart
// from every other failure.
func (is *issuer) key(ctx context.Context, t *jwt.Token) (any, error) {
	kf := is.keys.Load()
	if kf == nil {
		// The gateway's trouble, not the caller's: it costs no failure budget.
		return nil, &refusal{&failure{reason: ReasonUnknownKey, desc: "the issuer's signing keys are not loaded yet", uncharged: true}}
	}
	if kid, ok := t.Header["kid"].(string); ok {
		if cached := is.cached.Load(); cached != nil {
			if _, err := (*cached).KeyRead(ctx, kid); err != nil {
				// Never make a call wait for the refetch budget: an unknown
				// kid either triggers a refetch now or fails now.
				if !is.refetch.Allow() {
					return nil, unknownKID(kid)
				}
				if _, err := (*kf).Storage().KeyRead(ctx, kid); err != nil {
					return nil, unknownKID(kid)
				}
			}
		}
	}
	return (*kf).KeyfuncCtx(ctx)(t)
}

// refuseCrit refuses a token whose header has a "crit" parameter, whatever
// it names: RFC 7515 4.1.11 requires refusing a token that marks critical an
// extension the recipient does not understand, and the gateway understands
// none. golang-jwt ignores crit, so the keyfunc asks, before any key lookup.
func refuseCrit(header map[string]any) error {
	crit, ok := header["crit"]
	if !ok {
		return nil
	}
	var names []string
	if list, ok := crit.([]any); ok {
		for _, n := range list {
			if s, ok := n.(string); ok {
				names = append(names, s)
			}
		}
	}
	desc := `token header marks extensions critical ("crit"), and the gateway supports none`
	if len(names) > 0 {
		desc = fmt.Sprintf(`token header marks extensions critical ("crit": %q), and the gateway supports none`, printable(strings.Join(names, ","), 64))
	}
	return refuse(ReasonInvalidToken, desc)
}

func unknownKID(kid string) error {
	return refuse(ReasonUnknownKey, fmt.Sprintf("token signing key %q is unknown", printable(kid, 64)))
}

// hmacKey is the keyfunc of an HS256 issuer: it hands out the secret only
// to HS256 tokens (the parser has already refused every other alg).
type hmacKey []byte

func (k hmacKey) Keyfunc(t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
		return nil, errors.New("not an HMAC token")
	}
	return []byte(k), nil
}
func (k hmacKey) KeyfuncCtx(context.Context) jwt.Keyfunc { return k.Keyfunc }
func (k hmacKey) Storage() jwkset.Storage                { return nil }
func (k hmacKey) VerificationKeySet(context.Context) (jwt.VerificationKeySet, error) {
	return jwt.VerificationKeySet{Keys: []jwt.VerificationKey{[]byte(k)}}, nil
}

// checkLifetime refuses a token that lives longer than the issuer allows:
// exp - iat, or, without iat, exp - now (plus the leeway, since now is the
// gateway's clock and exp the issuer's). The validator has checked both
// claims' types and that exp is there.
func (is *issuer) checkLifetime(claims jwt.MapClaims, now time.Time) *failure {
	limit := is.cfg.MaxTokenLifetime
	if limit <= 0 {
		return nil
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return &failure{reason: ReasonInvalidToken, desc: "token lacks the required claim \"exp\""}
	}
	iat, _ := claims.GetIssuedAt()
	if iat != nil {
		if life := exp.Sub(iat.Time); life > limit {
			return &failure{reason: ReasonInvalidToken, desc: fmt.Sprintf("token lifetime (exp - iat) of %s exceeds this issuer's maximum of %s", life.Round(time.Second), limit)}
		}
		return nil
	}
	if left := exp.Sub(now); left > limit+is.leeway {
		return &failure{reason: ReasonInvalidToken, desc: fmt.Sprintf("token has no iat and expires in %s, beyond this issuer's maximum lifetime of %s", left.Round(time.Second), limit)}
	}
	return nil
}

// missingClaims names the required claims a token lacks, as the validator
// judges them (its error says only that one is missing, in a message that
// is not an API): iss, aud and exp are required.
func missingClaims(claims jwt.MapClaims) string {
	var missing []string
	if iss, err := claims.GetIssuer(); err == nil && iss == "" {
		missing = append(missing, `"iss"`)
	}
	if aud, err := claims.GetAudience(); err == nil && (len(aud) == 0 || len(aud) == 1 && aud[0] == "") {
		missing = append(missing, `"aud"`)
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp == nil {
		missing = append(missing, `"exp"`)
	}
	switch len(missing) {
	case 0:
		return "token lacks a required claim"
	case 1:
		return "token lacks the required claim " + missing[0]
	}
	return "token lacks the required claims " + strings.Join(missing, ", ")
}

// identity is the caller a verified token of this issuer names.
func (is *issuer) identity(claims jwt.MapClaims) (*policy.Identity, *failure) {
	sub, _ := claims["sub"].(string)
	consumer, _ := claims[is.cfg.ConsumerClaim].(string)
	if consumer == "" {
		return nil, &failure{reason: ReasonInvalidToken, desc: fmt.Sprintf("token has no %q claim to identify the consumer", is.cfg.ConsumerClaim)}
	}
	return &policy.Identity{Consumer: is.cfg.ConsumerPrefix + consumer, Subject: sub, Scopes: scopesOf(claims), Method: KindJWT}, nil
}

// scopesOf reads "scope" (space-separated, RFC 8693) or "scp" (a list or a
// space-separated string).
func scopesOf(claims jwt.MapClaims) []string {
	var out []string
	add := func(v any) {
		switch s := v.(type) {
		case string:
			out = append(out, strings.Fields(s)...)
		case []any:
			for _, e := range s {
				if str, ok := e.(string); ok {
					out = append(out, str)
				}
			}
		}
	}
	add(claims["scope"])
	add(claims["scp"])
	slices.Sort(out)
	return slices.Compact(out)
}

// tokenFailure says precisely what is wrong with a token, without the
// token. parsed says whether the token got as far as the keyfunc; claims
// are its claims then.
func tokenFailure(err error, parsed bool, claims jwt.MapClaims) *failure {
	var r *refusal
	if errors.As(err, &r) {
		return r.f
	}
	f := &failure{reason: ReasonInvalidToken}
	switch {
	case !parsed, errors.Is(err, jwt.ErrTokenMalformed):
		f.desc = "token is malformed"
	case errors.Is(err, jwt.ErrTokenExpired):
		f.reason, f.desc = ReasonExpired, "token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		f.desc = "token is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		f.desc = "token was issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		f.reason, f.desc = ReasonWrongAudience, "token audience is not accepted by this gateway"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		f.desc = "token issuer is not trusted"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		f.desc = missingClaims(claims)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		f.desc = "token cannot be verified with the issuer's keys"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		f.desc = "token signature is invalid"
	default:
		f.desc = "token is invalid"
	}
	return f
}

// printable keeps a client-supplied string safe for messages and logs.
func printable(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
