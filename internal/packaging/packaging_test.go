package packaging

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tollgate-db/tollgate/config"
)

const testVersion = "v1.2.3-4-gabcdef"

var (
	stageOnce sync.Once
	staged    *Staged
	stageErr  error
)

// stage builds the binaries once for every test of the package.
func stage(t *testing.T) *Staged {
	t.Helper()
	stageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tollgate-packaging-test-")
		if err != nil {
			stageErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		staged, stageErr = Stage(ctx, Build{ModuleDir: "../..", Version: testVersion,
			Commit: "0123456789abcdef0123456789abcdef01234567", Date: "2026-01-02T03:04:05Z"}, dir)
		t.Logf("staged in %v", time.Since(start).Round(time.Millisecond))
	})
	if stageErr != nil {
		t.Fatal(stageErr)
	}
	return staged
}

func TestMain(m *testing.M) {
	code := m.Run()
	if staged != nil {
		os.RemoveAll(staged.Dir)
	}
	os.Exit(code)
}

// entry is a file read back from a package or an image layer.
type entry struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, r io.Reader) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		out[strings.TrimSuffix(name, "/")] = entry{h, data}
	}
}

// dpkgDeb runs Debian's own reader of the package, so a package dpkg
// would refuse fails here.
func dpkgDeb(t *testing.T, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("dpkg-deb", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("dpkg-deb %v: %v: %s", args, err, stderr.Bytes())
	}
	return out
}

var (
	debOnce sync.Once
	debPath string
	debErr  error
)

// buildDeb builds the package once for the tests that read it.
func buildDeb(t *testing.T) string {
	t.Helper()
	s := stage(t)
	debOnce.Do(func() { debPath, debErr = Package(s, "deb", filepath.Join(s.Dir, "dist")) })
	if debErr != nil {
		t.Fatal(debErr)
	}
	return debPath
}

