package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Installation identifies one installation (an etcd cluster and prefix):
// a random id created once and restored with an etcd snapshot. The
// coordinator's purge records it in its data directory, so a data
// directory pointed at another installation removes nothing. It is no
// secret and grants nothing (issue 10 removed the platform token: the
// platform's servers check client certificates instead).
func (k Keys) Installation() string { return k.join("installation") }

// legacyToken is where the platform token was kept before issue 10; an
// installation that has one takes its value as its id, so that data
// directories that recorded it keep matching.
func (k Keys) legacyToken() string { return k.join("secrets", "token") }

// InstallationID is the value stored at Keys.Installation.
type InstallationID struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// EnsureInstallation returns the installation's id, creating it first
// when there is none (writer: the coordinator). Concurrent callers all get
// the one id that was stored first.
func EnsureInstallation(ctx context.Context, s *Store) (string, error) {
	var v InstallationID
	_, err := s.Get(ctx, s.Keys.Installation(), &v)
	if err == nil && v.ID != "" {
		return v.ID, nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	id := ""
	var legacy struct {
		Token string `json:"token"`
	}
	if _, err := s.Get(ctx, s.Keys.legacyToken(), &legacy); err == nil && legacy.Token != "" {
		id = legacy.Token
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	if id == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("state: generate the installation id: %w", err)
		}
		id = hex.EncodeToString(b)
	}
	err = s.Create(ctx, s.Keys.Installation(), InstallationID{ID: id, Created: time.Now().UTC()})
	if err != nil && !errors.Is(err, ErrExists) {
		return "", fmt.Errorf("state: store the installation id: %w", err)
	}
	if _, err := s.Get(ctx, s.Keys.Installation(), &v); err != nil {
		return "", err
	}
	if v.ID == "" {
		return "", fmt.Errorf("state: the installation id at %s is empty: delete the key and restart the coordinator", s.Keys.Installation())
	}
	return v.ID, nil
}
