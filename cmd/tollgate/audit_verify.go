package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/verify"
)

type auditVerifyFlags struct {
	session string
	since   string
	file    string
}

func init() {
	var f auditVerifyFlags
	c := &cobra.Command{
		Use:   "verify [--session SID] [--since TIME] [--file FILE]",
		Short: "Check that the audit trail is whole: every session gapless from start to end, nothing stored twice, no hole in the stream",
		Long: `Read the AUDIT stream (or, with --file, an exporter's native JSON lines) and
check that every session's events are gapless by ei from its start to its end,
that no event is stored twice, that nothing follows a session's end, and that
the stream's sequence has no hole (events removed). Prints one line per
defect (stream sequence, event id, session, what is wrong) and exits non-zero;
when intact, prints one summary line and exits 0. Sessions with no end event
are counted as open: still live, or cut short.`,
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
	fl.StringVar(&f.since, "since", "", "check events stored since this RFC 3339 time (sessions begun earlier are not reported as cut)")
	fl.StringVar(&f.file, "file", "", "check an exporter's native JSON lines file instead of the stream")
	auditCmd.AddCommand(c)
}

func verifyFile(f auditVerifyFlags) (verify.Summary, error) {
	if f.since != "" || f.session != "" {
		return verify.Summary{}, errors.New("--file checks the whole file: --since and --session apply to the stream")
	}
	fh, err := os.Open(f.file)
	if err != nil {
		return verify.Summary{}, err
	}
	defer fh.Close()
	// An exporter delivers at least once: a second copy is no defect.
	c := verify.New(verify.Options{Duplicates: true})
	r := bufio.NewReaderSize(fh, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && !(len(line) == 1 && line[0] == '\n') {
			c.Add(0, line)
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
	so := verify.StreamOptions{Stream: events.AuditStream}
	if f.session != "" {
		if err := events.ValidToken(f.session); err != nil {
			return verify.Summary{}, fmt.Errorf("--session: %w", err)
		}
		so.Filter = events.SessionFilter(f.session)
	}
	var err error
	if f.since != "" {
		if so.Since, err = time.Parse(time.RFC3339, f.since); err != nil {
			return verify.Summary{}, fmt.Errorf("--since: %q is not an RFC 3339 time: %w", f.since, err)
		}
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
