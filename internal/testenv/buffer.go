package testenv

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that the code under test writes from its own
// goroutines (a process's output, a logger's lines) while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
