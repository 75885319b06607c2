package slugstore

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/deis/deis/testing/pkitest"
)

// One port: TLS connections reach the slug server, plain ones the open
// endpoints only.
func TestSplitTLS(t *testing.T) {
	ca := pkitest.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, pl := SplitTLS(l)
	secure := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secure") })}
	plain := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "plain") })}
	done := make(chan error, 2)
	go func() { done <- secure.Serve(tls.NewListener(tl, ca.ServerTLS("deis:coordinator"))) }()
	go func() { done <- plain.Serve(pl) }()
	get := func(c *http.Client, url string) string {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	addr := l.Addr().String()
	for i := 0; i < 3; i++ { // both kinds, interleaved
		if got := get(pkitest.HTTPClient(ca.ClientTLS("deis:node-n1")), "https://"+addr+"/"); got != "secure" {
			t.Errorf("TLS: %q", got)
		}
		if got := get(http.DefaultClient, "http://"+addr+"/"); got != "plain" {
			t.Errorf("plain: %q", got)
		}
	}
	if got := get(pkitest.HTTPClient(ca.ClientTLS("")), "https://"+addr+"/"); !strings.HasPrefix(got, "error") {
		t.Errorf("TLS without a certificate: %q", got)
	}
	// A connection that sends nothing does not hold up the others.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if got := get(http.DefaultClient, "http://"+addr+"/"); got != "plain" {
		t.Errorf("plain beside an idle connection: %q", got)
	}
	secure.Close()
	plain.Close()
	<-done
	<-done
}
