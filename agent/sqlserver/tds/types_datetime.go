package tds

import (
	"fmt"
	"time"
)

func timeLen(scale byte) int {
	switch {
	case scale <= 2:
		return 3
	case scale <= 4:
		return 4
	}
	return 5
}

func date3(b []byte) time.Time {
	days := int(b[0]) | int(b[1])<<8 | int(b[2])<<16
	return time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, days)
}

func clockDuration(b []byte, scale byte) time.Duration {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	for i := scale; i < 7; i++ {
		v *= 10
	}
	return time.Duration(v) * 100
}

func clock(b []byte, scale byte) string {
	t := time.Time{}.Add(clockDuration(b, scale))
	return t.Format("15:04:05") + clockFrac(t, scale)
}

func clockFrac(t time.Time, scale byte) string {
	if scale == 0 {
		return ""
	}
	f := fmt.Sprintf("%07d", t.Nanosecond()/100)
	return "." + f[:scale]
}
