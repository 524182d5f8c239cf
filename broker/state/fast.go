package state

import (
	"github.com/tollgate-db/tollgate/events"
)

// decodeFast fills ev from data with the scanner, or returns errFallback.
// Role events, rare and deeply nested, always go to encoding/json.
func decodeFast(data []byte, ev events.Event, in *interner) error {
	var fields func(key []byte, s *scanner) error
	switch e := ev.(type) {
	case *events.UserCreate:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "name":
				e.Name, err = s.istr()
			case "user_roles":
				e.UserRoles, err = s.strings()
			case "traits":
				err = s.traits(&e.Traits)
			case "invite_expires":
				err = s.time(&e.InviteExpires)
			default:
				return errFallback
			}
			return err
		}
	case *events.UserUpdate:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "name":
				e.Name, err = s.istr()
			case "user_roles":
				e.UserRoles, err = s.strings()
			case "traits":
				err = s.traits(&e.Traits)
			case "locked_until":
				err = s.time(&e.LockedUntil)
			case "lock_reason":
				e.LockReason, err = s.str()
			default:
				return errFallback
			}
			return err
		}
	case *events.UserDelete:
		fields = func(k []byte, s *scanner) (err error) {
			if string(k) != "name" {
				return errFallback
			}
			e.Name, err = s.istr()
			return err
		}
	case *events.UserPasswordSet:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "name":
				e.Name, err = s.istr()
			case "invite_used":
				e.InviteUsed, err = s.boolean()
			default:
				return errFallback
			}
			return err
		}
	case *events.TokenCreate:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "token_id":
				e.TokenID, err = s.str()
			case "token_type":
				e.TokenType, err = s.istr()
			case "expires":
				err = s.time(&e.Expires)
			case "single_use":
				e.SingleUse, err = s.boolean()
			default:
				return errFallback
			}
			return err
		}
	case *events.TokenUse:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "success":
				e.Success, err = s.boolean()
			case "error":
				e.Error, err = s.istr()
			case "token_id":
				e.TokenID, err = s.str()
			case "token_type":
				e.TokenType, err = s.istr()
			case "host_id":
				e.HostID, err = s.istr()
			default:
				return errFallback
			}
			return err
		}
	case *events.DBCreate:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "db_service":
				e.Service, err = s.istr()
			case "db_protocol":
				e.Protocol, err = s.istr()
			case "db_uri":
				e.URI, err = s.str()
			case "db_labels":
				err = s.stringMap(&e.Labels)
			case "host_id":
				e.HostID, err = s.istr()
			case "agent_addr":
				e.AgentAddr, err = s.istr()
			case "heartbeat_ttl_ns":
				e.HeartbeatTTLNs, err = s.int64()
			default:
				return errFallback
			}
			return err
		}
	case *events.DBDelete:
		fields = func(k []byte, s *scanner) (err error) {
			if string(k) != "db_service" {
				return errFallback
			}
			e.Service, err = s.istr()
			return err
		}
	case *events.CAPublish:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "ca_type":
				e.CAType, err = s.istr()
			case "cert_pem":
				e.CertPEM, err = s.str()
			case "sha256_fingerprints":
				e.Fingerprints, err = s.strings()
			default:
				return errFallback
			}
			return err
		}
	case *events.AccessRequestCreate:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "request_id":
				e.RequestID, err = s.str()
			case "requester":
				e.Requester, err = s.istr()
			case "request_roles":
				e.RequestRoles, err = s.strings()
			case "reason":
				e.Reason, err = s.str()
			case "expires":
				err = s.time(&e.Expires)
			default:
				return errFallback
			}
			return err
		}
	case *events.AccessRequestUpdate:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "request_id":
				e.RequestID, err = s.str()
			case "state":
				e.State, err = s.istr()
			case "reason":
				e.Reason, err = s.str()
			default:
				return errFallback
			}
			return err
		}
	case *events.LockCreate:
		fields = func(k []byte, s *scanner) (err error) {
			switch string(k) {
			case "lock_id":
				e.LockID, err = s.str()
			case "target_user":
				e.TargetUser, err = s.istr()
			case "target_role":
				e.TargetRole, err = s.istr()
			case "target_sid":
				e.TargetSession, err = s.str()
			case "message":
				e.Message, err = s.str()
			case "expires":
				err = s.time(&e.Expires)
			default:
				return errFallback
			}
			return err
		}
	case *events.LockDelete:
		fields = func(k []byte, s *scanner) (err error) {
			if string(k) != "lock_id" {
				return errFallback
			}
			e.LockID, err = s.str()
			return err
		}
	default:
		return errFallback
	}

	h := ev.Header()
	s := &scanner{b: data, in: in}
	err := s.object(func(key []byte) (err error) {
		switch string(key) { // compared, not kept: no allocation
		case "id":
			h.ID, err = s.str()
		case "type":
			h.Type, err = s.istr()
		case "code":
			h.Code, err = s.istr()
		case "time":
			err = s.time(&h.Time)
		case "cluster":
			h.Cluster, err = s.istr()
		case "user":
			h.User, err = s.istr()
		case "roles":
			h.Roles, err = s.strings()
		default:
			err = fields(key, s)
		}
		return err
	})
	if err != nil {
		return err
	}
	return s.end()
}
