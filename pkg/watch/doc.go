// Package watch turns etcd watches into wake-ups for level-triggered
// reconcile loops. It never carries the changed values: a loop that wakes
// reads the whole state it needs again. Watches start at the revision after
// the caller's read, require a leader, and resync (one extra wake-up) after a
// compaction or a broken stream.
//
// Prefixes wakes a Waker on every change under some prefixes; Loop runs a
// reconcile pass on every wake-up, on a resync period, and again after a
// backoff when a pass fails.
package watch
