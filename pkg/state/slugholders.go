package state

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Coordinator members and slug holders: where the slugs (and Dockerfile
// image archives) of the installation are stored.
//
// Every running coordinator registers itself under CoordinatorMembers,
// bound to its lease, with the base URL of its slug server; its member id
// is kept in its data directory, so it stays the same across restarts and
// changes only when the data directory is lost. A coordinator that has a
// slug stored and sha256-verified records it at SlugHolder(sha, member).
// Holder keys are not lease-bound: a coordinator that restarts still holds
// its files. The family is keyed by content, not by formation: garbage
// collection owns it (the builder's GC removes a slug's holder keys with
// the file), so formations:destroy does not list it; the destroyed
// formation's slugs go, with their holder keys, through GC.

// CoordinatorMembers is the prefix of the coordinators' lease-bound
// registrations (writer: each coordinator, its own key).
func (k Keys) CoordinatorMembers() string { return k.join("coordinator", "members") + "/" }

// CoordinatorMember is coordinator id's registration.
func (k Keys) CoordinatorMember(id string) string { return k.join("coordinator", "members", id) }

// AllSlugHolders is the prefix of every slug's holder keys.
func (k Keys) AllSlugHolders() string { return k.join("slugs") + "/" }

// SlugHolders is the prefix of the holder keys of the slug with the given
// sha256 (writer: each coordinator, its own key; the builder's GC deletes
// them all when the slug is collected).
func (k Keys) SlugHolders(sha string) string { return k.join("slugs", sha) + "/" }

// SlugHolder records that coordinator member holds the slug sha.
func (k Keys) SlugHolder(sha, member string) string { return k.join("slugs", sha, member) }

// SlugHolderKey splits a key under AllSlugHolders into the sha256 and the
// member id; ok is false for any other key.
func (k Keys) SlugHolderKey(key string) (sha, member string, ok bool) {
	rest, found := strings.CutPrefix(key, k.AllSlugHolders())
	if !found {
		return "", "", false
	}
	sha, member, ok = strings.Cut(rest, "/")
	if !ok || sha == "" || member == "" || strings.Contains(member, "/") {
		return "", "", false
	}
	return sha, member, true
}

// CoordinatorMember is one running coordinator's registration.
type CoordinatorMember struct {
	ID string `json:"id"`
	// SlugURL is the base URL of its slug server ("http://host:port"),
	// as agents and the other coordinators reach it.
	SlugURL string    `json:"slugURL"`
	Host    string    `json:"host,omitempty"`
	Started time.Time `json:"started"`
}

// SlugHolder is one coordinator's copy of a slug or image archive: the
// file is complete under its sha256 and was verified when stored.
type SlugHolder struct {
	Member string    `json:"member"`
	Size   int64     `json:"size"`
	Stored time.Time `json:"stored"`
}

// SlugFileURL is where the slug server at base serves the file sha.
func SlugFileURL(base, sha string) string {
	return strings.TrimRight(base, "/") + "/slugs/" + sha + ".tgz"
}

// Members reads the registered (live) coordinators by id, and the revision
// of the read.
func (s *Store) Members(ctx context.Context) (map[string]CoordinatorMember, int64, error) {
	list, rev, err := List[CoordinatorMember](ctx, s.KV, s.Keys.CoordinatorMembers())
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]CoordinatorMember, len(list))
	for _, e := range list {
		out[Base(e.Key)] = e.Value
	}
	return out, rev, nil
}

// Holders reads the holder keys of slug sha by member id.
func (s *Store) Holders(ctx context.Context, sha string) (map[string]SlugHolder, error) {
	list, _, err := List[SlugHolder](ctx, s.KV, s.Keys.SlugHolders(sha))
	if err != nil {
		return nil, err
	}
	out := make(map[string]SlugHolder, len(list))
	for _, e := range list {
		out[Base(e.Key)] = e.Value
	}
	return out, nil
}

// SlugURLs returns where slug sha can be downloaded: the slug servers of
// the live coordinators that hold it, in a stable order (by member id).
// Holders whose coordinator is not registered now are left out.
func (s *Store) SlugURLs(ctx context.Context, sha string) ([]string, error) {
	holders, err := s.Holders(ctx, sha)
	if err != nil {
		return nil, err
	}
	if len(holders) == 0 {
		return nil, nil
	}
	members, _, err := s.Members(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(holders))
	for id := range holders {
		if m, ok := members[id]; ok && m.SlugURL != "" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	urls := make([]string, 0, len(ids))
	for _, id := range ids {
		urls = append(urls, SlugFileURL(members[id].SlugURL, sha))
	}
	return urls, nil
}

// PutHolder records that member holds slug sha (size bytes). With
// whileHeld, the write happens only while some coordinator still holds the
// slug (a copy fetched from another must not bring back a slug that GC
// removed meanwhile); it reports whether it wrote.
func (s *Store) PutHolder(ctx context.Context, sha, member string, size int64, whileHeld bool) (bool, error) {
	h := SlugHolder{Member: member, Size: size, Stored: time.Now().UTC()}
	var guards []clientv3.Cmp
	if whileHeld {
		guards = append(guards, clientv3.Compare(clientv3.CreateRevision(s.Keys.SlugHolders(sha)), ">", 0).WithPrefix())
	}
	ok, err := s.Commit(ctx, guards, clientv3.OpPut(s.Keys.SlugHolder(sha, member), Marshal(h)))
	if err != nil {
		return false, fmt.Errorf("state: record slug %s on %s: %w", sha, member, err)
	}
	return ok, nil
}

// DeleteHolders deletes every holder key of slug sha, but only if none was
// written after revision rev (a coordinator that stored the slug since GC
// read the references keeps it). It reports whether it deleted.
func (s *Store) DeleteHolders(ctx context.Context, sha string, rev int64) (bool, error) {
	prefix := s.Keys.SlugHolders(sha)
	ok, err := s.Commit(ctx,
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(prefix), "<", rev+1).WithPrefix()},
		clientv3.OpDelete(prefix, clientv3.WithPrefix()))
	if err != nil {
		return false, fmt.Errorf("state: delete holders of slug %s: %w", sha, err)
	}
	return ok, nil
}
