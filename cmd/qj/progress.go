package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// progress reports a long enqueue on stderr: on a terminal, one line rewritten at most
// every interval; otherwise (a log, a pipe) a line every `every` items.
type progress struct {
	w        io.Writer
	terminal bool
	every    int64
	interval time.Duration
	now      func() time.Time

	n, lastN  int64
	start     time.Time
	lastPrint time.Time
	printed   bool
}

// newProgress returns a progress reporter; a nil *progress reports nothing.
func newProgress(w io.Writer, every int64, now func() time.Time) *progress {
	p := &progress{w: w, every: every, interval: 250 * time.Millisecond, now: now}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.terminal = true
	}
	p.start = now()
	return p
}

func (p *progress) add(n int64) {
	if p == nil {
		return
	}
	p.n += n
	if p.terminal {
		if t := p.now(); t.Sub(p.lastPrint) >= p.interval {
			p.lastPrint = t
			fmt.Fprintf(p.w, "\r%s", p.line())
			p.printed = true
		}
		return
	}
	if p.every > 0 && p.n/p.every > p.lastN/p.every {
		p.lastN = p.n
		fmt.Fprintln(p.w, p.line())
	}
}

func (p *progress) line() string {
	s := fmt.Sprintf("enqueued %d items", p.n)
	if d := p.now().Sub(p.start); d > 0 {
		s += fmt.Sprintf(" (%.0f/s)", float64(p.n)/d.Seconds())
	}
	return s
}

// done ends the terminal's progress line.
func (p *progress) done() {
	if p != nil && p.terminal && p.printed {
		fmt.Fprintf(p.w, "\r%s\n", p.line())
	}
}
