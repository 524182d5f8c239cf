// Package format turns stored Tollgate events into what a SIEM reads: the
// native JSON of our schemas, OCSF or CloudEvents 1.0. The exporters and
// `tollgate audit tail --format=…` use the same transforms.
//
// Scan reads the envelope of an event (id, type, time, user, database)
// without decoding the rest; it is the exporters' hot path.
package format

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// Names of the formats, as written in the configuration.
const (
	Native      = "native"
	OCSF        = "ocsf"
	CloudEvents = "cloudevents"
)

// Format turns one event into the bytes a sink delivers: one JSON object,
// without a trailing newline.
type Format interface {
	// Name is the format's name in the configuration.
	Name() string
	// Append appends the formatted event to dst. An error means this event
	// cannot be put in this format (the exporter dead-letters it).
	Append(dst []byte, env *Envelope, event []byte) ([]byte, error)
}

// AccessRequest is what the OCSF transform needs of an access request to
// name the user an approval gives roles to.
type AccessRequest struct {
	Requester string
	Roles     []string
}

// AccessRequests finds an access request by id. Approvals
// (access_request.update) carry only the request id; the requester and the
// roles are in the request's creation event.
type AccessRequests interface {
	AccessRequest(ctx context.Context, id string) (AccessRequest, bool, error)
}

// Options configures New.
type Options struct {
	// Requests resolves access requests for OCSF User Management events;
	// nil leaves the user of an approval unresolved (its request id).
	Requests AccessRequests
	// ProductVersion is Tollgate's version in OCSF metadata.product.
	ProductVersion string
}

// Names lists the formats New knows.
func Names() []string {
	n := []string{Native, OCSF, CloudEvents}
	sort.Strings(n)
	return n
}

// New returns the format called name; empty means native.
func New(name string, o Options) (Format, error) {
	switch strings.ToLower(name) {
	case Native, "", "json":
		return nativeFormat{}, nil
	case CloudEvents:
		return cloudEventsFormat{}, nil
	case OCSF:
		return &ocsfFormat{opts: o}, nil
	}
	return nil, fmt.Errorf("format %q: want one of %s", name, strings.Join(Names(), ", "))
}

// nativeFormat delivers the event as stored: the JSON our schemas describe.
type nativeFormat struct{}

func (nativeFormat) Name() string { return Native }

func (nativeFormat) Append(dst []byte, _ *Envelope, event []byte) ([]byte, error) {
	return append(dst, event...), nil
}
