package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// The platform token is one shared secret that the platform's own HTTP
// endpoints require as "Authorization: Bearer <token>": the agents' API
// (logs, one-off runs), slug downloads and the coordinator's build logs.
// Whoever can read etcd is trusted with it: the coordinator, every agent and
// deisctl read it from Keys.PlatformToken, and the first of them to start
// creates it (EnsureToken).

// Secrets holds the platform's shared secrets (writer: whoever creates them
// first, with EnsureToken).
func (k Keys) Secrets() string       { return k.join("secrets") + "/" }
func (k Keys) PlatformToken() string { return k.join("secrets", "token") }

// PlatformToken is the value stored at Keys.PlatformToken.
type PlatformToken struct {
	Token   string    `json:"token"`
	Created time.Time `json:"created"`
}

// EnsureToken returns the platform token, creating a random one (32 bytes,
// hex-encoded) first when there is none. Concurrent callers all get the one
// token that was stored first.
func EnsureToken(ctx context.Context, s *Store) (string, error) {
	tok, err := ReadToken(ctx, s)
	if !errors.Is(err, ErrNotFound) {
		return tok, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("state: generate the platform token: %w", err)
	}
	err = s.Create(ctx, s.Keys.PlatformToken(), PlatformToken{Token: hex.EncodeToString(b), Created: time.Now().UTC()})
	if err != nil && !errors.Is(err, ErrExists) {
		return "", fmt.Errorf("state: store the platform token: %w", err)
	}
	return ReadToken(ctx, s) // ours, or the one another caller stored first
}

// ReadToken returns the platform token, or an error wrapping ErrNotFound
// that says how it gets created.
func ReadToken(ctx context.Context, s *Store) (string, error) {
	var t PlatformToken
	_, err := s.Get(ctx, s.Keys.PlatformToken(), &t)
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("the platform has no token yet: start the coordinator or an agent, which create it: %w", ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	if t.Token == "" {
		return "", fmt.Errorf("the platform token at %s is empty: delete the key and restart the coordinator", s.Keys.PlatformToken())
	}
	return t.Token, nil
}
