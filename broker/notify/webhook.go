// Package notify tells people about access requests: a Slack-compatible
// incoming-webhook sink for the exporter framework. An exporter of type
// access_request_webhook reads STATE like any other and posts one message
// per access-request event (created, reviewed, approved, denied, expired);
// other events are acknowledged without a message. Delivery, retries with
// backoff, and dead letters are the exporter's, as for every sink.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
)

// Type is the sink's name in the configuration.
const Type = "access_request_webhook"

func init() {
	exporters.Register(Type, func(_ context.Context, p exporters.Params) (exporters.Sink, error) {
		var c Config
		if err := p.Decode(&c); err != nil {
			return nil, err
		}
		return New(c)
	})
}

// Config is the sink's settings.
type Config struct {
	// URL is the incoming webhook (Slack, Mattermost, Rocket.Chat and
	// others take the same {"text": …} body). It is a secret: it is never
	// logged or put in an error.
	URL string `yaml:"url"`
	// Timeout bounds one POST (10s).
	Timeout config.Duration `yaml:"timeout"`
	// Channel, when set, is sent as "channel" (Slack's legacy webhooks
	// honour it).
	Channel string `yaml:"channel"`
	// ReviewHint is printed after a new request's text; {id} is replaced
	// by the request id.
	ReviewHint string `yaml:"review_hint"`
}

// Sink posts access-request events to a webhook.
type Sink struct {
	c  Config
	hc *http.Client
}

// New checks c and returns the sink.
func New(c Config) (*Sink, error) {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("url: want the http(s) address of an incoming webhook")
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(10 * time.Second)
	}
	if c.ReviewHint == "" {
		c.ReviewHint = "review: tg request review {id} --approve|--deny --reason=…"
	}
	return &Sink{c: c, hc: &http.Client{Timeout: c.Timeout.Std()}}, nil
}

// Message is the webhook body.
type Message struct {
	Text    string `json:"text"`
	Channel string `json:"channel,omitempty"`
}

// Deliver posts one message per access-request record, in order. A record
// that failed is reported in RecordErrors: permanent for a 4xx answer other
// than 408 and 429 (the hook refuses it), retried otherwise.
func (s *Sink) Deliver(ctx context.Context, recs []exporters.Record) error {
	failed := exporters.RecordErrors{}
	for i, r := range recs {
		text, ok := Text(r.Event, s.c.ReviewHint)
		if !ok {
			continue
		}
		if len(failed) > 0 {
			// Keep the channel's order: once one failed, the rest wait.
			failed[i] = errors.New("an earlier message of the batch was not delivered")
			continue
		}
		if err := s.post(ctx, Message{Text: text, Channel: s.c.Channel}); err != nil {
			failed[i] = err
		}
	}
	if len(failed) > 0 {
		return failed
	}
	return nil
}

func (s *Sink) post(ctx context.Context, m Message) error {
	body, err := json.Marshal(m)
	if err != nil {
		return exporters.Permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.c.URL, bytes.NewReader(body))
	if err != nil {
		return exporters.Permanent(errors.New("webhook: bad request"))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		// The URL is a secret: say what failed without it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return fmt.Errorf("webhook answered %s: %s", resp.Status, strings.TrimSpace(string(snippet)))
	}
	return exporters.Permanent(fmt.Errorf("webhook refused the message: %s: %s", resp.Status, strings.TrimSpace(string(snippet))))
}

// Close releases idle connections.
func (s *Sink) Close() error {
	s.hc.CloseIdleConnections()
	return nil
}

// Text is the message for an access-request event (stored JSON), and
// false for any other event.
func Text(event []byte, hint string) (string, bool) {
	var head struct{ Type string }
	if json.Unmarshal(event, &head) != nil {
		return "", false
	}
	switch head.Type {
	case "access_request.create":
		var e events.AccessRequestCreate
		if json.Unmarshal(event, &e) != nil {
			return "", false
		}
		t := fmt.Sprintf("*%s* requests roles *%s* until %s (request %s)", e.Requester, strings.Join(e.RequestRoles, ", "),
			e.Expires.UTC().Format(time.RFC3339), e.RequestID)
		if e.Reason != "" {
			t += "\n> " + e.Reason
		}
		return t + "\n" + strings.ReplaceAll(hint, "{id}", e.RequestID), true
	case "access_request.review":
		var e events.AccessRequestReview
		if json.Unmarshal(event, &e) != nil {
			return "", false
		}
		verb := "approved"
		if e.Verdict == events.ReviewDeny {
			verb = "denied"
		}
		t := fmt.Sprintf("*%s* %s request %s (%d of %d approvals)", e.User, verb, e.RequestID, e.Approvals, e.Needed)
		if e.Reason != "" {
			t += "\n> " + e.Reason
		}
		return t, true
	case "access_request.update":
		var e events.AccessRequestUpdate
		if json.Unmarshal(event, &e) != nil {
			return "", false
		}
		t := fmt.Sprintf("request %s is now *%s*", e.RequestID, e.State)
		if e.Reason != "" {
			t += ": " + e.Reason
		}
		return t, true
	}
	return "", false
}
