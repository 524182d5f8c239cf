package compat

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// obs is what a client observed while running one feature against one
// target, as lines in the order it saw them. Two targets agree when their
// lines are equal.
type obs struct {
	lines []string
}

func (o *obs) add(format string, args ...any) {
	o.lines = append(o.lines, fmt.Sprintf(format, args...))
}

func (o *obs) contains(s string) bool {
	for _, l := range o.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// digest is a running hash for results too large to keep line by line
// (the 100,000-row and 10 MB results): equal digests, equal bytes.
type digest struct {
	h interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	n int
}

func newDigest() *digest { return &digest{h: sha256.New()} }

func (d *digest) add(parts ...string) {
	for _, p := range parts {
		fmt.Fprintf(d.h, "%d:", len(p))
		_, _ = d.h.Write([]byte(p))
	}
	d.n++
}

func (d *digest) String() string {
	return fmt.Sprintf("%d items sha256:%s", d.n, hex.EncodeToString(d.h.Sum(nil))[:16])
}

// dumpDir, when set, receives every target's observations of every
// feature, one file each, to read what was compared.
var dumpDir = flag.String("compat.dump", "", "write each target's observations to this directory")

func dump(t *testing.T, engine, feature, target string, o *obs) {
	if *dumpDir == "" {
		return
	}
	name := regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(engine+"-"+feature+"-"+target, "_") + ".txt"
	if err := os.WriteFile(filepath.Join(*dumpDir, name), []byte(strings.Join(o.lines, "\n")+"\n"), 0o644); err != nil {
		t.Error(err)
	}
}

// target is one way of reaching the database: directly or through the
// agent, with the same client library.
type target[C any] struct {
	name   string
	client C
}

// feature is one row of an engine's table.
type feature[C any] struct {
	name string
	run  func(t *testing.T, c C, o *obs)
	// want are texts some observation of every target must contain: the
	// outcome the feature is there to show (57014 for a cancel, 1317 for
	// KILL QUERY…), so that two targets failing alike do not pass.
	want []string
}

// result is one cell of the summary: a feature with one client library.
type result struct {
	engine, client, feature string
	pass                    bool
	note                    string
	took                    time.Duration
}

var (
	resultsMu sync.Mutex
	results   []result
)

func record(r result) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	results = append(results, r)
}

// runTable runs every feature against every target, in order (the direct
// target first), and fails a feature whose observations differ.
func runTable[C any](t *testing.T, engine, client string, targets []target[C], features []feature[C]) {
	for _, f := range features {
		start := time.Now()
		var seen []*obs
		ok := t.Run(f.name, func(t *testing.T) {
			seen = seen[:0]
			for _, tg := range targets {
				o := &obs{}
				t.Run(tg.name, func(t *testing.T) {
					f.run(t, tg.client, o)
					for _, w := range f.want {
						if !o.contains(w) {
							t.Errorf("no observation contains %q", w)
						}
					}
				})
				dump(t, engine, f.name, tg.name, o)
				seen = append(seen, o)
			}
			// Compared even when a target missed an outcome it wants: the
			// difference is what tells the cause.
			for i := 1; i < len(seen); i++ {
				if d := diff(seen[0].lines, seen[i].lines); d != "" {
					t.Errorf("%s and %s differ:\n%s", targets[0].name, targets[i].name, d)
				}
			}
			if testing.Verbose() && len(seen) > 0 {
				t.Logf("%d observations agree", len(seen[0].lines))
			}
		})
		note := ""
		if !ok && len(seen) > 1 {
			if d := diff(seen[0].lines, seen[1].lines); d != "" {
				// The first differing line, as both targets saw it.
				first := strings.SplitN(d, "\n", 3)
				note = strings.Join(first[:min(2, len(first))], " / ")
			}
		}
		if !ok && note == "" {
			note = "did not run to the end (see the subtest's log)"
		}
		record(result{engine: engine, client: client, feature: f.name, pass: ok, note: note, took: time.Since(start)})
	}
}

// diff names the first lines in which a and b differ, with a line of
// context, or is empty when they are equal.
func diff(a, b []string) string {
	var out []string
	n := max(len(a), len(b))
	for i := 0; i < n && len(out) < 6; i++ {
		var x, y string
		if i < len(a) {
			x = a[i]
		} else {
			x = "(nothing)"
		}
		if i < len(b) {
			y = b[i]
		} else {
			y = "(nothing)"
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d: direct %s\n         agent  %s", i+1, clip(x), clip(y)))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return strings.Join(out, "\n")
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return s
}

// printSummary writes the table of every feature run into the test log.
func printSummary(t *testing.T) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		t.Fatal("no feature ran")
	}
	// The engines ran side by side: one engine's rows together, each in
	// its table's order.
	sort.SliceStable(results, func(i, j int) bool { return results[i].engine > results[j].engine })
	var b strings.Builder
	fmt.Fprintf(&b, "\n| engine | feature | client | direct vs agent | time |\n|---|---|---|---|---|\n")
	pass := 0
	var sizes []string
	perClient := map[string]int{}
	for _, r := range results {
		verdict := "pass"
		if r.pass {
			pass++
		} else {
			verdict = "FAIL: " + strings.ReplaceAll(r.note, "|", `\|`)
		}
		k := r.engine + " with " + r.client
		if perClient[k] == 0 {
			sizes = append(sizes, k)
		}
		perClient[k]++
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.engine, r.feature, r.client, verdict, r.took.Round(10*time.Millisecond))
	}
	for i, k := range sizes {
		sizes[i] = fmt.Sprintf("%s: %d features × 1 client", k, perClient[k])
	}
	fmt.Fprintf(&b, "%d of %d pass (%s)\n", pass, len(results), strings.Join(sizes, "; "))
	t.Log(b.String())
}
