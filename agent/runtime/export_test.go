package runtime

import "testing"

// Entry and MakeTarball let the external tests build slugs.
type Entry = entry

func MakeTarball(t testing.TB, entries ...Entry) []byte { return makeTarball(t, entries...) }

func NewEntry(name, body string, mode int64) Entry { return entry{name: name, body: body, mode: mode} }
