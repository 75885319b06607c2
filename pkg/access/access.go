package access

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/state"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Kind is what sort of identity a caller is.
type Kind int

const (
	// Unknown is a name of no identity of this installation.
	Unknown Kind = iota
	// Root is etcd's superuser (the provisioning credential).
	Root
	// Coordinator is the coordinators' identity.
	Coordinator
	// Node is a node's agent.
	Node
	// User is a platform user (deisctl).
	User
)

func (k Kind) String() string {
	switch k {
	case Root:
		return "root"
	case Coordinator:
		return "coordinator"
	case Node:
		return "node"
	case User:
		return "user"
	}
	return "unknown"
}

// Identity is a caller.
type Identity struct {
	Kind Kind
	// Name is the node's or user's name ("" for the others).
	Name string
	// CN is the certificate's Common Name as presented.
	CN string
}

// String names the caller for messages: the user's or node's name, else
// its Common Name.
func (id Identity) String() string {
	switch {
	case id.Name != "":
		return id.Name
	case id.CN != "":
		return id.CN
	}
	return "an anonymous caller"
}

// Parse names the caller whose certificate's Common Name is cn, for the
// installation under prefix ("" means state.DefaultPrefix).
func Parse(prefix, cn string) Identity {
	n := etcdauth.NewNames(prefix)
	id := Identity{CN: cn}
	switch {
	case cn == etcdauth.Root:
		id.Kind = Root
	case cn == n.Coordinator():
		id.Kind = Coordinator
	default:
		if u, ok := strings.CutPrefix(cn, n.User("")); ok && state.ValidateName("user", u) == nil {
			id.Kind, id.Name = User, u
		} else if node, ok := strings.CutPrefix(cn, n.Node("")); ok && state.ValidateName("node", node) == nil {
			id.Kind, id.Name = Node, node
		}
	}
	return id
}

// Platform reports whether id is one of the platform's own parts: a
// coordinator, a node, or root. They may fetch slugs.
func (id Identity) Platform() bool {
	return id.Kind == Root || id.Kind == Coordinator || id.Kind == Node
}

// ErrDenied is wrapped by every refusal of Formation. It also counts as
// etcd's refusal (etcdauth.IsPermissionDenied), so deisctl reports both the
// same way.
var ErrDenied = rpctypes.ErrPermissionDenied

// Records answers whether a user may access a formation; *state.Store
// implements it from /users/ and /perms/.
type Records interface {
	MayAccess(ctx context.Context, f, user string) (bool, error)
}

// Formation returns nil when id may read and change formation f (its logs,
// one-off runs, build logs): root, the coordinator, administrators and users
// granted f. A refusal wraps ErrDenied and is one line that names the fix;
// other errors are the records' store failing.
func Formation(ctx context.Context, r Records, id Identity, f string) error {
	switch id.Kind {
	case Root, Coordinator:
		return nil
	case User:
		ok, err := r.MayAccess(ctx, f, id.Name)
		if err != nil {
			return fmt.Errorf("access: read the grants of %s: %w", id.Name, err)
		}
		if ok {
			return nil
		}
		return etcdauth.Denied(ErrDenied, id.Name, f)
	case Node:
		return fmt.Errorf("node %s may not read or run in formation %s: only administrators, coordinators and users granted it may: %w", id.Name, f, ErrDenied)
	}
	if id.CN == "" {
		return fmt.Errorf("no client certificate: use deisctl's credentials (a certificate of the platform CA): %w", ErrDenied)
	}
	return fmt.Errorf("%q is no identity of this installation: use credentials made by deisctl users:create: %w", id.CN, ErrDenied)
}

// IsDenied reports whether err is a refusal of Formation.
func IsDenied(err error) bool { return errors.Is(err, ErrDenied) }
