package exporters_test

import (
	"os"
	"testing"
)

func mainWithChild(m *testing.M) { os.Exit(m.Run()) }
