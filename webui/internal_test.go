package webui

import "testing"

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/sessions/S1?x=1":     "/sessions/S1?x=1",
		"":                     "/",
		"https://evil.example": "/",
		"//evil.example/x":     "/",
		"/\\evil.example":      "/",
		"/\t/evil.example":     "/",
		"/\n/evil.example":     "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainsFold(t *testing.T) {
	for _, c := range []struct {
		b, lower string
		want     bool
	}{
		{`{"db_query":"SELECT Marker_1"}`, "marker_1", true},
		{`{"db_query":"select marker_2"}`, "marker_1", false},
		{`ab`, "abc", false},
		{`x`, "", true},
	} {
		if got := containsFold([]byte(c.b), []byte(c.lower)); got != c.want {
			t.Errorf("containsFold(%q, %q) = %v", c.b, c.lower, got)
		}
	}
}

func TestParsePosition(t *testing.T) {
	p, err := parsePosition("1234.17")
	if err != nil || p != (Position{Seq: 1234, Index: 17}) || p.String() != "1234.17" {
		t.Fatalf("%+v %v", p, err)
	}
	for _, bad := range []string{"", "x", "1.-2", "1.y"} {
		if _, err := parsePosition(bad); err == nil {
			t.Errorf("parsePosition(%q) accepted", bad)
		}
	}
}

// A session's CSRF token is the same on every broker (derived from the
// handle), differs between sessions, and cookies that randomToken could
// not have made never reach the bucket.
func TestSessionHandle(t *testing.T) {
	a, b := randomToken(), randomToken()
	// Two brokers compute the token for the same handle.
	onOne, onOther := csrfToken(a), csrfToken(a)
	if !validHandle(a) || onOne != onOther || onOne == csrfToken(b) || onOne == a {
		t.Fatalf("handle %q: valid %v, csrf %q / %q", a, validHandle(a), csrfToken(a), csrfToken(b))
	}
	if sessionKey(a) == sessionKey(b) || len(sessionKey(a)) != 64 || sessionKey(a) == a {
		t.Fatalf("keys %q %q", sessionKey(a), sessionKey(b))
	}
	for _, bad := range []string{"", "forged", a + "x", a[:42], "../" + a[3:], "AAAA" + a[4:] + "==="} {
		if validHandle(bad) {
			t.Errorf("validHandle(%q) accepted", bad)
		}
	}
}
