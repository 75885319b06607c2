// Command go-app is a dependency-free Go web app: the go buildpack builds it
// into bin/go-app and, with no Procfile, runs that as web.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from go-app\n", greeting)
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "5000"
	}
	log.Printf("go-app listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
