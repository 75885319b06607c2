package state

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	envKey   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	procType = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`)
	domain   = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
)

// ValidateName checks a formation, layer, node or user name: a DNS label of
// lowercase letters, digits and hyphens, at most 63 characters.
func ValidateName(kind, name string) error {
	if len(name) == 0 || len(name) > 63 || !dnsLabel.MatchString(name) {
		return fmt.Errorf("invalid %s name %q: use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit", kind, name)
	}
	return nil
}

// ValidateEnvKey checks a config key is a valid environment variable name.
func ValidateEnvKey(k string) error {
	if !envKey.MatchString(k) {
		return fmt.Errorf("invalid config key %q: use letters, digits and underscores, not starting with a digit", k)
	}
	return nil
}

// ValidateProcessType checks a Procfile process type name.
func ValidateProcessType(t string) error {
	if len(t) > 63 || !procType.MatchString(t) {
		return fmt.Errorf("invalid process type %q: use lowercase letters, digits, '-' and '_'", t)
	}
	return nil
}

// ValidateDomain checks a domain name is safe to place in a server_name
// directive: lowercase DNS labels separated by dots, optionally starting with
// "*.", and nothing else (no spaces, quotes, semicolons or braces). Each
// label has at most 63 characters (DNS's limit), and a wildcard must sit
// below a registered domain: "*.com" would claim every host name under a
// top-level domain.
func ValidateDomain(d string) error {
	if len(d) == 0 || len(d) > 253 || !domain.MatchString(d) || strings.Contains(d, "..") {
		return fmt.Errorf("invalid domain %q: use lowercase DNS labels separated by dots, like www.example.com or *.example.com", d)
	}
	for _, l := range strings.Split(d, ".") {
		if len(l) > 63 {
			return fmt.Errorf("invalid domain %q: its label %.20q... has %d characters, and a DNS label has at most 63", d, l, len(l))
		}
	}
	if rest, ok := strings.CutPrefix(d, "*."); ok && !strings.Contains(rest, ".") {
		return fmt.Errorf("invalid domain %q: a wildcard must sit below a domain of your own, like *.example.com, not directly above the top-level domain %q", d, rest)
	}
	return nil
}

// ValidateHealthPath checks a HEALTHCHECK_PATH value: an absolute URL path
// with no spaces, control characters, scheme or host.
func ValidateHealthPath(p string) error {
	ok := strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "//") && len(p) <= 1024
	for _, r := range p {
		if r <= ' ' || r == 0x7f || r == '#' {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("invalid HEALTHCHECK_PATH %q: use a URL path starting with /, like /healthz", p)
	}
	return nil
}

// Bounds of a request body limit (Formation.MaxBodyBytes, deis-agent
// --max-body). The proxies buffer each body on their disk before the app
// sees it, so the limit has a ceiling; larger uploads belong in object
// storage, uploaded directly by the client.
const (
	DefaultMaxBodyBytes int64 = 10 << 20 // 10M: the proxies' default
	MaxMaxBodyBytes     int64 = 1 << 30  // 1G
)

// ValidateMaxBody checks a request body limit: more than zero, at most
// MaxMaxBodyBytes.
func ValidateMaxBody(n int64) error {
	if n <= 0 {
		return fmt.Errorf("invalid request body limit %d: it must be more than zero", n)
	}
	if n > MaxMaxBodyBytes {
		return fmt.Errorf("request body limit %d is more than the most the proxies accept, 1G (%d bytes): the proxies buffer each body on disk; upload larger files straight to object storage", n, MaxMaxBodyBytes)
	}
	return nil
}

// ParseSize reads a byte count: a whole number of bytes, or a number with
// the unit K, M or G (powers of 1024; KB, MB, GB and lower case read the
// same), like 512K, 10M or 1.5G.
func ParseSize(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return !strings.ContainsRune("0123456789.", r) })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], strings.ToUpper(s[i:])
	v, err := strconv.ParseFloat(num, 64)
	mult := map[string]float64{"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}[unit]
	if num == "" || err != nil || mult == 0 || (mult == 1 && v != math.Trunc(v)) || v*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("invalid size %q: use a whole number of bytes or a number with the unit K, M or G, like 512K, 10M or 1G", s)
	}
	return int64(v * mult), nil
}
