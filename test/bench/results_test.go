package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
)

func TestQuantile(t *testing.T) {
	s := func(secs ...float64) []time.Duration {
		var d []time.Duration
		for _, x := range secs {
			d = append(d, time.Duration(x*float64(time.Second)))
		}
		return d
	}
	cases := []struct {
		name    string
		samples []time.Duration
		missed  int
		p, want float64
	}{
		{"median of 4, nearest rank", s(4, 1, 3, 2), 0, 0.5, 2},
		{"p99 of 100 is the 99th", s(append(make([]float64, 98), 5, 9)...), 0, 0.99, 5},
		{"misses are the slowest", s(1, 2, 3), 1, 0.5, 2},
		{"p99 among the misses", s(1, 2, 3), 1, 0.99, math.Inf(1)},
		{"nothing at all", nil, 0, 0.5, math.NaN()},
	}
	for _, c := range cases {
		got := quantile(c.samples, c.missed, c.p)
		if !(got == c.want || math.IsNaN(got) && math.IsNaN(c.want)) {
			t.Errorf("%s: quantile = %v, want %v", c.name, got, c.want)
		}
	}
}

// A row without samples must not cost the run its results: JSON cannot carry NaN or Inf.
func TestWriteRowWithoutSamples(t *testing.T) {
	r := &Results{Versions: map[string]string{}, Settings: map[string]string{}}
	r.add(Row{Section: "s", Name: "p99", Unit: "s", Ours: ptr.To(quantile(nil, 0, 0.99)), Peer: ptr.To(1.0), Goal: "≤ 1 s"})
	r.add(Row{Section: "s", Name: "p99 missed", Unit: "s", Ours: ptr.To(quantile(nil, 3, 0.99)), Peer: ptr.To(math.NaN())})
	dir := t.TempDir()
	md, err := r.write(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "x.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Rows[0].Ours != nil || back.Rows[0].Met == nil || *back.Rows[0].Met || back.Rows[0].Ratio != nil {
		t.Errorf("row without samples: %+v; want no figure, no ratio, goal missed", back.Rows[0])
	}
	m, _ := os.ReadFile(md)
	if !strings.Contains(string(m), "no samples") {
		t.Errorf("the Markdown does not say the figure had no samples:\n%s", m)
	}
}
