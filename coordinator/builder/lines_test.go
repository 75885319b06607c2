package builder

import (
	"bytes"
	"testing"
)

func TestConsoleSplitsLines(t *testing.T) {
	var out, log bytes.Buffer
	c := newConsole(&out, &log)
	// lines split across writes, "\r\n" ends, progress bars with lone "\r",
	// an empty line, and a last line without an end
	for _, chunk := range []string{"one\ntw", "o\r\nthree\r", "\nprogress 1%\rprogress 2%\r", "\n", "\nlast"} {
		c.Write([]byte(chunk))
	}
	c.Flush()
	c.Printf("-----> %s", "printed")
	want := "one\ntwo\nthree\nprogress 1%\nprogress 2%\n\nlast\n-----> printed\n"
	if out.String() != want || log.String() != want {
		t.Fatalf("out = %q\nlog = %q\nwant  %q", out.String(), log.String(), want)
	}
}
