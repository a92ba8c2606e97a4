package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/services/orders"
)

// sseEvent is one Server-Sent Event as EventSource would see it.
type sseEvent struct{ name, data string }

// readEvents reads an event stream to its end: the events, and how many
// comment lines (heartbeats) came.
func readEvents(t *testing.T, body io.Reader) (events []sseEvent, comments int) {
	t.Helper()
	sc := bufio.NewScanner(body)
	var cur sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(data) > 0 {
				cur.data = strings.Join(data, "\n")
				events = append(events, cur)
			}
			cur, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			comments++
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		default:
			t.Errorf("not an event stream line: %q", line)
		}
	}
	return events, comments
}

// watch opens GET /v1/orders/{id}:watch with the given Accept and key.
func watch(t *testing.T, w *world, id, accept, key string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", w.base+"/v1/orders/"+id+":watch", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// statusReason is a google.rpc.Status in JSON, reduced to its code and
// ErrorInfo reason; ok is false when s is not a bare Status.
func statusReason(s string) (code int, reason string, ok bool) {
	var keys map[string]json.RawMessage
	if json.Unmarshal([]byte(s), &keys) != nil || keys["code"] == nil {
		return 0, "", false
	}
	for k := range keys {
		if k != "code" && k != "message" && k != "details" {
			return 0, "", false // an envelope ({"error": ...}) or more
		}
	}
	var st struct {
		Code    int `json:"code"`
		Details []struct {
			Type   string `json:"@type"`
			Reason string `json:"reason"`
		} `json:"details"`
	}
	if json.Unmarshal([]byte(s), &st) != nil {
		return 0, "", false
	}
	for _, d := range st.Details {
		if strings.HasSuffix(d.Type, "ErrorInfo") {
			reason = d.Reason
		}
	}
	return st.Code, reason, true
}

// TestSSEWatchOrder reads WatchOrder as Server-Sent Events: one data event
// per message with the NDJSON line's JSON, a refused stream as its HTTP
// status with an error event, and a stream that fails mid-way as
// "event: error" after heartbeats; without the Accept header the stream
// stays NDJSON, and its error line is the same google.rpc.Status JSON.
func TestSSEWatchOrder(t *testing.T) {
	t.Run("to the end", func(t *testing.T) {
		w := newWorld(t, false)
		w.startCatalog()
		w.startOrders(orders.WithStatusStep(50 * time.Millisecond))
		created := w.rest("POST", "/v1/orders", map[string]any{"items": []any{map[string]any{"productId": "prd-000001", "quantity": 1}}})
		id := field(created.Body, "order", "id").(string)

		resp := watch(t, w, id, "text/event-stream", w.key)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("SSE watch: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		events, _ := readEvents(t, resp.Body)
		var got []string
		for _, e := range events {
			var line struct {
				Result struct {
					Order struct{ Status string } `json:"order"`
				} `json:"result"`
			}
			if e.name != "" || json.Unmarshal([]byte(e.data), &line) != nil {
				t.Fatalf("event %+v is not a message", e)
			}
			got = append(got, line.Result.Order.Status)
		}
		if want := "ORDER_STATUS_PENDING,ORDER_STATUS_CONFIRMED,ORDER_STATUS_SHIPPED"; strings.Join(got, ",") != want {
			t.Errorf("SSE statuses %v, want %s", got, want)
		}
		t.Logf("SSE watch of %s: %d events %v", id, len(events), got)

		// Refused by the chain before it began: the HTTP status of the code,
		// the error as an event, the headers of a unary refusal.
		resp = watch(t, w, id, "text/event-stream", "")
		events, _ = readEvents(t, resp.Body)
		if resp.StatusCode != 401 || resp.Header.Get("X-Portico-Error-Source") != "gateway" ||
			!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || len(events) != 1 || events[0].name != "error" {
			t.Fatalf("anonymous SSE watch: %d %v %+v", resp.StatusCode, resp.Header, events)
		}
		if code, reason, ok := statusReason(events[0].data); !ok || code != 16 || reason != "MISSING_CREDENTIALS" {
			t.Errorf("anonymous SSE watch error %q: code %d reason %q", events[0].data, code, reason)
		}
		// NDJSON: the same Status JSON as a unary refusal, with no envelope.
		resp = watch(t, w, id, "", "")
		body, _ := io.ReadAll(resp.Body)
		if code, reason, ok := statusReason(strings.TrimSpace(string(body))); resp.StatusCode != 401 || !ok || code != 16 || reason != "MISSING_CREDENTIALS" ||
			resp.Header.Get("X-Portico-Error-Source") != "gateway" {
			t.Errorf("anonymous NDJSON watch: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("fails mid-way", func(t *testing.T) {
		w := newWorld(t, false, func(c *gateway.Config) {
			sc := c.Services["orders.v1.OrderService"]
			sc.StreamTimeout = 600 * time.Millisecond
			c.Services["orders.v1.OrderService"] = sc
			c.SSE.Heartbeat = 50 * time.Millisecond
		})
		w.startCatalog()
		w.startOrders(orders.WithStatusStep(0)) // stays PENDING: the stream's deadline ends it
		created := w.rest("POST", "/v1/orders", map[string]any{"items": []any{map[string]any{"productId": "prd-000001", "quantity": 1}}})
		id := field(created.Body, "order", "id").(string)

		resp := watch(t, w, id, "text/event-stream", w.key)
		events, comments := readEvents(t, resp.Body)
		if resp.StatusCode != 200 || len(events) != 2 || events[0].name != "" || events[1].name != "error" {
			t.Fatalf("SSE watch: %d, events %+v", resp.StatusCode, events)
		}
		if code, reason, ok := statusReason(events[1].data); !ok || code != 4 || reason != "DEADLINE_EXCEEDED" {
			t.Errorf("error event %q: code %d reason %q, want 4 DEADLINE_EXCEEDED", events[1].data, code, reason)
		}
		if comments == 0 {
			t.Error("no heartbeat in 600ms with a 50ms heartbeat")
		}
		t.Logf("SSE watch ended by its deadline: %d heartbeats, error event %s", comments, events[1].data)

		resp = watch(t, w, id, "", w.key)
		body, _ := io.ReadAll(resp.Body)
		lines := strings.Split(strings.TrimSpace(string(body)), "\n")
		last := lines[len(lines)-1]
		if code, reason, ok := statusReason(last); resp.StatusCode != 200 || len(lines) != 2 || !ok || code != 4 || reason != "DEADLINE_EXCEEDED" {
			t.Errorf("NDJSON watch: %d, last line %q of %d, want a bare google.rpc.Status", resp.StatusCode, last, len(lines))
		}
	})
}
