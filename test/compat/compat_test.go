package compat

import "testing"

// TestCompat runs each engine's table in its own world, the engines side
// by side, then prints the summary.
func TestCompat(t *testing.T) {
	t.Run("engines", func(t *testing.T) {
		t.Run("postgres", func(t *testing.T) {
			t.Parallel()
			runTable(t, "PostgreSQL 15", "pgx v5", pgWorld(t), pgFeatures)
		})
	})
	t.Run("summary", printSummary)
}
