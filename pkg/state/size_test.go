package state

import "testing"

func TestParseSizeAndValidateMaxBody(t *testing.T) {
	for in, want := range map[string]int64{
		"1": 1, "1000": 1000, "512K": 512 << 10, "512kb": 512 << 10, "10M": 10 << 20, "10m": 10 << 20,
		"1.5G": 3 << 29, "1G": 1 << 30, "0": 0, "7B": 7,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "5T", "-1M", "1.5", "M", "1 M", "10MiB", "99999999999G"} {
		if got, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, got)
		}
	}
	for _, ok := range []int64{1, DefaultMaxBodyBytes, MaxMaxBodyBytes} {
		if err := ValidateMaxBody(ok); err != nil {
			t.Errorf("ValidateMaxBody(%d): %v", ok, err)
		}
	}
	for _, bad := range []int64{0, -1, MaxMaxBodyBytes + 1} {
		if err := ValidateMaxBody(bad); err == nil {
			t.Errorf("ValidateMaxBody(%d) accepted", bad)
		}
	}
}
