package requests

import (
	"context"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
)

// Admin is what `tollgate requests` needs: Local works on a broker's
// state directly, *api.Client on a remote broker.
type Admin interface {
	AccessRequests(ctx context.Context) ([]api.AccessRequest, error)
	ReviewAccessRequest(ctx context.Context, id string, req api.ReviewAccessRequest) (*api.AccessRequest, error)
}

var (
	_ Admin = Local{}
	_ Admin = (*api.Client)(nil)
)

// Local is Admin over a Service, acting as Caller.
type Local struct {
	Svc    *Service
	Caller identity.Identity
}

// AccessRequests lists the requests Caller may see.
func (l Local) AccessRequests(context.Context) ([]api.AccessRequest, error) {
	out := []api.AccessRequest{}
	for _, r := range l.Svc.Visible(l.Caller) {
		out = append(out, ToAPI(r))
	}
	return out, nil
}

// ReviewAccessRequest records Caller's verdict.
func (l Local) ReviewAccessRequest(ctx context.Context, id string, req api.ReviewAccessRequest) (*api.AccessRequest, error) {
	r, err := l.Svc.Review(ctx, l.Caller, id, req.Verdict, req.Reason)
	if err != nil {
		return nil, err
	}
	out := ToAPI(r)
	return &out, nil
}
