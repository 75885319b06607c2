package main

import (
	"fmt"
	"os"

	"github.com/deis/deis/ctl"
)

func main() {
	if err := ctl.NewApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "deisctl: %v\n", err)
		os.Exit(1)
	}
}
