package compat

import "testing"

// TestCompat runs each engine's table in its own world, the engines side
// by side, then prints the summary.
func TestCompat(t *testing.T) {
	// One table per run (-count=N runs the test N times).
	resultsMu.Lock()
	results = nil
	resultsMu.Unlock()
	t.Run("engines", func(t *testing.T) {
		t.Run("postgres", func(t *testing.T) {
			t.Parallel()
			runTable(t, "PostgreSQL 15", "pgx v5", pgWorld(t), pgFeatures)
		})
		t.Run("mariadb", func(t *testing.T) {
			t.Parallel()
			runTable(t, "MariaDB 10.11", "go-sql-driver/mysql", myWorld(t), myFeatures)
		})
	})
	t.Run("summary", printSummary)
}
