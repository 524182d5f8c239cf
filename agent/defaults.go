package agent

import (
	"log/slog"
	"time"
)

// The bounds every engine puts on a connection's startup and on dialing the
// database when its options leave them unset.
const (
	DefaultStartupTimeout = 30 * time.Second
	DefaultDialTimeout    = 10 * time.Second
)

// SetDefault sets *v to d when *v is zero or negative. The options of the
// agent and its engines read a limit or timeout left unset as "the default";
// a negative one is a mistake that the default answers the same way.
func SetDefault[T ~int | ~int64](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// EngineDefaults returns an engine's startup timeout, dial timeout and
// logger with the defaults every engine shares in place of those unset, so
// that the engines agree on them.
func EngineDefaults(startup, dial time.Duration, log *slog.Logger) (time.Duration, time.Duration, *slog.Logger) {
	SetDefault(&startup, DefaultStartupTimeout)
	SetDefault(&dial, DefaultDialTimeout)
	if log == nil {
		log = slog.Default()
	}
	return startup, dial, log
}
