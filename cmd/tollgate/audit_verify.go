package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/verify"
)

type auditVerifyFlags struct {
	session        string
	since          string
	file           string
	hostCA         string
	strict         bool
	truncatedAfter time.Duration
}

func init() {
	var f auditVerifyFlags
	c := &cobra.Command{
		Use:   "verify [--session SID] [--since TIME] [--file FILE] [--host-ca FILE] [--strict]",
		Short: "Prove the audit trail whole and unaltered: signed frames, chained and sealed sessions, no hole in the stream",
		Long: `Read the AUDIT stream (or, with --file, an exporter's JSON lines: native,
CloudEvents or OCSF) and check that:

  - every frame is signed by a host certificate the host CA issued, and
    follows the frame its writer stored before it (no frame removed,
    inserted, replaced or reordered); its header matches its events;
  - every session is gapless by ei from its start to its end, each event
    linked by prev to the hash of the one before, and its end sealed by a
    host the host CA certified;
  - no event is stored twice, nothing follows a session's end, and the
    stream's sequence has no hole (messages removed).

Prints one line per defect (stream sequence, frame, event id, session, what
is wrong) and exits non-zero; when intact, prints one summary line and exits
0. Sessions with no end event are counted as open (still live, or cut
short); one whose writer went on storing frames for more than
--truncated-after past its last event is reported as truncated. Events
stored alone (as before frames) are counted as unsigned legacy events.
--strict makes defects of what cannot be proven: unsigned legacy events,
unchained sessions and open sessions (so use it on finished trails).

The host CA certificate is read from the broker's data dir, or from
--host-ca (PEM; 'tollgate auth export --type=host' prints it). With --file
it must be given to check seals; without it, chains are checked and seals
counted as not checked. A file holds events, not frames: a finished
session is proven by its seal, a live session's tail by nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var sum verify.Summary
			var err error
			if f.file != "" {
				sum, err = verifyFile(f)
			} else {
				cfg, cerr := startConfig(flagConfig, flagDataDir)
				if cerr != nil {
					return cerr
				}
				sum, err = verifyStream(ctx, cfg, f)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, d := range sum.Defects {
				fmt.Fprintln(out, d.String())
			}
			fmt.Fprintln(out, sum.Line())
			if !sum.Intact() {
				return fmt.Errorf("audit trail not intact: %d defects", len(sum.Defects))
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.session, "session", "", "check only this session id")
	fl.StringVar(&f.since, "since", "", "check messages stored since this RFC 3339 time (sessions and writer runs begun earlier are not reported as cut)")
	fl.StringVar(&f.file, "file", "", "check an exporter's JSON lines file (native, CloudEvents or OCSF) instead of the stream")
	fl.StringVar(&f.hostCA, "host-ca", "", "host CA certificate (PEM) that signatures and seals must chain to (default: the broker's, from the data dir)")
	fl.BoolVar(&f.strict, "strict", false, "also fail on unsigned legacy events, unchained sessions and sessions without their end")
	fl.DurationVar(&f.truncatedAfter, "truncated-after", time.Minute, "report an open session as truncated when its writer stored frames this long after its last event (0: never)")
	auditCmd.AddCommand(c)
}

// readHostCA reads a PEM certificate file.
func readHostCA(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--host-ca: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("--host-ca: %s holds no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("--host-ca: %s: %w", path, err)
	}
	return c, nil
}

// streamHostCA is --host-ca, or the host CA of the broker's data dir. The
// live stream is always checked against one: without it a frame signed
// by any key would pass.
func streamHostCA(f auditVerifyFlags, dataDir string) (*x509.Certificate, error) {
	if f.hostCA != "" {
		return readHostCA(f.hostCA)
	}
	// ca.Open creates missing CAs: a data dir without the host CA is not
	// the broker's, and a CA made here would prove nothing.
	if _, err := os.Stat(filepath.Join(dataDir, "ca", string(ca.Host)+".crt")); err != nil {
		return nil, fmt.Errorf("no host CA in %s (%v): give --host-ca FILE ('tollgate auth export --type=host' on the broker)", dataDir, err)
	}
	a, err := ca.Open(dataDir)
	if err != nil {
		return nil, fmt.Errorf("host CA: %w", err)
	}
	return a.Cert(ca.Host)
}

func verifyFile(f auditVerifyFlags) (verify.Summary, error) {
	if f.since != "" || f.session != "" {
		return verify.Summary{}, errors.New("--file checks the whole file: --since and --session apply to the stream")
	}
	// An exporter delivers at least once: a second copy is no defect.
	o := verify.Options{Duplicates: true, Strict: f.strict}
	if f.hostCA != "" {
		var err error
		if o.HostCA, err = readHostCA(f.hostCA); err != nil {
			return verify.Summary{}, err
		}
	}
	fh, err := os.Open(f.file)
	if err != nil {
		return verify.Summary{}, err
	}
	defer fh.Close()
	c := verify.New(o)
	r := bufio.NewReaderSize(fh, 1<<20)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && !(len(line) == 1 && line[0] == '\n') {
			ev, xerr := verify.ExportedEvent(line)
			if xerr != nil {
				return verify.Summary{}, fmt.Errorf("%s line %d: %w", f.file, n, xerr)
			}
			c.AddEvent(ev)
		}
		if errors.Is(err, io.EOF) {
			return c.Finish(), nil
		}
		if err != nil {
			return verify.Summary{}, fmt.Errorf("%s: %w", f.file, err)
		}
	}
}

func verifyStream(ctx context.Context, cfg *config.Config, f auditVerifyFlags) (verify.Summary, error) {
	so := verify.StreamOptions{Stream: events.AuditStream, SID: f.session, Strict: f.strict, TruncatedAfter: f.truncatedAfter}
	if f.session != "" {
		if err := events.ValidToken(f.session); err != nil {
			return verify.Summary{}, fmt.Errorf("--session: %w", err)
		}
	}
	var err error
	if f.since != "" {
		if so.Since, err = time.Parse(time.RFC3339, f.since); err != nil {
			return verify.Summary{}, fmt.Errorf("--since: %q is not an RFC 3339 time: %w", f.since, err)
		}
	}
	if so.HostCA, err = streamHostCA(f, cfg.DataDir); err != nil {
		return verify.Summary{}, err
	}
	nc, closeNATS, err := adminNATS(ctx, cfg)
	if err != nil {
		return verify.Summary{}, err
	}
	defer closeNATS()
	js, err := jetstream.New(nc)
	if err != nil {
		return verify.Summary{}, err
	}
	return verify.Stream(ctx, js, so)
}
