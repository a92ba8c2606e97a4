package testutil

import (
	"bytes"
	"strings"
	"sync"
)

// LockedBuffer is a bytes.Buffer that a logger's goroutines and the test
// may use at the same time. The zero value is ready to use.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the non-empty lines written so far, without their line
// ends.
func (l *LockedBuffer) Lines() []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		if line = strings.TrimRight(line, "\r\n"); line != "" {
			out = append(out, line)
		}
	}
	return out
}
