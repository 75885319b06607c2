// Command scratchapp is a static Go server for a FROM scratch image: it
// answers "hello from scratch (vN)" on $PORT. Tests build it with
// CGO_ENABLED=0 and copy it into the image as /app. With -sleep it never
// listens, so it never passes a health check.
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-sleep" {
		for {
			time.Sleep(time.Hour)
		}
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from scratch (%s) uid=%d args=%q\n", os.Getenv("DEIS_RELEASE"), os.Getuid(), os.Args[1:])
	})
	if err := http.ListenAndServe(":"+os.Getenv("PORT"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