func TestDeb(t *testing.T) {
	deb := buildDeb(t)
	if got, want := filepath.Base(deb), "tollgate_1.2.3+4.gabcdef_"+stage(t).Arch+".deb"; got != want {
		t.Errorf("file name %q, want %q", got, want)
	}
	for field, want := range map[string]string{"Package": "tollgate", "Version": "1.2.3+4.gabcdef", "Architecture": stage(t).Arch, "Depends": "passwd"} {
		if got := strings.TrimSpace(string(dpkgDeb(t, "-f", deb, field))); got != want {
			t.Errorf("control %s: %q, want %q", field, got, want)
		}
	}

	files := readTar(t, bytes.NewReader(dpkgDeb(t, "--fsys-tarfile", deb)))
	want := map[string]int64{
		"/usr/bin/tollgate":                                  0o755,
		"/usr/bin/tg":                                        0o755,
		"/lib/systemd/system/tollgate.service":               0o644,
		"/lib/systemd/system/tollgate@.service":              0o644,
		"/etc/tollgate/tollgate.yaml":                        0o644,
		"/usr/share/bash-completion/completions/tollgate":    0o644,
		"/usr/share/bash-completion/completions/tg":          0o644,
		"/usr/share/zsh/vendor-completions/_tollgate":        0o644,
		"/usr/share/zsh/vendor-completions/_tg":              0o644,
		"/usr/share/fish/vendor_completions.d/tollgate.fish": 0o644,
		"/usr/share/fish/vendor_completions.d/tg.fish":       0o644,
	}
	for p, mode := range want {
		e, ok := files[p]
		if !ok {
			t.Errorf("%s: missing", p)
			continue
		}
		if e.hdr.Typeflag != tar.TypeReg || e.hdr.Mode&0o7777 != mode || e.hdr.Uname != "root" || e.hdr.Gname != "root" {
			t.Errorf("%s: type %c mode %o %s:%s, want a file %o root:root", p, e.hdr.Typeflag, e.hdr.Mode, e.hdr.Uname, e.hdr.Gname, mode)
		}
		if len(e.data) == 0 {
			t.Errorf("%s: empty", p)
		}
	}
	for p, e := range files {
		if e.hdr.Typeflag == tar.TypeReg {
			if _, ok := want[p]; !ok {
				t.Errorf("%s: not expected in the package", p)
			}
		}
	}

	// Static binaries (no program interpreter), stamped with the version.
	root := t.TempDir()
	for _, n := range Binaries {
		p := filepath.Join(root, n)
		if err := os.WriteFile(p, files[BinDir+"/"+n].data, 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", n)
			}
		}
		f.Close()
		out, err := exec.Command(p, "version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), testVersion) || !strings.Contains(string(out), "0123456789abcdef") {
			t.Errorf("%s version: %v: %s (want %s and the commit)", n, err, out, testVersion)
		}
	}
	for _, n := range Binaries {
		if c := string(files["/usr/share/bash-completion/completions/"+n].data); !strings.Contains(c, "__start_"+n) {
			t.Errorf("bash completion of %s does not complete it", n)
		}
	}

	// The default configuration is one `tollgate start` accepts, with its
	// data in the dir the units make writable.
	cfgPath := filepath.Join(root, "tollgate.yaml")
	if err := os.WriteFile(cfgPath, files[ConfigFile].data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("default configuration: %v", err)
	}
	if cfg.DataDir != DataDir || cfg.Audit.Mode != "strict" || len(cfg.NATS.URLs) != 0 {
		t.Errorf("default configuration: data_dir %q audit %q nats.urls %v", cfg.DataDir, cfg.Audit.Mode, cfg.NATS.URLs)
	}

	// Control files: the configuration is a conffile, the scripts make
	// the user and the private data dir.
	ctrl := readTar(t, bytes.NewReader(dpkgDeb(t, "--ctrl-tarfile", deb)))
	if got := strings.TrimSpace(string(ctrl["/conffiles"].data)); got != ConfigFile {
		t.Errorf("conffiles: %q, want %q", got, ConfigFile)
	}
	post := string(ctrl["/postinst"].data)
	for _, s := range []string{"useradd --system", "groupadd --system", "install -d -o tollgate -g tollgate -m 0700 " + DataDir} {
		if !strings.Contains(post, s) {
			t.Errorf("postinst lacks %q", s)
		}
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		e, ok := ctrl["/"+s]
		if !ok || e.hdr.Mode&0o111 == 0 {
			t.Errorf("%s: missing or not executable", s)
			continue
		}
		if out, err := exec.Command("sh", "-n", "-c", string(e.data)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v: %s", s, err, out)
		}
	}

	for _, u := range []string{"tollgate.service", "tollgate@.service"} {
		unit := string(files[UnitDir+"/"+u].data)
		for _, s := range []string{"User=tollgate", "ExecStart=" + BinDir + "/tollgate start --config=/etc/tollgate/",
			"ReadWritePaths=" + DataDir, "CapabilityBoundingSet=\n", "ProtectSystem=strict", "SystemCallFilter=@system-service"} {
			if !strings.Contains(unit, s) {
				t.Errorf("%s lacks %q", u, s)
			}
		}
	}
	if u := string(files[UnitDir+"/tollgate@.service"].data); !strings.Contains(u, "--roles=%i") {
		t.Errorf("tollgate@.service does not run the role it is instantiated for")
	}
}

// unitsUnderTest extracts the units from the package, with ExecStart
// pointing at the package's binary extracted beside them: systemd-analyze
// checks that the command exists, and /usr/bin/tollgate is not installed
// here. The template is also instantiated for each role.
func unitsUnderTest(t *testing.T) (dir string, units []string) {
	t.Helper()
	deb := buildDeb(t)
	files := readTar(t, bytes.NewReader(dpkgDeb(t, "--fsys-tarfile", deb)))
	dir = t.TempDir()
	bin := filepath.Join(dir, "tollgate")
	if err := os.WriteFile(bin, files[BinDir+"/tollgate"].data, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, unit string) {
		unit = strings.ReplaceAll(unit, "ExecStart="+BinDir+"/tollgate ", "ExecStart="+bin+" ")
		if err := os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, filepath.Join(dir, name))
	}
	write("tollgate.service", string(files[UnitDir+"/tollgate.service"].data))
	for _, role := range []string{"agent", "broker", "exporter"} {
		write("tollgate@"+role+".service", string(files[UnitDir+"/tollgate@.service"].data))
	}
	return dir, units
}

