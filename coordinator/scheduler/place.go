package scheduler

import (
	"fmt"
	"sort"
)

// Slot is one container to place.
type Slot struct {
	Name   string
	Type   string
	Memory int64
}

// Bin is one candidate node with what it already holds.
type Bin struct {
	Node     string
	Capacity int   // most containers (0: unlimited)
	Memory   int64 // memory offered to limited containers (0: unlimited)
	// Count is the containers already on the node; ByType per process type
	// (of this formation); MemoryUsed by limited containers.
	Count      int
	ByType     map[string]int
	MemoryUsed int64
}

// ErrNoCapacity says how many containers fit.
type ErrNoCapacity struct {
	Wanted, Fits int
}

func (e *ErrNoCapacity) Error() string {
	return fmt.Sprintf("scheduler: %d containers wanted but only %d fit on the layer's nodes: add nodes or raise their capacity", e.Wanted, e.Fits)
}

// Place assigns every slot to a bin. It is deterministic: for each slot (in
// the given order) it picks the bin with the fewest containers of the same
// process type, then the fewest containers overall, then the lowest name,
// among bins with room. Slots that fit nowhere make it return ErrNoCapacity
// together with the placements that did fit.
func Place(slots []Slot, bins []Bin) (map[string]string, error) {
	bs := make([]Bin, len(bins))
	copy(bs, bins)
	for i := range bs {
		m := map[string]int{}
		for k, v := range bs[i].ByType {
			m[k] = v
		}
		bs[i].ByType = m
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].Node < bs[j].Node })
	out := map[string]string{}
	unplaced := 0
	for _, s := range slots {
		best := -1
		for i := range bs {
			b := &bs[i]
			if b.Capacity > 0 && b.Count >= b.Capacity {
				continue
			}
			if s.Memory > 0 && b.Memory > 0 && b.MemoryUsed+s.Memory > b.Memory {
				continue
			}
			if best < 0 || better(b, &bs[best], s.Type) {
				best = i
			}
		}
		if best < 0 {
			unplaced++
			continue
		}
		b := &bs[best]
		b.Count++
		b.ByType[s.Type]++
		b.MemoryUsed += s.Memory
		out[s.Name] = b.Node
	}
	if unplaced > 0 {
		return out, &ErrNoCapacity{Wanted: len(slots), Fits: len(slots) - unplaced}
	}
	return out, nil
}

func better(a, b *Bin, typ string) bool {
	if a.ByType[typ] != b.ByType[typ] {
		return a.ByType[typ] < b.ByType[typ]
	}
	if a.Count != b.Count {
		return a.Count < b.Count
	}
	return a.Node < b.Node
}
