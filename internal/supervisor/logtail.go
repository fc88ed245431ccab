package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"time"
)

const (
	// tailLines is how much recent output an exit report or StartError
	// carries: enough for a stack trace's top or a startup error's context.
	tailLines = 20
	// maxLineBytes bounds memory when a child writes a huge line or binary
	// garbage without newlines; the file still gets everything.
	maxLineBytes = 4 << 10
)

// logTail receives a child's combined output: it appends everything to the
// log file and remembers the last lines for reports.
type logTail struct {
	mu      sync.Mutex
	file    *os.File
	ring    [tailLines]string
	next    int // ring index the next line goes to
	n       int // lines held, up to tailLines
	partial []byte
}

func (t *logTail) setFile(f *os.File) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.file = f
}

// Write never fails: an error here would make exec stop copying, and the
// child would then die of EPIPE on its next write, all because of a full
// disk on the supervisor's side.
func (t *logTail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file != nil {
		_, _ = t.file.Write(b)
	}
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			t.appendPartial(b)
			break
		}
		t.appendPartial(b[:i])
		t.push(string(bytes.TrimSuffix(t.partial, []byte("\r"))))
		t.partial = t.partial[:0]
		b = b[i+1:]
	}
	return n, nil
}

func (t *logTail) appendPartial(b []byte) {
	room := maxLineBytes - len(t.partial)
	if len(b) > room {
		b = b[:max(room, 0)]
	}
	t.partial = append(t.partial, b...)
}

func (t *logTail) push(line string) {
	t.ring[t.next] = line
	t.next = (t.next + 1) % tailLines
	t.n = min(t.n+1, tailLines)
}

// lines returns the remembered lines, oldest first, including an
// unterminated last line: a crashing child often dies mid-line.
func (t *logTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, t.n+1)
	for i := range t.n {
		out = append(out, t.ring[(t.next-t.n+i+tailLines)%tailLines])
	}
	if len(t.partial) > 0 {
		out = append(out, string(t.partial))
	}
	return out
}

// mark writes a supervisor line into the log file but not the tail, so
// the file shows where one incarnation ends and the next begins without
// the marks crowding the child's own lines out of the tail.
func (t *logTail) mark(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// A child that died mid-line would otherwise glue its last words to
	// the mark in the file, and to the next incarnation's first line in
	// the tail.
	prefix := ""
	if len(t.partial) > 0 {
		t.push(string(t.partial))
		t.partial = t.partial[:0]
		prefix = "\n"
	}
	if t.file == nil {
		return
	}
	_, _ = fmt.Fprintf(t.file, "%s=== %s supervisor: %s\n", prefix,
		time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

func (t *logTail) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file == nil {
		return nil
	}
	err := t.file.Close()
	t.file = nil
	return err
}
