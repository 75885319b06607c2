package runtime

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestChoosePort(t *testing.T) {
	rng := PortRange{Min: 100, Max: 104}
	taken := func(ps ...int) func(int) bool {
		set := map[int]bool{}
		for _, p := range ps {
			set[p] = true
		}
		return func(p int) bool { return set[p] }
	}
	for _, tc := range []struct {
		name   string
		start  int
		taken  []int
		want   int
		wantOK bool
	}{
		{"the start port when it is free", 102, nil, 102, true},
		{"the next free port after taken ones", 102, []int{102, 103}, 104, true},
		{"wraps around to the bottom of the range", 103, []int{103, 104}, 100, true},
		{"a start outside the range starts at its bottom", 7, nil, 100, true},
		{"every port taken: none", 101, []int{100, 101, 102, 103, 104}, 0, false},
	} {
		got, ok := choosePort(rng, tc.start, taken(tc.taken...))
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: choosePort = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{"20000-29999": {20000, 29999}, " 5-5 ": {5, 5}, "1-65535": {1, 65535}} {
		got, err := ParsePortRange(in)
		if err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "20000", "a-b", "0-10", "10-5", "1-70000", "-5-10"} {
		if _, err := ParsePortRange(in); err == nil {
			t.Errorf("ParsePortRange(%q) accepted", in)
		}
	}
}

// choose skips ports held by containers, reserved ports and ports some
// process has bound, and says what to do when none is left.
func TestPortsChoose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bound := l.Addr().(*net.TCPAddr).Port
	if bound+3 > 65535 {
		t.Skip("ephemeral port too close to the top")
	}
	p := newPorts(PortRange{Min: bound - 1, Max: bound + 2}, "127.0.0.1")
	p.next = bound - 1
	if !bindable("127.0.0.1", bound-1) || !bindable("127.0.0.1", bound+1) || !bindable("127.0.0.1", bound+2) {
		t.Skip("neighbouring ports are busy")
	}
	used := map[int]bool{bound - 1: true}
	got, err := p.choose(used)
	if err != nil || got != bound+1 {
		t.Fatalf("choose = %d, %v; want %d (bound-1 held by a container, bound by a listener)", got, err, bound+1)
	}
	got, err = p.choose(used)
	if err != nil || got != bound+2 {
		t.Fatalf("second choose = %d, %v; want %d (bound+1 reserved)", got, err, bound+2)
	}
	_, err = p.choose(used)
	if err == nil {
		t.Fatal("choose found a port in a full range")
	}
	want := "runtime: no free host port in --port-range " + strconv.Itoa(bound-1) + "-" + strconv.Itoa(bound+2) + " on 127.0.0.1: every one is held by a container or bound by another process: widen --port-range or free ports"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	// A reservation ends.
	p.reserved[bound+1] = time.Now().Add(-time.Second)
	if got, err := p.choose(used); err != nil || got != bound+1 {
		t.Errorf("choose after the reservation ended = %d, %v; want %d", got, err, bound+1)
	}
}
