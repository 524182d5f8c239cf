// Command pkg builds Tollgate's packages and container image from this
// module: `go run ./deploy/pkg -format=deb,rpm,image -out=dist`, as
// `make deb`, `make rpm` and `make image` run it. It prints the path of
// each file it wrote.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/tollgate-db/tollgate/internal/packaging"
)

func main() {
	var b packaging.Build
	formats := flag.String("format", "deb", "comma-separated: deb, rpm, image")
	out := flag.String("out", "dist", "folder the packages and tollgate-image.tar are written to")
	flag.StringVar(&b.ModuleDir, "module", ".", "the tollgate module's folder")
	flag.StringVar(&b.Arch, "arch", runtime.GOARCH, "target GOARCH (the build machine's: completions are made by running the binaries)")
	flag.StringVar(&b.Version, "version", "dev", "version stamped into the binaries (`tollgate version`) and the packages")
	flag.StringVar(&b.Commit, "commit", "", "commit stamped into the binaries")
	flag.StringVar(&b.Date, "date", "", "build date (RFC 3339) stamped into the binaries and used as every file's time")
	flag.Parse()
	if err := run(b, strings.Split(*formats, ","), *out); err != nil {
		fmt.Fprintln(os.Stderr, "pkg:", err)
		os.Exit(1)
	}
}

func run(b packaging.Build, formats []string, out string) error {
	for _, f := range formats {
		if f != "image" && !contains(packaging.Formats, f) {
			return fmt.Errorf("-format: %q is not deb, rpm or image", f)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "tollgate-pkg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := packaging.Stage(ctx, b, dir)
	if err != nil {
		return err
	}
	for _, f := range formats {
		var p string
		if f == "image" {
			p = filepath.Join(out, "tollgate-image.tar")
			err = packaging.Image(s, p)
		} else {
			p, err = packaging.Package(s, f, out)
		}
		if err != nil {
			return err
		}
		fmt.Println(p)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
