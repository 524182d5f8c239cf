package faults

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// Report collects the sections of test/bench/faults.md.
type Report struct {
	mu       sync.Mutex
	sections []string
}

// Add appends a markdown section.
func (r *Report) Add(section string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sections = append(r.sections, strings.TrimRight(section, "\n")+"\n")
}

// Write writes the report to path with a header naming the machine.
func (r *Report) Write(path, command string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("# Tollgate under faults and load\n\n")
	fmt.Fprintf(&b, "Written by `%s` on %s. Machine: %s, %d CPUs (%s/%s), %s, Go %s.\n\n",
		command, time.Now().UTC().Format("2006-01-02 15:04 UTC"), cpuModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, memTotal(), runtime.Version())
	b.WriteString("Every figure comes from real servers on loopback: PostgreSQL 15 logging every statement (`log_statement=all`), " +
		"nats-server built from the module this repository pins, and `tollgate start` processes for the broker, the agent and the file exporter. " +
		"The machine is shared, so throughput figures are indicative; the loss counts are exact.\n\n")
	for _, s := range r.sections {
		b.WriteString(s)
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// Table renders a markdown table.
func Table(header []string, rows [][]string) string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(header, " | ") + " |\n|")
	for range header {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = strings.ReplaceAll(c, "|", "\\|")
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	return b.String()
}

// TopErrors lists errors by count, most frequent first, at most n.
func TopErrors(m map[string]int, n int) []string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].v != all[j].v {
			return all[i].v > all[j].v
		}
		return all[i].k < all[j].k
	})
	var out []string
	for i, e := range all {
		if i == n {
			break
		}
		out = append(out, fmt.Sprintf("%d× %s", e.v, e.k))
	}
	return out
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown memory"
	}
	var kb int64
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			_, _ = fmt.Sscanf(strings.TrimPrefix(l, "MemTotal:"), "%d", &kb)
		}
	}
	return fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
}
