package packaging

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's user: numeric, so a runtime can check it is not root
// without reading /etc/passwd (Kubernetes runAsNonRoot).
const (
	ImageUID = 10001
	ImageGID = 10001
)

// ImageRepository is the name the image is tagged with in its tarball.
const ImageRepository = "tollgate"

// caBundle is copied into the image when the build machine has it, for
// databases and sinks verified against the system pool
// (trust_system_cert_pool, AWS endpoints).
var caBundle = "/etc/ssl/certs/ca-certificates.crt"

// Image writes s as a single-layer OCI image to out: a tar holding the OCI
// image layout (oci-layout, index.json, blobs/) and, over the same blobs,
// the manifest.json of `docker save`, so that `docker load`, `podman load`,
// `skopeo copy oci-archive:` and `crane push` all read it, as
// tollgate:<version>. It holds the static binaries, the container
// configuration, the user and the data dir: no shell, no libc.
func Image(s *Staged, out string) error {
	img, err := s.image()
	if err != nil {
		return err
	}
	tag, err := name.NewTag(ImageRepository + ":" + imageTag(s.Version))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tollgate-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	err = lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          tag.Name(),
	}))
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	dm := []map[string]any{{"Config": "blobs/sha256/" + cfgName.Hex, "RepoTags": []string{tag.Name()}}}
	var lnames []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		lnames = append(lnames, "blobs/sha256/"+d.Hex)
	}
	dm[0]["Layers"] = lnames
	mj, err := json.Marshal(dm)
	if err != nil {
		return err
	}
	if err := lp.WriteFile("manifest.json", mj, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return tarDir(dir, out, s.mtime())
}

// tarDir writes the files under dir to the tar out, in name order.
func tarDir(dir, out string, mt time.Time) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: mt})
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(data)), ModTime: mt}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
	}
	return err
}

func (s *Staged) image() (v1.Image, error) {
	layer, err := s.imageLayer()
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: l, History: v1.History{
		Author: "tollgate", CreatedBy: "internal/packaging", Comment: "tollgate " + s.Version,
		Created: v1.Time{Time: s.mtime()}}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", s.Arch
	cf.Created = v1.Time{Time: s.mtime()}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", ImageUID, ImageGID),
		Entrypoint: []string{BinDir + "/tollgate", "start"},
		// The configuration through the environment, so arguments given
		// to the container (--roles=agent) go to `tollgate start`.
		Env:          []string{"PATH=" + BinDir, "TOLLGATE_CONFIG=" + ConfigFile},
		WorkingDir:   DataDir,
		Volumes:      map[string]struct{}{DataDir: {}},
		ExposedPorts: map[string]struct{}{"3080/tcp": {}, "3036/tcp": {}},
		StopSignal:   "SIGTERM",
		Labels: map[string]string{
			"org.opencontainers.image.title":    "tollgate",
			"org.opencontainers.image.version":  s.Version,
			"org.opencontainers.image.revision": s.Commit,
			"org.opencontainers.image.source":   "https://github.com/tollgate-db/tollgate",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// imageLayer is the image's one layer as an uncompressed tar.
func (s *Staged) imageLayer() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := s.mtime()
	dir := func(p string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: mt})
	}
	file := func(p string, data []byte, mode int64) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data)), ModTime: mt}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	fromDisk := func(src, p string, mode int64) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return file(p, data, mode)
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\ntollgate:x:%d:%d:Tollgate:%s:/sbin/nologin\n", ImageUID, ImageGID, DataDir)
	group := fmt.Sprintf("root:x:0:\ntollgate:x:%d:\n", ImageGID)
	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error { return dir("etc/tollgate", 0o755, 0) },
		func() error { return dir("etc/ssl", 0o755, 0) },
		func() error { return dir("etc/ssl/certs", 0o755, 0) },
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/bin", 0o755, 0) },
		func() error { return dir("var", 0o755, 0) },
		func() error { return dir("var/lib", 0o755, 0) },
		func() error { return dir(strings.TrimPrefix(DataDir, "/"), 0o700, ImageUID) },
		func() error { return file("etc/passwd", []byte(passwd), 0o644) },
		func() error { return file("etc/group", []byte(group), 0o644) },
		func() error {
			return fromDisk(s.Deploy("etc/tollgate-container.yaml"), strings.TrimPrefix(ConfigFile, "/"), 0o644)
		},
	}
	for _, n := range Binaries {
		steps = append(steps, func() error { return fromDisk(s.Binary(n), "usr/bin/"+n, 0o755) })
	}
	if fileExists(caBundle) {
		steps = append(steps, func() error { return fromDisk(caBundle, "etc/ssl/certs/ca-certificates.crt", 0o644) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// imageTag is version in the characters an image tag allows.
func imageTag(v string) string {
	t := strings.Map(func(r rune) rune {
		if r == '_' || r == '.' || r == '-' || r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, v)
	if t == "" || t[0] == '.' || t[0] == '-' {
		t = "v" + t
	}
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}
