package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Formats are the package formats Package writes.
var Formats = []string{"deb", "rpm"}

// Where the packages install what they carry. Units go to UnitDir in the
// deb, RPMUnitDir in the rpm (each distribution's own place; with a merged
// /usr they are the same folder).
const (
	BinDir     = "/usr/bin"
	UnitDir    = "/lib/systemd/system"
	RPMUnitDir = "/usr/lib/systemd/system"
	ConfigFile = "/etc/tollgate/tollgate.yaml"
	DataDir    = "/var/lib/tollgate"
)

// Package writes s as a package of format ("deb" or "rpm") into outDir and
// returns its path, named as the format's tools expect
// (tollgate_<version>_<arch>.deb, tollgate-<version>-1.<arch>.rpm).
func Package(s *Staged, format, outDir string) (string, error) {
	info, err := s.packageInfo(format)
	if err != nil {
		return "", err
	}
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return "", fmt.Errorf("packaging: %s: %w", format, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(outDir, pkgr.ConventionalFileName(info))
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		os.Remove(out)
		return "", fmt.Errorf("packaging: %s: %w", format, err)
	}
	return out, f.Close()
}

func (s *Staged) packageInfo(format string) (*nfpm.Info, error) {
	var contents files.Contents
	add := func(src, dst, typ string, mode os.FileMode) {
		contents = append(contents, &files.Content{Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode}})
	}
	for _, n := range Binaries {
		add(s.Binary(n), BinDir+"/"+n, "", 0o755)
	}
	for _, u := range []string{"tollgate.service", "tollgate@.service"} {
		add(s.Deploy("systemd/"+u), unitDir(format)+"/"+u, "", 0o644)
	}
	// The configuration holds no secret (those are made in the data dir),
	// so it stays readable; an edited one survives upgrades.
	add(s.Deploy("etc/tollgate.yaml"), ConfigFile, files.TypeConfigNoReplace, 0o644)
	for _, n := range Binaries {
		for _, sh := range Shells {
			add(s.Completion(n, sh), completionPath(format, n, sh), "", 0o644)
		}
	}
	// The data dir is made by postinst, owned by the user it creates.
	info := &nfpm.Info{
		Name:     "tollgate",
		Arch:     s.Arch,
		Platform: "linux",
		Version:  PackageVersion(s.Version),
		// The version is already in the packagers' form; nfpm's semver
		// parsing would split a git describe into a pre-release.
		VersionSchema: "none",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "Tollgate developers <tollgate@users.noreply.github.com>",
		Description: "Audited, certificate-based access to databases\n" +
			"Tollgate gives people short-lived certificates for PostgreSQL, CockroachDB,\n" +
			"MySQL/MariaDB and SQL Server, checks access in an agent beside each\n" +
			"database and stores every statement as an audit event in NATS JetStream.",
		Vendor:   "Tollgate",
		Homepage: "https://github.com/tollgate-db/tollgate",
		MTime:    s.mtime(),
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: s.Deploy("scripts/postinst.sh"),
				PreRemove:   s.Deploy("scripts/prerm.sh"),
				PostRemove:  s.Deploy("scripts/postrm.sh"),
			},
			RPM: nfpm.RPM{Group: "Applications/Databases"},
		},
	}
	if format == "deb" {
		info.Overridables.Depends = []string{"passwd"}
	} else {
		info.Overridables.Depends = []string{"shadow-utils"}
	}
	return nfpm.WithDefaults(info), nil
}

func unitDir(format string) string {
	if format == "rpm" {
		return RPMUnitDir
	}
	return UnitDir
}

// completionPath is where each distribution's shells look for completions
// installed by packages.
func completionPath(format, name, shell string) string {
	switch shell {
	case "bash":
		return "/usr/share/bash-completion/completions/" + name
	case "zsh":
		if format == "deb" {
			return "/usr/share/zsh/vendor-completions/_" + name
		}
		return "/usr/share/zsh/site-functions/_" + name
	default:
		return "/usr/share/fish/vendor_completions.d/" + name + ".fish"
	}
}

// PackageVersion turns a release or `git describe` version into one dpkg
// and rpm accept and order: no leading v, a digit first (0.0.0+ before a
// bare commit), and the describe suffix after a + so that a build after
// a tag sorts after it ("v1.2.0-3-gabc" becomes "1.2.0+3.gabc").
func PackageVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v == "" || !unicode.IsDigit(rune(v[0])) {
		v = "0.0.0+" + v
	}
	if base, rest, ok := strings.Cut(v, "-"); ok && !strings.Contains(base, "+") {
		v = base + "+" + rest
	}
	v = strings.Map(func(r rune) rune {
		switch {
		case r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)), r == '.', r == '+', r == '~':
			return r
		}
		return '.'
	}, v)
	return strings.TrimSuffix(v, "+")
}

// mtime is the build date, so that building one commit twice gives the
// same files; now when the date is not given.
func (s *Staged) mtime() time.Time {
	if t, err := time.Parse(time.RFC3339, s.Date); err == nil {
		return t
	}
	return time.Now().UTC().Truncate(time.Second)
}
