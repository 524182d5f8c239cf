package password

import (
	"errors"
	"strings"
	"testing"
)

func TestHashVerify(t *testing.T) {
	for _, p := range []Params{OWASP19M, OWASP46M} {
		h, err := Hash("correct horse battery staple", p)
		if err != nil {
			t.Fatal(err)
		}
		want := "$argon2id$v=19$m=" + map[uint32]string{19456: "19456,t=2", 47104: "47104,t=1"}[p.Memory] + ",p=1$"
		if !strings.HasPrefix(h, want) {
			t.Fatalf("hash %q, want prefix %q", h, want)
		}
		if err := Verify(h, "correct horse battery staple"); err != nil {
			t.Fatalf("right password: %v", err)
		}
		if err := Verify(h, "correct horse battery stapler"); !errors.Is(err, ErrMismatch) {
			t.Fatalf("wrong password: %v", err)
		}
		h2, _ := Hash("correct horse battery staple", p)
		if h == h2 {
			t.Fatal("two hashes of one password are equal: the salt is not random")
		}
	}
}

func TestDecodeRefusesMalformedAndCostly(t *testing.T) {
	good, _ := Hash("correct horse battery staple", Params{})
	parts := strings.Split(good, "$")
	for name, h := range map[string]string{
		"empty":       "",
		"bcrypt":      "$2a$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
		"argon2i":     strings.Replace(good, "argon2id", "argon2i", 1),
		"version":     strings.Replace(good, "v=19", "v=16", 1),
		"4 GiB":       "$argon2id$v=19$m=4194304,t=2,p=1$" + parts[4] + "$" + parts[5],
		"1000 passes": "$argon2id$v=19$m=19456,t=1000,p=1$" + parts[4] + "$" + parts[5],
		"short salt":  "$argon2id$v=19$m=19456,t=2,p=1$AAAA$" + parts[5],
		"bad base64":  "$argon2id$v=19$m=19456,t=2,p=1$!!!$" + parts[5],
	} {
		if err := Verify(h, "x"); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("%s: %v, want a malformed-hash error", name, err)
		}
	}
}

func TestCheck(t *testing.T) {
	if err := Check("fourteen chars"); err == nil || !strings.Contains(err.Error(), "at least 15") {
		t.Fatalf("14 characters: %v", err)
	}
	if err := Check("ünïcödé pässwörd"); err != nil {
		t.Fatalf("16 characters of UTF-8: %v", err)
	}
	if err := Check(strings.Repeat("a", MaxBytes+1)); err == nil {
		t.Fatal("over the maximum accepted")
	}
	if err := Check("\xff\xfe invalid utf-8 bytes"); err == nil {
		t.Fatal("invalid UTF-8 accepted")
	}
}

func FuzzVerify(f *testing.F) {
	good, _ := Hash("correct horse battery staple", Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
	f.Add(good, "correct horse battery staple")
	f.Add("$argon2id$v=19$m=64,t=1,p=1$$", "")
	f.Add("$argon2id$v=19$m=,t=,p=$x$y", "pw")
	f.Fuzz(func(t *testing.T, h, pw string) {
		p, _, _, err := Decode(h)
		if err != nil {
			return
		}
		if p.Memory > 1<<16 || p.Time > 4 {
			return // valid but slow: not what the fuzzer is for
		}
		_ = Verify(h, pw)
	})
}

// BenchmarkHash measures one argon2id hash (= one login's verification)
// with each OWASP configuration.
func BenchmarkHash(b *testing.B) {
	for _, tc := range []struct {
		name string
		p    Params
	}{{"m=19MiB,t=2,p=1", OWASP19M}, {"m=46MiB,t=1,p=1", OWASP46M}} {
		b.Run(tc.name, func(b *testing.B) {
			h, err := Hash("correct horse battery staple", tc.p)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := Verify(h, "correct horse battery staple"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
		})
	}
}
