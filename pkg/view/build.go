package view

import (
	"fmt"

	"github.com/deis/deis/pkg/state"
)

// Entry is one key and its value: a document (JSON-encoded as the
// platform stores it), a []byte or string stored as is, or nil for a
// delete.
type Entry struct {
	Key   string
	Value any
}

// Build returns the State of entries under prefix, applied in order as
// if written at revisions 1, 2, ... (every family is kept). It is for
// tests and simulators of what reads a State; a key of no family is
// ignored, a value that cannot be decoded is an error.
func Build(prefix string, entries ...Entry) (*State, error) {
	p := parser{keys: state.NewKeys(prefix), fams: AllFamilies}
	s := newState()
	var t Touched
	created := map[string]int64{}
	for i, e := range entries {
		ref, ok := p.parse(e.Key)
		if !ok {
			continue
		}
		rev := int64(i + 1)
		c := change{key: e.Key, ref: ref, createRev: rev, modRev: rev}
		switch v := e.Value.(type) {
		case nil:
		case []byte:
			c.val = v
		case string:
			c.val = []byte(v)
		default:
			c.val = []byte(state.Marshal(v))
		}
		if c.val == nil {
			delete(created, e.Key)
		} else if r, ok := created[e.Key]; ok {
			c.createRev = r
		} else {
			created[e.Key] = rev
		}
		if err := s.apply(c, &t); err != nil {
			return nil, fmt.Errorf("view: %s: %w", e.Key, err)
		}
	}
	return s, nil
}
