package state

import (
	"context"
	"errors"
	"time"
)

// Users and permissions decide who may push to (and fetch from) a
// formation's git repository. An SSH key belongs to a user (SSHKey.User); a
// user may push to a formation when it is an admin or holds a permission on
// that formation.
//
// Backward compatibility: keys registered before users existed belong to
// user "admin" (deisctl keys:add's default). While no user record named
// "admin" exists, that user counts as an admin (BootstrapAdmin). Creating a
// record for it makes the record authoritative.

// BootstrapAdmin is the user that counts as an admin while it has no user
// record.
const BootstrapAdmin = "admin"

// User is a person (or robot) that owns SSH keys. Written by deisctl.
type User struct {
	Name    string    `json:"name"`
	Admin   bool      `json:"admin,omitempty"`
	Created time.Time `json:"created"`
}

// Perm lets a user push to and fetch from one formation. Written by deisctl
// (perms:grant); removing the key revokes it.
type Perm struct {
	Formation string    `json:"formation"`
	User      string    `json:"user"`
	Created   time.Time `json:"created"`
}

// Users holds one record per user (writer: deisctl).
func (k Keys) Users() string           { return k.join("users") + "/" }
func (k Keys) User(name string) string { return k.join("users", name) }

// Perms holds one key per formation and user allowed to push to it
// (writer: deisctl). Deleting a formation should delete Perms(f).
func (k Keys) AllPerms() string           { return k.join("perms") + "/" }
func (k Keys) Perms(f string) string      { return k.join("perms", f) + "/" }
func (k Keys) Perm(f, user string) string { return k.join("perms", f, user) }

// IsAdmin reports whether user is an admin: its record says so, or it is
// BootstrapAdmin and has no record.
func (s *Store) IsAdmin(ctx context.Context, user string) (bool, error) {
	var u User
	_, err := s.Get(ctx, s.Keys.User(user), &u)
	switch {
	case errors.Is(err, ErrNotFound):
		return user == BootstrapAdmin, nil
	case err != nil:
		return false, err
	}
	return u.Admin, nil
}

// MayAccess reports whether user may push to and fetch from formation f:
// an admin may access every formation, another user those it holds a
// permission on. The error is for a state store that did not answer.
func (s *Store) MayAccess(ctx context.Context, f, user string) (bool, error) {
	if user == "" {
		return false, nil
	}
	admin, err := s.IsAdmin(ctx, user)
	if err != nil || admin {
		return admin, err
	}
	var p Perm
	_, err = s.Get(ctx, s.Keys.Perm(f, user), &p)
	switch {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}
