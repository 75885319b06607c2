// Command deisctl manages a deis platform: formations, config, releases,
// scale, domains, limits, layers, nodes and SSH keys, all through etcd. See
// package ctl and docs/cli.md.
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
