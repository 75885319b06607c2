package scheduler

import (
	"errors"
	"reflect"
	"testing"
)

func TestPlace(t *testing.T) {
	three := func() []Bin {
		return []Bin{{Node: "n1"}, {Node: "n2"}, {Node: "n3"}}
	}
	slots := func(typ string, n int) []Slot {
		var out []Slot
		for i := 1; i <= n; i++ {
			out = append(out, Slot{Name: typ + string(rune('0'+i)), Type: typ})
		}
		return out
	}
	tests := []struct {
		name  string
		slots []Slot
		bins  []Bin
		want  map[string]int // node -> count
		fits  int            // -1: no error
	}{
		// six web containers on three empty nodes spread 2/2/2
		{"spread", slots("web", 6), three(), map[string]int{"n1": 2, "n2": 2, "n3": 2}, -1},
		// anti-affinity beats overall load: n1 is busy with workers but has no web
		{"anti-affinity", slots("web", 1), []Bin{{Node: "n1", Count: 5, ByType: map[string]int{"worker": 5}}, {Node: "n2", Count: 1, ByType: map[string]int{"web": 1}}},
			map[string]int{"n1": 1}, -1},
		// least loaded wins among equals
		{"least-loaded", slots("web", 1), []Bin{{Node: "n1", Count: 3}, {Node: "n2", Count: 1}}, map[string]int{"n2": 1}, -1},
		// capacity is respected and the error says how many fit
		{"capacity", slots("web", 5), []Bin{{Node: "n1", Capacity: 2}, {Node: "n2", Capacity: 2}}, map[string]int{"n1": 2, "n2": 2}, 4},
		// memory limits are respected
		{"memory", []Slot{{Name: "a", Type: "web", Memory: 600}, {Name: "b", Type: "web", Memory: 600}}, []Bin{{Node: "n1", Memory: 1000}}, map[string]int{"n1": 1}, 1},
		// no bins: nothing fits
		{"no-nodes", slots("web", 2), nil, map[string]int{}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Place(tc.slots, tc.bins)
			counts := map[string]int{}
			for _, n := range got {
				counts[n]++
			}
			if !reflect.DeepEqual(counts, tc.want) {
				t.Errorf("placement %v, want %v", counts, tc.want)
			}
			var nc *ErrNoCapacity
			if tc.fits < 0 && err != nil {
				t.Errorf("unexpected error %v", err)
			}
			if tc.fits >= 0 && (!errors.As(err, &nc) || nc.Fits != tc.fits) {
				t.Errorf("error %v, want ErrNoCapacity fits=%d", err, tc.fits)
			}
			// deterministic
			again, _ := Place(tc.slots, tc.bins)
			if !reflect.DeepEqual(got, again) {
				t.Errorf("not deterministic: %v vs %v", got, again)
			}
		})
	}
}