func TestUnitsVerify(t *testing.T) {
	t.Parallel()
	_, units := unitsUnderTest(t)
	var stderr bytes.Buffer
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, units...)...)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// Any message (an unknown directive, a bad value) is a failure.
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, stderr.Bytes())
	}
}

// maxExposure is the highest `systemd-analyze security` exposure (0 is
// fully sandboxed, 10 not at all) a unit may have: systemd calls up to
// 2.0 "OK"; the units score 1.1, and what they cannot restrict is the
// network they serve.
const maxExposure = 1.5

func TestUnitsSecurity(t *testing.T) {
	t.Parallel()
	_, units := unitsUnderTest(t)
	out, err := exec.Command("systemd-analyze", append([]string{"security", "--offline=true", "--no-pager"}, units...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)
	m := re.FindAllStringSubmatch(string(out), -1)
	if len(m) != len(units) {
		t.Fatalf("%d scores for %d units:\n%s", len(m), len(units), out)
	}
	for _, s := range m {
		score, err := strconv.ParseFloat(s[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: exposure %.1f %s", s[1], score, s[3])
		if score > maxExposure {
			t.Errorf("%s: exposure %.1f, want at most %.1f\n%s", s[1], score, maxExposure, out)
		}
	}
}

// rpmQuery reads the package with rpm itself.
func rpmQuery(t *testing.T, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("rpm", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("rpm %v: %v: %s", args, err, stderr.Bytes())
	}
	return string(out)
}

func TestRPM(t *testing.T) {
	t.Parallel()
	p, err := Package(stage(t), "rpm", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(p), "tollgate-1.2.3+4.gabcdef-1.") {
		t.Errorf("file name %s", filepath.Base(p))
	}
	rpmQuery(t, "-K", "--nosignature", p)
	if got := rpmQuery(t, "-qp", "--queryformat", "%{NAME} %{VERSION}", p); got != "tollgate 1.2.3+4.gabcdef" {
		t.Errorf("name and version %q", got)
	}
	// --dump: path size mtime digest mode owner group isconfig isdoc rdev symlink
	files := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(rpmQuery(t, "-qp", "--dump", p)), "\n") {
		f := strings.Fields(l)
		files[f[0]] = f
	}
	want := map[string]string{
		"/usr/bin/tollgate": "0100755", "/usr/bin/tg": "0100755",
		RPMUnitDir + "/tollgate.service": "0100644", RPMUnitDir + "/tollgate@.service": "0100644",
		ConfigFile: "0100644",
		"/usr/share/zsh/site-functions/_tollgate": "0100644", "/usr/share/bash-completion/completions/tg": "0100644",
	}
	for path, mode := range want {
		f, ok := files[path]
		if !ok {
			t.Errorf("%s: missing", path)
			continue
		}
		if f[4] != mode || f[5] != "root" || f[6] != "root" {
			t.Errorf("%s: %s %s:%s, want %s root:root", path, f[4], f[5], f[6], mode)
		}
		if isConfig := f[7] == "1"; isConfig != (path == ConfigFile) {
			t.Errorf("%s: config flag %s", path, f[7])
		}
	}
	if len(files) != 2+2+1+len(Binaries)*len(Shells) {
		t.Errorf("%d files, want %d:\n%v", len(files), 2+2+1+len(Binaries)*len(Shells), files)
	}
	if sc := rpmQuery(t, "-qp", "--scripts", p); !strings.Contains(sc, "useradd --system") || !strings.Contains(sc, "-m 0700 "+DataDir) {
		t.Errorf("scripts do not make the user and the data dir:\n%s", sc)
	}
}

func TestImage(t *testing.T) {
	t.Parallel()
	s := stage(t)
	p := filepath.Join(t.TempDir(), "tollgate-image.tar")
	if err := Image(s, p); err != nil {
		t.Fatal(err)
	}
	// The docker-save view (manifest.json), as docker load and crane read it.
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The OCI layout view, as podman and skopeo read it.
	dir := t.TempDir()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range readTar(t, f) {
		if e.hdr.Typeflag == tar.TypeReg {
			if err := writeFile(filepath.Join(dir, name), e.data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.Close()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index: %+v %v", im, err)
	}
	if d := im.Manifests[0]; d.MediaType != types.OCIManifestSchema1 || d.Annotations["org.opencontainers.image.ref.name"] != "v1.2.3-4-gabcdef" {
		t.Errorf("index entry %+v: want an OCI manifest named by the version", d)
	}
	oimg, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	od, err1 := oimg.ConfigName()
	dd, err2 := img.ConfigName()
	if err1 != nil || err2 != nil || od != dd {
		t.Errorf("the two views differ: config %v %v, %v %v", od, err1, dd, err2)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	uid, _, _ := strings.Cut(c.User, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("user %q: want a numeric uid other than 0", c.User)
	}
	if strings.Join(c.Entrypoint, " ") != "/usr/bin/tollgate start" || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	if _, ok := c.Volumes[DataDir]; !ok || c.WorkingDir != DataDir {
		t.Errorf("volumes %v workdir %q, want %s", c.Volumes, c.WorkingDir, DataDir)
	}
	if cf.OS != "linux" || cf.Architecture != s.Arch {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := readTar(t, rc)
	for p := range files {
		if strings.HasPrefix(p, "/bin") || strings.HasPrefix(p, "/sbin") || strings.HasSuffix(p, "/sh") || strings.HasSuffix(p, "bash") {
			t.Errorf("%s in the image: no shell or system tools wanted", p)
		}
	}
	for _, n := range Binaries {
		if e, ok := files[BinDir+"/"+n]; !ok || e.hdr.Mode&0o777 != 0o755 {
			t.Errorf("%s: missing or not executable", n)
		}
	}
	if e, ok := files[DataDir]; !ok || e.hdr.Typeflag != tar.TypeDir || e.hdr.Mode&0o777 != 0o700 || strconv.Itoa(e.hdr.Uid) != uid {
		t.Errorf("data dir: %+v, want a dir 0700 of uid %s", e.hdr, uid)
	}
	if pw := string(files["/etc/passwd"].data); !strings.Contains(pw, ":"+uid+":") {
		t.Errorf("/etc/passwd has no user %s:\n%s", uid, pw)
	}
	// The container's configuration is one `tollgate start` accepts.
	cfgPath := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(cfgPath, files[ConfigFile].data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("image configuration: %v", err)
	}
	if cfg.DataDir != DataDir {
		t.Errorf("image configuration: data_dir %q", cfg.DataDir)
	}
	found := false
	for _, e := range c.Env {
		found = found || e == "TOLLGATE_CONFIG="+ConfigFile
	}
	if !found {
		t.Errorf("env %q does not name the configuration", c.Env)
	}
}

func TestPackageVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":             "1.2.3",
		"1.2.3":              "1.2.3",
		"v1.2.3-4-gabcdef":   "1.2.3+4.gabcdef",
		"v1.2.3-rc1":         "1.2.3+rc1",
		"f5d7057":            "0.0.0+f5d7057",
		"f5d7057-dirty":      "0.0.0+f5d7057.dirty",
		"dev":                "0.0.0+dev",
		"":                   "0.0.0",
		"v2.0.0-1-gab_c/d e": "2.0.0+1.gab.c.d.e",
	} {
		if got := PackageVersion(in); got != want {
			t.Errorf("PackageVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
