package ratelimit

import (
	"errors"
	"log/slog"
	"testing"
)

// A round trip that began before the latest failure (a probe, or a
// decision in flight when Redis failed) and ends well says nothing about
// Redis now: the store stays down until one begun after it passes.
func TestAnswerBegunBeforeAFailureKeepsTheStoreDown(t *testing.T) {
	l, err := NewRedis(RedisConfig{Address: Addresses{"127.0.0.1:1"}}, nil, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := l.store
	s.answered(l, s.gen.Load())
	if s.state.Load() != stateUp {
		t.Fatal("a first answer did not turn the store up")
	}
	begun := s.gen.Load() // a probe starts
	s.failed(l, errors.New("NOPERM"), "")
	s.answered(l, begun) // and ends well after the failure
	if s.state.Load() != stateDown {
		t.Fatalf("state %s, want down: the answer began before the failure", stateNames[s.state.Load()])
	}
	s.answered(l, s.gen.Load())
	if s.state.Load() != stateUp {
		t.Fatalf("state %s, want up after an answer begun since", stateNames[s.state.Load()])
	}
	if st := s.status(); st.Outages != 1 || st.Errors != 1 {
		t.Errorf("status %+v, want one outage and one error", st)
	}
}
