package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/auth"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// authAttackGet is a REST GET with the given headers.
func authAttackGet(t *testing.T, w *world, path string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, w.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

// TestAttackFailedAuth: one address sends 1,000 bad API keys, half over
// REST and half over gRPC. Once its failure budget (auth.failure_limit,
// default 20 a minute, burst 20) is spent, both doors answer 429 /
// RESOURCE_EXHAUSTED with Retry-After without checking the keys, the log
// gets a line per address and period rather than a line per failure, and
// other addresses are untouched. All test traffic comes from 127.0.0.1, so
// "another address" is a client behind a trusted proxy (X-Forwarded-For).
func TestAttackFailedAuth(t *testing.T) {
	gwLog := &testutil.LockedBuffer{}
	w := newWorldWith(t, false, []gateway.Option{gateway.WithLogger(slog.New(slog.NewTextHandler(gwLog, nil)))},
		func(c *gateway.Config) { c.TrustedProxies = []string{"127.0.0.1"} })
	w.startCatalog()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log (auth attack):\n%s", gwLog)
		}
	})
	// GetProduct is public, and bad credentials on it are still refused:
	// the attacker cannot dodge the budget by picking a public method.
	const path, product = "/v1/products/prd-000001", "prd-000001"
	anon := dial(t, w.gw.GRPCAddr(), "")
	client := catalogv1.NewCatalogServiceClient(anon)

	const perDoor = 500
	type tally struct{ unauthenticated, exhausted int }
	var rest, grpcDoor tally
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for i := range perDoor {
		if time.Now().After(deadline) {
			t.Fatalf("REST: %d calls took over a minute", i)
		}
		code, hdr, body := authAttackGet(t, w, path, map[string]string{"X-Api-Key": fmt.Sprintf("pk_guess_%04d", i)})
		switch code {
		case http.StatusUnauthorized:
			rest.unauthenticated++
		case http.StatusTooManyRequests:
			rest.exhausted++
			secs, err := strconv.Atoi(hdr.Get("Retry-After"))
			if err != nil || secs < 1 || secs > 60 || !strings.Contains(body, auth.ReasonTooManyFailures) || !strings.Contains(body, "google.rpc.RetryInfo") {
				t.Fatalf("REST call %d: 429 with Retry-After %q and body %s", i, hdr.Get("Retry-After"), body)
			}
		default:
			t.Fatalf("REST call %d: %d %s", i, code, body)
		}
	}
	for i := range perDoor {
		if time.Now().After(deadline) {
			t.Fatalf("gRPC: %d calls took over a minute", i)
		}
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), auth.APIKeyHeader, fmt.Sprintf("pk_guess_g%04d", i)), 5*time.Second)
		var header, trailer metadata.MD
		_, err := client.GetProduct(ctx, &catalogv1.GetProductRequest{Id: product}, grpc.Header(&header), grpc.Trailer(&trailer))
		cancel()
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unauthenticated:
			grpcDoor.unauthenticated++
		case codes.ResourceExhausted:
			grpcDoor.exhausted++
			retryAfter := append(header.Get("retry-after"), trailer.Get("retry-after")...)
			var delay time.Duration
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok {
					delay = ri.GetRetryDelay().AsDuration()
				}
			}
			if len(retryAfter) == 0 || delay <= 0 || delay > time.Minute {
				t.Fatalf("gRPC call %d: RESOURCE_EXHAUSTED with retry-after %v, RetryInfo %v (%v)", i, retryAfter, delay, err)
			}
		default:
			t.Fatalf("gRPC call %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)

	// 20 failures spend the budget; the budget refills a token every 3s
	// while the attack runs. The two doors share it: it is the address's.
	checked := rest.unauthenticated + grpcDoor.unauthenticated
	if maxChecked := 20 + int(elapsed/(3*time.Second)) + 1; checked < 20 || checked > maxChecked {
		t.Errorf("%d bad keys were checked in %v, want 20 to %d", checked, elapsed, maxChecked)
	}
	if rest.unauthenticated < 20 {
		t.Errorf("REST: only %d 401s before the budget ran out, want 20", rest.unauthenticated)
	}

	// The log: a line per address and budget period, not per failure.
	var authLines []string
	for _, l := range gwLog.Lines() {
		if strings.Contains(l, "failed authentications") {
			authLines = append(authLines, l)
		}
	}
	if len(authLines) > 2 {
		t.Errorf("%d log lines about failed authentication for %d failed calls from one address:\n%s", len(authLines), 2*perDoor, strings.Join(authLines, "\n"))
	}
	if len(authLines) == 0 || !strings.Contains(authLines[0], "client=127.0.0.1") {
		t.Errorf("no log line names the attacking address: %q", authLines)
	}
	for _, l := range gwLog.Lines() {
		if strings.Contains(l, "pk_guess") {
			t.Errorf("the log repeats a key: %s", l)
		}
	}

	// The spent address: a valid key is refused unchecked too (else the
	// attacker would learn which guess was right), calls without
	// credentials are not affected.
	if code, hdr, body := authAttackGet(t, w, path, map[string]string{"X-Api-Key": testAPIKey}); code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" {
		t.Errorf("a valid key from the spent address: %d %s", code, body)
	}
	if code, _, body := authAttackGet(t, w, path, nil); code != http.StatusOK {
		t.Errorf("no credentials, public method, from the spent address: %d %s", code, body)
	}
	// Another address, behind the trusted proxy, is untouched: its valid
	// key works and its bad key gets a plain 401.
	const other = "198.51.100.23"
	if code, _, body := authAttackGet(t, w, path, map[string]string{"X-Api-Key": testAPIKey, "X-Forwarded-For": other}); code != http.StatusOK {
		t.Errorf("a valid key from %s: %d %s", other, code, body)
	}
	if code, _, body := authAttackGet(t, w, path, map[string]string{"X-Api-Key": "pk_guess_other", "X-Forwarded-For": other}); code != http.StatusUnauthorized {
		t.Errorf("a bad key from %s: %d %s", other, code, body)
	}
	t.Logf("%d calls with bad API keys from one address in %v (%v a call): REST %d x 401, %d x 429; gRPC %d x UNAUTHENTICATED, %d x RESOURCE_EXHAUSTED; %d log lines about failed authentication",
		2*perDoor, elapsed.Round(time.Millisecond), (elapsed / (2 * perDoor)).Round(time.Microsecond),
		rest.unauthenticated, rest.exhausted, grpcDoor.unauthenticated, grpcDoor.exhausted, len(authLines))
	for _, l := range authLines {
		t.Logf("log: %s", l)
	}
}
