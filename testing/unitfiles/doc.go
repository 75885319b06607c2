// Package unitfiles checks the systemd units in systemd/ with
// systemd-analyze verify, pointing ExecStart at binaries built from the tree.
package unitfiles
