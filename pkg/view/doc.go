// Package view is the one read side of the state model: a decoded copy of
// the installation's keys, built from one read of the prefix at one
// revision and kept current by a watch from that revision + 1.
//
// A View (New, Run) is long-lived: the scheduler and the proxy role keep
// one. Run reads every family it keeps with paged Gets, all at the same
// revision R, then applies each watch event from R+1, decoding each key
// once. On a compaction, a canceled watch or a lost watch it reads again
// and marks everything touched. Subscribers (Subscribe) get coalesced
// wake-ups and, with Take, the formations and nodes touched since their
// previous Take; an event whose value is the same as before (a status
// report that changes nothing but its time) touches nothing and wakes no
// one. WaitRev waits until the view holds a given revision (a caller's own
// write). Options.Families restricts a view to some key families (the proxy
// role keeps only what it routes by); it then watches only their prefixes.
//
// Load (and LoadFamilies, LoadFormation for one formation's keys) is the
// one-shot read deisctl and the agent API use; LoadFormationFamilies reads
// one formation's keys of chosen families (FormationRanges), for a reader
// granted only those (the proxy role keeps one such read and watch per
// formation it serves); Build makes a State from
// given keys and values, for tests and simulators.
//
// State answers the derived questions in one place: a formation's current
// release (CurrentRelease), the live nodes of a layer (LayerNodes), the
// containers placed on live nodes (Placed), those joined with what the
// agents report (Containers), and each node's load and free capacity
// (Load, Free). The indexes behind them are kept up to date on each event.
//
// Keys are parsed with the pkg/state Keys helpers, so a change to the key
// layout stays in pkg/state and here.
package view
