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
	byNode := func(i, j int) bool { return bs[i].Node < bs[j].Node }
	if !sort.SliceIsSorted(bs, byNode) {
		sort.Slice(bs, byNode)
	}
	// Per process type, each bin's count of it; bins are in name order,
	// so among equals the first one found has the lowest name.
	typed := map[string][]int{}
	countOf := func(t string) []int {
		c, ok := typed[t]
		if !ok {
			c = make([]int, len(bs))
			for i := range bs {
				c[i] = bs[i].ByType[t]
			}
			typed[t] = c
		}
		return c
	}
	out := map[string]string{}
	unplaced := 0
	for _, s := range slots {
		byType := countOf(s.Type)
		best := -1
		for i := range bs {
			b := &bs[i]
			if b.Capacity > 0 && b.Count >= b.Capacity {
				continue
			}
			if s.Memory > 0 && b.Memory > 0 && b.MemoryUsed+s.Memory > b.Memory {
				continue
			}
			if best < 0 || byType[i] < byType[best] || (byType[i] == byType[best] && b.Count < bs[best].Count) {
				best = i
			}
		}
		if best < 0 {
			unplaced++
			continue
		}
		b := &bs[best]
		b.Count++
		byType[best]++
		b.MemoryUsed += s.Memory
		out[s.Name] = b.Node
	}
	if unplaced > 0 {
		return out, &ErrNoCapacity{Wanted: len(slots), Fits: len(slots) - unplaced}
	}
	return out, nil
}
